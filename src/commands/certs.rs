//! `hab-bootstrap certs`: certificates for the webhook.
//!
//! - `certs generate`: a CA and a serving certificate in files, for development and tests.
//! - `certs ensure`: the chart's self-managed mode. Keeps a CA and a serving certificate in a
//!   Secret, rotates both before they expire (old and new CA trusted side by side meanwhile) and
//!   writes the caBundle into the MutatingWebhookConfiguration with server-side apply under its
//!   own field manager (`ensure`).
//! - `certs watch`: `ensure` now and then every `--interval`, until SIGTERM (the chart runs it).
//!
//! The work itself is in [`crate::certs`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::Context;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use time::{Duration, OffsetDateTime};
use tracing::{info, warn};

use crate::certs::ensure::{self, EnsureOptions};
use crate::certs::plan::{Names, Policy};
use crate::certs::span::parse_span;
use crate::certs::{CertificateAuthority, write};
use crate::injection::duration::parse_duration;
use crate::runtime::logging::LogFormat;
use crate::runtime::signals::Termination;
use crate::runtime::{kube_client, tokio_runtime};

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Write a new CA (ca.crt) and a serving certificate it signs (tls.crt, tls.key) to a directory.
    Generate(GenerateArgs),
    /// Create or rotate the webhook's CA and serving certificate in a Secret, and write the CA
    /// bundle into the MutatingWebhookConfiguration. Idempotent: does nothing when all is fresh.
    Ensure(Box<EnsureArgs>),
    /// Run `ensure` now and then periodically, until SIGTERM.
    Watch(Box<WatchArgs>),
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[arg(long)]
    pub out_dir: PathBuf,
    /// DNS names of the webhook, e.g. hab-bootstrap.hab-bootstrap.svc (repeatable).
    #[arg(long = "dns")]
    pub dns_names: Vec<String>,
    /// IP addresses of the webhook, e.g. 127.0.0.1 (repeatable).
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

#[derive(Debug, clap::Args)]
pub struct EnsureArgs {
    /// Namespace of the Secret and of the webhook's Service.
    #[arg(long)]
    pub namespace: String,
    /// The kubernetes.io/tls Secret to keep (created if missing).
    #[arg(long)]
    pub secret: String,
    /// The webhook's Service: the certificate names <svc>, <svc>.<ns> and <svc>.<ns>.svc.
    #[arg(long)]
    pub service: String,
    /// The MutatingWebhookConfiguration whose webhooks get the caBundle.
    #[arg(long)]
    pub webhook_config: String,
    /// Lifetime of the serving certificate (y, d, h, m, s).
    #[arg(long, default_value = "1y", value_parser = parse_span)]
    pub valid_for: Duration,
    /// Lifetime of the CA.
    #[arg(long, default_value = "5y", value_parser = parse_span)]
    pub ca_valid_for: Duration,
    /// Renew the serving certificate or the CA when less than this is left. Longer than the
    /// lifetime forces a rotation of both on every run.
    #[arg(long, default_value = "30d", value_parser = parse_span)]
    pub renew_before: Duration,
    /// How long a replaced CA stays trusted after the serving certificate moved to the new CA
    /// (the kubelet takes up to a couple of minutes to update a mounted Secret).
    #[arg(long, default_value = "1h", value_parser = parse_span)]
    pub overlap: Duration,
    /// After publishing a new CA, wait this long before serving a certificate it signed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub propagation_delay: StdDuration,
    /// Another DNS name for the certificate (repeatable).
    #[arg(long = "dns")]
    pub dns_names: Vec<String>,
    /// An IP address for the certificate (repeatable), e.g. for a webhook reached by URL.
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
    #[arg(long, env = "HABITAT_BOOTSTRAP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub ensure: EnsureArgs,
    /// Time between two runs of `ensure`.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub interval: StdDuration,
}

impl EnsureArgs {
    fn into_options(self) -> anyhow::Result<(EnsureOptions, LogFormat)> {
        let Self {
            namespace,
            secret,
            service,
            webhook_config,
            valid_for,
            ca_valid_for,
            renew_before,
            overlap,
            propagation_delay,
            dns_names,
            ips,
            log_format,
        } = self;
        anyhow::ensure!(
            valid_for.is_positive() && ca_valid_for.is_positive(),
            "lifetimes must be longer than 0"
        );
        let mut dns: std::collections::BTreeSet<String> =
            [service.clone(), format!("{service}.{namespace}"), format!("{service}.{namespace}.svc")].into();
        dns.extend(dns_names);
        let policy = Policy {
            valid_for,
            ca_valid_for,
            renew_before,
            overlap,
            names: Names { dns, ips: ips.into_iter().collect() },
        };
        Ok((EnsureOptions { namespace, secret, webhook_config, policy, propagation_delay }, log_format))
    }
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CertsCommand::Generate(g) => generate(g),
        CertsCommand::Ensure(e) => {
            let (opts, log_format) = e.into_options()?;
            crate::runtime::logging::init_logging(log_format);
            tokio_runtime().block_on(async {
                let client = kube_client().await?;
                let report = ensure::ensure(&client, &opts, &OffsetDateTime::now_utc).await?;
                println!("{}/{}: {report}", opts.namespace, opts.secret);
                Ok(ExitCode::SUCCESS)
            })
        }
        CertsCommand::Watch(w) => {
            let WatchArgs { ensure, interval } = *w;
            let (opts, log_format) = ensure.into_options()?;
            crate::runtime::logging::init_logging(log_format);
            tokio_runtime().block_on(watch(opts, interval))
        }
    }
}

fn generate(g: GenerateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!g.dns_names.is_empty() || !g.ips.is_empty(), "give at least one --dns or --ip");
    let ca = CertificateAuthority::generate("hab-bootstrap CA", Duration::days(g.days))?;
    let serving = ca.issue(&g.dns_names, &g.ips, Duration::days(g.days))?;
    std::fs::create_dir_all(&g.out_dir).with_context(|| format!("creating {}", g.out_dir.display()))?;
    write(&g.out_dir.join("ca.crt"), &ca.cert_pem, 0o644)?;
    write(&g.out_dir.join("tls.crt"), &serving.cert_pem, 0o644)?;
    write(&g.out_dir.join("tls.key"), &serving.key_pem, 0o600)?;
    println!("wrote ca.crt, tls.crt and tls.key to {}", g.out_dir.display());
    Ok(ExitCode::SUCCESS)
}

/// `ensure` every `interval`; after a failure, again sooner (10 s doubling up to the interval).
async fn watch(opts: EnsureOptions, interval: StdDuration) -> anyhow::Result<ExitCode> {
    let client = kube_client().await?;
    info!(namespace = %opts.namespace, secret = %opts.secret, webhook_config = %opts.webhook_config, ?interval, "keeping the webhook certificates");
    let mut retry = StdDuration::from_secs(10);
    // A change to the Secret or to the webhook configuration (a caBundle wiped by `kubectl
    // replace`, a rollback, a recreated configuration, a deleted Secret) runs `ensure` within a
    // second instead of at the next interval.
    let changed = Arc::new(tokio::sync::Notify::new());
    let secrets = Api::<Secret>::namespaced(client.clone(), &opts.namespace);
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let watches = [
        spawn_trigger(secrets, &opts.secret, Arc::clone(&changed)),
        spawn_trigger(configs, &opts.webhook_config, Arc::clone(&changed)),
    ];
    // Installed before the first run: a SIGTERM during a run is handled when it ends (a run is
    // short; all its writes are conditional, so it is also safe to kill).
    let mut termination = Termination::install().context("installing the SIGTERM and SIGINT handlers")?;
    loop {
        let wait = match ensure::ensure(&client, &opts, &OffsetDateTime::now_utc).await {
            Ok(report) => {
                retry = StdDuration::from_secs(10);
                info!(%report, "certificates checked");
                interval
            }
            Err(e) => {
                warn!(error = format!("{e:#}"), retry_in = ?retry, "could not ensure the certificates");
                let wait = retry.min(interval);
                retry = (retry * 2).min(interval);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = changed.notified() => {
                // Let a burst of events (our own write among them) settle into one run.
                tokio::time::sleep(SETTLE).await;
                info!("the Secret or the webhook configuration changed: checking now");
            }
            () = termination.recv() => break,
        }
    }
    for watch in watches {
        watch.abort();
    }
    info!("termination signal: stopping");
    Ok(ExitCode::SUCCESS)
}

/// Between a change seen and the run it triggers.
const SETTLE: StdDuration = StdDuration::from_millis(200);

/// Watches the one object `name` (a field selector, which RBAC with resourceNames allows) and
/// notifies on every event; watch errors are retried with backoff and never stop the polling.
fn spawn_trigger<K>(api: Api<K>, name: &str, changed: Arc<tokio::sync::Notify>) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, config).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => warn!(kind = %K::kind(&()), error = %e, "watch error; retrying with backoff"),
            }
        }
    })
}
