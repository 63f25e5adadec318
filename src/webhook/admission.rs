//! From an AdmissionReview body to the answer: classify cheaply, gather facts only for pods that
//! may be ours, decide, and explain (warnings, Events, metrics, logs).

use std::future::Future;
use std::time::Instant;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::injection::annotations;
use crate::injection::decision::{self, Decision, Facts, NotOurs, ServiceFact};
use crate::injection::settings::InjectionSettings;
use crate::injection::template_label::{TemplateDecision, decide_template};
use crate::webhook::metrics::{Metrics, ReasonLabels, RequestLabels, WebhookLabels};
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
    /// The pods of `sts` that exist now, read consistently.
    fn pods_of(&self, ns: &str, sts: &StatefulSet) -> impl Future<Output = Result<Vec<Pod>, String>> + Send;
    /// Whether `ns/service_account` may patch pods in `ns`; None when it could not be checked
    /// (only a warning depends on it).
    fn can_patch_pods(&self, ns: &str, service_account: &str) -> impl Future<Output = Option<bool>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Where Kubernetes Events go; fire and forget, never on the admission's critical path.
pub trait EventSink: Send + Sync + 'static {
    fn publish(
        &self,
        sts: &StatefulSet,
        pod: &str,
        event_type: EventType,
        reason: &'static str,
        note: String,
    );
}

/// Discards events (offline use and tests that do not look at them).
pub struct NoEvents;

impl EventSink for NoEvents {
    fn publish(&self, _: &StatefulSet, _: &str, _: EventType, _: &'static str, _: String) {}
}

pub struct Admission<C, E> {
    pub cluster: C,
    pub events: E,
    pub settings: InjectionSettings,
    pub metrics: Metrics,
}

const POD_WEBHOOK: &str = "pods";
const STS_WEBHOOK: &str = "statefulsets";

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
        result: Result<impl Future<Output = (Vec<u8>, &'static str)>, BadReview>,
    ) -> Result<Vec<u8>, BadReview> {
        let (answer, outcome) = match result {
            Ok(fut) => {
                let (body, outcome) = fut.await;
                (Ok(body), outcome)
            }
            Err(e) => {
                warn!(webhook, error = %e.message, "unreadable admission review");
                (Err(e), "bad_request")
            }
        };
        self.metrics.requests.get_or_create(&RequestLabels { webhook, outcome }).inc();
        self.metrics
            .duration
            .get_or_create(&WebhookLabels { webhook })
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    #[tracing::instrument(name = "pod", skip_all, fields(uid = %request.uid, ns, name))]
    async fn pod_response(&self, request: &Request<'_>) -> (Response, &'static str) {
        let response = request.respond();
        if request.kind.kind != "Pod" || request.operation != "CREATE" {
            return self.not_ours(response, NotOurs::NotAPodCreate);
        }
        // Metadata first: most pods are told apart without decoding their spec.
        let meta = match request.object::<MetadataOnly>() {
            Ok(m) => m.metadata,
            Err(e) => return self.deny(response, "unreadable_pod", format!("cannot read the pod: {e}")),
        };
        let ns = request.namespace.clone().or(meta.namespace.clone()).unwrap_or_default();
        let name = meta.name.clone().or(request.name.clone()).unwrap_or_default();
        tracing::Span::current().record("ns", ns.as_str()).record("name", name.as_str());
        let candidate = match decision::classify(&Pod { metadata: meta, ..Default::default() }) {
            Ok(c) => c,
            Err(reason) => return self.not_ours(response, reason),
        };
        let sts = match self
            .cluster
            .statefulset(&ns, &candidate.statefulset, &candidate.statefulset_uid, candidate.labelled)
            .await
        {
            Ok(Some(sts)) => sts,
            Ok(None) if candidate.labelled => {
                let msg = format!(
                    "StatefulSet {ns}/{} that owns this pod was not found, so its peers cannot be \
                     computed; the StatefulSet controller retries",
                    candidate.statefulset
                );
                return self.deny(response, "owner_not_found", msg);
            }
            Ok(None) => return self.not_ours(response, NotOurs::NoStatefulSetOwner),
            Err(e) => {
                let msg = format!(
                    "cannot read StatefulSet {ns}/{} ({e}); refusing rather than starting a \
                     supervisor without peers; the StatefulSet controller retries",
                    candidate.statefulset
                );
                return self.deny(response, "api_unavailable", msg);
            }
        };
        if !annotations::opted_in(sts.metadata.annotations.as_ref()) {
            if !candidate.labelled {
                self.metrics.skips.get_or_create(&ReasonLabels { reason: "not_annotated" }).inc();
                debug!("StatefulSet not annotated: left alone");
                return (response, "skipped");
            }
            let note = format!(
                "{name}: not injected: it carries label {}=true but StatefulSet {} is not annotated {}=true",
                annotations::BOOTSTRAP,
                candidate.statefulset,
                annotations::BOOTSTRAP
            );
            self.metrics.skips.get_or_create(&ReasonLabels { reason: "label_without_annotation" }).inc();
            if !request.dry_run {
                self.events.publish(&sts, &name, EventType::Warning, "InjectionSkipped", note.clone());
            }
            info!(%note, "skipped");
            return (response.with_warnings(vec![truncate(note)]), "skipped");
        }

        let pod: Pod = match request.object() {
            Ok(p) => p,
            Err(e) => return self.deny(response, "unreadable_pod", format!("cannot read the pod: {e}")),
        };
        let service_name = sts.spec.as_ref().and_then(|s| s.service_name.clone()).unwrap_or_default();
        // Both reads go to the API server; run them side by side.
        let (siblings, sidecar_can_label) = tokio::join!(
            self.cluster.pods_of(&ns, &sts),
            self.cluster.can_patch_pods(&ns, decision::service_account(&pod))
        );
        let siblings = match siblings {
            Ok(p) => p,
            Err(e) => {
                let msg = format!(
                    "cannot list the pods of StatefulSet {ns}/{} to choose peers ({e}); the \
                     StatefulSet controller retries",
                    candidate.statefulset
                );
                self.events.publish(
                    &sts,
                    &name,
                    EventType::Warning,
                    "InjectionDenied",
                    format!("{name}: {msg}"),
                );
                return self.deny(response, "api_unavailable", msg);
            }
        };
        let facts = Facts {
            service: self.cluster.service(&ns, &service_name),
            statefulset: sts,
            siblings,
            sidecar_can_label,
        };
        match decision::decide(&pod, &facts, &self.settings) {
            Decision::Inject(injection) => {
                let patch = pod_patch(pod, injection.pod);
                if patch.0.is_empty() {
                    // Already injected as we would (a reinvocation, a replayed request): nothing
                    // to change, and nothing new to say.
                    debug!(summary = %injection.summary, "already injected");
                    return (response, "unchanged");
                }
                let plan = match &injection.plan {
                    crate::injection::peers::PeerPlan::Live(_) => "live_peers",
                    crate::injection::peers::PeerPlan::FoundRing => "founds_ring",
                    crate::injection::peers::PeerPlan::AwaitFirst(_) => "await_first",
                };
                self.metrics.injections.get_or_create(&ReasonLabels { reason: plan }).inc();
                info!(summary = %injection.summary, warnings = injection.warnings.len(), dry_run = request.dry_run, "injected");
                if !request.dry_run {
                    let mut note = injection.summary.clone();
                    if !injection.warnings.is_empty() {
                        note = format!("{note}; warnings: {}", injection.warnings.join("; "));
                    }
                    self.events.publish(&facts.statefulset, &name, EventType::Normal, "Injected", note);
                }
                let warnings = injection.warnings.into_iter().map(truncate).collect();
                (response.with_patch(patch).with_warnings(warnings), "injected")
            }
            Decision::Deny(msg) => {
                if !request.dry_run {
                    self.events.publish(
                        &facts.statefulset,
                        &name,
                        EventType::Warning,
                        "InjectionDenied",
                        format!("{name}: {msg}"),
                    );
                }
                self.deny(response, "invalid", msg)
            }
        }
    }

    fn statefulset_response(&self, request: &Request<'_>) -> (Response, &'static str) {
        let response = request.respond();
        if request.kind.kind != "StatefulSet" || !matches!(request.operation.as_str(), "CREATE" | "UPDATE") {
            return (response, "unchanged");
        }
        let sts: StatefulSet = match request.object() {
            Ok(s) => s,
            Err(e) => return (response.deny(format!("cannot read the StatefulSet: {e}")), "denied"),
        };
        match decide_template(&sts) {
            TemplateDecision::Unchanged => (response, "unchanged"),
            TemplateDecision::Deny(msg) => (response.deny(msg), "denied"),
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
                (response.with_patch(patch).with_warnings(warnings), "relabelled")
            }
        }
    }

    fn not_ours(&self, response: Response, reason: NotOurs) -> (Response, &'static str) {
        self.metrics.skips.get_or_create(&ReasonLabels { reason: reason.reason() }).inc();
        (response, "skipped")
    }

    fn deny(&self, response: Response, reason: &'static str, message: String) -> (Response, &'static str) {
        self.metrics.denials.get_or_create(&ReasonLabels { reason }).inc();
        // Messages quote names from the request: a hostile one must not make a huge answer.
        let message = truncate_to(message, MAX_DENIAL);
        warn!(reason, %message, "denied");
        (response.deny(message), "denied")
    }
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

/// The JSON patch from `before` to `after`: the operations `json_patch::diff` gives for the two
/// pods' JSON, computed where the typed pods differ instead of on two whole serialized pods.
///
/// An injection changes the annotations and the container, init container and volume lists; the
/// rest of the pod (managed fields, untouched containers with their probes, ...) is compared typed
/// and never serialized, and within the lists only changed or added items are. Serializing and
/// diffing the whole pods took about 60% of answering a realistic review (BENCHMARKS.md). When
/// anything outside those parts differs, the whole pods are diffed as before.
pub fn pod_patch(mut before: Pod, mut after: Pod) -> Patch {
    let parts_before = InjectedParts::take(&mut before);
    let parts_after = InjectedParts::take(&mut after);
    if before == after {
        return parts_before.diff(&parts_after);
    }
    parts_before.put_back(&mut before);
    parts_after.put_back(&mut after);
    json_patch::diff(&to_value(&before), &to_value(&after))
}

/// The parts of a pod an injection changes.
struct InjectedParts {
    annotations: Option<std::collections::BTreeMap<String, String>>,
    containers: Vec<Container>,
    init_containers: Option<Vec<Container>>,
    volumes: Option<Vec<Volume>>,
}

impl InjectedParts {
    fn take(pod: &mut Pod) -> Self {
        let spec = pod.spec.as_mut();
        let (containers, init_containers, volumes) = match spec {
            Some(s) => (std::mem::take(&mut s.containers), s.init_containers.take(), s.volumes.take()),
            None => (Vec::new(), None, None),
        };
        Self { annotations: pod.metadata.annotations.take(), containers, init_containers, volumes }
    }

    fn put_back(self, pod: &mut Pod) {
        pod.metadata.annotations = self.annotations;
        if let Some(spec) = pod.spec.as_mut() {
            spec.containers = self.containers;
            spec.init_containers = self.init_containers;
            spec.volumes = self.volumes;
        }
    }

    /// Operations in the order `json_patch::diff` emits them for the same keys.
    fn diff(&self, after: &Self) -> Patch {
        let mut ops = Vec::new();
        optional_ops(
            &mut ops,
            PointerBuf::from_tokens(["metadata", "annotations"]),
            self.annotations.as_ref(),
            after.annotations.as_ref(),
            |ops, path, b, a| prefixed_diff(ops, path, &to_value(b), &to_value(a)),
        );
        list_ops(
            &mut ops,
            &PointerBuf::from_tokens(["spec", "containers"]),
            &self.containers,
            &after.containers,
        );
        optional_ops(
            &mut ops,
            PointerBuf::from_tokens(["spec", "initContainers"]),
            self.init_containers.as_ref(),
            after.init_containers.as_ref(),
            |ops, path, b, a| list_ops(ops, &path, b, a),
        );
        optional_ops(
            &mut ops,
            PointerBuf::from_tokens(["spec", "volumes"]),
            self.volumes.as_ref(),
            after.volumes.as_ref(),
            |ops, path, b, a| list_ops(ops, &path, b, a),
        );
        Patch(ops)
    }
}

fn to_value(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("Kubernetes objects serialize")
}

/// A field that may be absent on either side: added, removed, or compared by `both`.
fn optional_ops<T: Serialize>(
    ops: &mut Vec<PatchOperation>,
    path: PointerBuf,
    before: Option<&T>,
    after: Option<&T>,
    both: impl FnOnce(&mut Vec<PatchOperation>, PointerBuf, &T, &T),
) {
    match (before, after) {
        (None, None) => {}
        (None, Some(a)) => ops.push(PatchOperation::Add(AddOperation { path, value: to_value(a) })),
        (Some(_), None) => ops.push(PatchOperation::Remove(RemoveOperation { path })),
        (Some(b), Some(a)) => both(ops, path, b, a),
    }
}

/// Index by index, as `json_patch::diff` compares arrays; equal items are skipped unserialized.
fn list_ops<T: Serialize + PartialEq>(
    ops: &mut Vec<PatchOperation>,
    path: &PointerBuf,
    before: &[T],
    after: &[T],
) {
    let mut shift = 0;
    for idx in 0..before.len().max(after.len()) {
        let mut item = path.clone();
        item.push_back(idx - shift);
        match (before.get(idx), after.get(idx)) {
            (Some(b), Some(a)) if b != a => prefixed_diff(ops, item, &to_value(b), &to_value(a)),
            (Some(_), Some(_)) => {}
            (Some(_), None) => {
                shift += 1;
                ops.push(PatchOperation::Remove(RemoveOperation { path: item }));
            }
            (None, Some(a)) => ops.push(PatchOperation::Add(AddOperation { path: item, value: to_value(a) })),
            (None, None) => unreachable!("idx is below the longer length"),
        }
    }
}

/// `json_patch::diff(before, after)` with every path moved under `prefix`.
fn prefixed_diff(
    ops: &mut Vec<PatchOperation>,
    prefix: PointerBuf,
    before: &serde_json::Value,
    after: &serde_json::Value,
) {
    let under = |path: &mut PointerBuf| {
        let mut full = prefix.clone();
        full.append(&*path);
        *path = full;
    };
    for mut op in json_patch::diff(before, after).0 {
        match &mut op {
            PatchOperation::Add(o) => under(&mut o.path),
            PatchOperation::Remove(o) => under(&mut o.path),
            PatchOperation::Replace(o) => under(&mut o.path),
            PatchOperation::Test(o) => under(&mut o.path),
            PatchOperation::Move(o) => {
                under(&mut o.path);
                under(&mut o.from);
            }
            PatchOperation::Copy(o) => {
                under(&mut o.path);
                under(&mut o.from);
            }
        }
        ops.push(op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn fixture(path: &str) -> Value {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/admission/{path}",
            env!("CARGO_MANIFEST_DIR")
        ));
        let value: Value = serde_json::from_str(&text.unwrap()).unwrap();
        value.get("request").map_or(value.clone(), |r| r["object"].clone())
    }

    /// The fast patch applies to the same result as the whole-pod diff and has the same operations.
    fn check(before: &Value, after: &Value) {
        let (b, a): (Pod, Pod) =
            (serde_json::from_value(before.clone()).unwrap(), serde_json::from_value(after.clone()).unwrap());
        let whole = json_patch::diff(&to_value(&b), &to_value(&a));
        let fast = pod_patch(b.clone(), a.clone());
        let mut patched = to_value(&b);
        json_patch::patch(&mut patched, &fast).unwrap();
        assert_eq!(patched, to_value(&a));
        let sorted = |p: &Patch| {
            let mut ops: Vec<String> = p.0.iter().map(|o| serde_json::to_string(o).unwrap()).collect();
            ops.sort();
            ops
        };
        assert_eq!(sorted(&fast), sorted(&whole));
    }

    #[test]
    fn fast_patch_equals_the_whole_pod_diff() {
        let before = fixture("pod-create-redis-2.json");
        let after = fixture("pod-create-redis-2.injected.json");
        check(&before, &after);
        // Reinvocation-like: the injected pod stripped back (items removed, lists dropped).
        check(&after, &before);
        // Something outside the injected parts differs: the whole-pod diff is used.
        let mut relabelled = after.clone();
        relabelled["metadata"]["labels"]["extra"] = json!("x");
        relabelled["spec"]["hostname"] = json!("other");
        check(&before, &relabelled);
        // No annotations, no volumes, no init containers before.
        let mut bare = before.clone();
        for (parent, key) in [("metadata", "annotations"), ("spec", "volumes"), ("spec", "initContainers")] {
            bare[parent].as_object_mut().unwrap().remove(key);
        }
        check(&bare, &after);
        check(&after, &bare);
        check(&before, &before);
    }
}
