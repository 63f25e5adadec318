//! Certificates for the webhook: a CA and a serving certificate signed by it (rcgen).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A CA able to sign serving certificates.
pub struct CertificateAuthority {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate and its key, PEM-encoded.
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertificateAuthority {
    pub fn generate(common_name: &str, valid_for: Duration) -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, valid_for);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// Signs a serving certificate for DNS names and IP addresses.
    pub fn issue(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        valid_for: Duration,
    ) -> anyhow::Result<ServingCert> {
        let mut params = CertificateParams::default();
        let cn =
            dns_names.first().cloned().or_else(|| ips.first().map(ToString::to_string)).unwrap_or_default();
        params.distinguished_name = name(&cn);
        params.subject_alt_names = dns_names
            .iter()
            .map(|d| Ok(SanType::DnsName(d.clone().try_into()?)))
            .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, rcgen::Error>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, valid_for);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServingCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, valid_for: Duration) {
    // Backdated a little: clocks of the API server and ours may disagree.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + valid_for;
}

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Write a new CA (ca.crt) and a serving certificate it signs (tls.crt, tls.key) to a directory.
    Generate(GenerateArgs),
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

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CertsCommand::Generate(g) => {
            anyhow::ensure!(!g.dns_names.is_empty() || !g.ips.is_empty(), "give at least one --dns or --ip");
            let ca = CertificateAuthority::generate("hab-bootstrap CA", Duration::days(g.days))?;
            let serving = ca.issue(&g.dns_names, &g.ips, Duration::days(g.days))?;
            std::fs::create_dir_all(&g.out_dir)
                .with_context(|| format!("creating {}", g.out_dir.display()))?;
            write(&g.out_dir.join("ca.crt"), &ca.cert_pem, 0o644)?;
            write(&g.out_dir.join("tls.crt"), &serving.cert_pem, 0o644)?;
            write(&g.out_dir.join("tls.key"), &serving.key_pem, 0o600)?;
            println!("wrote ca.crt, tls.crt and tls.key to {}", g.out_dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a certificate.
pub fn write(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
