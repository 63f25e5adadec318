//! `hab-bootstrap role`: read a Supervisor census once and print the role the sidecar would apply.

use std::process::ExitCode;
use std::time::Duration;

use crate::injection::duration::parse_duration;
use crate::runtime::tokio_runtime;
use crate::sidecar::census::decide_role;
use crate::sidecar::census_client::{CensusClient, GatewayToken};

/// What the sidecar would do, for someone debugging a pod.
#[derive(Debug, clap::Args)]
pub struct RoleArgs {
    /// The Supervisor's census URL, e.g. http://127.0.0.1:9631/census.
    #[arg(long)]
    pub census_url: String,
    /// Service group (`<service>.<group>`); default: the only group with a leader election.
    #[arg(long)]
    pub group: Option<String>,
    /// Bearer token, when the Supervisor sets HAB_SUP_GATEWAY_AUTH_TOKEN.
    #[arg(long, env = "HABITAT_BOOTSTRAP_GATEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<GatewayToken>,
    /// How long to wait for the census.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Prints `leader`, `follower` or `unknown: <reason>` and exits 0; fails only when the census
/// cannot be fetched or parsed.
async fn read_role(args: RoleArgs) -> anyhow::Result<ExitCode> {
    let RoleArgs { census_url, group, token, timeout } = args;
    let client = CensusClient::new(&census_url, token, timeout)?;
    let census =
        client.fetch().await.map_err(|err| anyhow::anyhow!("reading the census at {census_url}: {err}"))?;
    println!("{}", decide_role(&census, group.as_deref()));
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: RoleArgs) -> anyhow::Result<ExitCode> {
    tokio_runtime().block_on(read_role(args))
}
