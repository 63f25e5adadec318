//! Plumbing shared by the long-running subcommands (webhook, sidecar, certs watch): the admin
//! server, the Kubernetes client, signals, logging, the tokio runtime and duration parsing.

pub mod admin;
pub mod duration;
pub mod logging;
pub mod signals;
