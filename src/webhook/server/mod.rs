//! The webhook's HTTPS server: TLS with certificate reload, the routes, load shedding, and a server
//! loop that tells its clients to go away and drains on shutdown.

pub mod routes;
pub mod shed;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::webhook::server::shed::Shedder;

/// Longest a client may take to finish the TLS handshake or send its request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// Still accepting (the Service may still route here for a moment), but every connection is
    /// told to go away: HTTP/2 GOAWAY, HTTP/1.1 `Connection: close` after the request in progress,
    /// so that clients move to another replica with no request lost.
    GoingAway,
    /// Not accepting; the open connections finish their requests for up to the drain period.
    Stopped,
}

/// What the server exposes to readiness.
#[derive(Debug, Default)]
pub struct ServerState {
    accepting: AtomicBool,
}

impl ServerState {
    /// True while the accept loop runs.
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }
}

/// Serves `app` over TLS (HTTP/1.1 and HTTP/2 by ALPN) with the default limits until `shutdown`
/// resolves, then tells the clients to go away, stops accepting and lets in-flight requests finish
/// for up to `drain`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let (phase_tx, phase) = watch::channel(Phase::Serving);
    let options =
        ServeOptions { drain, shedder: Shedder::new(Default::default()), state: Default::default() };
    let serve = serve_tls_with(listener, tls, app, phase, options);
    let mut serve = std::pin::pin!(serve);
    tokio::select! {
        () = &mut serve => return,
        () = shutdown => {}
    }
    let _ = phase_tx.send(Phase::Stopped);
    serve.await;
}

pub struct ServeOptions {
    pub drain: Duration,
    pub shedder: Shedder,
    pub state: Arc<ServerState>,
}

/// Serves `app` over TLS through the phases sent on `phase`; returns once [`Phase::Stopped`] and
/// drained (or if the sender is dropped, which counts as Stopped).
pub async fn serve_tls_with(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    mut phase: watch::Receiver<Phase>,
    options: ServeOptions,
) {
    let ServeOptions { drain, shedder, state } = options;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let app = app
        .layer(axum::middleware::from_fn_with_state(shedder.clone(), shed::shed))
        .layer(axum::middleware::from_fn_with_state(phase.clone(), close_when_going_away));
    // Every connection task holds a receiver: the sender's `closed()` is "all connections done".
    let (open_tx, open_rx) = watch::channel(());
    state.accepting.store(true, Ordering::SeqCst);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = reached(&mut phase, Phase::Stopped) => break,
        };
        let Some(slot) = shedder.connection() else {
            debug!(%peer, "connection limit reached: closing");
            drop(tcp);
            continue;
        };
        // Without it HTTP/2 responses wait on Nagle's algorithm: tens of milliseconds at p99.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut phase = phase.clone();
        let open = open_rx.clone();
        let streams = shedder.limits.max_streams_per_connection;
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            // Accepted while going away: one request per HTTP/1.1 connection, and HTTP/2 told to go
            // away once its first streams are in (at once would close it before its request).
            let late = *phase.borrow() >= Phase::GoingAway;
            // HTTP/2 is told at once (GOAWAY lets the client finish what it sent and open no more
            // streams). An idle HTTP/1.1 connection is not closed while going away: a client may be
            // sending on it at that instant and could not tell whether it was processed; its next
            // response says `Connection: close` instead, and idle ones are closed once stopped.
            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT).keep_alive(!late);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(shed::H2_KEEP_ALIVE_TIMEOUT)
                .max_concurrent_streams(streams)
                .initial_stream_window_size(shed::H2_STREAM_WINDOW)
                .initial_connection_window_size(shed::H2_CONNECTION_WINDOW)
                .max_header_list_size(shed::H2_MAX_HEADER_LIST);
            let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = go_away(&mut phase, late, http2) => {
                    // GOAWAY (HTTP/2), or close after the request in progress (HTTP/1.1).
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    state.accepting.store(false, Ordering::SeqCst);
    drop(listener);
    drop(open_rx);
    info!("no longer accepting connections; draining");
    if tokio::time::timeout(drain, open_tx.closed()).await.is_err() {
        warn!(?drain, "connections still open after the drain period; closing them");
    }
}

/// Resolves once the phase is `at` or later (or the sender is gone).
async fn reached(phase: &mut watch::Receiver<Phase>, at: Phase) {
    let _ = phase.wait_for(|p| *p >= at).await;
}

/// When a connection is told to go away: HTTP/2 when the server starts going away, or a moment
/// after it was accepted if that was later; HTTP/1.1 once the server stops accepting.
async fn go_away(phase: &mut watch::Receiver<Phase>, late: bool, http2: bool) {
    if !http2 {
        reached(phase, Phase::Stopped).await;
    } else if late {
        tokio::time::sleep(LATE_GO_AWAY).await;
    } else {
        reached(phase, Phase::GoingAway).await;
    }
}

/// While going away, every HTTP/1.x response closes its connection.
async fn close_when_going_away(
    axum::extract::State(phase): axum::extract::State<watch::Receiver<Phase>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let http1 = request.version() <= axum::http::Version::HTTP_11;
    let mut response = next.run(request).await;
    if http1 && *phase.borrow() >= Phase::GoingAway {
        response
            .headers_mut()
            .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response
}

const LATE_GO_AWAY: Duration = Duration::from_millis(500);
