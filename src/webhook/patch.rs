//! The JSON patch of an injection, computed where the typed pods differ (see [`pod_patch`]).

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use serde::Serialize;

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
