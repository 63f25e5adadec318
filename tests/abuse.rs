//! The real `hab-bootstrap webhook` process under abuse, against a small stand-in API server on
//! 127.0.0.1 (no control plane needed):
//!
//! - a flood of large bodies (just under the 8 MiB maximum) from 64 concurrent senders over HTTP/2
//!   and HTTP/1.1 keeps the process's resident memory under the chart's 128 Mi limit, is shed with
//!   429/503 + Retry-After, and a real opted-in review sent every 200 ms meanwhile is injected;
//! - a connection flood beyond `--max-connections` is closed at once while real reviews go on;
//! - an API server that accepts connections and never answers: a labelled pod gets a reasoned
//!   denial before the API server's `?timeout=` runs out.
//!
//! Figures (RSS, answer times, what was shed) are printed with `--nocapture`; RELIABILITY.md
//! records them.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::response::IntoResponse;
use hab_bootstrap::certs::CertificateAuthority;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use support::objects::{headless_service, statefulset_json};
use support::tls_client::{HttpsClient, client};
use support::webhook_process::{free_port, webhook_command};
use support::{decode, redis_review};

/// The chart's memory limit of the webhook container.
const CHART_MEMORY_LIMIT_MIB: f64 = 128.0;
const STS_UID: &str = "5c0ffee0-0000-4000-8000-00000000f100";

/// A stand-in API server: one opted-in StatefulSet `default/redis` and its headless Service in the
/// caches, every access review allowed, Events accepted, watches that never end.
async fn stand_in_api() -> SocketAddr {
    stand_in_api_with_read_delay(Duration::ZERO).await
}

/// The same, but with a `read_delay`, the StatefulSet is not in the list the cache is filled from:
/// each review of its labelled pods reads it live, answered after `read_delay` (reviews that stay
/// in flight a while).
async fn stand_in_api_with_read_delay(read_delay: Duration) -> SocketAddr {
    let mut sts = statefulset_json("redis", "redis-headless", 3, &[("habitat/bootstrap", "true")]);
    sts["metadata"]["namespace"] = json!("default");
    sts["metadata"]["uid"] = json!(STS_UID);
    sts["metadata"]["resourceVersion"] = json!("1");
    let mut svc = serde_json::to_value(headless_service("redis-headless", "redis")).unwrap();
    svc["metadata"]["namespace"] = json!("default");
    svc["metadata"]["resourceVersion"] = json!("1");
    let list = |kind: &str, api_version: &str, items: Vec<Value>| json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1"}, "items": items});
    let cached = if read_delay.is_zero() { vec![sts.clone()] } else { vec![] };
    let (sts_list, svc_list) =
        (list("StatefulSetList", "apps/v1", cached), list("ServiceList", "v1", vec![svc]));
    let handler = move |request: Request| {
        let (sts, sts_list, svc_list) = (sts.clone(), sts_list.clone(), svc_list.clone());
        async move {
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or("").to_owned();
            if request.method() == Method::GET && query.contains("watch=true") {
                return Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>())
                    .into_response();
            }
            let body: Value = match (request.method().clone(), path.as_str()) {
                (Method::GET, "/apis/apps/v1/statefulsets") => sts_list,
                (Method::GET, "/api/v1/services") => svc_list,
                (Method::GET, "/apis/apps/v1/namespaces/default/statefulsets/redis") => {
                    tokio::time::sleep(read_delay).await;
                    sts
                }
                (Method::POST, p) if p.ends_with("/subjectaccessreviews") => json!({
                    "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                    "spec": {}, "status": {"allowed": true}
                }),
                (Method::POST, p) if p.contains("/events") => {
                    let bytes = request.into_body().collect().await.unwrap().to_bytes();
                    serde_json::from_slice(&bytes).unwrap_or(json!({}))
                }
                _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
            };
            axum::Json(body).into_response()
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, Router::new().fallback(handler)).await.unwrap() });
    addr
}

fn write_kubeconfig(dir: &Path, api: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters:\n- name: fake\n  cluster:\n    server: http://{api}\n\
         users:\n- name: fake\n  user: {{}}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

pub struct Webhook {
    pub addr: SocketAddr,
    pub admin_port: u16,
    pub ca_pem: String,
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Webhook {
    /// The binary, its kube client pointed at `api`, with `extra` flags.
    pub fn start(api: SocketAddr, extra: &[&str]) -> Self {
        Self::start_with_cert(api, extra, time::Duration::days(1))
    }

    /// The same, its serving certificate valid for `valid_for` from now.
    pub fn start_with_cert(api: SocketAddr, extra: &[&str], valid_for: time::Duration) -> Self {
        hab_bootstrap::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("flood CA", time::Duration::days(1)).unwrap();
        let cert = ca.issue(&["localhost".into()], &["127.0.0.1".parse().unwrap()], valid_for).unwrap();
        hab_bootstrap::certs::write(&dir.path().join("tls.crt"), &cert.cert_pem, 0o644).unwrap();
        hab_bootstrap::certs::write(&dir.path().join("tls.key"), &cert.key_pem, 0o600).unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("webhook.log")).unwrap();
        let mut command = webhook_command(port, admin_port, dir.path(), log);
        if let Some(bin) = std::env::var_os("HAB_BOOTSTRAP_FLOOD_BIN") {
            // The same command line against another build (the figures of the build before).
            let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
            let mut other = std::process::Command::new(bin);
            other.args(args).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
            other.stderr(std::fs::File::create(dir.path().join("webhook.log")).unwrap());
            command = other;
        }
        let child = command
            .env("KUBECONFIG", write_kubeconfig(dir.path(), api))
            .args(["--sidecar-image", "hab-bootstrap:flood"])
            .args(extra)
            .spawn()
            .unwrap();
        Self { addr: ([127, 0, 0, 1], port).into(), admin_port, ca_pem: ca.cert_pem, child, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("webhook.log")).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get("/readyz").map(|(s, _)| s) != Some(200) {
            assert!(Instant::now() < deadline, "not ready in 30 s; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .map_or(0.0, |v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0.0));
        kib / 1024.0
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A labelled, opted-in review of pod redis-0 (founds the ring: injected with no live read but the
/// pod list), dry-run.
pub fn real_review() -> Bytes {
    let mut r = redis_review();
    r["request"]["dryRun"] = json!(true);
    r["request"]["name"] = json!("redis-0");
    let pod = &mut r["request"]["object"];
    pod["metadata"]["name"] = json!("redis-0");
    pod["metadata"]["labels"]["habitat/bootstrap"] = json!("true");
    pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!("0");
    pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!("redis-0");
    pod["metadata"]["ownerReferences"][0]["uid"] = json!(STS_UID);
    pod["spec"]["hostname"] = json!("redis-0");
    Bytes::from(serde_json::to_vec(&r).unwrap())
}

/// A review whose pod carries an annotation of `size` bytes.
fn large_review(size: usize) -> Bytes {
    let mut r = redis_review();
    r["request"]["object"]["metadata"]["annotations"]["padding"] = json!("");
    let base = serde_json::to_vec(&r).unwrap().len();
    r["request"]["object"]["metadata"]["annotations"]["padding"] = json!("x".repeat(size - base));
    let bytes = serde_json::to_vec(&r).unwrap();
    assert_eq!(bytes.len(), size);
    Bytes::from(bytes)
}

pub async fn post(c: &HttpsClient, addr: SocketAddr, body: Bytes) -> Result<(u16, Bytes), String> {
    post_with_timeout(c, addr, body, "5s").await
}

pub async fn post_with_timeout(
    c: &HttpsClient,
    addr: SocketAddr,
    body: Bytes,
    timeout: &str,
) -> Result<(u16, Bytes), String> {
    let req = hyper::Request::post(format!("https://{addr}/mutate?timeout={timeout}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .map_err(|_| "no answer in 10 s".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| format!("{e:?}"))?.to_bytes();
    Ok((status, bytes))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Sends the real review every `every` until `stop`; returns the answer times of the injected
/// ones and the failures.
async fn probe(w: &Webhook, stop: &AtomicBool, every: Duration) -> (Vec<Duration>, Vec<String>) {
    let c = client(&w.ca_pem, true);
    let body = real_review();
    let (mut times, mut failures) = (Vec::new(), Vec::new());
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        match post(&c, w.addr, body.clone()).await {
            Ok((200, bytes)) if decode(&bytes).patch.is_some() => times.push(started.elapsed()),
            Ok((status, bytes)) => failures.push(format!("{status}: {}", String::from_utf8_lossy(&bytes))),
            Err(e) => failures.push(e),
        }
        tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
    }
    times.sort();
    (times, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_bodies_stays_under_the_memory_limit_and_real_pods_are_admitted() {
    let api = stand_in_api().await;
    let w = Webhook::start(api, &["--shutdown-delay", "0s"]);
    w.wait_ready().await;
    let idle = w.rss_mib();
    let large = large_review(8 * 1024 * 1024 - 4096);
    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
    let sent = Arc::new(AtomicU64::new(0));
    // 64 senders: 6 HTTP/2 connections × 8 streams, 16 HTTP/1.1 connections.
    let mut senders = Vec::new();
    for i in 0..22 {
        let http2 = i < 6;
        let c = client(&w.ca_pem, http2);
        for _ in 0..(if http2 { 8 } else { 1 }) {
            let (c, addr, body, stop, statuses, sent) =
                (c.clone(), w.addr, large.clone(), stop.clone(), statuses.clone(), sent.clone());
            senders.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let key = match post(&c, addr, body.clone()).await {
                        Ok((status, _)) => status.to_string(),
                        Err(e) if e.contains("no answer") => "timeout".to_owned(),
                        Err(_) => "connection error".to_owned(),
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    *statuses.lock().unwrap().entry(key).or_default() += 1;
                }
            }));
        }
    }
    let sampler = {
        let (stop, pid) = (stop.clone(), w.child.id());
        tokio::spawn(async move {
            let mut max: f64 = 0.0;
            while !stop.load(Ordering::SeqCst) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let kib: f64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .map_or(0.0, |v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0.0));
                max = max.max(kib / 1024.0);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            max
        })
    };
    let flood_for = Duration::from_secs(15);
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(flood_for).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let (times, failures) = probe(&w, &stop, Duration::from_millis(200)).await;
    stopper.await.unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let max_rss = sampler.await.unwrap();
    let metrics = w.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    let shed: Vec<_> = metrics.lines().filter(|l| l.starts_with("hab_bootstrap_shed_total")).collect();
    eprintln!(
        "flood of {:.2} MiB bodies for {flood_for:?}: {} sent, answers {:?}; RSS idle {idle:.1} MiB, max \
         {max_rss:.1} MiB (limit {CHART_MEMORY_LIMIT_MIB} MiB); real reviews: {} injected, {} failed, \
         p50 {:?} p99 {:?} max {:?}; {shed:?}",
        large.len() as f64 / (1024.0 * 1024.0),
        sent.load(Ordering::Relaxed),
        statuses.lock().unwrap(),
        times.len(),
        failures.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or_default(),
    );
    assert!(max_rss < CHART_MEMORY_LIMIT_MIB, "RSS reached {max_rss:.1} MiB; log:\n{}", w.log());
    assert!(failures.is_empty(), "real reviews failed during the flood: {failures:?}");
    // One every 200 ms when the machine is free; fewer when other tests share its cores.
    assert!(times.len() >= 15, "only {} real reviews in {flood_for:?}", times.len());
    let statuses = statuses.lock().unwrap().clone();
    assert!(statuses.contains_key("503"), "nothing shed: {statuses:?}");
    // After the flood, still serving.
    let (status, bytes) = post(&client(&w.ca_pem, false), w.addr, real_review()).await.unwrap();
    assert!(status == 200 && decode(&bytes).patch.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limit_connections_are_closed_and_real_pods_are_admitted() {
    let api = stand_in_api().await;
    let w = Webhook::start(api, &["--max-connections", "16", "--shutdown-delay", "0s"]);
    w.wait_ready().await;
    // 64 idle TCP connections (they would each hold a slot for the 10 s handshake timeout).
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(tokio::net::TcpStream::connect(w.addr).await.unwrap());
    }
    // The 16 first hold the slots; the others were closed at once.
    let mut closed = 0;
    for s in &mut idle[16..] {
        let mut buf = [0u8; 1];
        use tokio::io::AsyncReadExt;
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 48, "connections beyond the limit must be closed at once");
    let metrics = w.get("/metrics").unwrap().1;
    assert!(metrics.contains("hab_bootstrap_shed_total{limit=\"connections\"} 48"), "{metrics}");
    // Slots come back: after the idle ones go, real reviews are admitted.
    drop(idle);
    let c = client(&w.ca_pem, true);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match post(&c, w.addr, real_review()).await {
            Ok((200, bytes)) if decode(&bytes).patch.is_some() => break,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_api_server_gets_a_reasoned_denial_before_the_api_servers_timeout() {
    // Accepts every connection, reads nothing, answers nothing.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = hung.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hung.incoming().flatten() {
            held.push(conn);
        }
    });
    let w = Webhook::start(api, &["--shutdown-delay", "0s"]);
    // Never ready (its caches cannot sync), but serving.
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(w.addr).await.is_err() {
        assert!(Instant::now() < deadline, "not serving in 30 s; log:\n{}", w.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = client(&w.ca_pem, true);
    // The API server's timeout is the webhook configuration's timeoutSeconds (1 to 30).
    for (timeout, limit) in [("2s", Duration::from_secs(2)), ("5s", Duration::from_secs(5))] {
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let (status, bytes) = post_with_timeout(&c, w.addr, real_review(), timeout)
                .await
                .unwrap_or_else(|e| panic!("{e}; log:\n{}", w.log()));
            let took = started.elapsed();
            let answer = decode(&bytes);
            assert_eq!(status, 200);
            assert!(!answer.allowed, "{answer:?}");
            let message = answer.message.clone().unwrap_or_default();
            assert!(message.contains("no answer from the API server"), "{message}");
            assert!(took < limit, "answered in {took:?}, after the API server's {timeout} timeout");
            times.push(took);
        }
        times.sort();
        eprintln!(
            "hung API server, ?timeout={timeout}: denial answered in {times:?} (median {:?})",
            times[1]
        );
    }
    let metrics = w.get("/metrics").unwrap().1;
    assert!(metrics.contains("le=\"5.0\""), "histogram buckets up to the timeout: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_drops_when_the_serving_certificate_expires() {
    let api = stand_in_api().await;
    let w = Webhook::start_with_cert(api, &["--shutdown-delay", "0s"], time::Duration::seconds(4));
    w.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        match w.get("/readyz") {
            Some((503, body)) => break body,
            other => assert!(Instant::now() < deadline, "still {other:?} after the certificate expired"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(reason.contains("the serving certificate expired"), "{reason}");
}

/// A client that never retries a request on another connection: what it sees is what the API
/// server would see.
fn non_retrying_client(ca_pem: &str, http2: bool) -> HttpsClient {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(support::tls_client::tls_client_config(ca_pem, &[]))
        .https_only();
    let connector = if http2 { builder.enable_http2().build() } else { builder.enable_http1().build() };
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(http2)
        .retry_canceled_requests(false)
        .build(connector)
}

type Timed = (Instant, Instant, Result<u16, String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_clients_to_go_away_and_answers_through_the_delay_and_the_drain() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Opted-in reviews take 300 ms (the pod list): some are in flight when the listener closes.
    let api = stand_in_api_with_read_delay(Duration::from_millis(300)).await;
    let delay = Duration::from_secs(2);
    let w = Webhook::start(api, &["--shutdown-delay", "2s", "--drain-timeout", "5s"]);
    w.wait_ready().await;

    // An idle HTTP/1.1 keep-alive connection and an idle HTTP/2 connection, opened before.
    let tls = |alpn: &[&[u8]]| {
        tokio_rustls::TlsConnector::from(Arc::new(support::tls_client::tls_client_config(&w.ca_pem, alpn)))
    };
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    let mut h1 = tls(&[b"http/1.1"]).connect(name.clone(), tcp).await.unwrap();
    let tcp = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    let h2_tls = tls(&[b"h2"]).connect(name, tcp).await.unwrap();
    let (_h2_send, h2_conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(h2_tls),
    )
    .await
    .unwrap();
    let h2_conn = tokio::spawn(h2_conn);

    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<std::sync::Mutex<Vec<Timed>>> = Arc::default();
    let workers: Vec<_> = (0..6)
        .map(|i| {
            let c = non_retrying_client(&w.ca_pem, i % 2 == 0);
            let (addr, stop, results) = (w.addr, stop.clone(), results.clone());
            tokio::spawn(async move {
                // Staggered: reviews started together take the same 300 ms and stay in step, and
                // in step they may all end in the 50 ms between the load's stop and the
                // listener's close, leaving none to answer through the drain.
                tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let outcome = match post(&c, addr, real_review()).await {
                        Ok((200, bytes)) if decode(&bytes).patch.is_some() => Ok(200),
                        Ok((status, _)) => Err(format!("HTTP {status}")),
                        Err(e) => Err(format!("{} {e}", if i % 2 == 0 { "HTTP/2" } else { "HTTP/1.1" })),
                    };
                    results.lock().unwrap().push((started, Instant::now(), outcome));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled = Instant::now();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) }, 0);

    // The idle HTTP/2 connection is told to go away (GOAWAY, then closed) during the delay.
    let h2_closed = tokio::time::timeout(delay, h2_conn).await;
    assert!(matches!(h2_closed, Ok(Ok(Ok(())))), "the idle HTTP/2 connection got no GOAWAY: {h2_closed:?}");
    let h2_closed_after = signalled.elapsed();
    // The idle HTTP/1.1 connection is not closed under a client that may be sending on it: its next
    // request is answered, with Connection: close.
    let review = real_review();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        review.len()
    );
    let mut answer = Vec::new();
    if h1.write_all(&[head.as_bytes(), &review].concat()).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), h1.read_to_end(&mut answer)).await;
    }
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 200") && answer.contains("connection: close"), "{answer}");

    // Load until the listener closes (in a cluster the Service stopped routing here before).
    tokio::time::sleep(delay.saturating_sub(signalled.elapsed() + Duration::from_millis(50))).await;
    stop.store(true, Ordering::SeqCst);
    let listener_closed = signalled + delay;
    for worker in workers {
        worker.await.unwrap();
    }
    let mut w = w;
    let exit = loop {
        if let Some(status) = w.child.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(15), "no exit 15 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exited_after = signalled.elapsed();
    let results = results.lock().unwrap().clone();
    // A request that a GOAWAY kept from being sent (hyper says Canceled: nothing was written) is
    // the one kind of failure a client must retry itself; Go's HTTP/2 transport, the API
    // server's, does. Anything else (an HTTP error, a request cut after it was sent) is a loss.
    let canceled = |e: &String| {
        e.starts_with("HTTP/2")
            && (e.contains("Canceled") || (e.contains("GoAway(") && e.contains("NO_ERROR")))
    };
    let unsent = results.iter().filter(|r| r.2.as_ref().is_err_and(canceled)).count();
    let failed: Vec<_> = results.iter().filter(|r| r.2.as_ref().is_err_and(|e| !canceled(e))).collect();
    let during_delay = results.iter().filter(|r| r.0 > signalled && r.2.is_ok()).count();
    let through_drain = results.iter().filter(|r| r.1 > listener_closed && r.2.is_ok()).count();
    eprintln!(
        "SIGTERM under load, non-retrying clients: {} reviews, {} failed, {unsent} not sent (GOAWAY race, \
         Canceled before being written); {during_delay} sent after the \
         signal and answered; {through_drain} answered after the listener closed (drain); idle HTTP/2 \
         connection closed by GOAWAY {h2_closed_after:?} after the signal; exit {exit} {exited_after:?} \
         after the signal",
        results.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed: {:?}", &failed[..failed.len().min(5)]);
    assert!(during_delay > 0 && through_drain > 0, "the load did not go through the delay and the drain");
    assert!(exit.success(), "exit status {exit}");
}
