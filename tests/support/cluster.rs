//! Builders and in-memory stand-ins shared by the in-process tests. The real API server is met in
//! the end-to-end tests (tests/e2e); here the cluster is a few objects in memory so that the
//! decision and the HTTP layer can be tested exhaustively and fast.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine;
use hab_bootstrap::injection::decision::ServiceFact;
use hab_bootstrap::injection::settings::InjectionSettings;
use hab_bootstrap::webhook::admission::{Admission, ClusterView, EventSink, EventType, PodEvent};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::{Value, json};

pub const STS_UID: &str = "bdd640fb-0667-4ad1-9c80-317fa3b1799d";

pub fn statefulset(
    name: &str,
    ns: &str,
    service: &str,
    replicas: i32,
    annotations: &[(&str, &str)],
) -> StatefulSet {
    let mut all = BTreeMap::from([("habitat/bootstrap".to_owned(), "true".to_owned())]);
    all.extend(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all.retain(|_, v| !v.is_empty());
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some(STS_UID.into()),
            annotations: Some(all),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            service_name: Some(service.into()),
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), name.to_owned())])),
                ..Default::default()
            },
            ..Default::default()
        }),
        status: None,
    }
}

pub fn headless_service(name: &str, ns: &str, publish_not_ready: bool) -> Service {
    Service {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(ns.into()), ..Default::default() },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(publish_not_ready),
            ..Default::default()
        }),
        status: None,
    }
}

/// The cluster as a few objects; `api_down` makes every API call fail like an unreachable API.
#[derive(Default)]
pub struct MemoryCluster {
    pub statefulsets: Vec<StatefulSet>,
    pub services: Vec<Service>,
    /// StatefulSets only the "API server" knows (not yet in the cache).
    pub uncached_statefulsets: Vec<StatefulSet>,
    pub api_down: bool,
    /// Calls that reached the "API server" (live StatefulSet reads, ring-key creations).
    pub live_reads: Mutex<u32>,
    /// How long the per-review access check takes, to hold requests in flight.
    pub read_delay: std::time::Duration,
    /// What a SubjectAccessReview for the pod's ServiceAccount answers.
    pub sidecar_can_label: Option<bool>,
    /// Ring-key Secrets created, as (namespace, name, StatefulSet).
    pub ring_keys: Mutex<Vec<(String, String, String)>>,
}

fn find<'a, T: kube::Resource>(items: &'a [T], ns: &str, name: &str) -> Option<&'a T> {
    items.iter().find(|o| o.meta().name.as_deref() == Some(name) && o.meta().namespace.as_deref() == Some(ns))
}

impl ClusterView for MemoryCluster {
    async fn can_patch_pods(&self, _ns: &str, _service_account: &str) -> Option<bool> {
        if !self.read_delay.is_zero() {
            tokio::time::sleep(self.read_delay).await;
        }
        self.sidecar_can_label
    }

    async fn statefulset(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        may_read_live: bool,
    ) -> Result<Option<StatefulSet>, String> {
        let matches = |s: &&StatefulSet| s.metadata.uid.as_deref() == Some(uid);
        if let Some(s) = find(&self.statefulsets, ns, name).filter(matches) {
            return Ok(Some(s.clone()));
        }
        if !may_read_live {
            return Ok(None);
        }
        *self.live_reads.lock().unwrap() += 1;
        if self.api_down {
            return Err("connection refused".into());
        }
        Ok(find(&self.uncached_statefulsets, ns, name).filter(matches).cloned())
    }

    fn service(&self, ns: &str, name: &str) -> ServiceFact {
        find(&self.services, ns, name)
            .map_or(ServiceFact::Missing, |s| ServiceFact::Found(Box::new(s.clone())))
    }

    async fn ensure_ring_key(&self, ns: &str, name: &str, sts: &StatefulSet) -> Result<(), String> {
        *self.live_reads.lock().unwrap() += 1;
        if self.api_down {
            return Err("connection refused".into());
        }
        let entry = (ns.to_owned(), name.to_owned(), sts.metadata.name.clone().unwrap_or_default());
        let mut keys = self.ring_keys.lock().unwrap();
        if !keys.contains(&entry) {
            keys.push(entry);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub statefulset: String,
    pub pod: String,
    pub event_type: EventType,
    pub reason: &'static str,
    pub note: String,
}

#[derive(Default)]
pub struct RecordingEvents(pub Mutex<Vec<RecordedEvent>>);

impl EventSink for RecordingEvents {
    fn publish(&self, event: PodEvent<'_>) {
        self.0.lock().unwrap().push(RecordedEvent {
            statefulset: event.statefulset.metadata.name.clone().unwrap_or_default(),
            pod: event.pod.to_owned(),
            event_type: event.event_type,
            reason: event.reason,
            note: event.note,
        });
    }
}

impl std::ops::Deref for RecordingEvents {
    type Target = Mutex<Vec<RecordedEvent>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

pub fn admission(cluster: MemoryCluster) -> Admission<MemoryCluster, RecordingEvents> {
    Admission {
        cluster,
        events: RecordingEvents::default(),
        settings: InjectionSettings::default(),
        metrics: Default::default(),
    }
}

/// The captured review of pod default/redis-2 (shaped like kube-apiserver's).
pub fn redis_review() -> Value {
    serde_json::from_str(include_str!("../fixtures/admission/pod-create-redis-2.json")).unwrap()
}

/// A review of `object` (a Pod) with the given operation.
pub fn review_of(object: &Value, operation: &str, dry_run: bool) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "7f0c9d5e-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": object["kind"].as_str().unwrap_or("Pod")},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": object["metadata"]["namespace"],
            "name": object["metadata"]["name"],
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:statefulset-controller"},
            "object": object,
            "oldObject": null,
            "dryRun": dry_run,
        }
    })
}

/// A decoded AdmissionReview response.
#[derive(Debug)]
pub struct Answer {
    pub uid: String,
    pub allowed: bool,
    pub message: Option<String>,
    pub patch: Option<json_patch::Patch>,
    pub warnings: Vec<String>,
}

pub fn decode(body: &[u8]) -> Answer {
    let v: Value = serde_json::from_slice(body).expect("response is JSON");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let r = &v["response"];
    let patch = r["patch"].as_str().map(|b64| {
        assert_eq!(r["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("patch is base64");
        serde_json::from_slice(&bytes).expect("patch is a JSON patch")
    });
    Answer {
        uid: r["uid"].as_str().unwrap().to_owned(),
        allowed: r["allowed"].as_bool().unwrap(),
        message: r["status"]["message"].as_str().map(str::to_owned),
        patch,
        warnings: r["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default(),
    }
}

/// Applies the answer's patch (if any) to `object`, as the API server does.
pub fn patched(object: &Value, answer: &Answer) -> Value {
    let mut out = object.clone();
    if let Some(p) = &answer.patch {
        json_patch::patch(&mut out, p).expect("the patch applies to the object it was computed for");
    }
    out
}

/// The value after `flag` in a container's args.
pub fn flag_value(container: &Value, flag: &str) -> Option<String> {
    let args: Vec<&str> = container["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    args.windows(2).find(|w| w[0] == flag).map(|w| w[1].to_owned())
}
