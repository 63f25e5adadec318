//! A stand-in Supervisor HTTP gateway on 127.0.0.1 whose `/census` answer the test scripts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// A real capture from `tests/fixtures/supervisor/census-<name>.json`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/supervisor/census-{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this body.
    Body(String),
    /// This status, empty body.
    Status(u16),
    /// 200 with this body, after a delay.
    Slow(Duration, String),
}

impl Reply {
    pub fn census(name: &str) -> Self {
        Reply::Body(fixture(name))
    }
}

struct Script {
    reply: Mutex<Reply>,
    requests: AtomicUsize,
    request_seen: Notify,
    required_token: Option<String>,
}

pub struct StandInSupervisor {
    addr: SocketAddr,
    script: Arc<Script>,
    server: Option<JoinHandle<()>>,
}

impl StandInSupervisor {
    pub async fn start(reply: Reply) -> Self {
        Self::start_inner(reply, None).await
    }

    /// Answers 401 unless the request carries `Authorization: Bearer <token>`.
    pub async fn start_with_token(reply: Reply, token: &str) -> Self {
        Self::start_inner(reply, Some(token.to_owned())).await
    }

    async fn start_inner(reply: Reply, required_token: Option<String>) -> Self {
        let script = Arc::new(Script {
            reply: Mutex::new(reply),
            requests: AtomicUsize::new(0),
            request_seen: Notify::new(),
            required_token,
        });
        let mut me = Self { addr: "127.0.0.1:0".parse().unwrap(), script, server: None };
        me.listen().await;
        me
    }

    pub fn url(&self) -> String {
        format!("http://{}/census", self.addr)
    }

    pub fn set(&self, reply: Reply) {
        *self.script.reply.lock().unwrap() = reply;
    }

    pub fn requests(&self) -> usize {
        self.script.requests.load(Ordering::SeqCst)
    }

    /// Waits until `more` further requests have arrived.
    pub async fn wait_requests(&self, more: usize) {
        let target = self.requests() + more;
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let seen = self.script.request_seen.notified();
                if self.requests() >= target {
                    return;
                }
                seen.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {more} census requests in 20 s"));
    }

    /// Closes the listener and every open connection: the Supervisor is gone.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) {
        self.stop();
        // the aborted task drops its listener at its next poll; give it that poll
        tokio::task::yield_now().await;
        self.listen().await;
    }

    async fn listen(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        let mut bound = None;
        for _ in 0..50 {
            match socket.bind(self.addr) {
                Ok(()) => {
                    bound = Some(());
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        bound.unwrap_or_else(|| panic!("cannot bind {}", self.addr));
        let listener = socket.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        let script = self.script.clone();
        self.server = Some(tokio::spawn(async move {
            // Owned here so that aborting this task also closes kept-alive connections.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let script = script.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| answer(script.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }
}

impl Drop for StandInSupervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    script: Arc<Script>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = script.reply.lock().unwrap().clone();
    script.requests.fetch_add(1, Ordering::SeqCst);
    script.request_seen.notify_waiters();
    if request.uri().path() != "/census" {
        return Ok(status(StatusCode::NOT_FOUND));
    }
    if let Some(token) = &script.required_token {
        let expected = format!("Bearer {token}");
        let given = request.headers().get(header::AUTHORIZATION);
        if given.and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return Ok(status(StatusCode::UNAUTHORIZED));
        }
    }
    Ok(match reply {
        Reply::Body(body) => json(body),
        Reply::Status(code) => status(StatusCode::from_u16(code).unwrap()),
        Reply::Slow(delay, body) => {
            tokio::time::sleep(delay).await;
            json(body)
        }
    })
}

fn json(body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    Response::builder().status(code).body(Full::new(Bytes::new())).unwrap()
}
