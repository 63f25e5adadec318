//! Hostile input against the real TLS server (in process: `serve_tls` + `routes::router` + an
//! in-memory cluster): a table of bad requests, each sent over HTTP/2 and HTTP/1.1 with the answer
//! it must get; connection-level abuse (plaintext, garbage records, slow-loris, HTTP/2 stream
//! floods and resets); and a replay of the fuzz seeds and regressions (fuzz/) through the fuzz
//! checks, so that CI runs them on stable without a fuzzer. After each group the server must still
//! answer a normal review.

#[path = "../fuzz/checks.rs"]
mod checks;
// The fuzz checks bring their own copy of support/cluster.rs; this one is for the TLS client.
#[allow(clippy::duplicate_mod)]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use checks::support::*;
use hab_bootstrap::certs::{CertificateAuthority, ServingCert};
use hab_bootstrap::webhook::server::routes::{MAX_BODY_BYTES, router};
use hab_bootstrap::webhook::server::serve_tls;
use hab_bootstrap::webhook::server::tls::CertReloader;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use support::tls_client::{HttpsClient, client, tls_client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Server {
    addr: SocketAddr,
    ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start() -> Server {
    hab_bootstrap::install_crypto_provider();
    let ca = CertificateAuthority::generate("hostile CA", time::Duration::days(1)).unwrap();
    let cert: ServingCert =
        ca.issue(&["localhost".into()], &["127.0.0.1".parse().unwrap()], time::Duration::days(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    hab_bootstrap::certs::write(&dir.path().join("tls.crt"), &cert.cert_pem, 0o644).unwrap();
    hab_bootstrap::certs::write(&dir.path().join("tls.key"), &cert.key_pem, 0o600).unwrap();
    let certs = CertReloader::load(dir.path().join("tls.crt"), dir.path().join("tls.key")).unwrap();
    let mut plain = statefulset("plain", "default", "plain-headless", 3, &[]);
    plain.metadata.annotations = None;
    let cluster = MemoryCluster {
        statefulsets: vec![statefulset("redis", "default", "redis-headless", 3, &[]), plain],
        services: vec![headless_service("redis-headless", "default", true)],
        ..Default::default()
    };
    let app = router(Arc::new(admission(cluster)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_tls(
        listener,
        certs.server_config(None),
        app,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    Server { addr, ca_pem: ca.cert_pem, stop: Some(stop), _dir: dir }
}

async fn send(
    client: &HttpsClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let mut req = hyper::Request::builder().method(method).uri(format!("https://{addr}{path}"));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "no answer in 30 s".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| format!("{e:?}"))?.to_bytes();
    Ok((status, bytes.to_vec()))
}

/// A normal review still gets its patch.
async fn healthy(server: &Server) {
    let c = client(&server.ca_pem, true);
    let body = serde_json::to_vec(&redis_review()).unwrap();
    let (status, bytes) =
        send(&c, server.addr, "POST", "/mutate", Some("application/json"), body).await.unwrap();
    assert_eq!(status, 200);
    let answer = decode(&bytes);
    assert!(answer.allowed && answer.patch.is_some(), "{answer:?}");
}

#[derive(Debug, Clone)]
enum Expect {
    /// An HTTP error whose body contains the text.
    Http(u16, &'static str),
    /// An AdmissionReview answer: allowed, with a patch or without.
    Allowed { patched: bool },
    /// An AdmissionReview denial whose message contains the text.
    Denied(&'static str),
    /// Answered in the request's own apiVersion, allowed.
    Echoes(&'static str),
    /// Over HTTP/1.1 the server may answer 413 and close before the client has sent the whole
    /// body, which the client sees as a broken connection.
    TooLarge,
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, body: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name,
        method: "POST",
        path: "/mutate",
        content_type: Some("application/json"),
        body: body.into(),
        expect,
    }
}

/// The captured redis-2 review with `edit` applied.
fn review_with(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review = redis_review();
    edit(&mut review);
    serde_json::to_vec(&review).unwrap()
}

fn pod_with(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    review_with(|r| edit(&mut r["request"]["object"]))
}

/// Renames the pod (name, hostname, pod-name and pod-index labels) and labels it ours.
fn renamed(name: &str, index: &str) -> Vec<u8> {
    let (name, index) = (name.to_owned(), index.to_owned());
    review_with(move |r| {
        r["request"]["name"] = json!(name);
        let pod = &mut r["request"]["object"];
        pod["metadata"]["name"] = json!(name);
        pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(name);
        pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!(index);
        pod["metadata"]["labels"]["habitat/bootstrap"] = json!("true");
        pod["spec"]["hostname"] = json!(name);
    })
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let full = serde_json::to_vec(&redis_review()).unwrap();
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let mut huge = redis_review();
    huge["request"]["object"]["metadata"]["annotations"]["padding"] = json!("x".repeat(MAX_BODY_BYTES));
    let mut big_but_fine = redis_review();
    let base = serde_json::to_vec(&big_but_fine).unwrap().len();
    big_but_fine["request"]["object"]["metadata"]["annotations"]["padding"] =
        json!("x".repeat(7 * 1024 * 1024 - base));
    let many_containers = pod_with(|p| {
        let sup = p["spec"]["containers"][0].clone();
        let containers: Vec<Value> = (0..2000)
            .map(|i| {
                let mut c = sup.clone();
                c["name"] = json!(format!("c{i}"));
                c
            })
            .collect();
        p["spec"]["containers"] = json!(containers);
    });
    let duplicate_uid = String::from_utf8(full.clone()).unwrap().replacen(
        r#""uid":"9a1de644-815e-46d1-bb8f-aa1837f8a88b""#,
        r#""uid":"9a1de644-815e-46d1-bb8f-aa1837f8a88b","uid":"other""#,
        1,
    );
    assert_ne!(duplicate_uid.as_bytes(), full.as_slice(), "the fixture's uid is where we expect it");
    // The pod's own metadata.name (the request's name is followed by "object").
    let anchor = r#""name":"redis-2","namespace":"default","ownerReferences""#;
    let duplicate_pod_name = String::from_utf8(full.clone()).unwrap().replacen(
        anchor,
        &anchor.replacen(r#","namespace""#, r#","name":"x","namespace""#, 1),
        1,
    );
    assert_ne!(duplicate_pod_name.as_bytes(), full.as_slice(), "the pod's name is where we expect it");

    vec![
        // Not JSON, or not an AdmissionReview: HTTP 400, nothing to answer.
        case("empty body", "", Http(400, "not an AdmissionReview")),
        case("truncated", full[..full.len() / 2].to_vec(), Http(400, "not an AdmissionReview")),
        case("truncated by one byte", full[..full.len() - 1].to_vec(), Http(400, "not an AdmissionReview")),
        case("not UTF-8", b"\xff\xfe\x00{".to_vec(), Http(400, "not an AdmissionReview")),
        case(
            "byte order mark",
            [b"\xef\xbb\xbf".as_slice(), &full].concat(),
            Http(400, "not an AdmissionReview"),
        ),
        case("trailing garbage", [full.as_slice(), b"}{"].concat(), Http(400, "not an AdmissionReview")),
        case("top-level array", "[]", Http(400, "not an AdmissionReview")),
        case("top-level null", "null", Http(400, "not an AdmissionReview")),
        case("NaN literal", r#"{"request":{"uid":NaN}}"#, Http(400, "not an AdmissionReview")),
        case(
            "request nested 100 000 deep",
            format!(r#"{{"request":{}}}"#, deep(100_000)),
            Http(400, "invalid type"),
        ),
        case(
            "kind is Pod, not AdmissionReview",
            r#"{"kind":"Pod","request":{"uid":"u"}}"#,
            Http(400, "is not AdmissionReview"),
        ),
        case(
            "apiVersion v1",
            r#"{"apiVersion":"v1","request":{"uid":"u"}}"#,
            Http(400, "not admission.k8s.io"),
        ),
        case(
            "no request",
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            Http(400, "no request"),
        ),
        case("request null", r#"{"request":null}"#, Http(400, "no request")),
        case(
            "missing uid",
            review_with(|r| drop(r["request"].as_object_mut().unwrap().remove("uid"))),
            Http(400, "no uid"),
        ),
        case("empty uid", review_with(|r| r["request"]["uid"] = json!("")), Http(400, "no uid")),
        case("uid is a number", review_with(|r| r["request"]["uid"] = json!(7)), Http(400, "invalid type")),
        case(
            "operation is a number",
            review_with(|r| r["request"]["operation"] = json!(5)),
            Http(400, "invalid type"),
        ),
        case(
            "dryRun is a string",
            review_with(|r| r["request"]["dryRun"] = json!("yes")),
            Http(400, "invalid type"),
        ),
        case("duplicate uid key", duplicate_uid, Http(400, "duplicate field `uid`")),
        case("body over 8 MiB", serde_json::to_vec(&huge).unwrap(), TooLarge),
        Case {
            content_type: Some("text/plain"),
            ..case("text/plain", full.clone(), Http(415, "not application/json"))
        },
        Case {
            content_type: None,
            ..case("no content type", full.clone(), Http(415, "not application/json"))
        },
        Case { method: "GET", ..case("GET", "", Http(405, "")) },
        Case { path: "/mutate/../admin", ..case("dot-dot path", full.clone(), Http(404, "")) },
        Case { path: "/%00", ..case("NUL in path", full.clone(), Http(404, "")) },
        // Answerable, but not ours: allowed untouched.
        // serde_json skips an unknown field without recursing: no stack to exhaust.
        case(
            "ignored field nested 100 000 deep",
            format!(r#"{{"request":{{"uid":"u","userInfo":{}}}}}"#, deep(100_000)),
            Allowed { patched: false },
        ),
        case(
            "kind Deployment",
            review_with(|r| r["request"]["kind"]["kind"] = json!("Deployment")),
            Allowed { patched: false },
        ),
        case(
            "operation DELETE",
            review_with(|r| r["request"]["operation"] = json!("DELETE")),
            Allowed { patched: false },
        ),
        case(
            "apiVersion v1beta1",
            review_with(|r| r["apiVersion"] = json!("admission.k8s.io/v1beta1")),
            Echoes("admission.k8s.io/v1beta1"),
        ),
        case(
            "owner uid of another StatefulSet",
            pod_with(|p| p["metadata"]["ownerReferences"][0]["uid"] = json!("nope")),
            Allowed { patched: false },
        ),
        case(
            "owner is a ReplicaSet",
            pod_with(|p| p["metadata"]["ownerReferences"][0]["kind"] = json!("ReplicaSet")),
            Allowed { patched: false },
        ),
        case(
            "no owner",
            pod_with(|p| drop(p["metadata"].as_object_mut().unwrap().remove("ownerReferences"))),
            Allowed { patched: false },
        ),
        case(
            "unicode owner name, unlabelled",
            pod_with(|p| p["metadata"]["ownerReferences"][0]["name"] = json!("rédis-☃")),
            Allowed { patched: false },
        ),
        case(
            "body just under the limit",
            serde_json::to_vec(&big_but_fine).unwrap(),
            Allowed { patched: true },
        ),
        case("2 000 containers", many_containers, Allowed { patched: true }),
        // Ours but unreadable or impossible: denied with a reason (HTTP 200, allowed: false).
        case(
            "no object",
            review_with(|r| drop(r["request"].as_object_mut().unwrap().remove("object"))),
            Denied("carries no object"),
        ),
        case(
            "object null",
            review_with(|r| r["request"]["object"] = Value::Null),
            Denied("cannot read the pod"),
        ),
        case(
            "metadata nested 100 000 deep",
            format!(
                r#"{{"request":{{"uid":"u","kind":{{"kind":"Pod"}},"operation":"CREATE","object":{{"metadata":{}}}}}}}"#,
                deep(100_000)
            ),
            Denied("cannot read the pod"),
        ),
        case(
            "label value is a number",
            pod_with(|p| p["metadata"]["labels"]["app"] = json!(1)),
            Denied("cannot read the pod"),
        ),
        case(
            "containers is a string",
            pod_with(|p| p["spec"]["containers"] = json!("redis")),
            Denied("cannot read the pod"),
        ),
        case("duplicate pod name key", duplicate_pod_name, Denied("cannot read the pod")),
        case(
            "unicode owner name, labelled",
            pod_with(|p| {
                p["metadata"]["ownerReferences"][0]["name"] = json!("rédis-☃");
                p["metadata"]["labels"]["habitat/bootstrap"] = json!("true");
            }),
            Denied("was not found"),
        ),
        case("ordinal past u32", renamed("redis-4294967296", "4294967296"), Denied("out of range")),
        case("negative ordinal", renamed("redis--1", "-1"), Denied("is not <statefulset>-<ordinal>")),
        case(
            "non-ASCII digits in the ordinal",
            renamed("redis-٢", "2"),
            Denied("is not <statefulset>-<ordinal>"),
        ),
        case("pod-index label disagrees", renamed("redis-2", "3"), Denied("disagrees")),
        // The denial quotes the name, cut to 1 kB.
        case(
            "10 000-character name",
            renamed(&format!("redis-{}", "9".repeat(10_000)), "9"),
            Denied("pod \"redis-99999"),
        ),
    ]
}

async fn run_cases(http2: bool) {
    let server = start().await;
    let c = client(&server.ca_pem, http2);
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for Case { name, method, path, content_type, body, expect } in cases {
        let result = send(&c, server.addr, method, path, content_type, body).await;
        let what = format!("{name} (http2: {http2}): {expect:?}");
        match (&expect, result) {
            (Expect::TooLarge, Ok((status, _))) => assert_eq!(status, 413, "{what}"),
            (Expect::TooLarge, Err(e)) => assert!(!http2, "{what}: {e}"),
            (_, Err(e)) => panic!("{what}: {e}"),
            (Expect::Http(want, text), Ok((status, bytes))) => {
                let body = String::from_utf8_lossy(&bytes);
                assert_eq!(status, *want, "{what}: {body}");
                assert!(body.contains(text), "{what}: {body}");
            }
            (Expect::Echoes(api_version), Ok((status, bytes))) => {
                assert_eq!(status, 200, "{what}");
                let answer: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(answer["apiVersion"], *api_version, "{what}");
                assert_eq!(answer["response"]["allowed"], true, "{what}");
            }
            (Expect::Allowed { patched }, Ok((status, bytes))) => {
                assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&bytes));
                let answer = decode(&bytes);
                assert!(answer.allowed, "{what}: {answer:?}");
                assert_eq!(answer.patch.is_some(), *patched, "{what}: {answer:?}");
            }
            (Expect::Denied(text), Ok((status, bytes))) => {
                assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&bytes));
                let answer = decode(&bytes);
                assert!(!answer.allowed && answer.patch.is_none(), "{what}: {answer:?}");
                let message = answer.message.unwrap_or_default();
                assert!(message.contains(text), "{what}: {message}");
                assert!(message.len() < 2000, "{what}: a denial message stays readable");
            }
        }
    }
    healthy(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_over_http2() {
    run_cases(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_over_http1() {
    run_cases(false).await;
}

/// Opens a TLS connection offering `alpn`.
async fn tls(server: &Server, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(&server.ca_pem, alpn)));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// Reads until the peer closes (or 60 s pass: then the test fails); returns what was read.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open for 60 s"),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_abuse_is_cut_off_and_the_server_keeps_serving() {
    let server = start().await;
    let review = serde_json::to_vec(&redis_review()).unwrap();

    // Plaintext HTTP to the TLS port: a TLS alert or a close, never an HTTP answer.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
    let answer = read_until_closed(&mut plain).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1"));

    // A TLS record header announcing 64 kB, then nothing: cut off by the handshake timeout.
    let mut garbage = TcpStream::connect(server.addr).await.unwrap();
    garbage.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).await.unwrap();
    // Random bytes in place of a ClientHello.
    let mut noise = TcpStream::connect(server.addr).await.unwrap();
    noise.write_all(&[0x42; 4096]).await.unwrap();
    read_until_closed(&mut noise).await;
    // A TCP connection that never starts TLS: closed by the handshake timeout (10 s).
    let mut silent = TcpStream::connect(server.addr).await.unwrap();

    // Slow-loris over HTTP/1.1: headers one byte every 500 ms are cut off by the header timeout.
    let mut slow = tls(&server, &[b"http/1.1"]).await;
    let slow_loris = tokio::spawn(async move {
        let head = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        slow.write_all(head).await.unwrap();
        for _ in 0..120 {
            if slow.write_all(b"a").await.is_err() || slow.flush().await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    });
    // Headers complete, then a body that never comes: 408 after the request timeout (30 s), and
    // the connection must not hurt anyone else meanwhile.
    let mut stalled = tls(&server, &[b"http/1.1"]).await;
    stalled
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();

    // Too many headers (HTTP/1.1): 431, or a close.
    let mut many = tls(&server, &[b"http/1.1"]).await;
    let mut head = String::from("POST /mutate HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..500 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    many.write_all(head.as_bytes()).await.unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut many).await).into_owned();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");

    // A malformed chunked body: 400, or a close.
    let mut chunked = tls(&server, &[b"http/1.1"]).await;
    chunked
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut chunked).await).into_owned();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Two pipelined requests on one connection: both answered, in order.
    let mut pipelined = tls(&server, &[b"http/1.1"]).await;
    let request = [
        format!(
            "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            review.len()
        )
        .into_bytes(),
        review.clone(),
    ]
    .concat();
    pipelined.write_all(&[request.clone(), request].concat()).await.unwrap();
    pipelined.write_all(b"GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut pipelined).await).into_owned();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert!(answer.contains("HTTP/1.1 404"), "{answer}");

    // Meanwhile, and after, normal reviews are answered.
    healthy(&server).await;
    assert!(slow_loris.await.unwrap(), "the slow-loris connection was cut off");
    read_until_closed(&mut silent).await;
    read_until_closed(&mut garbage).await;
    let answer = String::from_utf8_lossy(&read_until_closed(&mut stalled).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    healthy(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_stream_floods_and_resets() {
    let server = start().await;
    let c = client(&server.ca_pem, true);
    let review = serde_json::to_vec(&redis_review()).unwrap();

    // 1 000 concurrent streams on one connection: every one answered (the server's stream limit
    // makes the client queue the rest). One request first, so the client has read the server's
    // SETTINGS: streams opened before them exceed the limit and are refused (REFUSED_STREAM,
    // never processed), which the API server's Go client retries and this client does not.
    let (status, _) =
        send(&c, server.addr, "POST", "/mutate", Some("application/json"), review.clone()).await.unwrap();
    assert_eq!(status, 200);
    let requests: Vec<_> = (0..1000)
        .map(|_| {
            let (c, body, addr) = (c.clone(), review.clone(), server.addr);
            tokio::spawn(
                async move { send(&c, addr, "POST", "/mutate", Some("application/json"), body).await },
            )
        })
        .collect();
    for r in requests {
        let (status, bytes) = r.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert!(decode(&bytes).patch.is_some());
    }

    // Rapid reset (CVE-2023-44487): streams opened and cancelled at once, over and over, on fresh
    // connections. The server may close those connections; it must keep serving others.
    for _ in 0..5 {
        let flooder = client(&server.ca_pem, true);
        let mut cancelled = Vec::new();
        for _ in 0..500 {
            let (c, body, addr) = (flooder.clone(), review.clone(), server.addr);
            let task = tokio::spawn(async move {
                send(&c, addr, "POST", "/mutate", Some("application/json"), body).await
            });
            cancelled.push(task);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        for task in cancelled {
            task.abort();
        }
    }
    healthy(&server).await;

    // An HTTP/2 connection preface followed by garbage frames: the connection is closed.
    let mut h2 = tls(&server, &[b"h2"]).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    h2.write_all(&[0, 0, 8, 0xff, 0xff, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]).await.unwrap();
    h2.write_all(&[0xff; 64]).await.unwrap();
    read_until_closed(&mut h2).await;
    // The preface alone, then silence: the server's keep-alive ping or timeout handles it; the
    // connection must not stop others from being served.
    let mut idle = tls(&server, &[b"h2"]).await;
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    healthy(&server).await;
    drop(idle);
}

/// The fuzz seeds and every input that once failed a fuzz check, through the same checks.
#[test]
fn fuzz_seeds_and_regressions_pass_the_fuzz_checks() {
    hab_bootstrap::install_crypto_provider();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");
    let mut replayed = 0;
    for (target, check) in [
        ("review", checks::review as fn(&[u8])),
        ("inject_manifest", checks::inject_manifest),
        ("census", checks::census),
    ] {
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(format!("{root}/{dir}/{target}")) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n == "README") {
                    continue;
                }
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| check(&data));
                assert!(outcome.is_ok(), "{target}: {} fails its fuzz check", path.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 10, "only {replayed} inputs found under {root}");
}
