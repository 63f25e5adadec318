//! The webhook server over real TLS sockets on 127.0.0.1: HTTP/2 and HTTP/1.1 by ALPN, a plaintext
//! client, certificate rotation while connections are open, and a graceful drain.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hab_bootstrap::certs::{CertificateAuthority, ServingCert};
use hab_bootstrap::webhook::server::routes::router;
use hab_bootstrap::webhook::server::serve_tls;
use hab_bootstrap::webhook::server::tls::CertReloader;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use support::tls_client::{HttpsClient, client};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Server {
    addr: SocketAddr,
    certs: Arc<CertReloader>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn issue(ca: &CertificateAuthority) -> ServingCert {
    ca.issue(&["localhost".into()], &["127.0.0.1".parse().unwrap()], time::Duration::days(1)).unwrap()
}

fn write_pair(dir: &Path, cert: &ServingCert) {
    hab_bootstrap::certs::write(&dir.join("tls.crt"), &cert.cert_pem, 0o644).unwrap();
    hab_bootstrap::certs::write(&dir.join("tls.key"), &cert.key_pem, 0o600).unwrap();
}

async fn start(ca: &CertificateAuthority) -> Server {
    start_with_delay(ca, Duration::ZERO).await
}

async fn start_with_delay(ca: &CertificateAuthority, read_delay: Duration) -> Server {
    start_with(ca, read_delay, None).await
}

async fn start_with(
    ca: &CertificateAuthority,
    read_delay: Duration,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Server {
    hab_bootstrap::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), &issue(ca));
    let certs = CertReloader::load(dir.path().join("tls.crt"), dir.path().join("tls.key")).unwrap();
    let cluster = MemoryCluster {
        statefulsets: vec![statefulset("redis", "default", "redis-headless", 3, &[])],
        services: vec![headless_service("redis-headless", "default", true)],
        read_delay,
        ..Default::default()
    };
    let app = router(Arc::new(admission(cluster)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_tls(
        listener,
        certs.server_config(clients),
        app,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    Server { addr, certs, stop, task, _dir: dir }
}

async fn post_review(client: &HttpsClient, addr: SocketAddr) -> Result<(hyper::Version, Answer), String> {
    let body = serde_json::to_vec(&redis_review()).unwrap();
    let req = hyper::Request::post(format!("https://{addr}/mutate"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let version = resp.version();
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((version, decode(&bytes)))
}

#[tokio::test]
async fn http2_and_http1_over_tls() {
    let ca = CertificateAuthority::generate("test CA", time::Duration::days(1)).unwrap();
    let server = start(&ca).await;
    let (version, answer) = post_review(&client(&ca.cert_pem, true), server.addr).await.unwrap();
    assert_eq!(version, hyper::Version::HTTP_2);
    assert!(answer.allowed && answer.patch.is_some());
    let (version, answer) = post_review(&client(&ca.cert_pem, false), server.addr).await.unwrap();
    assert_eq!(version, hyper::Version::HTTP_11);
    assert!(answer.patch.is_some());
    let _ = server.stop.send(());
    server.task.await.unwrap();
}

#[tokio::test]
async fn plaintext_and_garbage_do_not_hurt_the_server() {
    let ca = CertificateAuthority::generate("test CA", time::Duration::days(1)).unwrap();
    let server = start(&ca).await;
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
    let mut buf = Vec::new();
    // rustls answers a non-TLS client with an alert (or just closes): never an HTTP response.
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf))
        .await
        .expect("connection closed");
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1"));
    let mut garbage = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    garbage.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0]).await.unwrap();
    drop(garbage);
    let (_, answer) = post_review(&client(&ca.cert_pem, true), server.addr).await.unwrap();
    assert!(answer.allowed);
    let _ = server.stop.send(());
}

#[tokio::test]
async fn rotated_certificate_is_served_without_a_restart() {
    let old_ca = CertificateAuthority::generate("old CA", time::Duration::days(1)).unwrap();
    let server = start(&old_ca).await;
    let old_client = client(&old_ca.cert_pem, true);
    post_review(&old_client, server.addr).await.unwrap();

    let new_ca = CertificateAuthority::generate("new CA", time::Duration::days(1)).unwrap();
    write_pair(server._dir.path(), &issue(&new_ca));
    assert!(server.certs.reload().unwrap(), "the new pair is picked up");
    assert!(!server.certs.reload().unwrap(), "and only once");

    // New connections get the new certificate: trusted by the new CA, not by the old.
    post_review(&client(&new_ca.cert_pem, true), server.addr).await.unwrap();
    let refused = post_review(&client(&old_ca.cert_pem, true), server.addr).await.unwrap_err();
    assert!(refused.contains("UnknownIssuer") || refused.contains("certificate"), "{refused}");
    // The connection opened before the rotation keeps working.
    post_review(&old_client, server.addr).await.unwrap();

    // A half-written pair (key of another certificate) is refused and the current one kept.
    let stray = issue(&new_ca);
    hab_bootstrap::certs::write(&server._dir.path().join("tls.key"), &stray.key_pem, 0o600).unwrap();
    assert!(server.certs.reload().is_err());
    post_review(&client(&new_ca.cert_pem, true), server.addr).await.unwrap();
    let _ = server.stop.send(());
}

#[tokio::test]
async fn reload_follows_a_kubernetes_secret_symlink_swap() {
    // A mounted Secret: tls.crt -> ..data/tls.crt, ..data -> ..2026_01_01_v1; the kubelet writes a
    // new timestamped directory and swaps the ..data link.
    hab_bootstrap::install_crypto_provider();
    let ca = CertificateAuthority::generate("CA", time::Duration::days(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let version = |name: &str, cert: &ServingCert| {
        let v = dir.path().join(name);
        std::fs::create_dir(&v).unwrap();
        write_pair(&v, cert);
    };
    let (first, second) = (issue(&ca), issue(&ca));
    version("..v1", &first);
    std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), dir.path().join(f)).unwrap();
    }
    let certs = CertReloader::load(dir.path().join("tls.crt"), dir.path().join("tls.key")).unwrap();
    version("..v2", &second);
    std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    assert!(certs.reload().unwrap());
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let ca = CertificateAuthority::generate("test CA", time::Duration::days(1)).unwrap();
    // Each request takes 300 ms inside the handler, so all of them are in flight at the stop.
    let server = start_with_delay(&ca, Duration::from_millis(300)).await;
    let c = client(&ca.cert_pem, true);
    post_review(&c, server.addr).await.unwrap();
    let in_flight: Vec<_> = (0..16)
        .map(|_| {
            let c = c.clone();
            let addr = server.addr;
            tokio::spawn(async move { post_review(&c, addr).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = server.stop.send(());
    let mut ok = 0;
    for r in in_flight {
        if r.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    tokio::time::timeout(Duration::from_secs(10), server.task).await.expect("drained").unwrap();
    assert_eq!(ok, 16, "every request sent before the stop was answered");
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err(), "no longer accepting");
}

/// Readiness reads the accept loop: accepting while it serves, not once it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_state_says_whether_the_listener_is_accepting() {
    use hab_bootstrap::webhook::server::shed::{Limits, Shedder};
    use hab_bootstrap::webhook::server::{Phase, ServeOptions, ServerState, serve_tls_with};
    hab_bootstrap::install_crypto_provider();
    let ca = CertificateAuthority::generate("state CA", time::Duration::days(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), &issue(&ca));
    let certs = CertReloader::load(dir.path().join("tls.crt"), dir.path().join("tls.key")).unwrap();
    let app = router(Arc::new(admission(MemoryCluster::default())));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let state = Arc::new(ServerState::default());
    assert!(!state.is_accepting());
    let (phase, phase_rx) = tokio::sync::watch::channel(Phase::Serving);
    let options = ServeOptions {
        drain: Duration::from_secs(1),
        shedder: Shedder::new(Limits::default()),
        state: state.clone(),
    };
    let task = tokio::spawn(serve_tls_with(listener, certs.server_config(None), app, phase_rx, options));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(state.is_accepting());
    phase.send(Phase::GoingAway).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(state.is_accepting(), "still accepting while going away");
    phase.send(Phase::Stopped).unwrap();
    task.await.unwrap();
    assert!(!state.is_accepting());
}

/// A client certificate for `common_name` signed by `ca` (rcgen, as a CA signs the API server's).
fn client_cert(ca: &CertificateAuthority, common_name: &str) -> (String, String) {
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, rcgen::KeyPair::from_pem(&ca.key_pem).unwrap())
            .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    (params.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
}

/// One HTTP/1.1 GET over TLS, presenting `identity` (certificate and key PEM) when given: the
/// response's status line, or the error that ended the exchange.
async fn get_over_tls(
    addr: SocketAddr,
    server_ca: &str,
    identity: Option<(String, String)>,
) -> Result<String, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(server_ca.as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let request = b"GET /livez HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    tls.write_all(request).await.map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// `--client-ca`: the API server's client certificate is required and checked at the handshake;
/// without one, or with one of another CA, no request is served.
#[tokio::test]
async fn a_client_ca_refuses_clients_without_its_certificate_at_tls() {
    let ca = CertificateAuthority::generate("serving CA", time::Duration::days(1)).unwrap();
    let client_ca = CertificateAuthority::generate("API server client CA", time::Duration::days(1)).unwrap();
    let other_ca = CertificateAuthority::generate("someone else", time::Duration::days(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &client_ca.cert_pem).unwrap();
    hab_bootstrap::install_crypto_provider();
    let verifier = hab_bootstrap::webhook::server::tls::client_verifier(&ca_file).unwrap();
    let server = start_with(&ca, Duration::ZERO, Some(verifier)).await;

    let served =
        get_over_tls(server.addr, &ca.cert_pem, Some(client_cert(&client_ca, "kube-apiserver"))).await;
    assert!(served.as_deref().is_ok_and(|line| line.starts_with("HTTP/1.1 ")), "{served:?}");
    let none = get_over_tls(server.addr, &ca.cert_pem, None).await;
    eprintln!("without a client certificate: {none:?}");
    assert!(none.as_ref().is_err_and(|e| e.contains("CertificateRequired")), "{none:?}");
    let foreign =
        get_over_tls(server.addr, &ca.cert_pem, Some(client_cert(&other_ca, "kube-apiserver"))).await;
    eprintln!("with another CA's certificate: {foreign:?}");
    assert!(foreign.as_ref().is_err_and(|e| e.contains("alert")), "{foreign:?}");
    // A serving certificate (no clientAuth usage) of the right CA is no client certificate either.
    let (cert, key) = {
        let c = client_ca.issue(&["localhost".into()], &[], time::Duration::days(1)).unwrap();
        (c.cert_pem, c.key_pem)
    };
    let serving = get_over_tls(server.addr, &ca.cert_pem, Some((cert, key))).await;
    assert!(serving.as_ref().is_err_and(|e| e.contains("alert")), "{serving:?}");
    let _ = server.stop.send(());
}

#[test]
fn expiry_of_the_served_certificate_and_its_ca_follows_reloads() {
    hab_bootstrap::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let old_ca = CertificateAuthority::generate("old CA", time::Duration::days(30)).unwrap();
    let new_ca = CertificateAuthority::generate("new CA", time::Duration::days(400)).unwrap();
    let serving = old_ca.issue(&["localhost".into()], &[], time::Duration::days(10)).unwrap();
    write_pair(dir.path(), &serving);
    let ca_path = dir.path().join("ca.crt");
    // A rotation in progress: both CAs trusted, the old one still signing.
    let bundle = format!("{}{}", new_ca.cert_pem, old_ca.cert_pem);
    hab_bootstrap::certs::write(&ca_path, &bundle, 0o644).unwrap();
    let certs =
        CertReloader::load_with_ca(dir.path().join("tls.crt"), dir.path().join("tls.key"), Some(ca_path))
            .unwrap();
    let days = |t: Option<time::OffsetDateTime>| (t.unwrap() - time::OffsetDateTime::now_utc()).whole_days();
    let (served, ca) = certs.not_after();
    assert_eq!((days(served), days(ca)), (9, 29), "the leaf and the CA that signed it");
    // The serving certificate moves to the new CA: both expiries follow the reload.
    write_pair(dir.path(), &new_ca.issue(&["localhost".into()], &[], time::Duration::days(90)).unwrap());
    assert!(certs.reload().unwrap());
    let (served, ca) = certs.not_after();
    assert_eq!((days(served), days(ca)), (89, 399));
    // Without a CA bundle only the serving certificate is known.
    let plain = CertReloader::load_with_ca(
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        Some(dir.path().join("absent.crt")),
    )
    .unwrap();
    assert_eq!(plain.not_after().1, None);
}
