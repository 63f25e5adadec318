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
        return parts_before.diff(parts_after);
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
    fn diff(self, after: Self) -> Patch {
        let mut ops = Vec::new();
        optional_ops(
            &mut ops,
            PointerBuf::from_tokens(["metadata", "annotations"]),
            self.annotations,
            after.annotations,
            |ops, path, b, a| prefixed_diff(ops, path, &to_value(&b), &to_value(&a)),
        );
        let containers = PointerBuf::from_tokens(["spec", "containers"]);
        list_ops(&mut ops, containers, self.containers, after.containers, container_ops);
        optional_ops(
            &mut ops,
            PointerBuf::from_tokens(["spec", "initContainers"]),
            self.init_containers,
            after.init_containers,
            |ops, path, b, a| list_ops(ops, path, b, a, container_ops),
        );
        optional_ops(
            &mut ops,
            PointerBuf::from_tokens(["spec", "volumes"]),
            self.volumes,
            after.volumes,
            |ops, path, b, a| list_ops(ops, path, b, a, whole_diff),
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
    before: Option<T>,
    after: Option<T>,
    both: impl FnOnce(&mut Vec<PatchOperation>, PointerBuf, T, T),
) {
    match (before, after) {
        (None, None) => {}
        (None, Some(a)) => ops.push(PatchOperation::Add(AddOperation { path, value: to_value(&a) })),
        (Some(_), None) => ops.push(PatchOperation::Remove(RemoveOperation { path })),
        (Some(b), Some(a)) => both(ops, path, b, a),
    }
}

/// Index by index, as `json_patch::diff` compares arrays; equal items are skipped unserialized,
/// changed ones compared by `changed`.
fn list_ops<T: Serialize + PartialEq>(
    ops: &mut Vec<PatchOperation>,
    path: PointerBuf,
    before: Vec<T>,
    after: Vec<T>,
    changed: fn(&mut Vec<PatchOperation>, PointerBuf, T, T),
) {
    let (mut before, mut after) = (before.into_iter(), after.into_iter());
    let mut idx = 0;
    loop {
        let mut item = path.clone();
        item.push_back(idx);
        match (before.next(), after.next()) {
            (Some(b), Some(a)) if b != a => changed(ops, item, b, a),
            (Some(_), Some(_)) => {}
            // The array shrinks: every surplus item is removed at the same index.
            (Some(_), None) => {
                ops.push(PatchOperation::Remove(RemoveOperation { path: item }));
                continue;
            }
            (None, Some(a)) => {
                ops.push(PatchOperation::Add(AddOperation { path: item, value: to_value(&a) }))
            }
            (None, None) => return,
        }
        idx += 1;
    }
}

fn whole_diff<T: Serialize>(ops: &mut Vec<PatchOperation>, path: PointerBuf, before: T, after: T) {
    prefixed_diff(ops, path, &to_value(&before), &to_value(&after));
}

/// A changed container. An injection changes the Supervisor's args, env and volume mounts: when
/// nothing else differs, only those lists are compared (item by item), and the container's probes,
/// resources and the rest are never serialized.
fn container_ops(
    ops: &mut Vec<PatchOperation>,
    path: PointerBuf,
    mut before: Container,
    mut after: Container,
) {
    let lists = |c: &mut Container| (c.args.take(), c.env.take(), c.volume_mounts.take());
    let (args_before, env_before, mounts_before) = lists(&mut before);
    let (args_after, env_after, mounts_after) = lists(&mut after);
    if before != after {
        (before.args, before.env, before.volume_mounts) = (args_before, env_before, mounts_before);
        (after.args, after.env, after.volume_mounts) = (args_after, env_after, mounts_after);
        return whole_diff(ops, path, before, after);
    }
    let field = |name: &str| {
        let mut p = path.clone();
        p.push_back(name);
        p
    };
    optional_ops(ops, field("args"), args_before, args_after, |ops, p, b, a| {
        list_ops(ops, p, b, a, whole_diff)
    });
    optional_ops(ops, field("env"), env_before, env_after, |ops, p, b, a| list_ops(ops, p, b, a, whole_diff));
    optional_ops(ops, field("volumeMounts"), mounts_before, mounts_after, |ops, p, b, a| {
        list_ops(ops, p, b, a, whole_diff)
    });
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
        // Within a container: more than its lists differs (whole-container diff), or a list
        // appears, disappears or shrinks.
        let mut reimaged = after.clone();
        reimaged["spec"]["containers"][0]["image"] = json!("other:1");
        check(&before, &reimaged);
        let mut no_lists = before.clone();
        for key in ["args", "env", "volumeMounts"] {
            no_lists["spec"]["containers"][0].as_object_mut().unwrap().remove(key);
        }
        check(&no_lists, &after);
        check(&after, &no_lists);
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
