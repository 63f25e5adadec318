//! What the decision knows of the cluster besides the pod: gathered by the caller (the webhook
//! from its caches and the API server, `inject` from a manifest), read by the decision.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};

/// What we know of the StatefulSet's headless Service.
#[derive(Debug, Clone)]
pub enum ServiceFact {
    Found(Box<Service>),
    Missing,
    /// Not looked up (offline `inject` without the Service in the manifest).
    Unknown,
}

/// Everything the decision needs besides the pod.
#[derive(Debug, Clone)]
pub struct Facts {
    pub statefulset: StatefulSet,
    pub service: ServiceFact,
    /// The pods of the StatefulSet that exist now (any state; liveness is decided here).
    pub siblings: Vec<Pod>,
    /// Whether the pod's ServiceAccount may patch pods (the sidecar's label); None: not checked.
    pub sidecar_can_label: Option<bool>,
}
