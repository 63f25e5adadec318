//! Writing the role label on the sidecar's own pod.
//!
//! A JSON merge patch, not server-side apply: `null` deletes the key whoever set it last, which
//! is what a stale `role=leader` needs (with SSA, removing a field this manager does not own,
//! e.g. one a user set by hand, leaves it in place). A merge patch carries no resourceVersion, so
//! it cannot conflict, and it needs only the `patch` verb. The field manager name still shows
//! who wrote the label in `managedFields`.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::sidecar::census::Role;

pub const FIELD_MANAGER: &str = "hab-bootstrap-sidecar";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelAction {
    Set(Role),
    Remove,
}

impl LabelAction {
    /// The `value` label of the label-writes metric.
    pub fn metric_value(self) -> &'static str {
        match self {
            LabelAction::Set(role) => role.as_str(),
            LabelAction::Remove => "removed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LabelWriteError {
    #[error("the API server refused the patch: {0}")]
    Api(#[source] kube::Error),
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
}

/// The one side effect of the role loop; tests replace it with a recording fake.
pub trait LabelWriter: Send + Sync {
    fn apply(&self, action: LabelAction) -> impl Future<Output = Result<(), LabelWriteError>> + Send;
}

/// Patches `metadata.labels[key]` of one pod through the API server.
#[derive(Clone)]
pub struct KubeLabelWriter {
    pods: Api<Pod>,
    pod_name: String,
    key: String,
}

impl KubeLabelWriter {
    pub fn new(client: kube::Client, namespace: &str, pod_name: &str, key: &str) -> Self {
        Self { pods: Api::namespaced(client, namespace), pod_name: pod_name.to_owned(), key: key.to_owned() }
    }
}

impl LabelWriter for KubeLabelWriter {
    async fn apply(&self, action: LabelAction) -> Result<(), LabelWriteError> {
        let patch = label_patch(&self.key, action);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
        self.pods
            .patch(&self.pod_name, &params, &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(LabelWriteError::Api)
    }
}

/// The merge patch body: the label's value, or `null` to delete it.
pub fn label_patch(key: &str, action: LabelAction) -> serde_json::Value {
    let value = match action {
        LabelAction::Set(role) => serde_json::Value::from(role.as_str()),
        LabelAction::Remove => serde_json::Value::Null,
    };
    serde_json::json!({ "metadata": { "labels": { key: value } } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_touch_only_the_one_label() {
        assert_eq!(
            label_patch("role", LabelAction::Set(Role::Leader)),
            serde_json::json!({ "metadata": { "labels": { "role": "leader" } } })
        );
        assert_eq!(
            label_patch("example.com/role", LabelAction::Remove),
            serde_json::json!({ "metadata": { "labels": { "example.com/role": null } } })
        );
    }
}
