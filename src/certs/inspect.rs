//! Reading certificates back: validity, names and who signed them (x509-parser).

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::Context;
use base64::Engine;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::plan::{Names, Validity};

/// One certificate, as stored (normalized PEM) and as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    pub pem: String,
    pub der: Vec<u8>,
    pub subject: String,
    pub validity: Validity,
    pub names: Names,
}

/// Every CERTIFICATE block of a PEM text, in order. Other blocks are ignored; a block that does
/// not parse is an error.
pub fn parse_bundle(pem: &str) -> anyhow::Result<Vec<Cert>> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| anyhow::anyhow!("reading PEM: {e}"))?;
        if block.label == "CERTIFICATE" {
            out.push(from_der(&block.contents)?);
        }
    }
    Ok(out)
}

pub fn from_der(der: &[u8]) -> anyhow::Result<Cert> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| anyhow::anyhow!("parsing a certificate: {e}"))?;
    let validity = Validity {
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    };
    let mut names = Names::default();
    if let Some(san) = cert.subject_alternative_name().context("reading subjectAltName")? {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    names.dns.insert((*dns).to_owned());
                }
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        names.ips.insert(ip);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Cert { pem: to_pem(der), der: der.to_vec(), subject: cert.subject().to_string(), validity, names })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Does `ca` verify `cert`'s signature (and name it as issuer)?
pub fn signed_by(cert: &Cert, ca: &Cert) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) =
        (X509Certificate::from_der(&cert.der), X509Certificate::from_der(&ca.der))
    else {
        return false;
    };
    cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// The public key (SubjectPublicKeyInfo DER) of a certificate.
pub fn public_key(cert: &Cert) -> Vec<u8> {
    X509Certificate::from_der(&cert.der).map(|(_, c)| c.public_key().raw.to_vec()).unwrap_or_default()
}

/// PEM with 64-character lines, the one encoding we write, so bundles compare as text.
pub fn to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The DER of each certificate in a PEM text; unreadable input reads as no certificates.
pub fn ders(pem: &[u8]) -> BTreeSet<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.contents)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::authority::{BACKDATE, CertificateAuthority};
    use time::Duration;
    use time::macros::datetime;

    #[test]
    fn reads_back_what_we_issue() {
        crate::install_crypto_provider();
        let t = datetime!(2031-05-06 07:08:09.5 UTC);
        let ca = CertificateAuthority::generate_at("CA one", t, Duration::days(10)).unwrap();
        let other = CertificateAuthority::generate_at("CA two", t, Duration::days(10)).unwrap();
        let serving = ca
            .issue_at(
                &["svc".into(), "svc.ns.svc".into()],
                &["127.0.0.1".parse().unwrap()],
                t,
                t + Duration::days(2),
            )
            .unwrap();
        let ca_cert = &parse_bundle(&ca.cert_pem).unwrap()[0];
        let other_cert = &parse_bundle(&other.cert_pem).unwrap()[0];
        let cert = &parse_bundle(&serving.cert_pem).unwrap()[0];

        let second = datetime!(2031-05-06 07:08:09 UTC);
        assert_eq!(ca_cert.validity.not_before, second - BACKDATE);
        assert_eq!(ca_cert.validity.issued_at(), second);
        assert_eq!(cert.validity.not_after, second + Duration::days(2));
        assert_eq!(cert.names.dns, ["svc".to_owned(), "svc.ns.svc".to_owned()].into());
        assert_eq!(cert.names.ips, ["127.0.0.1".parse().unwrap()].into());
        assert!(signed_by(cert, ca_cert));
        assert!(!signed_by(cert, other_cert), "same shape, other key");
        assert_eq!(to_pem(&cert.der), serving.cert_pem.replace("\r\n", "\n"));
        let bundle = format!("{}{}", ca_cert.pem, other_cert.pem);
        assert_eq!(parse_bundle(&bundle).unwrap().len(), 2);
        assert_eq!(ders(bundle.as_bytes()).len(), 2);
    }

    #[test]
    fn a_stored_ca_signs_again_and_a_foreign_key_is_refused() {
        crate::install_crypto_provider();
        let t = datetime!(2031-01-01 00:00 UTC);
        let ca = CertificateAuthority::generate_at("CA", t, Duration::days(10)).unwrap();
        let other = CertificateAuthority::generate_at("CA", t, Duration::days(10)).unwrap();
        let reloaded = CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let serving = reloaded.issue_at(&["svc".into()], &[], t, t + Duration::days(1)).unwrap();
        let cert = &parse_bundle(&serving.cert_pem).unwrap()[0];
        assert!(signed_by(cert, &parse_bundle(&ca.cert_pem).unwrap()[0]));
        assert!(CertificateAuthority::from_pem(&ca.cert_pem, &other.key_pem).is_err());
        assert!(parse_bundle("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
