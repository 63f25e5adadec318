//! Who a pod is: its owning StatefulSet and its ordinal, read the way the StatefulSet controller
//! writes them (pkg/controller/statefulset/stateful_set_utils.go).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// The controlling owner reference, when it is a StatefulSet.
pub fn statefulset_owner(pod: &Pod) -> Option<&OwnerReference> {
    statefulset_controller(&pod.metadata)
}

/// [`statefulset_owner`] from the metadata alone.
pub fn statefulset_controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == "StatefulSet" && r.api_version.starts_with("apps/"))
}

/// Whether the StatefulSet controller labelled the pod with its ordinal (PodIndexLabel).
pub fn has_pod_index_label(pod: &Pod) -> bool {
    pod.metadata.labels.as_ref().is_some_and(|l| l.contains_key(POD_INDEX_LABEL))
}

/// The pod's ordinal: the pod-index label when present, else the numeric suffix of its name, which
/// must be `<statefulset>-<ordinal>` (the stable DNS name depends on it).
pub fn ordinal(pod: &Pod, statefulset: &str) -> Result<u32, String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let from_name = name
        .strip_prefix(statefulset)
        .and_then(|rest| rest.strip_prefix('-'))
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    let Some(digits) = from_name else {
        return Err(format!(
            "pod name {name:?} is not <statefulset>-<ordinal> for StatefulSet {statefulset:?}; \
             only pods created by the StatefulSet controller can be given peers"
        ));
    };
    let ordinal: u32 =
        digits.parse().map_err(|_| format!("pod {name:?}: ordinal {digits} is out of range"))?;
    if let Some(label) = pod.metadata.labels.as_ref().and_then(|l| l.get(POD_INDEX_LABEL))
        && label.parse::<u32>().ok() != Some(ordinal)
    {
        return Err(format!(
            "pod {name:?}: label {POD_INDEX_LABEL}={label:?} disagrees with the ordinal in its name"
        ));
    }
    Ok(ordinal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str, index: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.labels = index.map(|i| BTreeMap::from([(POD_INDEX_LABEL.to_string(), i.to_string())]));
        p
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(&pod("redis-2", Some("2")), "redis"), Ok(2));
        assert_eq!(ordinal(&pod("redis-2", None), "redis"), Ok(2));
        assert_eq!(ordinal(&pod("my-redis-10", None), "my-redis"), Ok(10));
        assert_eq!(ordinal(&pod("redis-4294967295", None), "redis"), Ok(u32::MAX));
        for (name, index, want) in [
            ("redis-4294967296", None, "out of range"),
            ("redis-99999999999999999999999", None, "out of range"),
            ("redis-", None, "not <statefulset>-<ordinal>"),
            ("redis", None, "not <statefulset>-<ordinal>"),
            ("other-1", None, "not <statefulset>-<ordinal>"),
            ("redis-1a", None, "not <statefulset>-<ordinal>"),
            ("redis-+1", None, "not <statefulset>-<ordinal>"),
            ("redis-٣", None, "not <statefulset>-<ordinal>"),
            ("redis-1", Some("2"), "disagrees"),
        ] {
            let err = ordinal(&pod(name, index), "redis").unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
        assert!(ordinal(&Pod::default(), "redis").is_err());
    }
}
