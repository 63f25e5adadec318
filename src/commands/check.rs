//! `hab-bootstrap check` (also `kubectl habitat check`): gathers the facts from the API server, the
//! webhook's TLS port and each pod's Supervisor, and prints what [`crate::check`] finds in them.
//! Exit status 0 only when there is no warning and no error.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use time::OffsetDateTime;

use crate::check::install::{self, DryRun, Served, Target};
use crate::check::ring::{self, Departure, RingPod};
use crate::check::statefulset::{self, PodFacts};
use crate::check::{Finding, Report, cluster};
use crate::injection::annotations::{self, BootstrapOptions};
use crate::injection::pod_identity::{POD_INDEX_LABEL, POD_NAME_LABEL};
use crate::injection::render::status::InjectionStatus;
use crate::injection::supervisor_args::DEFAULT_HTTP_PORT;
use crate::injection::template_label::template_labelled;
use crate::runtime::access_review;
use crate::sidecar::census::Census;
use crate::sidecar::census_client::CensusClient;

/// The sidecar's own-pod policy of examples/sidecar-admission-policy.yaml.
const SIDECAR_POLICY: &str = "hab-bootstrap-sidecar-own-pod";
const SIDECAR_CONTAINER: &str = "habitat-role";
const PROBE_NAME: &str = "hab-bootstrap-check-probe";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// How each pod's `/census` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CensusVia {
    /// Through the API server's pod proxy (`/api/v1/namespaces/NS/pods/POD:9631/proxy/census`):
    /// works from anywhere kubectl works.
    Proxy,
    /// Straight to the pod IP: for tests whose pods run without a kubelet (kwok) and whose
    /// Supervisors listen on the pod IP on this machine; or from inside the cluster network.
    Direct,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
    /// The namespace whose StatefulSets and rings are checked (default: the context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Check the StatefulSets and rings of every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Stamp the template label on opted-in StatefulSets that lack it. This changes their pod
    /// template, so the StatefulSet controller rolls their pods (which are then injected).
    #[arg(long)]
    pub fix_template_labels: bool,
    /// Bound on each request.
    #[arg(long, default_value = "5s", value_parser = crate::injection::duration::parse_duration)]
    pub timeout: Duration,
    /// How to read each pod's census (`direct`: to the pod IP, for tests on a kwok cluster).
    #[arg(long, value_enum, default_value_t = CensusVia::Proxy, hide = true)]
    pub census_via: CensusVia,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(check(args))
}

async fn client(args: &CheckArgs) -> anyhow::Result<(Client, String)> {
    crate::runtime::kubeconfig::client_for(args.kubeconfig.as_deref(), args.context.as_deref(), args.timeout)
        .await
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (client, default_ns) = client(&args).await.context("connecting to the API server")?;
    let namespace =
        if args.all_namespaces { None } else { Some(args.namespace.clone().unwrap_or(default_ns)) };
    let mut report = Report::default();

    report.extend(cluster::check(&cluster_facts(&client).await?));

    let opted_in = opted_in_statefulsets(&client, namespace.as_deref()).await?;
    let probe_ns = namespace.clone().unwrap_or_else(|| "default".to_owned());
    report.extend(install::check(&install_facts(&client, &args, &probe_ns, &opted_in).await?));

    for sts in &opted_in {
        let (ns, name) = (
            sts.metadata.namespace.clone().unwrap_or_default(),
            sts.metadata.name.clone().unwrap_or_default(),
        );
        let mut facts = statefulset_facts(&client, sts).await?;
        if !facts.template_label && args.fix_template_labels {
            stamp_template_label(&client, &ns, &name).await?;
            facts.template_label = true;
            report.extend([Finding::info(
                &statefulset::section(&ns, &name),
                "statefulset.template-label",
                format!(
                    "stamped {}: \"true\" on the pod template (--fix-template-labels): the pods roll",
                    annotations::BOOTSTRAP
                ),
            )]);
        }
        report.extend(statefulset::check(&facts));
        if facts.pods.iter().any(|p| p.status.is_some()) {
            report.extend(ring::check(&ring_facts(&client, &args, sts).await?));
        }
    }
    if opted_in.is_empty() {
        let scope = namespace.as_deref().map_or("any namespace".to_owned(), |ns| format!("namespace {ns}"));
        report.extend([Finding::info(
            "statefulsets",
            "statefulset.none",
            format!("no StatefulSet in {scope} is opted in"),
        )]);
    }

    match args.output {
        OutputFormat::Json => print!("{}", report.to_json()),
        OutputFormat::Text => {
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            print!("{}", report.to_text(colour));
        }
    }
    Ok(if report.summary().ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

// ------------------------------------------------------------------------------------------------
// Cluster
// ------------------------------------------------------------------------------------------------

async fn cluster_facts(client: &Client) -> anyhow::Result<cluster::ClusterFacts> {
    let version = client.apiserver_version().await.context("reading the API server version")?;
    let vap = served_vap(client).await;
    let sidecar_policy = if vap { policy(client, SIDECAR_POLICY).await } else { cluster::Policy::Missing };
    Ok(cluster::ClusterFacts {
        git_version: version.git_version,
        major: version.major,
        minor: version.minor,
        validating_admission_policy: vap,
        sidecar_policy,
    })
}

/// Whether `admissionregistration.k8s.io/v1` serves ValidatingAdmissionPolicies.
async fn served_vap(client: &Client) -> bool {
    client
        .list_api_group_resources("admissionregistration.k8s.io/v1")
        .await
        .map(|list| list.resources.iter().any(|r| r.name == "validatingadmissionpolicies"))
        .unwrap_or(false)
}

/// Whether the ValidatingAdmissionPolicy `name` exists and a binding enforces it.
async fn policy(client: &Client, name: &str) -> cluster::Policy {
    let exists =
        Api::<ValidatingAdmissionPolicy>::all(client.clone()).get_opt(name).await.ok().flatten().is_some();
    if !exists {
        return cluster::Policy::Missing;
    }
    let bindings =
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()).list(&ListParams::default()).await;
    let enforced = bindings.iter().flat_map(|l| &l.items).filter_map(|b| b.spec.as_ref()).any(|spec| {
        spec.policy_name.as_deref() == Some(name)
            && spec.validation_actions.iter().flatten().any(|a| a == "Deny")
    });
    if enforced { cluster::Policy::Enforced } else { cluster::Policy::Unbound }
}

// ------------------------------------------------------------------------------------------------
// Install
// ------------------------------------------------------------------------------------------------

async fn install_facts(
    client: &Client,
    args: &CheckArgs,
    probe_ns: &str,
    opted_in: &[StatefulSet],
) -> anyhow::Result<install::InstallFacts> {
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing MutatingWebhookConfigurations")?;
    let configs: Vec<install::Config> = configs
        .items
        .iter()
        .filter_map(|c| {
            let hooks: Vec<install::Hook> = c
                .webhooks
                .iter()
                .flatten()
                .filter(|h| h.name == install::POD_WEBHOOK || h.name == install::STATEFULSET_WEBHOOK)
                .map(|h| install::Hook {
                    name: h.name.clone(),
                    target: match (&h.client_config.url, &h.client_config.service) {
                        (Some(url), _) => Target::Url(url.clone()),
                        (None, Some(s)) => Target::Service {
                            namespace: s.namespace.clone(),
                            name: s.name.clone(),
                            port: s.port.unwrap_or(443),
                            path: s.path.clone().unwrap_or_default(),
                        },
                        (None, None) => Target::Url(String::new()),
                    },
                    ca_bundle: h
                        .client_config
                        .ca_bundle
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        .unwrap_or_default(),
                })
                .collect();
            (!hooks.is_empty())
                .then(|| install::Config { name: c.metadata.name.clone().unwrap_or_default(), hooks })
        })
        .collect();
    let target = configs.first().and_then(|c| c.hooks.first()).map(|h| h.target.clone());
    let (served, replicas) = match &target {
        None => (None, None),
        Some(Target::Url(url)) => (Some(dial(url, args.timeout).await), None),
        Some(Target::Service { namespace, name, .. }) => {
            let (served, replicas) = behind_service(client, namespace, name).await;
            (served, Some(replicas))
        }
    };
    let (dry_run_statefulset, dry_run_pod) = if configs.is_empty() {
        let no = || DryRun::NotTried("not installed".into());
        (no(), no())
    } else {
        (dry_run_statefulset(client, probe_ns).await, dry_run_pod(client, opted_in).await)
    };
    let webhook_secrets_policy = match configs.first() {
        Some(config) if served_vap(client).await => {
            // The chart names its policies after the release, as it names the configuration.
            let name = format!("{}-webhook-secrets", config.name);
            let state = policy(client, &name).await;
            Some((name, state))
        }
        _ => None,
    };
    Ok(install::InstallFacts {
        configs,
        served,
        webhook_secrets_policy,
        replicas,
        dry_run_statefulset,
        dry_run_pod,
        now: OffsetDateTime::now_utc(),
    })
}

/// The chain a TLS server presents, read without judging it (the judging is the caBundle check's).
async fn dial(url: &str, timeout: Duration) -> Served {
    let source = format!("served at {url}");
    let chain = tokio::time::timeout(timeout, fetch_chain(url))
        .await
        .unwrap_or_else(|_| Err(format!("no TLS handshake within {timeout:?}")));
    Served { source, chain }
}

async fn fetch_chain(url: &str) -> Result<Vec<crate::certs::inspect::Cert>, String> {
    let host = install::target_host(&Target::Url(url.to_owned())).ok_or("not an https:// URL")?;
    let authority = url.trim_start_matches("https://").split('/').next().unwrap_or_default();
    let addr = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny::new()))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tcp =
        tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("connecting to {addr}: {e}"))?;
    let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| crate::certs::inspect::from_der(c.as_ref()).map_err(|e| format!("{e:#}")))
        .collect()
}

/// Accepts any server certificate: `check` reads the chain to judge it against the caBundle itself.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl AcceptAny {
    fn new() -> Self {
        Self(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// For a webhook registered by Service: its pods (ready / all) and the certificate in the Secret
/// they mount (what the webhook serves: it re-reads the files within seconds of a change).
async fn behind_service(
    client: &Client,
    ns: &str,
    name: &str,
) -> (Option<Served>, Result<(usize, usize), String>) {
    let service = match Api::<Service>::namespaced(client.clone(), ns).get(name).await {
        Ok(s) => s,
        Err(e) => return (None, Err(format!("Service {ns}/{name}: {e}"))),
    };
    let selector = service.spec.and_then(|s| s.selector).unwrap_or_default();
    if selector.is_empty() {
        return (None, Err(format!("Service {ns}/{name} has no selector")));
    }
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = match Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
    {
        Ok(p) => p.items,
        Err(e) => return (None, Err(format!("listing the pods of Service {ns}/{name}: {e}"))),
    };
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let secret = pods
        .iter()
        .flat_map(|p| p.spec.iter().flat_map(|s| s.volumes.iter().flatten()))
        .find_map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()));
    let served = match secret {
        None => None,
        Some(secret) => {
            let source = format!("in Secret {ns}/{secret}, which the webhook pods mount");
            let chain = match Api::<Secret>::namespaced(client.clone(), ns).get(&secret).await {
                Ok(s) => s
                    .data
                    .and_then(|d| d.get("tls.crt").cloned())
                    .ok_or_else(|| "no tls.crt".to_owned())
                    .and_then(|pem| {
                        crate::certs::inspect::parse_bundle(&String::from_utf8_lossy(&pem.0))
                            .map_err(|e| format!("{e:#}"))
                    }),
                Err(e) => Err(e.to_string()),
            };
            Some(Served { source, chain })
        }
    };
    (served, Ok((ready, pods.len())))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn dry_run_statefulset(client: &Client, ns: &str) -> DryRun {
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": PROBE_NAME, "annotations": {annotations::BOOTSTRAP: "true"}},
        "spec": {
            "serviceName": PROBE_NAME,
            "selector": {"matchLabels": {"app": PROBE_NAME}},
            "template": {"metadata": {"labels": {"app": PROBE_NAME}},
                         "spec": {"containers": [{"name": "sup", "image": "probe", "args": ["sup", "run", "probe/probe"]}]}}
        }
    }))
    .expect("a valid probe");
    let api = Api::<StatefulSet>::namespaced(client.clone(), ns);
    match api.create(&PostParams { dry_run: true, ..Default::default() }, &sts).await {
        Ok(created) => {
            let labelled = created
                .spec
                .and_then(|s| s.template.metadata)
                .and_then(|m| m.labels)
                .is_some_and(|l| l.get(annotations::BOOTSTRAP).is_some_and(|v| v == "true"));
            if labelled { DryRun::Mutated } else { DryRun::Unchanged }
        }
        Err(e) => DryRun::Failed(format!("dry-run StatefulSet in {ns}: {e}")),
    }
}

/// A dry-run pod of the first opted-in, labelled StatefulSet, as its controller would build it
/// (an ordinal past its replicas): the pod webhook injects it when it is called.
async fn dry_run_pod(client: &Client, opted_in: &[StatefulSet]) -> DryRun {
    let Some(sts) = opted_in.iter().find(|s| template_labelled(s)) else {
        return DryRun::NotTried("no opted-in, labelled StatefulSet in scope to own a probe pod".into());
    };
    let (ns, name) =
        (sts.metadata.namespace.clone().unwrap_or_default(), sts.metadata.name.clone().unwrap_or_default());
    let spec = sts.spec.clone().unwrap_or_default();
    let ordinal = spec.replicas.unwrap_or(1) + spec.ordinals.and_then(|o| o.start).unwrap_or(0) + 100;
    let pod_name = format!("{name}-{ordinal}");
    let template = spec.template;
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = Some(pod_name.clone());
    metadata.namespace = Some(ns.clone());
    let labels = metadata.labels.get_or_insert_default();
    labels.insert(POD_NAME_LABEL.to_owned(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.to_owned(), ordinal.to_string());
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: name.clone(),
        uid: sts.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let mut pod_spec = template.spec.unwrap_or_default();
    pod_spec.hostname = Some(pod_name.clone());
    pod_spec.subdomain = Some(spec.service_name.unwrap_or_default());
    let pod = Pod { metadata, spec: Some(pod_spec), status: None };
    match Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams { dry_run: true, ..Default::default() }, &pod)
        .await
    {
        Ok(created) if InjectionStatus::read(&created).is_some() => DryRun::Mutated,
        Ok(_) => DryRun::Unchanged,
        Err(kube::Error::Api(e))
            if e.message.contains(&format!("admission webhook \"{}\" denied", install::POD_WEBHOOK)) =>
        {
            DryRun::Refused(e.message)
        }
        Err(e) => DryRun::Failed(format!("dry-run pod {ns}/{pod_name}: {e}")),
    }
}

// ------------------------------------------------------------------------------------------------
// StatefulSets
// ------------------------------------------------------------------------------------------------

async fn opted_in_statefulsets(client: &Client, ns: Option<&str>) -> anyhow::Result<Vec<StatefulSet>> {
    let api: Api<StatefulSet> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api.list(&ListParams::default()).await.context("listing StatefulSets")?;
    Ok(list.items.into_iter().filter(|s| annotations::opted_in(s.metadata.annotations.as_ref())).collect())
}

/// The pods `sts` owns now.
async fn pods_of(client: &Client, sts: &StatefulSet) -> anyhow::Result<Vec<Pod>> {
    let ns = sts.metadata.namespace.as_deref().unwrap_or_default();
    let selector = sts
        .spec
        .as_ref()
        .map(|s| crate::injection::decision::selector_string(s.selector.clone()))
        .unwrap_or_default();
    let list = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| {
            format!("listing the pods of {ns}/{}", sts.metadata.name.as_deref().unwrap_or_default())
        })?;
    let uid = sts.metadata.uid.as_deref();
    let mut pods: Vec<Pod> = list
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
        })
        .collect();
    pods.sort_by_key(|p| {
        let name = p.metadata.name.clone().unwrap_or_default();
        let ordinal: u64 = name.rsplit('-').next().and_then(|o| o.parse().ok()).unwrap_or(u64::MAX);
        (ordinal, name)
    });
    Ok(pods)
}

async fn statefulset_facts(client: &Client, sts: &StatefulSet) -> anyhow::Result<statefulset::StsFacts> {
    let ns = sts.metadata.namespace.clone().unwrap_or_default();
    let annotations = sts.metadata.annotations.clone().unwrap_or_default();
    let service_account = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let pods = pods_of(client, sts).await?;
    let options = BootstrapOptions::from_annotations(Some(&annotations)).ok();
    let mut access = options.as_ref().map(statefulset::needed_access).unwrap_or_default();
    let answers =
        join_all(access.iter().map(|a| can(client, &ns, &service_account, a.group, a.resource, a.verb)))
            .await;
    for (a, allowed) in access.iter_mut().zip(answers) {
        a.allowed = allowed;
    }
    Ok(statefulset::StsFacts {
        namespace: ns,
        name: sts.metadata.name.clone().unwrap_or_default(),
        template_label: template_labelled(sts),
        annotations,
        service_account,
        pods: pods
            .iter()
            .map(|p| PodFacts {
                name: p.metadata.name.clone().unwrap_or_default(),
                status: p.metadata.annotations.as_ref().and_then(|a| a.get(annotations::STATUS).cloned()),
                deleting: p.metadata.deletion_timestamp.is_some(),
            })
            .collect(),
        access,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

async fn can(
    client: &Client,
    ns: &str,
    sa: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> Result<bool, String> {
    let review = access_review::for_service_account(ns, sa, group, resource, verb);
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn stamp_template_label(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"template": {"metadata": {"labels": {annotations::BOOTSTRAP: "true"}}}}});
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("stamping the template label on {ns}/{name}"))?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Rings
// ------------------------------------------------------------------------------------------------

/// A flag's value in a container's args: `--flag value` or `--flag=value`.
fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(flag).and_then(|rest| rest.strip_prefix('=')).map(str::to_owned)
        }
    })
}

async fn ring_facts(client: &Client, args: &CheckArgs, sts: &StatefulSet) -> anyhow::Result<ring::RingFacts> {
    let ns = sts.metadata.namespace.clone().unwrap_or_default();
    let name = sts.metadata.name.clone().unwrap_or_default();
    let pods: Vec<Pod> =
        pods_of(client, sts).await?.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let status = pods.iter().find_map(InjectionStatus::read);
    // The sidecar's arguments say what it reports on and where the Supervisor's gateway listens.
    let sidecar_args: Vec<String> = pods
        .iter()
        .flat_map(|p| p.spec.iter().flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers)))
        .find(|c| c.name == SIDECAR_CONTAINER)
        .and_then(|c| c.args.clone())
        .unwrap_or_default();
    let options = BootstrapOptions::from_annotations(sts.metadata.annotations.as_ref()).unwrap_or_default();
    let group = arg_value(&sidecar_args, "--service-group").or(options.service_group.clone());
    let role_label_key = arg_value(&sidecar_args, "--label-key").unwrap_or_else(|| "role".to_owned());
    let port = arg_value(&sidecar_args, "--census-url")
        .and_then(|u| u.parse::<hyper::Uri>().ok())
        .and_then(|u| u.port_u16())
        .unwrap_or(DEFAULT_HTTP_PORT);
    let censuses = join_all(pods.iter().map(|p| census(client, args, p, port))).await;
    let ring_pods = pods
        .iter()
        .zip(censuses)
        .map(|(p, census)| RingPod {
            name: p.metadata.name.clone().unwrap_or_default(),
            role_label: p.metadata.labels.as_ref().and_then(|l| l.get(&role_label_key).cloned()),
            census,
        })
        .collect();
    Ok(ring::RingFacts {
        namespace: ns.clone(),
        statefulset: name,
        group,
        role_label_key,
        role_sidecar: status.as_ref().is_some_and(|s| s.sidecar.is_some()),
        supervisor_container: status.map(|s| s.supervisor).unwrap_or_else(|| "<supervisor>".to_owned()),
        pods: ring_pods,
        departures: departures(client, &ns).await,
    })
}

async fn census(client: &Client, args: &CheckArgs, pod: &Pod, port: u16) -> Result<Census, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match args.census_via {
        CensusVia::Proxy => {
            let path = format!("/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/census");
            let request = hyper::Request::get(&path).body(Vec::new()).map_err(|e| e.to_string())?;
            let text = tokio::time::timeout(args.timeout, client.request_text(request))
                .await
                .map_err(|_| format!("no answer through the pod proxy within {:?}", args.timeout))?
                .map_err(|e| format!("through the pod proxy: {e}"))?;
            Census::from_json(text.as_bytes()).map_err(|e| format!("not a census: {e}"))
        }
        CensusVia::Direct => {
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).ok_or("the pod has no IP yet")?;
            let url = format!("http://{ip}:{port}/census");
            let client = CensusClient::new(&url, None, args.timeout).map_err(|e| e.to_string())?;
            client.fetch().await.map_err(|e| format!("{url}: {e}"))
        }
    }
}

/// The role sidecars' `PredecessorDeparted` Events of a namespace.
async fn departures(client: &Client, ns: &str) -> Vec<Departure> {
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields("reason=PredecessorDeparted"))
        .await;
    let Ok(list) = list else { return Vec::new() };
    list.items
        .into_iter()
        .map(|e| {
            let at = e
                .event_time
                .map(|t| t.0.to_string())
                .or(e.last_timestamp.map(|t| t.0.to_string()))
                .or(e.metadata.creation_timestamp.map(|t| t.0.to_string()))
                .unwrap_or_default();
            Departure {
                pod: e.involved_object.name.unwrap_or_default(),
                note: e.message.unwrap_or_default(),
                at,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values() {
        let args: Vec<String> = ["--a", "1", "--b=2", "--c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(arg_value(&args, "--a").as_deref(), Some("1"));
        assert_eq!(arg_value(&args, "--b").as_deref(), Some("2"));
        assert_eq!(arg_value(&args, "--c"), None);
        assert_eq!(arg_value(&args, "--d"), None);
    }
}
