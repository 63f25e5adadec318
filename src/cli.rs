//! The one binary's subcommands and their dispatch; each lives in [`crate::commands`], with its
//! arguments next to the code that uses them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

#[derive(Debug, Parser)]
#[command(name = "hab-bootstrap", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook server.
    Webhook(Box<commands::webhook::WebhookArgs>),
    /// Print the pod the StatefulSet controller would create for an ordinal, after injection.
    Inject(Box<commands::inject::InjectArgs>),
    /// Create certificates for the webhook.
    Certs(commands::certs::CertsArgs),
    /// Run the role sidecar: label this pod leader/follower from the local Supervisor's census.
    Sidecar(Box<commands::sidecar::SidecarArgs>),
    /// Read a Supervisor census once and print the role the sidecar would apply.
    Role(commands::role::RoleArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Webhook(args) => commands::webhook::run(*args),
        Command::Inject(args) => commands::inject::run(*args),
        Command::Certs(args) => commands::certs::run(args),
        Command::Sidecar(args) => commands::sidecar::run(*args),
        Command::Role(args) => commands::role::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
