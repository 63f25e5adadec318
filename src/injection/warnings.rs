//! The warnings an injection comes with: what the user may want to fix, though the pod is
//! admitted. Each check appends its messages; the decision calls them in a fixed order, which is
//! the order the user reads them in.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};

use crate::injection::annotations::{self, PeerMode};
use crate::injection::facts::ServiceFact;
use crate::injection::peers::PeerPlan;
use crate::injection::supervisor_args::SupervisorFlags;

/// Checks the headless Service; returns whether not-ready pods resolve.
pub fn check_service(fact: &ServiceFact, name: &str, warnings: &mut Vec<String>) -> bool {
    let spec = match fact {
        ServiceFact::Unknown => return false,
        ServiceFact::Missing => {
            warnings.push(format!(
                "Service {name:?} (spec.serviceName) not found: peer names resolve once it exists"
            ));
            return false;
        }
        ServiceFact::Found(svc) => svc.spec.clone().unwrap_or_default(),
    };
    if spec.cluster_ip.as_deref() != Some("None") {
        warnings.push(format!(
            "Service {name:?} is not headless (clusterIP: None): pods get no stable DNS names"
        ));
    }
    let publish = spec.publish_not_ready_addresses == Some(true);
    if !publish {
        warnings.push(format!(
            "Service {name:?}: set publishNotReadyAddresses: true so peers resolve before Ready"
        ));
    }
    publish
}

pub fn check_statefulset(sts: &StatefulSet, flags: &SupervisorFlags, name: &str, warnings: &mut Vec<String>) {
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    if flags.leader_topology && replicas % 2 == 0 {
        warnings.push(format!(
            "StatefulSet {name:?} has {replicas} replicas: leader elections want an odd count"
        ));
    }
    if spec.pod_management_policy.as_deref() == Some("Parallel") {
        warnings.push(format!(
            "StatefulSet {name:?} is Parallel: pods may start with no live peer; consider {}=watch-file",
            annotations::PEER_MODE
        ));
    }
}

/// Warns unless `/hab/sup` is on a PersistentVolume: without its state a rescheduled supervisor is
/// a new member, and only the peers we inject bring it back into the ring.
pub fn check_state_volume(pod: &Pod, sup: &Container, warnings: &mut Vec<String>) {
    const STATE: &str = "/hab/sup";
    let covers = |m: &&VolumeMount| {
        let path = m.mount_path.trim_end_matches('/');
        STATE == path || STATE.starts_with(&format!("{path}/")) || path.is_empty()
    };
    let mount = sup.volume_mounts.iter().flatten().filter(covers).max_by_key(|m| m.mount_path.len());
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    let persistent = mount.is_some_and(|m| {
        volumes
            .into_iter()
            .flatten()
            .any(|v| v.name == m.name && (v.persistent_volume_claim.is_some() || v.ephemeral.is_some()))
    });
    if !persistent {
        warnings.push(format!(
            "/hab/sup of container {:?} is not on a PersistentVolume: restarts lose ring state",
            sup.name
        ));
    }
}

/// Peers the user passes themselves, or a first pod that must wait for a name to resolve.
pub fn check_peers(
    sup: &Container,
    plan: &PeerPlan,
    user_peers: bool,
    mode: PeerMode,
    warnings: &mut Vec<String>,
) {
    if user_peers {
        warnings.push(format!(
            "container {:?} already passes --peer or --peer-watch-file: left as is, no peers injected",
            sup.name
        ));
    }
    if let PeerPlan::AwaitFirst(first) = plan
        && !user_peers
        && mode == PeerMode::Args
    {
        warnings
            .push(format!("no member is alive yet: peering {first}; it restarts until that name resolves"));
    }
}

/// Peers given as args to a container with neither command nor args go to its image entrypoint.
pub fn check_entrypoint(sup: &Container, gives_args: bool, warnings: &mut Vec<String>) {
    if gives_args && sup.command.is_none() && sup.args.is_none() {
        warnings.push(format!(
            "container {:?} sets no command or args: peers are passed as args to its image entrypoint",
            sup.name
        ));
    }
}

/// A DNS label holds 63 characters.
pub fn check_pod_name(pod_name: &str, warnings: &mut Vec<String>) {
    if pod_name.len() > 63 {
        warnings.push(format!(
            "pod name {pod_name:?} is longer than 63 characters: its DNS name will not resolve"
        ));
    }
}

/// The role sidecar labels its pod with the pod's ServiceAccount token.
pub fn check_sidecar_access(
    token_mounted: bool,
    can_label: Option<bool>,
    service_account: &str,
    warnings: &mut Vec<String>,
) {
    if !token_mounted {
        warnings.push("no ServiceAccount token is mounted: the role sidecar cannot label its pod".to_owned());
    } else if can_label == Some(false) {
        warnings.push(format!(
            "ServiceAccount {service_account:?} may not patch pods: the role sidecar cannot label its pod (docs/sidecar.md)"
        ));
    }
}
