//! Which addresses go in the peer watch file: a pure function of the pods the watch sees.
//!
//! The Supervisor reads the file line by line, appends `:9638` to a line without a colon, and
//! terminates on any line that does not resolve, a blank one included (habitat.md,
//! "--peer-watch-file"). Pod IPs resolve by construction, and an IPv6 address always gets its
//! port in brackets: bare, its colons would stop the Supervisor from adding the default port.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use crate::injection::pod_identity::{POD_INDEX_LABEL, statefulset_owner};
use crate::injection::supervisor_args::DEFAULT_GOSSIP_PORT;

/// The ordinals whose pods this one watches: the first three, and those a power of two away on
/// either side (1, 2, 4, … 2^15). A lone Supervisor needs one live member to join, and reads the
/// file only while alone; after that gossip keeps the ring. Each pod watching every other made a
/// rollout cost n² watch events; this way a pod's change reaches about 2·log2(n) watchers (every
/// watcher when it is one of the first three), and a joining pod still has ~2·log2(n) + 3
/// candidates: its neighbours in an ordered rollout, pod 0 in a parallel one, and enough spread
/// that losing a range of pods leaves it some.
pub fn watched_ordinals(own: u32) -> BTreeSet<u32> {
    let near = (0..16).map(|k| 1u32 << k).flat_map(|d| [own.checked_sub(d), own.checked_add(d)]);
    [0, 1, 2].into_iter().chain(near.flatten()).filter(|&i| i != own).collect()
}

/// The label selector of the sidecar's pod watch: the StatefulSet's selector, narrowed to the
/// watched ordinals when the pod's ordinal is known from its pod-index label (API servers without
/// that label, PodIndexLabel off, get the whole StatefulSet).
pub fn watch_selector(pod_selector: &str, own_index: Option<u32>) -> String {
    match own_index {
        None => pod_selector.to_owned(),
        Some(own) => {
            let ordinals: Vec<String> = watched_ordinals(own).iter().map(u32::to_string).collect();
            let narrowed = format!("{POD_INDEX_LABEL} in ({})", ordinals.join(","));
            if pod_selector.is_empty() { narrowed } else { format!("{pod_selector},{narrowed}") }
        }
    }
}

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
