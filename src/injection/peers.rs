//! Which peers a new pod of a StatefulSet should `--peer`, from the pods alive at admission.
//!
//! A Supervisor resolves each `--peer` once, at start, and exits if a name does not resolve. A pod's
//! stable DNS name resolves only while the pod is in the headless Service's endpoints, so only pods
//! that are alive in that sense are offered (habitat.md, "How --peer behaves").

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

use crate::injection::supervisor_args::DEFAULT_GOSSIP_PORT;

/// Where the pods of one StatefulSet live in DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingAddress {
    pub statefulset: String,
    pub service: String,
    pub namespace: String,
    pub cluster_domain: String,
    pub gossip_port: u16,
}

impl RingAddress {
    /// `<svc>.<ns>.svc.<domain>`, the headless Service's name.
    pub fn service_fqdn(&self) -> String {
        format!("{}.{}.svc.{}", self.service, self.namespace, self.cluster_domain)
    }

    pub fn pod_name(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.statefulset)
    }

    /// `<sts>-<i>.<svc>.<ns>.svc.<domain>`, without a port.
    pub fn pod_fqdn(&self, ordinal: u32) -> String {
        format!("{}.{}", self.pod_name(ordinal), self.service_fqdn())
    }

    /// A `--peer` value: the pod's name, with `:port` only when gossip is not on the default port.
    pub fn peer(&self, ordinal: u32) -> String {
        let host = self.pod_fqdn(ordinal);
        if self.gossip_port == DEFAULT_GOSSIP_PORT { host } else { format!("{host}:{}", self.gossip_port) }
    }
}

/// The peers chosen for one pod, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPlan {
    /// Peer with these live members (sorted by ordinal).
    Live(Vec<String>),
    /// No member is alive and this is the first ordinal: start alone and found the ring.
    FoundRing,
    /// No member is alive and this is not the first ordinal (Parallel rollouts): peer the first
    /// ordinal, whose name will resolve once it has an IP; the container restarts until then.
    AwaitFirst(String),
}

impl PeerPlan {
    pub fn peers(&self) -> &[String] {
        match self {
            PeerPlan::Live(peers) => peers,
            PeerPlan::AwaitFirst(peer) => std::slice::from_ref(peer),
            PeerPlan::FoundRing => &[],
        }
    }
}

/// Chooses the peers for `own_ordinal` given the ordinals alive now (its own is ignored).
pub fn plan_peers(
    ring: &RingAddress,
    first_ordinal: u32,
    own_ordinal: u32,
    live: &BTreeSet<u32>,
) -> PeerPlan {
    let peers: Vec<String> = live.iter().filter(|&&o| o != own_ordinal).map(|&o| ring.peer(o)).collect();
    if !peers.is_empty() {
        PeerPlan::Live(peers)
    } else if own_ordinal == first_ordinal {
        PeerPlan::FoundRing
    } else {
        PeerPlan::AwaitFirst(ring.peer(first_ordinal))
    }
}

/// Whether a pod's DNS name resolves now: it exists, is not being deleted, has an IP, and is Ready
/// (or the Service publishes not-ready addresses).
pub fn resolves_in_dns(pod: &Pod, publish_not_ready: bool) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = &pod.status else { return false };
    let has_ip = status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty());
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    has_ip && (ready || publish_not_ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ring(port: u16) -> RingAddress {
        RingAddress {
            statefulset: "redis".into(),
            service: "redis-hl".into(),
            namespace: "db".into(),
            cluster_domain: "cluster.local".into(),
            gossip_port: port,
        }
    }

    fn set(o: &[u32]) -> BTreeSet<u32> {
        o.iter().copied().collect()
    }

    #[test]
    fn names_carry_namespace_service_and_domain() {
        assert_eq!(ring(9638).peer(2), "redis-2.redis-hl.db.svc.cluster.local");
        assert_eq!(ring(9700).peer(2), "redis-2.redis-hl.db.svc.cluster.local:9700");
        assert_eq!(ring(9638).service_fqdn(), "redis-hl.db.svc.cluster.local");
    }

    #[test]
    fn table() {
        let r = ring(9638);
        let cases: &[(&str, u32, u32, &[u32], PeerPlan)] = &[
            ("first rollout, pod 0", 0, 0, &[], PeerPlan::FoundRing),
            ("first rollout, pod 2", 0, 2, &[0, 1], PeerPlan::Live(vec![r.peer(0), r.peer(1)])),
            ("pod 0 recreated", 0, 0, &[1, 2], PeerPlan::Live(vec![r.peer(1), r.peer(2)])),
            ("own ordinal is never a peer", 0, 1, &[0, 1], PeerPlan::Live(vec![r.peer(0)])),
            ("parallel, nobody alive", 0, 3, &[], PeerPlan::AwaitFirst(r.peer(0))),
            ("ordinals start at 5", 5, 5, &[], PeerPlan::FoundRing),
            ("ordinals start at 5, pod 7", 5, 7, &[5], PeerPlan::Live(vec![r.peer(5)])),
            ("ordinals start at 5, pod 6 alone", 5, 6, &[], PeerPlan::AwaitFirst(r.peer(5))),
            ("only member left is itself", 0, 0, &[0], PeerPlan::FoundRing),
        ];
        for (what, first, own, live, want) in cases {
            assert_eq!(&plan_peers(&r, *first, *own, &set(live)), want, "{what}");
        }
    }

    fn pod(ip: Option<&str>, ready: bool, deleting: bool) -> Pod {
        let mut p = Pod::default();
        if deleting {
            p.metadata.deletion_timestamp = Some(Time(Default::default()));
        }
        p.status = Some(PodStatus {
            pod_ip: ip.map(Into::into),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn liveness_follows_dns() {
        assert!(resolves_in_dns(&pod(Some("10.0.0.1"), true, false), false));
        assert!(!resolves_in_dns(&pod(Some("10.0.0.1"), false, false), false));
        assert!(resolves_in_dns(&pod(Some("10.0.0.1"), false, false), true));
        assert!(!resolves_in_dns(&pod(None, true, false), true));
        assert!(!resolves_in_dns(&pod(Some(""), true, false), true));
        assert!(!resolves_in_dns(&pod(Some("10.0.0.1"), true, true), true));
        assert!(!resolves_in_dns(&Pod::default(), true));
    }
}
