//! hab-bootstrap: a mutating admission webhook that gives every pod of an opted-in StatefulSet the
//! `--peer` arguments, identity environment and role sidecar a Habitat Supervisor ring needs.
//!
//! The tree is the map; dependencies point down this list, never up.

/// The webhook's certificates: issue, inspect, plan and keep them in a Secret.
pub mod certs;
/// `check`: findings about the cluster, the install, the StatefulSets and their rings (pure).
pub mod check;
/// The one binary's subcommands and their dispatch.
pub mod cli;
/// One file per subcommand: its arguments and its `run`.
pub mod commands;
/// The pure core: which pods are ours and what to inject, from plain data (no I/O, no tokio).
pub mod injection;
/// Plumbing shared by the webhook and the sidecar: admin server, signals, logging, runtime.
pub mod runtime;
/// The role sidecar: census model and client, role loop, peer watch file.
pub mod sidecar;
/// The admission webhook's edge: AdmissionReviews, the admission flow, caches, HTTPS server.
pub mod webhook;

/// rustls needs exactly one process-wide crypto provider; kube, tokio-rustls and rcgen are all built
/// with `ring` only, and we install it before anything builds a TLS config.
pub fn install_crypto_provider() {
    // Err means a provider is already installed (tests call this repeatedly): nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
