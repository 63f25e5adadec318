//! `certs ensure`: bring the Secret and the webhook configuration's caBundle to what `plan` wants.
//!
//! The Secret (`kubernetes.io/tls`) holds `tls.crt`/`tls.key` (served by the webhook), `ca.crt`
//! (the trusted CAs, signing CA first) and `ca.key` (the signing CA's key; mount only `tls.*` into
//! the webhook). It is owned by the MutatingWebhookConfiguration, so deleting that (uninstalling)
//! garbage-collects it. The caBundle of every webhook of the configuration is written with
//! server-side apply under the field manager [`FIELD_MANAGER`], which owns nothing else: tools
//! that apply the rest of the configuration (Helm, Argo CD, Flux, `kubectl apply --server-side`)
//! never conflict with it, and never see a field of theirs rewritten.
//!
//! Every write is conditional (create, or replace at the resourceVersion read): two copies running
//! at once (a rolling update) cannot undo each other's rotation; the loser starts over.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration as StdDuration;

use anyhow::{Context, bail};
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use rcgen::{KeyPair, PublicKeyData};
use serde_json::json;
use time::OffsetDateTime;
use tracing::info;

use super::authority::CertificateAuthority;
use super::inspect::{self, Cert};
use super::plan::{self, Policy, Serving, Stored, show};

/// The field manager that owns the caBundle fields, and the `managed-by` label of the Secret.
pub const FIELD_MANAGER: &str = "hab-bootstrap-certs";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

#[derive(Debug, Clone)]
pub struct EnsureOptions {
    pub namespace: String,
    pub secret: String,
    pub webhook_config: String,
    pub policy: Policy,
    /// After publishing a new CA, how long to wait before serving a certificate it signed: every
    /// API server must have seen the new bundle.
    pub propagation_delay: StdDuration,
}

/// What one `ensure` did and where things stand.
#[derive(Debug, Clone)]
pub struct Report {
    /// One line per change; empty when everything was up to date.
    pub actions: Vec<String>,
    pub trusted_cas: usize,
    pub ca_expires: OffsetDateTime,
    pub serving_expires: OffsetDateTime,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.actions.is_empty() {
            write!(f, "up to date")?;
        } else {
            write!(f, "{}", self.actions.join("; "))?;
        }
        write!(
            f,
            " (serving certificate until {}, CA until {}, {} CA(s) trusted)",
            show(self.serving_expires),
            show(self.ca_expires),
            self.trusted_cas
        )
    }
}

/// Runs `ensure` until it completes without losing a write race (a few attempts).
pub async fn ensure(
    client: &Client,
    opts: &EnsureOptions,
    clock: &(dyn Fn() -> OffsetDateTime + Sync),
) -> anyhow::Result<Report> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ensure_once(client, opts, clock).await {
            Err(e) if attempt < 5 && lost_race(&e) => {
                info!(error = %e, attempt, "someone else wrote first; starting over");
                tokio::time::sleep(StdDuration::from_millis(200 * attempt)).await;
            }
            other => return other,
        }
    }
}

fn lost_race(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(cause.downcast_ref::<kube::Error>(),
            Some(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists())
    })
}

/// The PEM material of the Secret.
#[derive(Default)]
struct Material {
    /// Signing CA first.
    bundle: Vec<Cert>,
    /// The signing CA (bundle[0]) with its key, when the key is there and matches.
    signing: Option<CertificateAuthority>,
    /// Certificate, its PEM, key PEM.
    serving: Option<(Cert, String, String)>,
}

impl Material {
    fn read(data: &BTreeMap<String, ByteString>) -> Self {
        let text = |key: &str| data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok());
        // Unreadable parts read as missing: `plan` then replaces them.
        let bundle = text("ca.crt").and_then(|pem| inspect::parse_bundle(&pem).ok()).unwrap_or_default();
        let signing = match (bundle.first(), text("ca.key")) {
            (Some(ca), Some(key)) => CertificateAuthority::from_pem(&ca.pem, &key).ok(),
            _ => None,
        };
        let serving = match (text("tls.crt"), text("tls.key")) {
            (Some(crt), Some(key)) => inspect::parse_bundle(&crt)
                .ok()
                .and_then(|certs| certs.into_iter().next())
                .filter(|cert| {
                    KeyPair::from_pem(&key)
                        .is_ok_and(|k| k.subject_public_key_info() == inspect::public_key(cert))
                })
                .map(|cert| (cert, crt, key)),
            _ => None,
        };
        Self { bundle, signing, serving }
    }

    fn facts(&self) -> Stored {
        Stored {
            bundle: self.bundle.iter().map(|c| c.validity).collect(),
            signing_key: self.signing.is_some(),
            serving: self.serving.as_ref().map(|(cert, _, _)| Serving {
                validity: cert.validity,
                names: cert.names.clone(),
                issuer: self.bundle.iter().position(|ca| inspect::signed_by(cert, ca)),
            }),
        }
    }

    fn bundle_pem(&self) -> String {
        self.bundle.iter().map(|c| c.pem.as_str()).collect()
    }

    fn bundle_ders(&self) -> BTreeSet<Vec<u8>> {
        self.bundle.iter().map(|c| c.der.clone()).collect()
    }

    fn data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &str| data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
        put("ca.crt", &self.bundle_pem());
        if let Some(ca) = &self.signing {
            put("ca.key", &ca.key_pem);
        }
        if let Some((_, crt, key)) = &self.serving {
            put("tls.crt", crt);
            put("tls.key", key);
        }
        data
    }

    fn issue(&mut self, now: OffsetDateTime, policy: &Policy) -> anyhow::Result<()> {
        let ca = self.signing.as_ref().context("no signing CA")?;
        let not_after = plan::serving_not_after(now, policy, &self.bundle[0].validity);
        let dns: Vec<String> = policy.names.dns.iter().cloned().collect();
        let ips: Vec<_> = policy.names.ips.iter().copied().collect();
        let serving = ca.issue_at(&dns, &ips, now, not_after)?;
        let cert =
            inspect::parse_bundle(&serving.cert_pem)?.into_iter().next().context("no certificate issued")?;
        self.serving = Some((cert, serving.cert_pem, serving.key_pem));
        Ok(())
    }
}

/// The set of CAs each webhook of the configuration trusts.
fn published(mwc: &MutatingWebhookConfiguration) -> Vec<BTreeSet<Vec<u8>>> {
    mwc.webhooks
        .iter()
        .flatten()
        .map(|w| w.client_config.ca_bundle.as_ref().map(|b| inspect::ders(&b.0)).unwrap_or_default())
        .collect()
}

async fn ensure_once(
    client: &Client,
    opts: &EnsureOptions,
    clock: &(dyn Fn() -> OffsetDateTime + Sync),
) -> anyhow::Result<Report> {
    let secrets = Api::<Secret>::namespaced(client.clone(), &opts.namespace);
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let name = &opts.webhook_config;
    let mwc = configs
        .get_opt(name)
        .await
        .with_context(|| format!("reading MutatingWebhookConfiguration {name}"))?
        .with_context(|| {
            format!("MutatingWebhookConfiguration {name} not found: install it first (the chart or webhook/)")
        })?;
    let existing = secrets
        .get_opt(&opts.secret)
        .await
        .with_context(|| format!("reading Secret {}/{}", opts.namespace, opts.secret))?;
    if let Some(s) = &existing {
        check_ours(s, opts)?;
    }
    let mut material =
        existing.as_ref().and_then(|s| s.data.as_ref()).map(Material::read).unwrap_or_default();
    let stored = material.facts();
    let now = clock();
    let policy = &opts.policy;
    let plan = plan::plan(&stored, now, policy);
    let mut actions = Vec::new();

    // 1. The bundle: a new CA first, then the CAs still trusted.
    if plan.changes_bundle(&stored) {
        let old = std::mem::take(&mut material.bundle);
        if let Some(reason) = &plan.new_ca {
            let cn = format!("hab-bootstrap CA {}", now.unix_timestamp());
            let ca = CertificateAuthority::generate_at(&cn, now, policy.ca_valid_for)?;
            material.bundle.push(inspect::parse_bundle(&ca.cert_pem)?.remove(0));
            material.signing = Some(ca);
            actions.push(format!("new CA ({reason})"));
        }
        let dropped = old.len() - plan.keep.len();
        material.bundle.extend(plan.keep.iter().map(|&i| old[i].clone()));
        if dropped > 0 {
            actions.push(format!("{dropped} old CA(s) no longer trusted"));
        }
    }
    // 2. The serving certificate, now if the API servers already trust its CA (or nothing is
    //    served yet), else after the bundle is published.
    let signing_der = material.bundle[0].der.clone();
    let signing_published = published(&mwc).iter().all(|set| set.contains(&signing_der));
    let mut deferred = None;
    if let Some(reason) = &plan.reissue {
        if material.serving.is_none() || signing_published {
            material.issue(now, policy)?;
            actions.push(format!("new serving certificate ({reason})"));
        } else {
            deferred = Some(reason.clone());
        }
    }
    let mut written = existing.clone();
    if !plan.is_noop(&stored) {
        written = Some(write_secret(&secrets, existing.as_ref(), &material, &mwc, opts).await?);
    }
    // 3. Publish the bundle.
    let want = material.bundle_ders();
    if published(&mwc).iter().any(|set| *set != want) {
        apply_bundle(&configs, &mwc, &material.bundle_pem()).await?;
        actions.push(format!("caBundle of {name} updated ({} CA(s))", want.len()));
    }
    // 4. The deferred serving certificate.
    if let Some(reason) = deferred {
        info!(delay = ?opts.propagation_delay, "new CA published; waiting before serving a certificate it signed");
        tokio::time::sleep(opts.propagation_delay).await;
        let mwc = configs.get(name).await.with_context(|| format!("reading {name}"))?;
        if !published(&mwc).iter().all(|set| set.contains(&signing_der)) {
            bail!("{name} does not carry the new CA after publishing it; will retry");
        }
        material.issue(clock(), policy)?;
        write_secret(&secrets, written.as_ref(), &material, &mwc, opts).await?;
        actions.push(format!("new serving certificate ({reason})"));
    }
    let serving_expires = material.serving.as_ref().map(|(c, _, _)| c.validity.not_after).unwrap_or(now);
    Ok(Report {
        actions,
        trusted_cas: material.bundle.len(),
        ca_expires: material.bundle[0].validity.not_after,
        serving_expires,
    })
}

/// A Secret of the same name that we did not create is not ours to rewrite.
fn check_ours(secret: &Secret, opts: &EnsureOptions) -> anyhow::Result<()> {
    let ours = secret.labels().get(MANAGED_BY_LABEL).is_some_and(|v| v == FIELD_MANAGER);
    if !ours {
        bail!(
            "Secret {}/{} exists but was not created by `hab-bootstrap certs` (no label {MANAGED_BY_LABEL}={FIELD_MANAGER}): \
             delete it, or use another --secret",
            opts.namespace,
            opts.secret
        );
    }
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        bail!("Secret {}/{} is not of type kubernetes.io/tls", opts.namespace, opts.secret);
    }
    Ok(())
}

async fn write_secret(
    api: &Api<Secret>,
    existing: Option<&Secret>,
    material: &Material,
    owner: &MutatingWebhookConfiguration,
    opts: &EnsureOptions,
) -> anyhow::Result<Secret> {
    let context = || format!("writing Secret {}/{}", opts.namespace, opts.secret);
    match existing {
        Some(s) => {
            let mut s = s.clone();
            s.data = Some(material.data());
            s.string_data = None;
            api.replace(&opts.secret, &PostParams::default(), &s).await.with_context(context)
        }
        None => {
            let labels = BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
                ("app.kubernetes.io/name".to_owned(), "hab-bootstrap".to_owned()),
            ]);
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(opts.secret.clone()),
                    namespace: Some(opts.namespace.clone()),
                    labels: Some(labels),
                    owner_references: owner_reference(owner).map(|o| vec![o]),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/tls".to_owned()),
                data: Some(material.data()),
                ..Default::default()
            };
            api.create(&PostParams::default(), &secret).await.with_context(context)
        }
    }
}

/// The configuration owns the Secret: uninstalling the configuration garbage-collects the Secret.
/// Not `blockOwnerDeletion` (that would need finalizer rights on the configuration).
fn owner_reference(mwc: &MutatingWebhookConfiguration) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: MutatingWebhookConfiguration::api_version(&()).into_owned(),
        kind: MutatingWebhookConfiguration::kind(&()).into_owned(),
        name: mwc.metadata.name.clone()?,
        uid: mwc.metadata.uid.clone()?,
        ..Default::default()
    })
}

/// Server-side apply of only the caBundle of each webhook, under our field manager.
async fn apply_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    mwc: &MutatingWebhookConfiguration,
    bundle_pem: &str,
) -> anyhow::Result<()> {
    let name = mwc.name_any();
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(bundle_pem);
    let webhooks: Vec<_> = mwc
        .webhooks
        .iter()
        .flatten()
        .map(|w| json!({"name": w.name, "clientConfig": {"caBundle": ca_bundle}}))
        .collect();
    let patch = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        // The uid makes the apply a precondition on this very object: a configuration deleted and
        // recreated meanwhile is left for the next round instead of being half-created.
        "metadata": {"name": name, "uid": mwc.metadata.uid},
        "webhooks": webhooks,
    });
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .with_context(|| format!("applying the caBundle of {name}"))?;
    Ok(())
}
