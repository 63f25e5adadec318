//! Where the pods of one StatefulSet live in DNS: the names the identity environment gives the
//! Supervisor's container. Peers are not chosen here: the Supervisor reads them from a watch file
//! that the sidecar keeps equal to the other pods' IPs (docs/sidecar.md, "Peers").

/// The StatefulSet, its headless Service and where they live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingAddress {
    pub statefulset: String,
    pub service: String,
    pub namespace: String,
    pub cluster_domain: String,
}

impl RingAddress {
    /// `<svc>.<ns>.svc.<domain>`, the headless Service's name.
    pub fn service_fqdn(&self) -> String {
        format!("{}.{}.svc.{}", self.service, self.namespace, self.cluster_domain)
    }

    pub fn pod_name(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.statefulset)
    }

    /// `<sts>-<i>.<svc>.<ns>.svc.<domain>`.
    pub fn pod_fqdn(&self, ordinal: u32) -> String {
        format!("{}.{}", self.pod_name(ordinal), self.service_fqdn())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_namespace_service_and_domain() {
        let ring = RingAddress {
            statefulset: "redis".into(),
            service: "redis-hl".into(),
            namespace: "db".into(),
            cluster_domain: "cluster.local".into(),
        };
        assert_eq!(ring.pod_fqdn(2), "redis-2.redis-hl.db.svc.cluster.local");
        assert_eq!(ring.service_fqdn(), "redis-hl.db.svc.cluster.local");
        assert_eq!(ring.pod_name(0), "redis-0");
    }
}
