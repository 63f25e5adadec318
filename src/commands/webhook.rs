//! `hab-bootstrap webhook`: the admission webhook server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::injection::settings::InjectionSettings;
use crate::runtime::admin::{self, Health};
use crate::runtime::duration::parse_duration;
use crate::runtime::logging::{self, LogFormat};
use crate::runtime::signals::termination_signal;
use crate::runtime::{kube_client, tokio_runtime};
use crate::webhook::admission::Admission;
use crate::webhook::cluster::{KubeCluster, KubeEvents};
use crate::webhook::server::tls::CertReloader;
use crate::webhook::server::{routes, serve_tls};

#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// HTTPS address the API server calls.
    #[arg(long, env = "HABITAT_BOOTSTRAP_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address of /livez, /readyz and /metrics.
    #[arg(long, env = "HABITAT_BOOTSTRAP_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    #[arg(long, env = "HABITAT_BOOTSTRAP_TLS_CERT", default_value = "/etc/hab-bootstrap/tls/tls.crt")]
    pub tls_cert: PathBuf,
    #[arg(long, env = "HABITAT_BOOTSTRAP_TLS_KEY", default_value = "/etc/hab-bootstrap/tls/tls.key")]
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for a new certificate.
    #[arg(long, env = "HABITAT_BOOTSTRAP_CERT_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// Bound on each API read made while admitting an opted-in pod.
    #[arg(long, env = "HABITAT_BOOTSTRAP_LIVE_READ_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub live_read_timeout: Duration,
    /// After SIGTERM, how long to keep serving while reporting not-ready, so that the Service
    /// stops routing to us first.
    #[arg(long, env = "HABITAT_BOOTSTRAP_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Then, how long in-flight requests may take to finish.
    #[arg(long, env = "HABITAT_BOOTSTRAP_DRAIN_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    #[arg(long, env = "HABITAT_BOOTSTRAP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// This replica's name, reported in Events (the chart sets it from the downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    #[command(flatten)]
    pub settings: InjectionSettings,
}

pub fn run(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    tokio_runtime().block_on(serve(args))
}

async fn serve(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    let WebhookArgs {
        listen,
        admin_listen,
        tls_cert,
        tls_key,
        cert_reload_interval,
        live_read_timeout,
        shutdown_delay,
        drain_timeout,
        log_format,
        pod_name,
        settings,
    } = args;
    logging::init_logging(log_format);

    let certs = CertReloader::load(&tls_cert, &tls_key).context("loading the serving certificate")?;
    certs.spawn_polling(cert_reload_interval);
    let client = kube_client().await?;
    let cluster = KubeCluster::start(client.clone(), live_read_timeout);
    let events = KubeEvents::new(client, pod_name);
    let admission = Arc::new(Admission { cluster, events, settings, metrics: Default::default() });

    let health = Arc::new(Health::default());
    let metrics_source = Arc::clone(&admission);
    let admin_app = admin::router(Arc::clone(&health), Arc::new(move || Ok(metrics_source.metrics.encode())));
    let admin_listener = TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("binding the admin port {admin_listen}"))?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    info!(%listen, %admin_listen, "serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_stop = wait_for(stop_rx.clone());
    let admin = tokio::spawn(async move {
        if let Err(e) = admin::serve(admin_listener, admin_app, admin_stop).await {
            error!(error = %e, "admin server failed");
        }
    });
    let sync_source = Arc::clone(&admission);
    let sync_health = Arc::clone(&health);
    tokio::spawn(async move {
        sync_source.cluster.wait_synced().await;
        sync_health.set_ready();
        info!("caches synced: ready");
    });

    let app = routes::router(Arc::clone(&admission));
    let server =
        tokio::spawn(serve_tls(listener, certs.server_config(), app, wait_for(stop_rx), drain_timeout));

    termination_signal().await;
    health.set_terminating();
    info!(?shutdown_delay, "termination signal: reporting not ready, still serving");
    tokio::select! {
        () = tokio::time::sleep(shutdown_delay) => {}
        () = termination_signal() => warn!("second signal: stopping now"),
    }
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = server => {}
        () = termination_signal() => warn!("second signal: abandoning the drain"),
    }
    let _ = admin.await;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
