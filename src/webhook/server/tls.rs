//! The serving certificate, reloaded without a restart.
//!
//! Kubernetes updates a mounted Secret by swapping a `..data` symlink, which file-write watchers
//! miss (kubernetes#111947). Polling the contents catches every kind of replacement; the new key is
//! swapped in atomically and used from the next handshake on, while open connections keep theirs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The CA bundle (`ca.crt`), read only for its expiry; optional.
    ca_path: Option<PathBuf>,
    current: ArcSwap<Loaded>,
}

/// The certificate chain's, the key's and the CA bundle's PEM.
type Files = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

struct Loaded {
    /// The PEM bytes the key was built from, and the CA bundle's, to notice a change without parsing.
    pem: Files,
    key: Arc<CertifiedKey>,
    /// The leaf certificate's validity, when it could be read.
    validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    /// notAfter of the CA in the bundle that signed the leaf, when there is one.
    ca_not_after: Option<time::OffsetDateTime>,
}

impl Loaded {
    fn from_pem(pem: Files) -> anyhow::Result<Self> {
        let key = certified_key(&pem.0, &pem.1)?;
        let validity = validity(&key);
        let ca_not_after = pem.2.as_deref().and_then(|ca| issuer_not_after(&key, ca));
        Ok(Self { pem, key, validity, ca_not_after })
    }
}

impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader").field("cert_path", &self.cert_path).finish_non_exhaustive()
    }
}

impl CertReloader {
    /// Loads the certificate chain and key; fails if either is unreadable or they do not match.
    pub fn load(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> anyhow::Result<Arc<Self>> {
        Self::load_with_ca(cert_path, key_path, None)
    }

    /// As [`CertReloader::load`], also reading the CA bundle at `ca_path` (when the file exists)
    /// for [`CertReloader::not_after`].
    pub fn load_with_ca(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
        ca_path: Option<PathBuf>,
    ) -> anyhow::Result<Arc<Self>> {
        let (cert_path, key_path) = (cert_path.into(), key_path.into());
        let pem = read_files(&cert_path, &key_path, ca_path.as_deref())?;
        let loaded = Loaded::from_pem(pem)?;
        Ok(Arc::new(Self { cert_path, key_path, ca_path, current: ArcSwap::from_pointee(loaded) }))
    }

    /// Re-reads the files; swaps in a changed, valid pair (or CA bundle). Returns whether anything
    /// changed.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let pem = read_files(&self.cert_path, &self.key_path, self.ca_path.as_deref())?;
        if pem == self.current.load().pem {
            return Ok(false);
        }
        self.current.store(Arc::new(Loaded::from_pem(pem)?));
        Ok(true)
    }

    /// notAfter of the certificate served now and of the CA that signed it (None when unknown: no
    /// CA bundle, or none of its certificates signed the one served).
    pub fn not_after(&self) -> (Option<time::OffsetDateTime>, Option<time::OffsetDateTime>) {
        let loaded = self.current.load();
        (loaded.validity.map(|(_, not_after)| not_after), loaded.ca_not_after)
    }

    /// Why the certificate served now would be refused at `now` (expired, not yet valid), or None.
    pub fn validity_problem(&self, now: time::OffsetDateTime) -> Option<String> {
        let loaded = self.current.load();
        let Some((not_before, not_after)) = loaded.validity else {
            return Some("the serving certificate's validity cannot be read".to_owned());
        };
        if now < not_before {
            return Some(format!("the serving certificate is not valid before {not_before}"));
        }
        if now > not_after {
            return Some(format!("the serving certificate expired at {not_after}"));
        }
        None
    }

    /// Polls the files every `interval` for as long as the process runs. A half-written or
    /// mismatched pair is reported and the previous certificate kept.
    pub fn spawn_polling(self: &Arc<Self>, interval: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match this.reload() {
                    Ok(true) => info!(cert = %this.cert_path.display(), "serving certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => warn!(error = %format!("{e:#}"), "keeping the current certificate"),
                }
            }
        });
    }

    /// The TLS configuration; with `clients`, a client certificate it accepts is required.
    pub fn server_config(
        self: &Arc<Self>,
        clients: Option<Arc<dyn ClientCertVerifier>>,
    ) -> rustls::ServerConfig {
        let builder = rustls::ServerConfig::builder_with_protocol_versions(&[
            &rustls::version::TLS13,
            &rustls::version::TLS12,
        ]);
        let builder = match clients {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// Requires a client certificate issued by a CA of `ca_file` (PEM), refusing any other at the
/// handshake: the API server presents one when its AdmissionConfiguration gives it a kubeconfig
/// for this webhook (`--client-ca`).
pub fn client_verifier(ca_file: &Path) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let pem = std::fs::read(ca_file).map_err(|e| anyhow::anyhow!("reading {}: {e}", ca_file.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in {}", ca_file.display());
    Ok(WebPkiClientVerifier::builder(Arc::new(roots)).build()?)
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.load().key))
    }
}

fn validity(key: &CertifiedKey) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
    let leaf = key.cert.first()?;
    let cert = crate::certs::inspect::from_der(leaf).ok()?;
    Some((cert.validity.not_before, cert.validity.not_after))
}

/// The CA in `bundle_pem` that signed the served leaf: its notAfter.
fn issuer_not_after(key: &CertifiedKey, bundle_pem: &[u8]) -> Option<time::OffsetDateTime> {
    let leaf = crate::certs::inspect::from_der(key.cert.first()?).ok()?;
    let bundle = crate::certs::inspect::parse_bundle(std::str::from_utf8(bundle_pem).ok()?).ok()?;
    let issuer = bundle.iter().find(|ca| crate::certs::inspect::signed_by(&leaf, ca))?;
    Some(issuer.validity.not_after)
}

/// The pair, and the CA bundle when a path is given and the file exists (a missing one is no error:
/// not every install mounts it).
fn read_files(cert: &Path, key: &Path, ca: Option<&Path>) -> anyhow::Result<Files> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()));
    let ca = match ca.map(|path| (path, std::fs::read(path))) {
        None => None,
        Some((_, Ok(pem))) => Some(pem),
        Some((_, Err(e))) if e.kind() == std::io::ErrorKind::NotFound => None,
        Some((path, Err(e))) => anyhow::bail!("reading {}: {e}", path.display()),
    };
    Ok((read(cert)?, read(key)?, ca))
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in the certificate file");
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| anyhow::anyhow!("reading the private key: {e}"))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .ok_or_else(|| anyhow::anyhow!("no rustls crypto provider installed"))?;
    let certified = CertifiedKey::from_der(chain, key, provider)?;
    Ok(Arc::new(certified))
}
