//! One file per subcommand, each owning its clap arguments and its `run`.

pub mod inject;
pub mod webhook;
