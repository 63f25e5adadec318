//! `hab-bootstrap sidecar`: the role sidecar, wired from the pieces in [`crate::sidecar`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube::Api;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::injection::duration::{parse_duration, parse_positive_duration};
use crate::injection::supervisor_args::DEFAULT_GOSSIP_PORT;
use crate::runtime::admin;
use crate::runtime::{kube_client, tokio_runtime};
use crate::sidecar::census_client::{CensusClient, GatewayToken};
use crate::sidecar::ghost_reaper::GhostReaper;
use crate::sidecar::label::{KubeLabelWriter, RoleLabel};
use crate::sidecar::metrics::{self, Metrics, metrics_text};
use crate::sidecar::peer_file::PeerFile;
use crate::sidecar::peer_set::{PeerSelector, watch_selector};
use crate::sidecar::pod_watch::PodWatch;
use crate::sidecar::role_loop::{RoleLoop, RoleLoopConfig};
use crate::sidecar::rumor_file;

/// How long the other tasks get to finish after the role loop has removed the label.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct SidecarArgs {
    /// The local Supervisor's census, e.g. http://127.0.0.1:9631/census.
    #[arg(long, env = "HABITAT_BOOTSTRAP_CENSUS_URL")]
    pub census_url: String,
    /// Service group (`<service>.<group>`) to report on; default: the only group with a leader
    /// election in the census.
    #[arg(long, env = "HABITAT_BOOTSTRAP_SERVICE_GROUP")]
    pub service_group: Option<String>,
    /// Label written on the pod (values `leader` / `follower`).
    #[arg(long, env = "HABITAT_BOOTSTRAP_LABEL_KEY", default_value = "role")]
    pub label_key: String,
    /// This pod's name (downward API).
    #[arg(long, env = "HABITAT_BOOTSTRAP_POD_NAME")]
    pub pod_name: String,
    /// This pod's namespace (downward API).
    #[arg(long, env = "HABITAT_BOOTSTRAP_POD_NAMESPACE")]
    pub pod_namespace: String,
    /// Bearer token, when the Supervisor sets HAB_SUP_GATEWAY_AUTH_TOKEN.
    #[arg(long, env = "HABITAT_BOOTSTRAP_GATEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<GatewayToken>,
    /// Time between census polls (e.g. 500ms, 1s).
    #[arg(long, env = "HABITAT_BOOTSTRAP_INTERVAL", default_value = "1s", value_parser = parse_positive_duration)]
    pub interval: Duration,
    /// Longest wait for one census answer; a slower answer counts as unreachable.
    #[arg(long, env = "HABITAT_BOOTSTRAP_CENSUS_TIMEOUT", default_value = "2s", value_parser = parse_positive_duration)]
    pub census_timeout: Duration,
    /// How long the role may stay unknown (election, no quorum, supervisor unreachable) before
    /// the label is removed. 5s: five polls, so one failed poll never flaps the label; longer than
    /// the ~4 s election after a graceful leader stop, so followers keep their label through it;
    /// well under the ~19 s after a crash, so a Service soon stops routing to an electing pod.
    #[arg(long, env = "HABITAT_BOOTSTRAP_UNKNOWN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub unknown_grace: Duration,
    /// Minimum time between two leader/follower label changes: a census that flaps faster is
    /// written once it has held a role this long (0s: every change at once). Removals (role
    /// unknown for --unknown-grace) are never held back.
    #[arg(long, env = "HABITAT_BOOTSTRAP_MIN_ROLE_DWELL", default_value = "2s", value_parser = parse_duration)]
    pub min_role_dwell: Duration,
    /// How long a needed label write may keep failing (API server unreachable) before the sidecar
    /// reports not ready, so that the pod leaves the endpoints of Services selecting it by role.
    #[arg(long, env = "HABITAT_BOOTSTRAP_API_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub api_grace: Duration,
    /// Plain-HTTP admin listener: /metrics, /livez, /readyz.
    #[arg(long, env = "HABITAT_BOOTSTRAP_METRICS_LISTEN", default_value = "0.0.0.0:9639")]
    pub metrics_listen: SocketAddr,
    #[arg(long, env = "HABITAT_BOOTSTRAP_LOG_FORMAT", value_enum, default_value_t = crate::runtime::logging::LogFormat::Json)]
    pub log_format: crate::runtime::logging::LogFormat,
    /// Keep the peer file and depart dead predecessors, but write no role label.
    #[arg(long, env = "HABITAT_BOOTSTRAP_NO_ROLE_LABEL")]
    pub no_role_label: bool,
    #[command(flatten)]
    pub peer_watch: PeerWatchArgs,
    #[command(flatten)]
    pub supervisor_state: SupervisorStateArgs,
}

#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Supervisor state")]
pub struct SupervisorStateArgs {
    /// The Supervisor's /hab/sup/default, shared with this container: at start, while the
    /// Supervisor is not running, its saved member list is forgotten (so a ring whose pods all
    /// came back on new addresses finds itself through the peer file), and the control gateway's
    /// secret is read from it to depart this pod's dead predecessor.
    #[arg(long, env = "HABITAT_BOOTSTRAP_SUP_STATE_DIR")]
    pub sup_state_dir: Option<PathBuf>,
    /// The Supervisor's control gateway.
    #[arg(long, env = "HABITAT_BOOTSTRAP_CTL_GATEWAY", default_value = "127.0.0.1:9632")]
    pub ctl_gateway: String,
}

#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Peer watch file")]
pub struct PeerWatchArgs {
    /// Keep this file equal to the IPs of the other live pods of --statefulset.
    #[arg(long, env = "HABITAT_BOOTSTRAP_PEER_WATCH_FILE", requires_all = ["statefulset", "pod_selector"])]
    pub peer_watch_file: Option<PathBuf>,
    /// The StatefulSet whose pods are peers.
    #[arg(long, env = "HABITAT_BOOTSTRAP_STATEFULSET")]
    pub statefulset: Option<String>,
    /// Label selector of the StatefulSet's pods, e.g. `app=redis`.
    #[arg(long, env = "HABITAT_BOOTSTRAP_POD_SELECTOR")]
    pub pod_selector: Option<String>,
    /// This pod's ordinal (its pod-index label): watch only the pods near it and the first three
    /// (see `watched_ordinals`) instead of the whole StatefulSet.
    #[arg(long, env = "HABITAT_BOOTSTRAP_POD_INDEX")]
    pub pod_index: Option<u32>,
    /// The Supervisors' gossip port, written into the file when not 9638.
    #[arg(long, env = "HABITAT_BOOTSTRAP_GOSSIP_PORT", default_value_t = DEFAULT_GOSSIP_PORT)]
    pub gossip_port: u16,
}

pub fn run(args: SidecarArgs) -> anyhow::Result<ExitCode> {
    tokio_runtime().block_on(run_sidecar(args))
}

async fn run_sidecar(args: SidecarArgs) -> anyhow::Result<ExitCode> {
    let SidecarArgs {
        census_url,
        service_group,
        label_key,
        pod_name,
        pod_namespace,
        token,
        interval,
        census_timeout,
        unknown_grace,
        min_role_dwell,
        api_grace,
        metrics_listen,
        log_format,
        no_role_label,
        peer_watch,
        supervisor_state,
    } = args;
    let PeerWatchArgs { peer_watch_file, statefulset, pod_selector, pod_index, gossip_port } = peer_watch;
    let SupervisorStateArgs { sup_state_dir, ctl_gateway } = supervisor_state;
    crate::runtime::logging::init_logging(log_format);
    validate_label_key(&label_key)?;
    let census = CensusClient::new(&census_url, token, census_timeout)?;
    let metrics = Metrics::new();
    // Before anything reports this container started: a native sidecar's startupProbe holds the
    // Supervisor back until then.
    if let Some(dir) = &sup_state_dir {
        forget_saved_members(&census, dir, &metrics).await;
    }
    let client = kube_client().await?;
    let mut config = RoleLoopConfig::new(service_group, interval, unknown_grace);
    config.min_dwell = min_role_dwell;
    config.api_grace = api_grace;

    // One round takes at most a poll, a write and the interval; several missed rounds is a stall.
    let stale_after = (interval + census_timeout + config.write_timeout) * 3;
    let health = Arc::new(metrics::health(stale_after, peer_watch_file.is_none()));
    let listener = tokio::net::TcpListener::bind(metrics_listen)
        .await
        .map_err(|err| anyhow::anyhow!("listening on --metrics-listen {metrics_listen}: {err}"))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    let router = admin::router(health.clone(), metrics_text(&metrics));
    tasks.spawn({
        let stopped = stopped();
        async move {
            if let Err(err) = admin::serve(listener, router, stopped).await {
                warn!(error = %err, "admin server failed");
            }
        }
    });
    if let Some(path) = peer_watch_file {
        let watch = PodWatch {
            pods: Api::namespaced(client.clone(), &pod_namespace),
            label_selector: watch_selector(
                &pod_selector.context("--pod-selector is required with --peer-watch-file")?,
                pod_index,
            ),
            selector: PeerSelector {
                statefulset: statefulset.context("--statefulset is required with --peer-watch-file")?,
                own_pod: pod_name.clone(),
                gossip_port,
            },
            file: PeerFile::new(path),
            metrics: metrics.clone(),
            health: health.clone(),
        };
        tasks.spawn(watch.run(stopped()));
    }
    tokio::spawn(async move {
        crate::runtime::signals::termination_signal().await;
        info!("termination signal received: removing the role label and stopping");
        let _ = stop_tx.send(true);
    });

    info!(version = crate::runtime::build_info::VERSION, pod = %pod_name, namespace = %pod_namespace, census_url = %census.url(), label = %label_key, "role sidecar started");
    let writer = if no_role_label {
        RoleLabel::Off
    } else {
        RoleLabel::On(Box::new(KubeLabelWriter::new(client.clone(), &pod_namespace, &pod_name, &label_key)))
    };
    let role_loop = RoleLoop::new(census, writer, config, metrics.clone(), health);
    let reaper = GhostReaper {
        recorder: Some(GhostReaper::recorder(client, &pod_name)),
        pod_name,
        pod_namespace,
        ctl_addr: ctl_gateway,
        sup_state_dir,
        metrics,
    };
    tasks.spawn(reaper.run(role_loop.censuses(), stopped()));
    role_loop.run(stopped()).await;
    if tokio::time::timeout(STOP_TIMEOUT, async { while tasks.join_next().await.is_some() {} }).await.is_err()
    {
        warn!("background tasks did not stop in time");
    }
    Ok(ExitCode::SUCCESS)
}

/// Forgets the Supervisor's saved members if it is not running (this is a pod start); a running
/// Supervisor (this sidecar restarted on its own) keeps what it has.
async fn forget_saved_members(census: &CensusClient, dir: &std::path::Path, metrics: &Metrics) {
    if census.fetch().await.is_ok() {
        info!("the Supervisor already runs: its saved members are left as they are");
        return;
    }
    let outcomes = match rumor_file::forget_saved_members(dir) {
        Ok(outcomes) => outcomes,
        Err(err) => {
            warn!(dir = %dir.display(), error = %err, "cannot read the Supervisor's saved rumors");
            return;
        }
    };
    for outcome in outcomes {
        let file = outcome.path.display();
        match outcome.result {
            Ok(Some(forgotten)) => {
                metrics.saved_members_forgotten.inc_by(forgotten.members as u64);
                info!(%file, members = forgotten.members, "forgot the saved members: the Supervisor will read the peer file");
            }
            Ok(None) => {}
            Err(error) => warn!(%file, %error, "left a rumor file as it is"),
        }
    }
}

/// A label key the API server would refuse would make every write fail forever: refuse it here.
fn validate_label_key(key: &str) -> anyhow::Result<()> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|prefix| {
        !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        anyhow::bail!("--label-key {key:?} is not a valid Kubernetes label key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: SidecarArgs,
    }

    #[test]
    fn label_keys_are_checked_like_the_api_server_does() {
        for good in ["role", "habitat.sh/role", "a-b_c.d", "x.example.com/leader-role"] {
            assert!(validate_label_key(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", "/role", "Example.com/role", "role-", "a/b/c", "ro le", &"x".repeat(64)] {
            assert!(validate_label_key(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_webhook_contract_parses_with_defaults() {
        let cli = Cli::try_parse_from([
            "sidecar",
            "--census-url",
            "http://127.0.0.1:9631/census",
            "--service-group",
            "redis.default",
            "--label-key",
            "role",
            "--pod-name",
            "redis-0",
            "--pod-namespace",
            "db",
            "--peer-watch-file",
            "/hab/peers/peers",
            "--statefulset",
            "redis",
            "--pod-selector",
            "app=redis",
            "--gossip-port",
            "9000",
        ])
        .unwrap();
        let args = cli.args;
        assert_eq!(args.interval, Duration::from_secs(1));
        assert_eq!(args.unknown_grace, Duration::from_secs(5));
        assert_eq!(args.metrics_listen, "0.0.0.0:9639".parse().unwrap());
        assert_eq!(args.peer_watch.gossip_port, 9000);
        assert_eq!(args.service_group.as_deref(), Some("redis.default"));
    }

    #[test]
    fn watch_file_mode_needs_its_statefulset_and_selector() {
        let result = Cli::try_parse_from([
            "sidecar",
            "--census-url",
            "http://127.0.0.1:9631/census",
            "--pod-name",
            "redis-0",
            "--pod-namespace",
            "db",
            "--peer-watch-file",
            "/hab/peers/peers",
        ]);
        assert!(result.is_err());
    }

    #[test]
    fn a_zero_interval_is_refused() {
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("500ms"), Ok(Duration::from_millis(500)));
    }
}
