//! What the webhook puts in a pod, read back from the API server: the end-to-end tests
//! (`tests/e2e.rs`, `tests/e2e_big_rings/main.rs`) check stored pods with these.

use k8s_openapi::api::core::v1::{Container, Pod};

pub const PEERS_FILE: &str = "/habitat-bootstrap/peers";

pub fn supervisor(pod: &Pod) -> &Container {
    &pod.spec.as_ref().unwrap().containers[0]
}

pub fn sidecar(pod: &Pod) -> &Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers.iter().flatten().chain(&spec.containers).find(|c| c.name == "habitat-role").unwrap()
}

pub fn args(container: &Container) -> Vec<String> {
    container.args.clone().unwrap_or_default()
}

/// The value after `flag` in a container's args.
pub fn flag(container: &Container, name: &str) -> Option<String> {
    args(container).windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

pub fn env(pod: &Pod, name: &str) -> Option<String> {
    supervisor(pod).env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
}

/// The Secret (and key) the Supervisor's `HAB_RING_KEY` comes from.
pub fn ring_key_ref(pod: &Pod) -> Option<(String, String)> {
    let var = supervisor(pod).env.iter().flatten().find(|e| e.name == "HAB_RING_KEY")?;
    let selector = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
    Some((selector.name.clone(), selector.key.clone()))
}

pub fn sidecars(pod: &Pod) -> usize {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers.iter().flatten().chain(&spec.containers).filter(|c| c.name == "habitat-role").count()
}

pub fn volume_names(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().unwrap().volumes.iter().flatten().map(|v| v.name.clone()).collect()
}

pub fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.pod_ip.as_ref()).is_some()
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What every injected pod carries: the status record, the identity env, one sidecar; the peer
/// watch file (never a `--peer`) on the volume both containers mount; the Supervisor's state
/// shared with the sidecar.
#[track_caller]
pub fn assert_injected(pod: &Pod) {
    let name = pod.metadata.name.as_deref().unwrap();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.contains_key("habitat/bootstrap-status"), "{name}: no status annotation");
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("habitat/injected").map(String::as_str), Some("true"), "{name}: injected label");
    assert_eq!(sidecars(pod), 1, "{name}: one sidecar");
    assert!(env(pod, "HABITAT_BOOTSTRAP_SERVICE_FQDN").is_some(), "{name}: identity env");
    assert!(env(pod, "HABITAT_BOOTSTRAP_PEERS").is_none(), "{name}: no peer list env");
    let sup = args(supervisor(pod));
    assert_eq!(&sup[sup.len() - 2..], ["--peer-watch-file", PEERS_FILE], "{name}: {sup:?}");
    assert!(!sup.iter().any(|a| a == "--peer"), "{name}: no --peer: {sup:?}");
    assert_eq!(volume_names(pod).iter().filter(|v| *v == "habitat-bootstrap-peers").count(), 1, "{name}");
    let mounted = |c: &Container, volume: &str, path: &str| {
        c.volume_mounts.iter().flatten().any(|m| m.name == volume && m.mount_path == path)
    };
    assert!(mounted(supervisor(pod), "habitat-bootstrap-peers", "/habitat-bootstrap"), "{name}");
    assert!(mounted(sidecar(pod), "habitat-bootstrap-peers", "/habitat-bootstrap"), "{name}");
    assert_eq!(flag(sidecar(pod), "--peer-watch-file").as_deref(), Some(PEERS_FILE), "{name}");
    // The state volume: whatever the supervisor mounts at /hab/sup, the sidecar at /habitat-supervisor.
    let state = supervisor(pod).volume_mounts.iter().flatten().find(|m| m.mount_path == "/hab/sup");
    let state = state.unwrap_or_else(|| panic!("{name}: nothing at /hab/sup")).name.clone();
    assert!(mounted(sidecar(pod), &state, "/habitat-supervisor"), "{name}: the sidecar shares {state}");
    assert_eq!(
        flag(sidecar(pod), "--sup-state-dir").as_deref(),
        Some("/habitat-supervisor/default"),
        "{name}"
    );
}

pub fn assert_untouched(pod: &Pod) {
    let name = pod.metadata.name.as_deref().unwrap();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert!(!annotations.contains_key("habitat/bootstrap-status"), "{name} was injected");
    assert!(
        !pod.metadata.labels.iter().flatten().any(|(k, _)| k == "habitat/injected"),
        "{name}: injected label"
    );
    assert_eq!(sidecars(pod), 0, "{name} got a sidecar");
    assert!(!args(supervisor(pod)).iter().any(|a| a.starts_with("--peer")), "{name} got peers");
    assert!(ring_key_ref(pod).is_none(), "{name} got a ring key");
}
