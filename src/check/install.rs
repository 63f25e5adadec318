//! The install: the webhook configuration, the certificate the webhook serves and the caBundle the
//! API server trusts it with, the webhook's replicas, and a server-side dry-run proving the API
//! server calls us.

use time::OffsetDateTime;

use super::Finding;
use super::cluster::Policy;
use crate::certs::inspect::{self, Cert};

const SECTION: &str = "install";

pub const POD_WEBHOOK: &str = "pods.hab-bootstrap.habitat.sh";
pub const STATEFULSET_WEBHOOK: &str = "statefulsets.hab-bootstrap.habitat.sh";
/// Warn when the serving certificate or the CA expires within this many days.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

const INSTALL_FIX: &str = "helm install hab-bootstrap charts/hab-bootstrap -n hab-bootstrap --create-namespace \
                           (or kubectl apply --server-side -k webhook/); see docs/install.md";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Url(String),
    Service { namespace: String, name: String, port: i32, path: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Url(url) => f.write_str(url),
            Target::Service { namespace, name, port, path } => {
                write!(f, "service {namespace}/{name}:{port}{path}")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Hook {
    pub name: String,
    pub target: Target,
    /// The caBundle, PEM (empty when not set).
    pub ca_bundle: String,
}

/// One MutatingWebhookConfiguration that holds at least one of our webhooks.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub hooks: Vec<Hook>,
}

/// The certificate chain the webhook serves, and where it was read.
#[derive(Debug, Clone)]
pub struct Served {
    /// "served at https://127.0.0.1:8443" or "in Secret ns/name, mounted by the webhook pods".
    pub source: String,
    pub chain: Result<Vec<Cert>, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryRun {
    /// The webhook changed the object: it was called and answered.
    Mutated,
    /// The request succeeded but came back unchanged: the webhook was not called.
    Unchanged,
    /// Our webhook answered with a denial: it is called (the reason is another finding's).
    Refused(String),
    Failed(String),
    /// Nothing to probe with (the pod webhook needs an opted-in StatefulSet to own the probe pod).
    NotTried(String),
}

#[derive(Debug, Clone)]
pub struct InstallFacts {
    pub configs: Vec<Config>,
    pub served: Option<Served>,
    /// Ready and total webhook pods behind the Service, or why they could not be counted.
    pub replicas: Option<Result<(usize, usize), String>>,
    pub dry_run_statefulset: DryRun,
    pub dry_run_pod: DryRun,
    /// The policy that narrows the Secrets the webhook may create, by name, `<configuration>-webhook-secrets`
    /// as the chart names it; None where the API server serves no ValidatingAdmissionPolicy.
    pub webhook_secrets_policy: Option<(String, Policy)>,
    pub now: OffsetDateTime,
}

pub fn check(facts: &InstallFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let ours: Vec<(&Config, &Hook)> =
        facts.configs.iter().flat_map(|c| c.hooks.iter().map(move |h| (c, h))).collect();
    if ours.is_empty() {
        out.push(Finding::error(
            SECTION,
            "install.configuration",
            format!("no MutatingWebhookConfiguration has the webhooks {STATEFULSET_WEBHOOK} and {POD_WEBHOOK}: hab-bootstrap is not installed"),
            INSTALL_FIX,
        ));
        return out;
    }
    let names: Vec<&str> = facts.configs.iter().map(|c| c.name.as_str()).collect();
    if facts.configs.len() > 1 {
        out.push(Finding::warning(
            SECTION,
            "install.configuration",
            format!("hab-bootstrap webhooks are registered by {} configurations ({}): every pod is injected by each", names.len(), names.join(", ")),
            format!("keep one: kubectl delete mutatingwebhookconfiguration <the other one> (of {})", names.join(", ")),
        ));
    }
    for wanted in [STATEFULSET_WEBHOOK, POD_WEBHOOK] {
        match ours.iter().find(|(_, h)| h.name == wanted) {
            Some((config, hook)) => out.push(Finding::ok(
                SECTION,
                "install.configuration",
                format!("MutatingWebhookConfiguration {}: {wanted} → {}", config.name, hook.target),
            )),
            None => out.push(Finding::error(
                SECTION,
                "install.configuration",
                format!("MutatingWebhookConfiguration {} has no webhook {wanted}", names.join(", ")),
                format!("reinstall the configuration: {INSTALL_FIX}"),
            )),
        }
    }
    let (_, first) = ours[0];
    out.extend(check_certificates(first, facts.served.as_ref(), facts.now));
    match &facts.replicas {
        None => out.push(Finding::info(
            SECTION,
            "install.replicas",
            format!("the webhook is registered by URL ({}): its replicas are not counted", first.target),
        )),
        Some(Ok((ready, total))) if *ready > 0 => out.push(Finding::ok(
            SECTION,
            "install.replicas",
            format!("{ready} of {total} webhook pod(s) ready behind {}", first.target),
        )),
        Some(Ok((_, total))) => out.push(Finding::error(
            SECTION,
            "install.replicas",
            format!(
                "no webhook pod is ready behind {} ({total} pod(s)): no opted-in pod can be created",
                first.target
            ),
            replicas_fix(&first.target),
        )),
        Some(Err(e)) => out.push(Finding::error(
            SECTION,
            "install.replicas",
            format!("the webhook's pods behind {} cannot be counted: {e}", first.target),
            replicas_fix(&first.target),
        )),
    }
    out.push(dry_run_finding(
        "install.dry-run-statefulset",
        "the StatefulSet webhook",
        &facts.dry_run_statefulset,
    ));
    out.push(dry_run_finding("install.dry-run-pod", "the pod webhook", &facts.dry_run_pod));
    out.extend(
        facts.webhook_secrets_policy.as_ref().map(|(name, policy)| webhook_secrets_finding(name, *policy)),
    );
    out
}

/// The webhook may create Secrets in every namespace (its ring keys): RBAC cannot narrow `create`
/// by name, the chart's policy does.
fn webhook_secrets_finding(name: &str, policy: Policy) -> Finding {
    const CHECK: &str = "install.webhook-secrets-policy";
    let fix = "helm upgrade <release> charts/hab-bootstrap --reuse-values --set admissionPolicies.webhookSecrets=true \
               (the default), or kubectl apply --server-side -k webhook/";
    let exposure = "the webhook's ServiceAccount may create any Secret in every namespace";
    match policy {
        Policy::Enforced => Finding::ok(
            SECTION,
            CHECK,
            format!("ValidatingAdmissionPolicy {name} limits the webhook to creating ring-key Secrets"),
        ),
        Policy::Missing => Finding::warning(
            SECTION,
            CHECK,
            format!("ValidatingAdmissionPolicy {name} is not installed: {exposure}"),
            fix,
        ),
        Policy::Unbound => Finding::warning(
            SECTION,
            CHECK,
            format!(
                "ValidatingAdmissionPolicy {name} has no binding that enforces it (validationActions: [Deny]): {exposure}"
            ),
            fix,
        ),
    }
}

fn replicas_fix(target: &Target) -> String {
    match target {
        Target::Service { namespace, name, .. } => format!(
            "kubectl -n {namespace} get pods,endpointslices -l app.kubernetes.io/name=hab-bootstrap; \
             kubectl -n {namespace} describe service {name}; kubectl -n {namespace} logs deploy/{name}"
        ),
        Target::Url(url) => format!("start the webhook that serves {url}"),
    }
}

fn dry_run_finding(check: &'static str, what: &str, result: &DryRun) -> Finding {
    match result {
        DryRun::Mutated => Finding::ok(
            SECTION,
            check,
            format!("a server-side dry-run is mutated by {what}: the API server calls it"),
        ),
        DryRun::Refused(why) => Finding::ok(
            SECTION,
            check,
            format!(
                "a server-side dry-run reached {what}, which refused the probe ({why}): the API server calls it"
            ),
        ),
        DryRun::Unchanged => Finding::error(
            SECTION,
            check,
            format!("a server-side dry-run came back unchanged: the API server does not call {what}"),
            "check the configuration's rules, namespaceSelector and matchConditions \
             (kubectl get mutatingwebhookconfiguration -o yaml); a configuration just applied takes a few seconds",
        ),
        DryRun::Failed(e) => Finding::error(
            SECTION,
            check,
            format!("a server-side dry-run through {what} failed: {e}"),
            "kubectl get events -A --field-selector reason=FailedCreate; the webhook's logs; \
             x509 errors mean the caBundle does not trust the serving certificate",
        ),
        DryRun::NotTried(why) => Finding::info(SECTION, check, format!("{what} not probed: {why}")),
    }
}

fn days_left(cert: &Cert, now: OffsetDateTime) -> i64 {
    (cert.validity.not_after - now).whole_days()
}

fn expiry(check: &'static str, what: &str, cert: &Cert, now: OffsetDateTime, fix: &str) -> Finding {
    let days = days_left(cert, now);
    let until = crate::certs::plan::show(cert.validity.not_after);
    if cert.validity.not_after <= now {
        Finding::error(SECTION, check, format!("{what} expired on {until}"), fix)
    } else if cert.validity.not_before > now {
        Finding::error(
            SECTION,
            check,
            format!("{what} is not valid before {}", crate::certs::plan::show(cert.validity.not_before)),
            fix,
        )
    } else if days < EXPIRY_WARNING_DAYS {
        Finding::warning(SECTION, check, format!("{what} expires in {days} day(s), on {until}"), fix)
    } else {
        Finding::ok(SECTION, check, format!("{what} valid for {days} more days (until {until})"))
    }
}

fn check_certificates(hook: &Hook, served: Option<&Served>, now: OffsetDateTime) -> Vec<Finding> {
    let mut out = Vec::new();
    let renew = "hab-bootstrap certs ensure (self-managed), cert-manager renews by itself (check the \
                 Certificate: kubectl describe certificate -n <ns>), or replace your own; see docs/install.md";
    let bundle = match inspect::parse_bundle(&hook.ca_bundle) {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => {
            out.push(Finding::error(
                SECTION,
                "install.ca-bundle",
                format!("{} has no caBundle: the API server cannot call it over TLS", hook.name),
                "set the caBundle: hab-bootstrap certs ensure (self-managed), cert-manager's CA injector, or \
                 injection of your CA; see docs/install.md",
            ));
            return out;
        }
        Err(e) => {
            out.push(Finding::error(
                SECTION,
                "install.ca-bundle",
                format!("{}'s caBundle is unreadable: {e:#}", hook.name),
                "set a PEM caBundle; see docs/install.md",
            ));
            return out;
        }
    };
    for ca in &bundle {
        out.push(expiry("install.ca-expiry", &format!("CA {} in the caBundle", ca.subject), ca, now, renew));
    }
    let Some(served) = served else {
        out.push(Finding::warning(
            SECTION,
            "install.serving-certificate",
            "the certificate the webhook serves could not be found",
            "check that the webhook runs; the dry-runs below show whether the API server trusts it",
        ));
        return out;
    };
    let chain = match &served.chain {
        Ok(chain) if !chain.is_empty() => chain,
        Ok(_) => {
            out.push(Finding::error(
                SECTION,
                "install.serving-certificate",
                format!("no certificate {}", served.source),
                "check the webhook's Secret and logs",
            ));
            return out;
        }
        Err(e) => {
            out.push(Finding::error(
                SECTION,
                "install.serving-certificate",
                format!("the serving certificate could not be read ({}): {e}", served.source),
                "check that the webhook runs and serves TLS; kubectl logs of its pods",
            ));
            return out;
        }
    };
    let leaf = &chain[0];
    // Trusted when the leaf, or an intermediate it carries, is signed by a CA of the bundle.
    let trusted = chain.iter().any(|c| bundle.iter().any(|ca| inspect::signed_by(c, ca) || c.der == ca.der));
    if trusted {
        out.push(Finding::ok(
            SECTION,
            "install.ca-bundle",
            format!("the caBundle trusts the certificate {} (issued by a CA of the bundle)", served.source),
        ));
    } else {
        let issuer = x509_parser::parse_x509_certificate(&leaf.der)
            .map(|(_, c)| c.issuer().to_string())
            .unwrap_or_default();
        out.push(Finding::error(
            SECTION,
            "install.ca-bundle",
            format!(
                "the caBundle does not trust the certificate {} (issued by {issuer:?}, the bundle holds {}): \
                 every opted-in pod is refused",
                served.source,
                bundle.iter().map(|c| format!("{:?}", c.subject)).collect::<Vec<_>>().join(", ")
            ),
            "put the CA that issued the serving certificate in the caBundle: hab-bootstrap certs ensure \
             (self-managed), check cert-manager's cainjector annotation, or re-issue the certificate",
        ));
    }
    out.push(expiry(
        "install.certificate-expiry",
        &format!("serving certificate {}", served.source),
        leaf,
        now,
        renew,
    ));
    if let Some(host) = target_host(&hook.target) {
        let covered = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => leaf.names.ips.contains(&ip),
            Err(_) => leaf.names.dns.contains(&host),
        };
        if !covered {
            out.push(Finding::error(
                SECTION,
                "install.certificate-names",
                format!("the serving certificate does not name {host}, the host the API server calls"),
                format!("re-issue it with {host} in its subjectAltName (hab-bootstrap certs ensure does)"),
            ));
        }
    }
    out
}

/// The host name the API server checks the certificate against.
pub fn target_host(target: &Target) -> Option<String> {
    match target {
        Target::Url(url) => {
            let rest = url.strip_prefix("https://")?;
            let authority = rest.split('/').next()?;
            let host = if let Some(v6) = authority.strip_prefix('[') {
                v6.split(']').next()?
            } else {
                authority.rsplit_once(':').map_or(authority, |(h, _)| h)
            };
            Some(host.to_owned())
        }
        Target::Service { namespace, name, .. } => Some(format!("{name}.{namespace}.svc")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertificateAuthority;
    use crate::check::Status;

    fn setup(days: i64) -> (String, Vec<Cert>) {
        let ca = CertificateAuthority::generate("test CA", time::Duration::days(365)).unwrap();
        let leaf = ca
            .issue(&["localhost".into()], &["127.0.0.1".parse().unwrap()], time::Duration::days(days))
            .unwrap();
        (ca.cert_pem, inspect::parse_bundle(&leaf.cert_pem).unwrap())
    }

    fn facts(bundle: &str, chain: Vec<Cert>) -> InstallFacts {
        let hook = |name: &str| Hook {
            name: name.into(),
            target: Target::Url("https://127.0.0.1:8443/mutate".into()),
            ca_bundle: bundle.into(),
        };
        InstallFacts {
            configs: vec![Config {
                name: "hab-bootstrap".into(),
                hooks: vec![hook(STATEFULSET_WEBHOOK), hook(POD_WEBHOOK)],
            }],
            served: Some(Served { source: "served at 127.0.0.1:8443".into(), chain: Ok(chain) }),
            replicas: None,
            dry_run_statefulset: DryRun::Mutated,
            dry_run_pod: DryRun::Mutated,
            webhook_secrets_policy: Some(("hab-bootstrap-webhook-secrets".into(), Policy::Enforced)),
            now: OffsetDateTime::now_utc(),
        }
    }

    fn problems(f: &[Finding]) -> Vec<&'static str> {
        f.iter().filter(|f| f.status.is_problem()).map(|f| f.check).collect()
    }

    #[test]
    fn a_good_install_has_no_problem() {
        let (bundle, chain) = setup(300);
        assert_eq!(problems(&check(&facts(&bundle, chain))), Vec::<&str>::new());
    }

    #[test]
    fn a_foreign_ca_an_expiring_certificate_and_missing_webhooks() {
        let (_, chain) = setup(300);
        let (other_bundle, _) = setup(300);
        assert_eq!(problems(&check(&facts(&other_bundle, chain))), ["install.ca-bundle"]);
        let (bundle, chain) = setup(10);
        let f = check(&facts(&bundle, chain));
        assert_eq!(problems(&f), ["install.certificate-expiry"]);
        assert!(f.iter().any(|f| f.status == Status::Warning && f.message.contains("expires in 9 day")));
        let mut none = facts(&bundle, vec![]);
        none.configs.clear();
        assert_eq!(problems(&check(&none)), ["install.configuration"]);
        let mut one = facts(&bundle, vec![]);
        one.configs[0].hooks.remove(1);
        assert!(problems(&check(&one)).contains(&"install.configuration"));
    }

    #[test]
    fn dry_runs_and_replicas() {
        let (bundle, chain) = setup(300);
        let mut f = facts(&bundle, chain);
        f.dry_run_pod = DryRun::Unchanged;
        f.replicas = Some(Ok((0, 2)));
        assert_eq!(problems(&check(&f)), ["install.replicas", "install.dry-run-pod"]);
    }

    #[test]
    fn the_webhook_secrets_policy_missing_or_unbound() {
        let (bundle, chain) = setup(300);
        for (policy, says) in [(Policy::Missing, "is not installed"), (Policy::Unbound, "has no binding")] {
            let mut f = facts(&bundle, chain.clone());
            f.webhook_secrets_policy = Some(("hab-bootstrap-webhook-secrets".into(), policy));
            let found = check(&f);
            assert_eq!(problems(&found), ["install.webhook-secrets-policy"]);
            let finding = found.iter().find(|f| f.check == "install.webhook-secrets-policy").unwrap();
            assert!(finding.message.contains(says), "{}", finding.message);
        }
        // No ValidatingAdmissionPolicy served: the cluster section says so, nothing here.
        let mut f = facts(&bundle, chain);
        f.webhook_secrets_policy = None;
        assert!(!check(&f).iter().any(|f| f.check == "install.webhook-secrets-policy"));
    }

    #[test]
    fn hosts() {
        assert_eq!(target_host(&Target::Url("https://127.0.0.1:8443/mutate".into())).unwrap(), "127.0.0.1");
        assert_eq!(target_host(&Target::Url("https://[::1]:8443/x".into())).unwrap(), "::1");
        let svc = Target::Service { namespace: "n".into(), name: "s".into(), port: 443, path: "/m".into() };
        assert_eq!(target_host(&svc).unwrap(), "s.n.svc");
    }
}
