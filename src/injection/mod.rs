//! The pure core: which pods are ours, and for ours, what to inject and what to tell the user.
//! Plain data in, a pod or a reason out: nothing here does I/O, uses tokio or a Kubernetes client,
//! or imports the webhook, the sidecar or the runtime.

pub mod annotations;
pub mod decision;
pub mod duration;
pub mod facts;
pub mod pod_identity;
pub mod quantity;
pub mod render;
pub mod ring_address;
pub mod ring_key;
pub mod settings;
pub mod sidecar_overrides;
pub mod supervisor_args;
pub mod template_label;
pub mod warnings;
