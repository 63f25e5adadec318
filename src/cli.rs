//! The one binary's subcommands. Each subcommand's arguments live next to the code that uses them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hab-bootstrap", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook server.
    Webhook(Box<crate::commands::webhook::WebhookArgs>),
    /// Print the pod the StatefulSet controller would create for an ordinal, after injection.
    Inject(Box<crate::commands::inject::InjectArgs>),
    /// Create certificates for the webhook.
    Certs(crate::certs::CertsArgs),
    /// Run the role sidecar: label this pod leader/follower from the local Supervisor's census.
    Sidecar(crate::sidecar::SidecarArgs),
    /// Read a Supervisor census once and print the role the sidecar would apply.
    Role(crate::sidecar::census::RoleArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Inject(args) => crate::commands::inject::run(*args),
        Command::Certs(args) => crate::certs::run(args),
        Command::Webhook(args) => runtime().block_on(crate::commands::webhook::run(*args)),
        Command::Sidecar(args) => runtime().block_on(crate::sidecar::run(args)),
        Command::Role(args) => runtime().block_on(crate::sidecar::census::run_role_command(args)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("building the tokio runtime")
}
