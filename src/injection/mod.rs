//! Applying an injection to a pod. Pure: a pod and a plan in, the mutated pod out. The admission
//! patch is the JSON diff between the two, so what the tests compare is what the API server stores.

pub mod env;
pub mod sidecar;
pub mod status;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Volume, VolumeMount};

pub use status::{InjectionStatus, strip_previous};

/// The emptyDir shared by the supervisor and the sidecar in watch-file mode.
pub const PEERS_VOLUME: &str = "habitat-bootstrap-peers";
pub const PEERS_DIR: &str = "/habitat-bootstrap";
pub const PEERS_FILE: &str = "/habitat-bootstrap/peers";

/// Everything to add to one pod.
#[derive(Debug, Clone)]
pub struct InjectionPlan {
    /// Index into `spec.containers` of the supervisor.
    pub supervisor: usize,
    /// `--peer` values to append to the supervisor's args.
    pub peer_args: Vec<String>,
    /// Watch-file mode: append `--peer-watch-file` and share the volume with the sidecar.
    pub peer_watch_file: bool,
    pub env: Vec<EnvVar>,
    pub sidecar: Option<Container>,
}

pub fn peers_volume_mount() -> VolumeMount {
    VolumeMount { name: PEERS_VOLUME.to_owned(), mount_path: PEERS_DIR.to_owned(), ..Default::default() }
}

/// Applies `plan` to `pod` (which must have had any previous injection stripped) and records it in
/// the status annotation. Variables the user already set keep the user's value.
pub fn apply(pod: &mut Pod, plan: InjectionPlan) -> InjectionStatus {
    let spec = pod.spec.get_or_insert_default();
    let sup = &mut spec.containers[plan.supervisor];
    let mut status = InjectionStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        supervisor: sup.name.clone(),
        peers: plan.peer_args.clone(),
        ..Default::default()
    };

    let args = sup.args.get_or_insert_default();
    for peer in &plan.peer_args {
        args.extend(["--peer".to_owned(), peer.clone()]);
    }
    if plan.peer_watch_file {
        args.extend(["--peer-watch-file".to_owned(), PEERS_FILE.to_owned()]);
        sup.volume_mounts.get_or_insert_default().push(peers_volume_mount());
        status.peer_watch_file = Some(PEERS_FILE.to_owned());
        status.volume = Some(PEERS_VOLUME.to_owned());
    }
    if args.is_empty() {
        sup.args = None;
    }

    let env = sup.env.get_or_insert_default();
    for var in plan.env {
        if !env.iter().any(|e| e.name == var.name) {
            status.env.push(var.name.clone());
            env.push(var);
        }
    }

    if plan.peer_watch_file {
        spec.volumes.get_or_insert_default().push(Volume {
            name: PEERS_VOLUME.to_owned(),
            empty_dir: Some(Default::default()),
            ..Default::default()
        });
    }
    if let Some(sidecar) = plan.sidecar {
        status.sidecar = Some(sidecar.name.clone());
        // Native sidecars are init containers; appended last so that the user's init containers
        // (which may prepare /hab) run first, as they would without us.
        if sidecar.restart_policy.as_deref() == Some("Always") {
            spec.init_containers.get_or_insert_default().push(sidecar);
        } else {
            spec.containers.push(sidecar);
        }
    }
    status.write(pod);
    status
}
