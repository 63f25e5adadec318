//! `hab-bootstrap webhook`: the admission webhook server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::injection::duration::parse_duration;
use crate::injection::settings::InjectionSettings;
use crate::runtime::admin::{self, Health};
use crate::runtime::build_info;
use crate::runtime::logging::{self, LogFormat};
use crate::runtime::signals::termination_signal;
use crate::runtime::{kube_client, tokio_runtime};
use crate::webhook::admission::Admission;
use crate::webhook::cluster::{KubeCluster, KubeEvents};
use crate::webhook::event_pace::Paced;
use crate::webhook::scan;
use crate::webhook::server::shed::{Limits, Shedder};
use crate::webhook::server::tls::{self, CertReloader};
use crate::webhook::server::{Phase, ServeOptions, ServerState, routes, serve_tls_with};

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
    /// Require a client certificate issued by a CA of this PEM file (the API server's, configured
    /// with a kubeconfig for webhooks in its AdmissionConfiguration); off by default.
    #[arg(long, env = "HABITAT_BOOTSTRAP_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// The CA bundle that signed the certificate, read only for the CA's expiry metric; a missing
    /// file only leaves that metric out.
    #[arg(long, env = "HABITAT_BOOTSTRAP_TLS_CA", default_value = "/etc/hab-bootstrap/tls/ca.crt")]
    pub tls_ca: PathBuf,
    /// How often the certificate files are checked for a new certificate.
    #[arg(long, env = "HABITAT_BOOTSTRAP_CERT_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// Bound on each API read made while admitting an opted-in pod.
    #[arg(long, env = "HABITAT_BOOTSTRAP_LIVE_READ_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub live_read_timeout: Duration,
    /// How often the caches are scanned for opted-in StatefulSets and pods that escaped injection
    /// (metrics, an Event, a log line); 0s turns the scan off.
    #[arg(long, env = "HABITAT_BOOTSTRAP_ESCAPE_SCAN_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub escape_scan_interval: Duration,
    /// After SIGTERM, how long to keep serving while reporting not-ready, so that the Service
    /// stops routing to us first.
    #[arg(long, env = "HABITAT_BOOTSTRAP_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Then, how long in-flight requests may take to finish.
    #[arg(long, env = "HABITAT_BOOTSTRAP_DRAIN_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Open HTTPS connections at most; more are closed at once.
    #[arg(long, env = "HABITAT_BOOTSTRAP_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "HABITAT_BOOTSTRAP_MAX_STREAMS", default_value_t = Limits::default().max_streams_per_connection)]
    pub max_streams_per_connection: u32,
    /// Requests being read or answered at most; more are answered 429.
    #[arg(long, env = "HABITAT_BOOTSTRAP_MAX_IN_FLIGHT", default_value_t = Limits::default().max_in_flight)]
    pub max_in_flight: usize,
    /// Request body bytes held in memory at most, all requests together; a request that would
    /// exceed it is answered 503. Sized for the chart's 128 Mi memory limit.
    #[arg(long, env = "HABITAT_BOOTSTRAP_BODY_BUDGET_BYTES", default_value_t = Limits::default().body_budget_bytes)]
    pub body_budget_bytes: usize,
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
        client_ca,
        tls_ca,
        cert_reload_interval,
        live_read_timeout,
        escape_scan_interval,
        shutdown_delay,
        drain_timeout,
        max_connections,
        max_streams_per_connection,
        max_in_flight,
        body_budget_bytes,
        log_format,
        pod_name,
        settings,
    } = args;
    let limits = Limits { max_connections, max_streams_per_connection, max_in_flight, body_budget_bytes };
    logging::init_logging(log_format);
    settings.check().map_err(anyhow::Error::msg)?;

    let certs = CertReloader::load_with_ca(&tls_cert, &tls_key, Some(tls_ca))
        .context("loading the serving certificate")?;
    let clients =
        client_ca.as_deref().map(tls::client_verifier).transpose().context("loading --client-ca")?;
    certs.spawn_polling(cert_reload_interval);
    let client = kube_client().await?;
    let cluster = KubeCluster::start(client.clone(), live_read_timeout);
    let instance = pod_name.clone().unwrap_or_else(|| "hab-bootstrap".to_owned());
    let events = Paced::new(KubeEvents::new(client, pod_name));
    let shedder = Shedder::new(limits);
    let mut metrics = crate::webhook::metrics::Metrics::default();
    shedder.metrics.register(&mut metrics.registry);
    let admission = Arc::new(Admission { cluster, events, settings, metrics });

    // Ready: caches synced, the HTTPS listener accepting, the certificate valid now. A replica
    // whose accept loop died or whose certificate expired leaves the Service's endpoints.
    let server_state = Arc::new(ServerState::default());
    let (accepting, cert_check) = (Arc::clone(&server_state), Arc::clone(&certs));
    let health = Arc::new(
        Health::default()
            .with_check(move || {
                (!accepting.is_accepting()).then(|| "the HTTPS listener is not accepting".to_owned())
            })
            .with_check(move || cert_check.validity_problem(time::OffsetDateTime::now_utc())),
    );
    let (metrics_source, served) = (Arc::clone(&admission), Arc::clone(&certs));
    let admin_app = admin::router(
        Arc::clone(&health),
        Arc::new(move || {
            // Read at each scrape from the certificate loaded now, so a reload shows at once.
            let (serving, ca) = served.not_after();
            metrics_source.metrics.set_certificate_expiry(serving, ca);
            Ok(metrics_source.metrics.encode())
        }),
    );
    let admin_listener = TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("binding the admin port {admin_listen}"))?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    info!(version = build_info::VERSION, %listen, %admin_listen, "serving");

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
        if !escape_scan_interval.is_zero() {
            scan::run(sync_source, escape_scan_interval, instance).await;
        }
    });

    let app = routes::router(Arc::clone(&admission));
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Serving);
    let options = ServeOptions { drain: drain_timeout, shedder, state: server_state };
    let mut server =
        tokio::spawn(serve_tls_with(listener, certs.server_config(clients), app, phase_rx, options));

    tokio::select! {
        () = termination_signal() => {}
        _ = &mut server => {
            let _ = stop_tx.send(true);
            error!("the HTTPS server stopped unexpectedly: exiting");
            return Ok(ExitCode::FAILURE);
        }
    }
    health.set_terminating();
    let _ = phase_tx.send(Phase::GoingAway);
    info!(
        ?shutdown_delay,
        "termination signal: reporting not ready, telling clients to go away, still serving"
    );
    tokio::select! {
        () = tokio::time::sleep(shutdown_delay) => {}
        () = termination_signal() => warn!("second signal: stopping now"),
    }
    let _ = phase_tx.send(Phase::Stopped);
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
