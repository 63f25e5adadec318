//! Applying an injection to a pod. Pure: a pod and a plan in, the mutated pod out. The admission
//! patch is the JSON diff between the two, so what the tests compare is what the API server stores.
//!
//! Applying reconciles rather than appends: an item we injected before (named in the status
//! record) is kept where it is when it still says what we would write — the API server defaults
//! fields of what we added (`fieldRef.apiVersion`, probe timeouts, ...) before it calls us again
//! on reinvocation, and other webhooks may add to it — replaced in place when it says something
//! else, and removed when we no longer inject it. A second call with the same facts yields no patch.

pub mod env;
pub mod sidecar;
pub mod status;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, Volume, VolumeMount};
use serde::Serialize;
use serde_json::Value;

pub use status::{InjectionStatus, strip_previous};

/// The emptyDir shared by the supervisor (its `--peer-watch-file`) and the sidecar (which writes it).
pub const PEERS_VOLUME: &str = "habitat-bootstrap-peers";
pub const PEERS_DIR: &str = "/habitat-bootstrap";
pub const PEERS_FILE: &str = "/habitat-bootstrap/peers";
/// The emptyDir that keeps the Supervisor's `/hab/sup` across container restarts when no volume of
/// the user's does (then a restart in place rejoins under the same member id).
pub const STATE_VOLUME: &str = "habitat-supervisor-state";
pub const STATE_DIR: &str = "/hab/sup";

/// Everything to add to one pod.
#[derive(Debug, Clone)]
pub struct InjectionPlan {
    /// Name of the supervisor container.
    pub supervisor: String,
    /// `--peer-watch-file` on the supervisor (false when the user passes peers themselves).
    pub peer_watch_file: bool,
    pub env: Vec<EnvVar>,
    /// Volumes we add, each with its mount in the supervisor container.
    pub volumes: Vec<(Volume, VolumeMount)>,
    /// Volumes we add that only the sidecar mounts (its own API token).
    pub sidecar_volumes: Vec<Volume>,
    /// The Secret named by the ring key variable in `env`, for the record.
    pub ring_key_secret: Option<String>,
    pub sidecar: Option<Container>,
}

pub fn peers_volume() -> (Volume, VolumeMount) {
    empty_dir(PEERS_VOLUME, PEERS_DIR)
}

pub fn state_volume() -> (Volume, VolumeMount) {
    empty_dir(STATE_VOLUME, STATE_DIR)
}

fn empty_dir(name: &str, mount_path: &str) -> (Volume, VolumeMount) {
    let volume = Volume { name: name.to_owned(), empty_dir: Some(Default::default()), ..Default::default() };
    let mount =
        VolumeMount { name: name.to_owned(), mount_path: mount_path.to_owned(), ..Default::default() };
    (volume, mount)
}

/// Applies `plan` to `pod`, reconciling with what the pod's status record says we injected before,
/// and records the result. Variables the user set keep the user's value.
pub fn apply(pod: &mut Pod, plan: InjectionPlan) -> InjectionStatus {
    let previous = InjectionStatus::read(pod).unwrap_or_default();
    let spec = pod.spec.get_or_insert_default();
    let mut status = InjectionStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        supervisor: plan.supervisor.clone(),
        peer_watch_file: plan.peer_watch_file.then(|| PEERS_FILE.to_owned()),
        volumes: plan
            .volumes
            .iter()
            .map(|(v, _)| &v.name)
            .chain(plan.sidecar_volumes.iter().map(|v| &v.name))
            .cloned()
            .collect(),
        ring_key_secret: plan.ring_key_secret.clone(),
        sidecar: plan.sidecar.as_ref().map(|c| c.name.clone()),
        ..Default::default()
    };
    let same_supervisor = previous.supervisor == plan.supervisor;
    let ours_before = |name: &str| same_supervisor && previous.env.iter().any(|e| e == name);

    if let Some(sup) = spec.containers.iter_mut().find(|c| c.name == plan.supervisor) {
        reconcile_args(sup, &previous, &status);
        let env = sup.env.get_or_insert_default();
        for var in plan.env {
            match env.iter().position(|e| e.name == var.name) {
                Some(i) if ours_before(&var.name) => {
                    upsert_at(env, i, var.clone());
                    status.env.push(var.name);
                }
                Some(_) => {} // the user's own: theirs wins
                None => {
                    status.env.push(var.name.clone());
                    env.push(var);
                }
            }
        }
        env.retain(|e| !ours_before(&e.name) || status.env.contains(&e.name));
        let mounts = sup.volume_mounts.get_or_insert_default();
        let mounts_before = if same_supervisor { previous.volumes.as_slice() } else { &[] };
        reconcile_set(mounts, |m| &m.name, mounts_before, plan.volumes.iter().map(|(_, m)| m.clone()));
        tidy(&mut sup.env);
        tidy(&mut sup.volume_mounts);
    }

    let volumes = spec.volumes.get_or_insert_default();
    let wanted = plan.volumes.into_iter().map(|(v, _)| v).chain(plan.sidecar_volumes);
    reconcile_set(volumes, |v| &v.name, &previous.volumes, wanted);
    tidy(&mut spec.volumes);
    reconcile_sidecar(spec, previous.sidecar.as_deref(), plan.sidecar);
    if status != previous {
        status.write(pod);
    }
    status
}

/// [`reconcile_named`] for a set of items: each wanted one is kept, replaced or added; each we
/// added before and no longer want is removed.
fn reconcile_set<T: Serialize>(
    items: &mut Vec<T>,
    name: impl Fn(&T) -> &String,
    previous: &[String],
    wanted: impl IntoIterator<Item = T>,
) {
    let mut kept = Vec::new();
    for item in wanted {
        let item_name = name(&item).clone();
        let before = previous.iter().find(|p| **p == item_name).map(String::as_str);
        reconcile_named(items, &name, before, Some(item));
        kept.push(item_name);
    }
    items.retain(|i| !previous.contains(name(i)) || kept.contains(name(i)));
}

/// Ends the supervisor's args with our `--peer-watch-file`, unless they are
/// already there as we left them.
fn reconcile_args(sup: &mut Container, previous: &InjectionStatus, now: &InjectionStatus) {
    let tail = |s: &InjectionStatus| -> Vec<String> {
        s.peer_watch_file.iter().flat_map(|f| ["--peer-watch-file".to_owned(), f.clone()]).collect()
    };
    let (old, new) = (tail(previous), tail(now));
    let args = sup.args.get_or_insert_default();
    if old == new && !new.is_empty() && args.ends_with(&new) {
        return;
    }
    if previous.supervisor == now.supervisor {
        strip_previous_args(args, previous);
    }
    args.extend(new);
    tidy(&mut sup.args);
}

fn strip_previous_args(args: &mut Vec<String>, previous: &InjectionStatus) {
    let mut container = Container { args: Some(std::mem::take(args)), ..Default::default() };
    if let Some(path) = &previous.peer_watch_file {
        status::remove_flag_values(&mut container, "--peer-watch-file", std::slice::from_ref(path));
    }
    *args = container.args.unwrap_or_default();
}

/// The role sidecar: kept when what is there covers what we would write, replaced where it is
/// when not, moved when it changes between native (init) and regular container, removed when no
/// longer wanted.
fn reconcile_sidecar(spec: &mut PodSpec, previous: Option<&str>, wanted: Option<Container>) {
    let native = wanted.as_ref().is_some_and(|c| c.restart_policy.as_deref() == Some("Always"));
    let (home, away) = if native {
        (spec.init_containers.get_or_insert_default(), &mut spec.containers)
    } else {
        (&mut spec.containers, spec.init_containers.get_or_insert_default())
    };
    let name = wanted.as_ref().map(|c| c.name.as_str()).or(previous);
    if let Some(name) = name.filter(|n| Some(*n) == previous) {
        away.retain(|c| c.name != name);
    }
    reconcile_named(home, |c| &c.name, previous, wanted);
    tidy(&mut spec.init_containers);
}

/// In `items`, makes the one named like `wanted` cover `wanted` (or removes the item `previous`
/// named when nothing is wanted). Only items we recorded are replaced or removed.
fn reconcile_named<T: Serialize>(
    items: &mut Vec<T>,
    name: impl Fn(&T) -> &String,
    previous: Option<&str>,
    wanted: Option<T>,
) {
    let Some(wanted) = wanted else {
        if let Some(previous) = previous {
            items.retain(|i| name(i) != previous);
        }
        return;
    };
    match items.iter().position(|i| name(i) == name(&wanted)) {
        Some(i) if previous == Some(name(&wanted).as_str()) => upsert_at(items, i, wanted),
        // Someone else's item of the same name: the decision refuses such pods before we get here.
        Some(_) => {}
        None => items.push(wanted),
    }
}

/// Replaces `items[i]` with `wanted` unless it already says everything `wanted` says.
fn upsert_at<T: Serialize>(items: &mut [T], i: usize, wanted: T) {
    if !covers(&items[i], &wanted) {
        items[i] = wanted;
    }
}

/// Whether `existing` says everything `wanted` does: every field `wanted` sets has the same value
/// in `existing`, which may set more (defaults the API server filled in, additions by others). An
/// empty value is the same as none: the API server omits empty strings and lists (`omitempty`).
pub fn covers<T: Serialize>(existing: &T, wanted: &T) -> bool {
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        }
    }
    fn sub(existing: &Value, wanted: &Value) -> bool {
        match (existing, wanted) {
            (Value::Object(e), Value::Object(w)) => {
                w.iter().all(|(k, wv)| e.get(k).map_or(empty(wv), |ev| sub(ev, wv)))
            }
            (Value::Array(e), Value::Array(w)) => {
                e.len() == w.len() && e.iter().zip(w).all(|(ev, wv)| sub(ev, wv))
            }
            _ => existing == wanted,
        }
    }
    match (serde_json::to_value(existing), serde_json::to_value(wanted)) {
        (Ok(e), Ok(w)) => sub(&e, &w),
        _ => false,
    }
}

/// An empty list is written as no list, as the user would have.
fn tidy<T>(list: &mut Option<Vec<T>>) {
    if list.as_ref().is_some_and(Vec::is_empty) {
        *list = None;
    }
}

#[cfg(test)]
mod tests {
    use super::covers;
    use serde_json::json;

    #[test]
    fn covers_allows_defaults_and_omitted_empties_only() {
        let wanted =
            json!({"name": "a", "value": "", "valueFrom": {"fieldRef": {"fieldPath": "x"}}, "l": [1]});
        let defaulted =
            json!({"name": "a", "valueFrom": {"fieldRef": {"fieldPath": "x", "apiVersion": "v1"}}, "l": [1]});
        assert!(covers(&defaulted, &wanted));
        let other_value =
            json!({"name": "a", "value": "b", "valueFrom": {"fieldRef": {"fieldPath": "x"}}, "l": [1]});
        assert!(!covers(&other_value, &wanted));
        assert!(!covers(
            &json!({"name": "a", "valueFrom": {"fieldRef": {"fieldPath": "y"}}, "l": [1]}),
            &wanted
        ));
        assert!(!covers(
            &json!({"name": "a", "valueFrom": {"fieldRef": {"fieldPath": "x"}}, "l": [1, 2]}),
            &wanted
        ));
        assert!(!covers(&json!({"name": "a"}), &json!({"name": "a", "n": 0})));
    }
}
