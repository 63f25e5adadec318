//! A CA and the serving certificates it signs (rcgen, ECDSA P-256). Every function that sets a
//! validity period takes the time explicitly (`*_at`), so rotation can be tested with a fake clock.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};

/// How far `not_before` is set back from the time of issue: the API server's clock and ours may
/// disagree. `plan` uses it to tell when a certificate was issued.
pub const BACKDATE: Duration = Duration::minutes(5);

/// A CA able to sign serving certificates.
pub struct CertificateAuthority {
    pub cert_pem: String,
    /// PEM of the CA's private key (PKCS#8), to store it and sign again later.
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate and its key, PEM-encoded.
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertificateAuthority {
    pub fn generate(common_name: &str, valid_for: Duration) -> anyhow::Result<Self> {
        Self::generate_at(common_name, OffsetDateTime::now_utc(), valid_for)
    }

    pub fn generate_at(common_name: &str, now: OffsetDateTime, valid_for: Duration) -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, now, now + valid_for);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), key_pem: key.serialize_pem(), issuer: Issuer::new(params, key) })
    }

    /// A CA from its stored certificate and key; fails when the key is not the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem).context("reading the CA key")?;
        let cert = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("reading the CA certificate: {e}"))?
            .1;
        let parsed = cert.parse_x509().context("parsing the CA certificate")?;
        anyhow::ensure!(
            parsed.public_key().raw == key.subject_public_key_info().as_slice(),
            "the CA key does not belong to the CA certificate"
        );
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).context("loading the CA certificate")?;
        Ok(Self { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned(), issuer })
    }

    /// Signs a serving certificate for DNS names and IP addresses.
    pub fn issue(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        valid_for: Duration,
    ) -> anyhow::Result<ServingCert> {
        let now = OffsetDateTime::now_utc();
        self.issue_at(dns_names, ips, now, now + valid_for)
    }

    /// Signs a serving certificate valid from a little before `now` until `not_after`.
    pub fn issue_at(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        now: OffsetDateTime,
        not_after: OffsetDateTime,
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
        set_validity(&mut params, now, not_after);
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

fn set_validity(params: &mut CertificateParams, now: OffsetDateTime, not_after: OffsetDateTime) {
    // Whole seconds: X.509 times carry no fractions, and a parsed certificate must compare equal.
    params.not_before = (now - BACKDATE).replace_nanosecond(0).expect("0 is a valid nanosecond");
    params.not_after = not_after.replace_nanosecond(0).expect("0 is a valid nanosecond");
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
