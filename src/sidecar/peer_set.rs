//! Which addresses go in the peer watch file: a pure function of the pods the watch sees.
//!
//! The Supervisor reads the file line by line, appends `:9638` to a line without a colon, and
//! terminates on any line that does not resolve, a blank one included (habitat.md,
//! "--peer-watch-file"). Pod IPs resolve by construction, and an IPv6 address always gets its
//! port in brackets: bare, its colons would stop the Supervisor from adding the default port.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use crate::injection::pod_identity::statefulset_owner;
use crate::injection::supervisor_args::DEFAULT_GOSSIP_PORT;

/// Whose pods count as peers of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSelector {
    pub statefulset: String,
    pub own_pod: String,
    pub gossip_port: u16,
}

impl PeerSelector {
    /// Another live pod of the same StatefulSet, with an address.
    fn peer_ip(&self, pod: &Pod) -> Option<IpAddr> {
        let meta = &pod.metadata;
        if meta.name.as_deref() == Some(self.own_pod.as_str()) || meta.deletion_timestamp.is_some() {
            return None;
        }
        let owned_by_statefulset = statefulset_owner(pod).is_some_and(|owner| owner.name == self.statefulset);
        if !owned_by_statefulset {
            return None;
        }
        let status = pod.status.as_ref()?;
        // A finished pod keeps its IP in status, but the IP may already belong to another pod.
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let ips = status
            .pod_ips
            .iter()
            .flatten()
            .map(|ip| ip.ip.as_str())
            .chain(status.pod_ip.as_deref())
            .filter_map(|ip| ip.parse::<IpAddr>().ok());
        // The Supervisor resolves `--peer` names to IPv4; prefer it on dual-stack pods.
        let mut first = None;
        for ip in ips {
            if ip.is_ipv4() {
                return Some(ip);
            }
            first.get_or_insert(ip);
        }
        first
    }

    fn line(&self, ip: IpAddr) -> String {
        match ip {
            IpAddr::V4(ip) if self.gossip_port == DEFAULT_GOSSIP_PORT => ip.to_string(),
            IpAddr::V4(ip) => format!("{ip}:{}", self.gossip_port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", self.gossip_port),
        }
    }
}

/// The watch file's content: one address per line, sorted, each line ended by a newline; no peers
/// gives the empty string (the Supervisor reads an empty file as no peers, like an absent one).
pub fn peer_file_content<'p>(pods: impl IntoIterator<Item = &'p Pod>, selector: &PeerSelector) -> String {
    let ips: BTreeSet<IpAddr> = pods.into_iter().filter_map(|pod| selector.peer_ip(pod)).collect();
    ips.into_iter().map(|ip| selector.line(ip) + "\n").collect()
}
