//! `hab-bootstrap inject`: the pods the StatefulSet controller would create, after our mutation,
//! computed through the same decision code as the webhook (like `istioctl kube-inject`): offline
//! from a manifest, for GitOps review, or from what the cluster holds (`--from-cluster`), for
//! debugging a StatefulSet that runs.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Pod, Service, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::PostParams;

use crate::injection::annotations;
use crate::injection::decision::{self, Decision, Facts, ServiceFact};
use crate::injection::pod_identity::{POD_INDEX_LABEL, POD_NAME_LABEL};
use crate::injection::render::sidecar::SERVICE_ACCOUNT_MOUNT;
use crate::injection::settings::InjectionSettings;
use crate::injection::template_label::{TemplateDecision, decide_template};
use crate::runtime::access_review;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "from_cluster"])))]
pub struct InjectArgs {
    /// Manifest holding the StatefulSet (and optionally its Service); `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: Option<PathBuf>,
    /// Read this StatefulSet, its Service and whether the sidecar may label its pod from the
    /// cluster, as the webhook does at admission, instead of from a manifest.
    #[arg(long, value_name = "STATEFULSET")]
    pub from_cluster: Option<String>,
    /// With --from-cluster: the StatefulSet's namespace (default: the context's).
    #[arg(short = 'n', long, requires = "from_cluster")]
    pub namespace: Option<String>,
    /// With --from-cluster: the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, requires = "from_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// With --from-cluster: the kubeconfig context (default: the current one).
    #[arg(long, requires = "from_cluster")]
    pub context: Option<String>,
    /// Ordinal of the pod to render (default: every ordinal of the StatefulSet).
    #[arg(long)]
    pub ordinal: Option<u32>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub settings: InjectionSettings,
}

pub fn run(args: InjectArgs) -> anyhow::Result<ExitCode> {
    let InjectArgs { file, from_cluster, namespace, kubeconfig, context, ordinal, output, settings } = args;
    settings.check().map_err(anyhow::Error::msg)?;
    let known = match (file, from_cluster) {
        (_, Some(name)) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(read_cluster(&name, namespace, kubeconfig, context))?
        }
        (Some(file), None) => read_manifest_file(&file)?,
        (None, None) => {
            bail!("give a manifest (-f) or a StatefulSet to read from the cluster (--from-cluster)")
        }
    };
    let ordinals = match ordinal {
        Some(n) => vec![n],
        None => known.ordinals()?,
    };
    let mut pods = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for n in ordinals {
        let rendered = render_known(&known, n, &settings)?;
        pods.push(rendered.pod);
        // The same warning for every ordinal is shown once.
        for warning in rendered.warnings {
            if !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
    }
    for warning in &warnings {
        eprintln!("Warning: {warning}");
    }
    print!("{}", format_pods(&pods, output)?);
    Ok(ExitCode::SUCCESS)
}

/// One pod as itself; several as YAML documents, or as a JSON `List` (what kubectl prints).
fn format_pods(pods: &[Pod], output: OutputFormat) -> anyhow::Result<String> {
    Ok(match (output, pods) {
        (OutputFormat::Json, [pod]) => serde_json::to_string_pretty(pod)? + "\n",
        (OutputFormat::Json, pods) => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": pods});
            serde_json::to_string_pretty(&list)? + "\n"
        }
        (OutputFormat::Yaml, pods) => {
            let docs: Vec<String> = pods.iter().map(serde_yaml_ng::to_string).collect::<Result<_, _>>()?;
            docs.join("---\n")
        }
    })
}

pub struct Rendered {
    pub pod: Pod,
    pub warnings: Vec<String>,
}

/// What the webhook would know at a pod's admission: the StatefulSet (as the API server stores
/// it), its Service, and whether the pods' ServiceAccount may label them.
pub struct Known {
    pub statefulset: StatefulSet,
    pub service: ServiceFact,
    pub sidecar_can_label: Option<bool>,
    /// Read from a manifest: rendered as if the StatefulSet were created now (our StatefulSet
    /// webhook stamps its label and ring key). From the cluster: as it is stored.
    pub creating: bool,
}

impl Known {
    /// The StatefulSet's ordinals, from `spec.ordinals.start` for `spec.replicas` pods.
    pub fn ordinals(&self) -> anyhow::Result<Vec<u32>> {
        let spec = self.statefulset.spec.as_ref().context("the StatefulSet has no spec")?;
        let first = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0) as u32;
        let replicas = spec.replicas.unwrap_or(1).max(0) as u32;
        if replicas == 0 {
            bail!("the StatefulSet has 0 replicas: pass --ordinal N to render a pod anyway");
        }
        Ok((first..first.saturating_add(replicas)).collect())
    }
}

/// Renders the injected pod for `ordinal` from a manifest's text.
pub fn render(manifest: &str, ordinal: u32, settings: &InjectionSettings) -> anyhow::Result<Rendered> {
    render_known(&known_from_manifest(manifest)?, ordinal, settings)
}

/// Renders the injected pod for `ordinal`, as the webhook would admit it.
pub fn render_known(known: &Known, ordinal: u32, settings: &InjectionSettings) -> anyhow::Result<Rendered> {
    let sts = &known.statefulset;
    let sts_name = sts.metadata.name.clone().context("the StatefulSet has no metadata.name")?;
    if !annotations::opted_in(sts.metadata.annotations.as_ref()) {
        bail!(
            "StatefulSet {sts_name:?} is not annotated {}: \"true\"; the webhook would leave its pods alone",
            annotations::BOOTSTRAP
        );
    }
    let mut warnings = Vec::new();
    // What the API server stores after our StatefulSet webhook.
    let sts = match decide_template(sts, known.creating, settings) {
        TemplateDecision::Deny(msg) => bail!("the StatefulSet would be refused: {msg}"),
        TemplateDecision::Relabel { mutated, .. } => {
            if !known.creating {
                warnings.push(format!(
                    "StatefulSet {sts_name:?} lacks the pod-template label {}=true, so the API server \
                     does not send its pods to the webhook: they run uninjected. `hab-bootstrap check \
                     --fix-template-labels` stamps it (the pods roll); rendered as if it had it",
                    annotations::BOOTSTRAP
                ));
            }
            *mutated
        }
        TemplateDecision::Unchanged => sts.clone(),
    };
    let spec = sts.spec.as_ref().context("the StatefulSet has no spec")?;
    let first = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0) as u32;
    let replicas = spec.replicas.unwrap_or(1).max(0) as u32;
    if ordinal < first || ordinal - first >= replicas {
        warnings.push(format!(
            "ordinal {ordinal} is outside the StatefulSet's ordinals {first}..{}",
            first + replicas
        ));
    }
    let pod = pod_for(&sts, ordinal);
    let facts = Facts {
        statefulset: sts,
        service: known.service.clone(),
        sidecar_can_label: known.sidecar_can_label,
    };
    match decision::decide(&pod, &facts, settings) {
        Decision::Deny(msg) => bail!("the webhook would refuse this pod: {msg}"),
        Decision::Inject(injection) => {
            warnings.extend(injection.warnings);
            Ok(Rendered { pod: injection.pod, warnings })
        }
    }
}

fn read_manifest_file(file: &std::path::Path) -> anyhow::Result<Known> {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    known_from_manifest(&text)
}

/// A manifest's StatefulSet and its Service, when the manifest has it (not known otherwise).
fn known_from_manifest(text: &str) -> anyhow::Result<Known> {
    let (statefulset, services) = read_manifest(text)?;
    let service = match statefulset.spec.as_ref().and_then(|s| s.service_name.as_deref()) {
        Some(name) => services
            .into_iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .map_or(ServiceFact::Unknown, |s| ServiceFact::Found(Box::new(s))),
        None => ServiceFact::Unknown,
    };
    Ok(Known { statefulset, service, sidecar_can_label: None, creating: true })
}

/// What admission reads from the cluster: the StatefulSet, its Service, and a
/// SubjectAccessReview of the pods' ServiceAccount (not known when this user may not ask).
async fn read_cluster(
    name: &str,
    namespace: Option<String>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
) -> anyhow::Result<Known> {
    let timeout = Duration::from_secs(10);
    let (client, default_ns) =
        crate::runtime::kubeconfig::client_for(kubeconfig.as_deref(), context.as_deref(), timeout)
            .await
            .context("connecting to the API server")?;
    let ns = namespace.unwrap_or(default_ns);
    let statefulset = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading StatefulSet {ns}/{name}"))?
        .with_context(|| format!("StatefulSet {ns}/{name} not found"))?;
    let service = match statefulset.spec.as_ref().and_then(|s| s.service_name.as_deref()) {
        Some(service) => Api::<Service>::namespaced(client.clone(), &ns)
            .get_opt(service)
            .await
            .with_context(|| format!("reading Service {ns}/{service}"))?
            .map_or(ServiceFact::Missing, |s| ServiceFact::Found(Box::new(s))),
        None => ServiceFact::Unknown,
    };
    let service_account = decision::service_account(&pod_for(&statefulset, 0)).to_owned();
    let review = access_review::for_service_account(&ns, &service_account, "", "pods", "patch");
    let sidecar_can_label = Api::<SubjectAccessReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|answer| answer.status)
        .map(|status| status.allowed);
    Ok(Known { statefulset, service, sidecar_can_label, creating: false })
}

fn read_manifest(text: &str) -> anyhow::Result<(StatefulSet, Vec<Service>)> {
    let mut statefulsets = Vec::new();
    let mut services = Vec::new();
    let mut kinds = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = <serde_json::Value as serde::Deserialize>::deserialize(doc)
            .with_context(|| format!("document {}", i + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("(no kind)").to_owned();
        match kind.as_str() {
            "StatefulSet" => statefulsets.push(
                serde_json::from_value::<StatefulSet>(value)
                    .with_context(|| format!("document {}: StatefulSet", i + 1))?,
            ),
            "Service" => services
                .push(serde_json::from_value(value).with_context(|| format!("document {}: Service", i + 1))?),
            _ => {}
        }
        kinds.push(kind);
    }
    // With several StatefulSets, the annotated one is meant; a manifest may hold others.
    let count = statefulsets.len();
    let chosen = statefulsets.iter().position(|s| annotations::opted_in(s.metadata.annotations.as_ref()));
    match (count, chosen) {
        (0, _) if kinds.is_empty() => bail!("the manifest is empty"),
        (0, _) => bail!("the manifest holds no StatefulSet (found: {})", kinds.join(", ")),
        (_, Some(i)) => Ok((statefulsets.swap_remove(i), services)),
        (_, None) => Ok((statefulsets.swap_remove(0), services)),
    }
}

/// The pod the StatefulSet controller creates for `ordinal` (stateful_set_utils.go), as the API
/// server hands it to us after its built-in admission (the ServiceAccount token mount).
pub fn pod_for(sts: &StatefulSet, ordinal: u32) -> Pod {
    let name = sts.metadata.name.clone().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    let template_meta = spec.template.metadata.clone().unwrap_or_default();
    let pod_name = format!("{name}-{ordinal}");
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.to_owned(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.to_owned(), ordinal.to_string());
    let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(pod_name.clone());
    pod_spec.subdomain = spec.service_name.clone();
    let volumes = pod_spec.volumes.get_or_insert_default();
    for claim in spec.volume_claim_templates.iter().flatten() {
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != claim_name);
        volumes.push(Volume {
            name: claim_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{claim_name}-{pod_name}"),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if pod_spec.automount_service_account_token != Some(false) {
        volumes.push(service_account_volume());
        for container in &mut pod_spec.containers {
            container.volume_mounts.get_or_insert_default().push(VolumeMount {
                name: "kube-api-access".to_owned(),
                mount_path: SERVICE_ACCOUNT_MOUNT.to_owned(),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    if volumes.is_empty() {
        pod_spec.volumes = None;
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: Some(sts.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned())),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".to_owned(),
                kind: "StatefulSet".to_owned(),
                name,
                uid: sts.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// The projected token volume the ServiceAccount admission plugin adds (its real name has a random
/// suffix).
fn service_account_volume() -> Volume {
    use k8s_openapi::api::core::v1::{
        ProjectedVolumeSource, ServiceAccountTokenProjection, VolumeProjection,
    };
    Volume {
        name: "kube-api-access".to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    expiration_seconds: Some(3607),
                    path: "token".to_owned(),
                    audience: None,
                }),
                ..Default::default()
            }]),
            default_mode: Some(0o644),
        }),
        ..Default::default()
    }
}
