//! One file per subcommand, each owning its clap arguments and its `run`.

pub mod certs;
pub mod check;
pub mod inject;
pub mod role;
pub mod sidecar;
pub mod webhook;
