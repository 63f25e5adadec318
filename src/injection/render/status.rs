//! The status annotation: a record of what we injected, so that a second admission call (webhook
//! reinvocation, or a replayed request) removes our previous injection and renders it afresh
//! instead of stacking a second copy (Istio's `sidecar.istio.io/status` does the same).

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};

use crate::injection::annotations::{INJECTED, STATUS};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectionStatus {
    /// hab-bootstrap version that injected.
    pub version: String,
    /// The container given peers and env.
    pub supervisor: String,
    /// `--peer-watch-file` path we appended (none when the user passes peers themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_watch_file: Option<String>,
    /// Environment variables we added to the supervisor (not those the user had set).
    #[serde(default)]
    pub env: Vec<String>,
    /// The role sidecar container, when injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<String>,
    /// Volumes we added: the peer file's and `/hab/sup`'s when no volume of the user's keeps it
    /// (mounted in the supervisor), and the sidecar's own API token (mounted in the sidecar alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The Secret the ring key comes from, when we gave the Supervisor one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_key_secret: Option<String>,
}

impl InjectionStatus {
    pub fn read(pod: &Pod) -> Option<Self> {
        let raw = pod.metadata.annotations.as_ref()?.get(STATUS)?;
        serde_json::from_str(raw).ok()
    }

    /// The record, and the label that marks the pod injected.
    pub fn write(&self, pod: &mut Pod) {
        let raw = serde_json::to_string(self).expect("status serializes");
        pod.metadata.annotations.get_or_insert_default().insert(STATUS.to_owned(), raw);
        pod.metadata.labels.get_or_insert_default().insert(INJECTED.to_owned(), "true".to_owned());
    }
}

/// Removes a previous injection recorded in the pod's status annotation, the annotation and the
/// injected label with it. Only what the record names is removed; an unreadable record is dropped
/// and treated as no injection.
pub fn strip_previous(pod: &mut Pod) {
    let previous = InjectionStatus::read(pod);
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(STATUS);
    }
    if let Some(l) = pod.metadata.labels.as_mut() {
        l.remove(INJECTED);
    }
    let Some(previous) = previous else { return };
    let Some(spec) = pod.spec.as_mut() else { return };
    if let Some(sup) = spec.containers.iter_mut().find(|c| c.name == previous.supervisor) {
        if let Some(path) = &previous.peer_watch_file {
            remove_flag_values(sup, "--peer-watch-file", std::slice::from_ref(path));
        }
        if let Some(env) = sup.env.as_mut() {
            env.retain(|e| !previous.env.contains(&e.name));
        }
        if let Some(mounts) = sup.volume_mounts.as_mut() {
            mounts.retain(|m| !previous.volumes.contains(&m.name));
        }
    }
    if let Some(sidecar) = &previous.sidecar {
        spec.containers.retain(|c| &c.name != sidecar);
        if let Some(init) = spec.init_containers.as_mut() {
            init.retain(|c| &c.name != sidecar);
        }
    }
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| !previous.volumes.contains(&v.name));
    }
}

/// Removes each `flag value` pair (as two tokens, or as `flag=value`) whose value is in `values`.
pub(crate) fn remove_flag_values(container: &mut Container, flag: &str, values: &[String]) {
    let Some(args) = container.args.as_mut() else { return };
    let mut kept = Vec::with_capacity(args.len());
    let mut tokens = std::mem::take(args).into_iter().peekable();
    while let Some(token) = tokens.next() {
        if token == flag && tokens.peek().is_some_and(|v| values.contains(v)) {
            tokens.next();
            continue;
        }
        if token
            .strip_prefix(flag)
            .and_then(|r| r.strip_prefix('='))
            .is_some_and(|v| values.iter().any(|x| x == v))
        {
            continue;
        }
        kept.push(token);
    }
    container.args = (!kept.is_empty()).then_some(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled_pod() -> Pod {
        let mut pod = Pod::default();
        pod.metadata.labels = Some([("app".to_owned(), "redis".to_owned())].into());
        pod
    }

    #[test]
    fn the_record_and_the_injected_label_come_and_go_together() {
        let mut pod = labelled_pod();
        let status = InjectionStatus { supervisor: "redis".into(), ..Default::default() };
        status.write(&mut pod);
        assert_eq!(InjectionStatus::read(&pod), Some(status));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[INJECTED], "true");

        strip_previous(&mut pod);
        assert_eq!(InjectionStatus::read(&pod), None);
        assert!(!pod.metadata.annotations.unwrap().contains_key(STATUS));
        assert_eq!(pod.metadata.labels, labelled_pod().metadata.labels, "the user's labels stay");
    }

    #[test]
    fn an_unreadable_record_goes_with_its_label() {
        let mut pod = labelled_pod();
        pod.metadata.annotations = Some([(STATUS.to_owned(), "{not json".to_owned())].into());
        pod.metadata.labels.as_mut().unwrap().insert(INJECTED.to_owned(), "true".to_owned());
        strip_previous(&mut pod);
        assert!(!pod.metadata.annotations.unwrap().contains_key(STATUS));
        assert_eq!(pod.metadata.labels, labelled_pod().metadata.labels);
    }
}
