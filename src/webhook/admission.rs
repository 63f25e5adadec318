//! From an AdmissionReview body to the answer: classify cheaply, gather facts only for pods that
//! may be ours, decide, and explain (warnings, Events, metrics, logs).
//!
//! A pod review walks down `admit_pod`'s steps in order; each hands the next its input or stops
//! the review with a `Stop`, which `pod_response` turns into the answer and its metrics. The JSON
//! patch is [`crate::webhook::patch`]; the outcomes and denials, [`crate::webhook::outcome`].

use std::future::Future;
use std::time::Instant;

use json_patch::Patch;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use tracing::{debug, info, warn};

use crate::injection::annotations;
use crate::injection::decision::{self, Candidate, Decision, Facts, Injection, NotOurs, ServiceFact};
use crate::injection::settings::InjectionSettings;
use crate::injection::template_label::{TemplateDecision, decide_template};
use crate::webhook::metrics::{Metrics, ReasonLabels, RequestLabels, WebhookLabels};
use crate::webhook::outcome::{Denial, Outcome, Skip};
use crate::webhook::patch::pod_patch;
use crate::webhook::review::{BadReview, MetadataOnly, Request, Response};

/// What the webhook reads from the cluster.
pub trait ClusterView: Send + Sync + 'static {
    /// The StatefulSet `ns/name` whose uid is `uid`. On a cache miss, reads it from the API server
    /// only when `may_read_live` (the pod is labelled ours): no API call for anyone else's pods.
    fn statefulset(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        may_read_live: bool,
    ) -> impl Future<Output = Result<Option<StatefulSet>, String>> + Send;
    fn service(&self, ns: &str, name: &str) -> ServiceFact;
    /// Makes sure the Secret `ns/name` with the ring key of `sts` exists (creating it, owned by the
    /// StatefulSet, if not); Err says why it could not.
    fn ensure_ring_key(
        &self,
        ns: &str,
        name: &str,
        sts: &StatefulSet,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether `ns/service_account` may patch pods in `ns`; None when it could not be checked
    /// (only a warning depends on it).
    fn can_patch_pods(&self, ns: &str, service_account: &str) -> impl Future<Output = Option<bool>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// One Kubernetes Event about a pod under review: recorded on its StatefulSet, with the pod as
/// the related object.
#[derive(Debug, Clone)]
pub struct PodEvent<'a> {
    pub statefulset: &'a StatefulSet,
    pub pod: &'a str,
    pub event_type: EventType,
    pub reason: &'static str,
    pub note: String,
}

impl<'a> PodEvent<'a> {
    pub fn normal(statefulset: &'a StatefulSet, pod: &'a str, reason: &'static str, note: String) -> Self {
        Self { statefulset, pod, event_type: EventType::Normal, reason, note }
    }

    pub fn warning(statefulset: &'a StatefulSet, pod: &'a str, reason: &'static str, note: String) -> Self {
        Self { statefulset, pod, event_type: EventType::Warning, reason, note }
    }
}

/// Where Kubernetes Events go; fire and forget, never on the admission's critical path.
pub trait EventSink: Send + Sync + 'static {
    fn publish(&self, event: PodEvent<'_>);
}

/// A shared sink publishes as the sink does (a wrapper such as [`crate::webhook::event_pace::Paced`]
/// can hold one its owner still reads).
impl<E: EventSink + ?Sized> EventSink for std::sync::Arc<E> {
    fn publish(&self, event: PodEvent<'_>) {
        (**self).publish(event)
    }
}

/// Discards events (offline use and tests that do not look at them).
pub struct NoEvents;

impl EventSink for NoEvents {
    fn publish(&self, _: PodEvent<'_>) {}
}

pub struct Admission<C, E> {
    pub cluster: C,
    pub events: E,
    pub settings: InjectionSettings,
    pub metrics: Metrics,
}

const POD_WEBHOOK: &str = "pods";
const STS_WEBHOOK: &str = "statefulsets";

/// Where a pod review ended before an injection.
enum Stop {
    Skipped(Skip, Option<String>),
    Denied(Denial),
    /// Already injected as we would: nothing to change, and nothing new to say.
    Unchanged,
}

/// The pod being reviewed, by name.
struct PodName {
    ns: String,
    name: String,
}

impl<C: ClusterView, E: EventSink> Admission<C, E> {
    /// Answers a pod review. Err only when the body cannot be answered at all (HTTP 4xx).
    pub async fn review_pod(&self, body: &[u8]) -> Result<Vec<u8>, BadReview> {
        let started = Instant::now();
        let result = Request::parse(body).map(|request| async move {
            let (response, outcome) = self.pod_response(&request).await;
            (response.to_json(), outcome)
        });
        self.finish(POD_WEBHOOK, started, result).await
    }

    /// Answers a StatefulSet review: keeps the template label equal to the opt-in annotation.
    pub async fn review_statefulset(&self, body: &[u8]) -> Result<Vec<u8>, BadReview> {
        let started = Instant::now();
        let result = Request::parse(body).map(|request| async move {
            let (response, outcome) = self.statefulset_response(&request);
            (response.to_json(), outcome)
        });
        self.finish(STS_WEBHOOK, started, result).await
    }

    async fn finish(
        &self,
        webhook: &'static str,
        started: Instant,
        result: Result<impl Future<Output = (Vec<u8>, Outcome)>, BadReview>,
    ) -> Result<Vec<u8>, BadReview> {
        let (answer, outcome) = match result {
            Ok(fut) => {
                let (body, outcome) = fut.await;
                (Ok(body), outcome)
            }
            Err(e) => {
                warn!(webhook, error = %e.message, "unreadable admission review");
                (Err(e), Outcome::BadRequest)
            }
        };
        self.metrics.requests.get_or_create(&RequestLabels { webhook, outcome: outcome.label() }).inc();
        self.metrics
            .duration
            .get_or_create(&WebhookLabels { webhook })
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    #[tracing::instrument(name = "pod", skip_all, fields(uid = %request.uid, ns, name))]
    async fn pod_response(&self, request: &Request<'_>) -> (Response, Outcome) {
        let response = request.respond();
        match self.admit_pod(request).await {
            Ok((patch, warnings)) => (response.with_patch(patch).with_warnings(warnings), Outcome::Injected),
            Err(Stop::Unchanged) => (response, Outcome::Unchanged),
            Err(Stop::Skipped(skip, warning)) => {
                self.metrics.skips.get_or_create(&ReasonLabels { reason: skip.reason() }).inc();
                match warning {
                    Some(warning) => (response.with_warnings(vec![truncate(warning)]), Outcome::Skipped),
                    None => (response, Outcome::Skipped),
                }
            }
            Err(Stop::Denied(denial)) => self.deny(response, &denial),
        }
    }

    /// The steps of a pod review, cheapest first: most pods are told apart without decoding their
    /// spec or reading anything.
    async fn admit_pod(&self, request: &Request<'_>) -> Result<(Patch, Vec<String>), Stop> {
        if request.kind.kind != "Pod" || request.operation != "CREATE" {
            return Err(Stop::Skipped(Skip::NotOurs(NotOurs::NotAPodCreate), None));
        }
        let (pod_name, candidate) = classify(request)?;
        let sts = self.owner(&pod_name, &candidate).await?;
        self.check_opted_in(request, &pod_name, &candidate, &sts)?;
        let pod = request.pod().map_err(|e| Stop::Denied(Denial::UnreadablePod(e)))?;
        let facts = self.gather_facts(&pod_name, sts, &pod).await;
        self.inject(request, &pod_name, pod, &facts).await
    }

    /// The StatefulSet that owns the pod, from the cache (or, for a pod labelled ours, the API).
    async fn owner(&self, pod: &PodName, candidate: &Candidate) -> Result<StatefulSet, Stop> {
        let found = self
            .cluster
            .statefulset(&pod.ns, &candidate.statefulset, &candidate.statefulset_uid, candidate.labelled)
            .await;
        let (ns, statefulset) = (pod.ns.clone(), candidate.statefulset.clone());
        match found {
            Ok(Some(sts)) => Ok(sts),
            Ok(None) if candidate.labelled => Err(Stop::Denied(Denial::OwnerNotFound { ns, statefulset })),
            Ok(None) => Err(Stop::Skipped(Skip::NotOurs(NotOurs::NoStatefulSetOwner), None)),
            Err(error) => Err(Stop::Denied(Denial::OwnerUnreadable { ns, statefulset, error })),
        }
    }

    /// Goes on only for a StatefulSet annotated ours; a pod labelled ours without it is told why.
    fn check_opted_in(
        &self,
        request: &Request<'_>,
        pod: &PodName,
        candidate: &Candidate,
        sts: &StatefulSet,
    ) -> Result<(), Stop> {
        if annotations::opted_in(sts.metadata.annotations.as_ref()) {
            return Ok(());
        }
        if !candidate.labelled {
            debug!("StatefulSet not annotated: left alone");
            return Err(Stop::Skipped(Skip::NotAnnotated, None));
        }
        let note = format!(
            "{}: not injected: it carries label {}=true but StatefulSet {} is not annotated {}=true",
            pod.name,
            annotations::BOOTSTRAP,
            candidate.statefulset,
            annotations::BOOTSTRAP
        );
        if !request.dry_run {
            self.events.publish(PodEvent::warning(sts, &pod.name, "InjectionSkipped", note.clone()));
        }
        info!(%note, "skipped");
        Err(Stop::Skipped(Skip::LabelWithoutAnnotation, Some(note)))
    }

    /// What the decision needs besides the pod: the Service from the cache, and whether the
    /// sidecar's ServiceAccount may label its pod (cached). No list of the StatefulSet's pods: the
    /// sidecar finds its peers itself, so admission does not grow with the ring.
    async fn gather_facts(&self, pod_name: &PodName, sts: StatefulSet, pod: &Pod) -> Facts {
        let ns = &pod_name.ns;
        let service_name = sts.spec.as_ref().and_then(|s| s.service_name.clone()).unwrap_or_default();
        let sidecar_can_label = self.cluster.can_patch_pods(ns, decision::service_account(pod)).await;
        Facts { service: self.cluster.service(ns, &service_name), statefulset: sts, sidecar_can_label }
    }

    /// Decides, and explains the decision: the patch and its warnings, or the denial. The ring
    /// key's Secret is ensured before the injection is counted and recorded, so that a pod denied
    /// for want of it gets no `Injected` Event.
    async fn inject(
        &self,
        request: &Request<'_>,
        pod_name: &PodName,
        pod: Pod,
        facts: &Facts,
    ) -> Result<(Patch, Vec<String>), Stop> {
        let name = &pod_name.name;
        let injection = match decision::decide(&pod, facts, &self.settings) {
            Decision::Inject(injection) => injection,
            Decision::Deny(msg) => {
                if !request.dry_run {
                    let note = format!("{name}: {msg}");
                    self.events.publish(PodEvent::warning(&facts.statefulset, name, "InjectionDenied", note));
                }
                return Err(Stop::Denied(Denial::Invalid(msg)));
            }
        };
        let Injection { pod: injected, status, warnings, summary } = *injection;
        let patch = pod_patch(pod, injected);
        if patch.0.is_empty() {
            // A reinvocation, a replayed request.
            debug!(%summary, "already injected");
            return Err(Stop::Unchanged);
        }
        if let Some(secret) = &status.ring_key_secret {
            self.ensure_ring_key(request, pod_name, secret, &facts.statefulset).await?;
        }
        let peers = if status.peer_watch_file.is_some() { "peer_file" } else { "user_peers" };
        self.metrics.injections.get_or_create(&ReasonLabels { reason: peers }).inc();
        info!(%summary, warnings = warnings.len(), dry_run = request.dry_run, "injected");
        if !request.dry_run {
            let mut note = summary;
            if !warnings.is_empty() {
                note = format!("{note}; warnings: {}", warnings.join("; "));
            }
            self.events.publish(PodEvent::normal(&facts.statefulset, name, "Injected", note));
        }
        Ok((patch, warnings.into_iter().map(truncate).collect()))
    }

    /// The ring key's Secret must exist before the pod starts (its variable names it); never
    /// created for a dry run (`sideEffects: NoneOnDryRun`).
    async fn ensure_ring_key(
        &self,
        request: &Request<'_>,
        pod_name: &PodName,
        secret: &str,
        sts: &StatefulSet,
    ) -> Result<(), Stop> {
        if request.dry_run {
            return Ok(());
        }
        let Err(error) = self.cluster.ensure_ring_key(&pod_name.ns, secret, sts).await else { return Ok(()) };
        let denial = Denial::RingKeyNotCreated { ns: pod_name.ns.clone(), secret: secret.to_owned(), error };
        let name = &pod_name.name;
        self.events.publish(PodEvent::warning(sts, name, "InjectionDenied", format!("{name}: {denial}")));
        Err(Stop::Denied(denial))
    }

    fn statefulset_response(&self, request: &Request<'_>) -> (Response, Outcome) {
        let response = request.respond();
        if request.kind.kind != "StatefulSet" || !matches!(request.operation.as_str(), "CREATE" | "UPDATE") {
            return (response, Outcome::Unchanged);
        }
        let sts: StatefulSet = match request.object() {
            Ok(s) => s,
            Err(e) => return self.deny(response, &Denial::UnreadableStatefulSet(e)),
        };
        match decide_template(&sts, request.operation == "CREATE", &self.settings) {
            TemplateDecision::Unchanged => (response, Outcome::Unchanged),
            TemplateDecision::Deny(msg) => self.deny(response, &Denial::Template(msg)),
            TemplateDecision::Relabel { mutated, labelled } => {
                let patch = json_patch::diff(
                    &serde_json::to_value(&sts).expect("statefulsets serialize"),
                    &serde_json::to_value(&*mutated).expect("statefulsets serialize"),
                );
                let mut warnings = Vec::new();
                if request.operation == "UPDATE" {
                    let verb = if labelled { "gets" } else { "loses" };
                    warnings.push(format!(
                        "pod template {verb} label {}=true: existing pods are replaced to apply it",
                        annotations::BOOTSTRAP
                    ));
                }
                (response.with_patch(patch).with_warnings(warnings), Outcome::Relabelled)
            }
        }
    }

    /// Every denial of both webhooks: counted by reason, logged, and cut to a readable length.
    fn deny(&self, response: Response, denial: &Denial) -> (Response, Outcome) {
        let reason = denial.reason();
        self.metrics.denials.get_or_create(&ReasonLabels { reason }).inc();
        // Messages quote names from the request: a hostile one must not make a huge answer.
        let message = truncate_to(denial.to_string(), MAX_DENIAL);
        warn!(reason, %message, "denied");
        (response.deny(message), Outcome::Denied)
    }
}

/// The pod's name and owner, from its metadata alone.
fn classify(request: &Request<'_>) -> Result<(PodName, Candidate), Stop> {
    let meta = match request.object::<MetadataOnly>() {
        Ok(m) => m.metadata,
        Err(e) => return Err(Stop::Denied(Denial::UnreadablePod(e))),
    };
    let ns = request.namespace.clone().or(meta.namespace.clone()).unwrap_or_default();
    let name = meta.name.clone().or(request.name.clone()).unwrap_or_default();
    tracing::Span::current().record("ns", ns.as_str()).record("name", name.as_str());
    let candidate = decision::classify(&Pod { metadata: meta, ..Default::default() })
        .map_err(|reason| Stop::Skipped(Skip::NotOurs(reason), None))?;
    Ok((PodName { ns, name }, candidate))
}

/// kubectl shows warnings one per line; the API guidance is 120 characters, and past 256 they are
/// cut by the API server.
fn truncate(warning: String) -> String {
    truncate_to(warning, 250)
}

/// Longest denial message, in bytes: kubectl shows it whole.
const MAX_DENIAL: usize = 1024;

fn truncate_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
