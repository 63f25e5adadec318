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
    /// Print the pods the StatefulSet controller would create (one ordinal or all), after injection.
    Inject(Box<commands::inject::InjectArgs>),
    /// Create certificates for the webhook.
    Certs(commands::certs::CertsArgs),
    /// Run the role sidecar: label this pod leader/follower from the local Supervisor's census.
    Sidecar(Box<commands::sidecar::SidecarArgs>),
    /// Read a Supervisor census once and print the role the sidecar would apply.
    Role(commands::role::RoleArgs),
    /// Check the cluster, the install, every opted-in StatefulSet and its Habitat ring; every
    /// problem with its fix. Exit status 0 only when all is well.
    Check(Box<commands::check::CheckArgs>),
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Webhook(args) => commands::webhook::run(*args),
        Command::Inject(args) => commands::inject::run(*args),
        Command::Certs(args) => commands::certs::run(args),
        Command::Sidecar(args) => commands::sidecar::run(*args),
        Command::Role(args) => commands::role::run(args),
        Command::Check(args) => commands::check::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The name of the binary as a kubectl plugin: installed (or linked) as `kubectl-habitat` on the
/// PATH, it runs as `kubectl habitat <subcommand>`.
pub const KUBECTL_PLUGIN: &str = "kubectl-habitat";

/// Parses the command line; when run as `kubectl-habitat`, help and errors say `kubectl habitat`.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let plugin = std::path::Path::new(&argv0).file_name().is_some_and(|n| n == KUBECTL_PLUGIN);
    if !plugin {
        return Cli::parse();
    }
    let matches = Cli::command().name(KUBECTL_PLUGIN).bin_name("kubectl habitat").get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
