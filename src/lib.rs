//! hab-bootstrap: a mutating admission webhook that gives every pod of an opted-in StatefulSet the
//! `--peer` arguments, identity environment and role sidecar a Habitat Supervisor ring needs.
//!
//! Pure decision code (`peers`, `supervisor`, `pod_identity`, `injection`, `decision`, `census`)
//! is kept apart from I/O (`server`, `cluster`, `sidecar`).

pub mod admission;
pub mod annotations;
pub mod census;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod decision;
pub mod duration;
pub mod inject_cmd;
pub mod injection;
pub mod metrics;
pub mod peers;
pub mod pod_identity;
pub mod process;
pub mod review;
pub mod server;
pub mod settings;
pub mod sidecar;
pub mod supervisor;
pub mod template_label;
pub mod webhook_cmd;

/// rustls needs exactly one process-wide crypto provider; kube, tokio-rustls and rcgen are all built
/// with `ring` only, and we install it before anything builds a TLS config.
pub fn install_crypto_provider() {
    // Err means a provider is already installed (tests call this repeatedly): nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
