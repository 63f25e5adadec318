//! The warnings an injection comes with: what the user may want to fix, though the pod is
//! admitted. Each check appends its messages; the decision calls them in a fixed order, which is
//! the order the user reads them in.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Container;

use crate::injection::annotations;
use crate::injection::facts::ServiceFact;
use crate::injection::supervisor_args::SupervisorFlags;

/// Checks the headless Service that gives the pods the DNS names in their identity environment.
pub fn check_service(fact: &ServiceFact, name: &str, warnings: &mut Vec<String>) {
    let spec = match fact {
        ServiceFact::Unknown => return,
        ServiceFact::Missing => {
            warnings.push(format!(
                "Service {name:?} (spec.serviceName) not found: pod DNS names resolve once it exists"
            ));
            return;
        }
        ServiceFact::Found(svc) => svc.spec.clone().unwrap_or_default(),
    };
    if spec.cluster_ip.as_deref() != Some("None") {
        warnings.push(format!(
            "Service {name:?} is not headless (clusterIP: None): pods get no stable DNS names"
        ));
    }
    if spec.publish_not_ready_addresses != Some(true) {
        warnings.push(format!(
            "Service {name:?}: set publishNotReadyAddresses: true so pod DNS names resolve before Ready"
        ));
    }
}

pub fn check_statefulset(sts: &StatefulSet, flags: &SupervisorFlags, name: &str, warnings: &mut Vec<String>) {
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    if flags.leader_topology && replicas % 2 == 0 {
        warnings.push(format!(
            "StatefulSet {name:?} has {replicas} replicas: leader elections want an odd count"
        ));
    }
}

/// Where `/hab/sup` lives decides what a restart keeps: the member id and the ring's saved rumors.
pub fn check_state_volume(sup: &Container, persistent: bool, shared: bool, warnings: &mut Vec<String>) {
    if !persistent {
        warnings.push(format!(
            "/hab/sup of container {:?} is not on a PersistentVolume: a recreated pod joins under a new \
             member id (its dead predecessor is departed by the sidecar)",
            sup.name
        ));
    }
    if !shared {
        warnings.push(format!(
            "the volume of /hab/sup in container {:?} uses subPathExpr: the sidecar cannot share it, so \
             it neither departs dead predecessors nor lets a ring that moved find itself again",
            sup.name
        ));
    }
}

/// Peers the user passes themselves, or the former `--peer` mode asked for.
pub fn check_peers(sup: &Container, user_peers: bool, legacy_peer_mode: bool, warnings: &mut Vec<String>) {
    if user_peers {
        warnings.push(format!(
            "container {:?} already passes --peer or --peer-watch-file: left as is, no peer file injected",
            sup.name
        ));
    }
    if legacy_peer_mode {
        warnings.push(format!(
            "{}=peer is no longer offered (a --peer list fixed at admission crash-loops restarts after a \
             scale-down): the peer watch file is used",
            annotations::PEER_MODE
        ));
    }
}

/// Arguments given to a container with neither command nor args go to its image entrypoint.
pub fn check_entrypoint(sup: &Container, gives_args: bool, warnings: &mut Vec<String>) {
    if gives_args && sup.command.is_none() && sup.args.is_none() {
        warnings.push(format!(
            "container {:?} sets no command or args: --peer-watch-file is passed to its image entrypoint",
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

/// The role sidecar labels its pod with the pod's ServiceAccount token: its own when the pod mounts
/// none, else the one every container of the pod shares.
pub fn check_sidecar_access(
    token_shared: bool,
    can_label: Option<bool>,
    service_account: &str,
    warnings: &mut Vec<String>,
) {
    if can_label == Some(false) {
        warnings.push(format!(
            "ServiceAccount {service_account:?} may not patch pods: the role sidecar cannot label its pod (docs/sidecar.md)"
        ));
    } else if token_shared {
        warnings.push(
            "the ServiceAccount token is mounted in every container: the application shares the sidecar's \
             right to patch pods; set automountServiceAccountToken: false in the pod template and the \
             sidecar alone gets a token"
                .to_owned(),
        );
    }
}
