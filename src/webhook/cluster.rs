//! The webhook's view of the cluster: reflector caches of StatefulSets, Services and the pods that
//! carry the opt-in label, the ring-key Secrets it creates, and Kubernetes Events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tracing::warn;

use crate::injection::annotations;
use crate::injection::decision::ServiceFact;
use crate::injection::pod_identity::statefulset_controller;
use crate::injection::ring_key;
use crate::injection::template_label::template_labelled;
use crate::runtime::access_review;
use crate::webhook::admission::{ClusterView, EventSink, EventType, PodEvent};
use crate::webhook::deadline;

pub struct KubeCluster {
    client: Client,
    statefulsets: Store<StatefulSet>,
    services: Store<Service>,
    /// Only for the escape scan ([`crate::webhook::scan`]): never read while admitting. The
    /// opted-in pods without the injected label.
    labelled_pods: Store<PartialObjectMeta<Pod>>,
    live_read_timeout: Duration,
    /// SubjectAccessReview answers by (namespace, ServiceAccount): RBAC rarely changes, and a
    /// rollout asks the same question once per pod.
    access: Mutex<HashMap<(String, String), (Instant, bool)>>,
    /// Ring-key Secrets known to exist, by (namespace, name), and since when: one create per
    /// StatefulSet rather than one per pod; forgotten after a while in case one is deleted.
    ring_keys: Mutex<HashMap<(String, String), Instant>>,
}

const ACCESS_TTL: Duration = Duration::from_secs(60);
const RING_KEY_TTL: Duration = Duration::from_secs(300);

impl KubeCluster {
    /// Starts the watches; the caches fill in the background (see [`KubeCluster::wait_synced`]).
    pub fn start(client: Client, live_read_timeout: Duration) -> Self {
        let all = watcher::Config::default();
        let statefulsets =
            spawn_reflector(Api::<StatefulSet>::all(client.clone()), all.clone(), strip_statefulset);
        let services = spawn_reflector(Api::<Service>::all(client.clone()), all, strip_service);
        // Selected by the API server: the pods of opted-in StatefulSets that we did not inject, whatever
        // else runs. Injected pods carry the INJECTED label, so a ring's rollout sends this watch
        // nothing; pods injected by a version before the label still arrive and are told apart by
        // their status annotation.
        let labelled = watcher::Config::default().labels(&annotations::not_injected_selector());
        // Metadata only: no spec or status over the wire or in memory.
        let labelled_pods =
            spawn_reflector(Api::<PartialObjectMeta<Pod>>::all(client.clone()), labelled, strip_pod);
        Self {
            client,
            statefulsets,
            services,
            labelled_pods,
            live_read_timeout,
            access: Mutex::default(),
            ring_keys: Mutex::default(),
        }
    }

    pub async fn wait_synced(&self) {
        // Err means the writer is gone, which only happens at shutdown.
        let _ = self.statefulsets.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The StatefulSet and labelled-pod caches, once the pods have synced; call it after
    /// [`KubeCluster::wait_synced`]. (A store wakes one waiter only: each is awaited by one task.)
    pub async fn escape_view(&self) -> (&Store<StatefulSet>, &Store<PartialObjectMeta<Pod>>) {
        let _ = self.labelled_pods.wait_until_ready().await;
        (&self.statefulsets, &self.labelled_pods)
    }
}

fn spawn_reflector<K>(api: Api<K>, config: watcher::Config, strip: fn(&mut K)) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream =
        watcher(api, config.any_semantic()).default_backoff().modify(strip).reflect(writer).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                warn!(kind = %K::kind(&()), error = %e, "watch error; retrying with backoff");
            }
        }
    });
    reader
}

/// Keeps only what the admission decision and the escape scan read: a large cluster's StatefulSets
/// and Services stay a few hundred bytes each in memory.
fn strip_statefulset(sts: &mut StatefulSet) {
    sts.metadata.managed_fields = None;
    // Of the template, only the opt-in label (the escape scan looks for it).
    let labelled = template_labelled(sts);
    if let Some(spec) = sts.spec.as_mut() {
        spec.template = Default::default();
        if labelled {
            spec.template.metadata = Some(ObjectMeta {
                labels: Some([(annotations::BOOTSTRAP.to_owned(), "true".to_owned())].into()),
                ..Default::default()
            });
        }
        spec.volume_claim_templates = None;
    }
    sts.status = None;
}

/// A labelled pod, read as metadata only (no spec or status over the wire or in memory), keeps its
/// name, namespace, uid, controlling StatefulSet, deletion mark and whether it has the status
/// annotation.
fn strip_pod(pod: &mut PartialObjectMeta<Pod>) {
    let meta = &mut pod.metadata;
    let owner = statefulset_controller(meta).cloned();
    let injected = meta.annotations.as_ref().is_some_and(|a| a.contains_key(annotations::STATUS));
    meta.managed_fields = None;
    meta.labels = None;
    meta.generate_name = None;
    meta.owner_references = owner.map(|o| vec![o]);
    meta.annotations = injected.then(|| [(annotations::STATUS.to_owned(), String::new())].into());
}

fn strip_service(svc: &mut Service) {
    svc.metadata.managed_fields = None;
    svc.metadata.annotations = None;
    svc.metadata.labels = None;
    svc.spec = svc.spec.take().map(|s| ServiceSpec {
        cluster_ip: s.cluster_ip,
        publish_not_ready_addresses: s.publish_not_ready_addresses,
        ..Default::default()
    });
    svc.status = None;
}

impl ClusterView for KubeCluster {
    async fn statefulset(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        may_read_live: bool,
    ) -> Result<Option<StatefulSet>, String> {
        let cached = self.statefulsets.get(&ObjectRef::new(name).within(ns));
        if let Some(sts) = cached.filter(|s| s.metadata.uid.as_deref() == Some(uid)) {
            return Ok(Some(Arc::unwrap_or_clone(sts)));
        }
        if !may_read_live {
            return Ok(None);
        }
        // The controller creates pod 0 milliseconds after the StatefulSet: the watch may not have
        // delivered it yet.
        let api = Api::<StatefulSet>::namespaced(self.client.clone(), ns);
        let within = deadline::remaining(self.live_read_timeout);
        match tokio::time::timeout(within, api.get_opt(name)).await {
            Err(_) => Err(format!("no answer from the API server within {within:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(sts)) => Ok(sts.filter(|s| s.metadata.uid.as_deref() == Some(uid))),
        }
    }

    fn service(&self, ns: &str, name: &str) -> ServiceFact {
        match self.services.get(&ObjectRef::new(name).within(ns)) {
            Some(svc) => ServiceFact::Found(Box::new(Arc::unwrap_or_clone(svc))),
            None => ServiceFact::Missing,
        }
    }

    async fn can_patch_pods(&self, ns: &str, service_account: &str) -> Option<bool> {
        let key = (ns.to_owned(), service_account.to_owned());
        if let Some(allowed) = self.cached_access(&key) {
            return Some(allowed);
        }
        let review = access_review::for_service_account(ns, service_account, "", "pods", "patch");
        let api = Api::<SubjectAccessReview>::all(self.client.clone());
        let within = deadline::remaining(self.live_read_timeout);
        let allowed = match tokio::time::timeout(within, api.create(&PostParams::default(), &review)).await {
            Ok(Ok(answer)) => answer.status?.allowed,
            Ok(Err(e)) => {
                warn!(error = %e, "SubjectAccessReview failed; not warning about the sidecar's permissions");
                return None;
            }
            Err(_) => return None,
        };
        self.access.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (Instant::now(), allowed));
        Some(allowed)
    }

    /// One create per StatefulSet (remembered for a while), within the review's deadline.
    async fn ensure_ring_key(&self, ns: &str, name: &str, sts: &StatefulSet) -> Result<(), String> {
        let key = (ns.to_owned(), name.to_owned());
        let known = |keys: &HashMap<_, Instant>| keys.get(&key).is_some_and(|at| at.elapsed() < RING_KEY_TTL);
        if known(&self.ring_keys.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let secret = ring_key_secret(ns, name, sts)?;
        let api = Api::<Secret>::namespaced(self.client.clone(), ns);
        let params = PostParams::default();
        let within = deadline::remaining(self.live_read_timeout);
        let created = tokio::time::timeout(within, api.create(&params, &secret));
        match created.await {
            Err(_) => return Err(format!("no answer from the API server within {within:?}")),
            // 409: it exists (created for an earlier pod, by another replica, or the user's own).
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {}
            Ok(Err(kube::Error::Api(status))) => return Err(status.message),
            Ok(Err(e)) => return Err(e.to_string()),
        }
        self.ring_keys.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Instant::now());
        Ok(())
    }
}

/// A new ring key for `sts`, in a Secret the StatefulSet owns (deleted with it).
fn ring_key_secret(ns: &str, name: &str, sts: &StatefulSet) -> Result<Secret, String> {
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| "no randomness for a ring key".to_owned())?;
    let now = time::OffsetDateTime::now_utc();
    let revision = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let sts_name = sts.metadata.name.clone().unwrap_or_default();
    let owner = sts.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "StatefulSet".to_owned(),
        name: sts_name.clone(),
        uid,
        ..Default::default()
    });
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            labels: Some(ring_key::secret_labels(&sts_name)),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        string_data: Some(ring_key::secret_data(&sts_name, &revision, &secret)),
        ..Default::default()
    })
}

impl KubeCluster {
    fn cached_access(&self, key: &(String, String)) -> Option<bool> {
        let cache = self.access.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|(at, _)| at.elapsed() < ACCESS_TTL).map(|(_, allowed)| *allowed)
    }
}

/// Publishes Events with kube's recorder, in the background so admission never waits on them.
pub struct KubeEvents {
    recorder: Recorder,
}

impl KubeEvents {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: "hab-bootstrap".to_owned(), instance };
        Self { recorder: Recorder::new(client, reporter) }
    }
}

impl EventSink for KubeEvents {
    fn publish(&self, event: PodEvent<'_>) {
        let PodEvent { statefulset, pod, event_type, reason, note } = event;
        let recorder = self.recorder.clone();
        let reference = statefulset.object_ref(&());
        let event = Event {
            type_: match event_type {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: reason.to_owned(),
            // The API caps notes at 1 kB.
            note: Some(note.chars().take(1000).collect()),
            action: "Admit".to_owned(),
            // Without a per-pod related object the recorder folds every pod's event into one series.
            secondary: Some(ObjectReference {
                kind: Some("Pod".to_owned()),
                api_version: Some("v1".to_owned()),
                name: Some(pod.to_owned()),
                namespace: reference.namespace.clone(),
                ..Default::default()
            }),
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                warn!(error = %e, "could not publish an Event");
            }
        });
    }
}
