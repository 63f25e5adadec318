//! `hab-bootstrap inject`: the pod the StatefulSet controller would create for one ordinal, after
//! our mutation, computed offline through the same decision code as the webhook (like
//! `istioctl kube-inject`), for GitOps review and debugging.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Pod, Service, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::injection::annotations;
use crate::injection::decision::{self, Decision, Facts, ServiceFact};
use crate::injection::pod_identity::{POD_INDEX_LABEL, POD_NAME_LABEL};
use crate::injection::render::sidecar::SERVICE_ACCOUNT_MOUNT;
use crate::injection::settings::InjectionSettings;
use crate::injection::template_label::{TemplateDecision, decide_template};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Manifest holding the StatefulSet (and optionally its Service); `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Ordinal of the pod to render.
    #[arg(long)]
    pub ordinal: u32,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub settings: InjectionSettings,
}

pub fn run(args: InjectArgs) -> anyhow::Result<ExitCode> {
    let text = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?
    };
    let rendered = render(&text, args.ordinal, &args.settings)?;
    for warning in &rendered.warnings {
        eprintln!("Warning: {warning}");
    }
    let out = match args.output {
        OutputFormat::Yaml => serde_yaml_ng::to_string(&rendered.pod)?,
        OutputFormat::Json => serde_json::to_string_pretty(&rendered.pod)? + "\n",
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub struct Rendered {
    pub pod: Pod,
    pub warnings: Vec<String>,
}

/// Renders the injected pod for `ordinal` from a manifest's text.
pub fn render(manifest: &str, ordinal: u32, settings: &InjectionSettings) -> anyhow::Result<Rendered> {
    let (sts, services) = read_manifest(manifest)?;
    let sts_name = sts.metadata.name.clone().context("the StatefulSet has no metadata.name")?;
    if !annotations::opted_in(sts.metadata.annotations.as_ref()) {
        bail!(
            "StatefulSet {sts_name:?} is not annotated {}: \"true\"; the webhook would leave its pods alone",
            annotations::BOOTSTRAP
        );
    }
    // What the API server stores after our StatefulSet webhook, as if the manifest were created.
    let sts = match decide_template(&sts, true, settings) {
        TemplateDecision::Deny(msg) => bail!("the StatefulSet would be refused: {msg}"),
        TemplateDecision::Relabel { mutated, .. } => *mutated,
        TemplateDecision::Unchanged => sts,
    };
    let spec = sts.spec.as_ref().context("the StatefulSet has no spec")?;
    let first = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0) as u32;
    let mut warnings = Vec::new();
    let replicas = spec.replicas.unwrap_or(1).max(0) as u32;
    if ordinal < first || ordinal - first >= replicas {
        warnings.push(format!(
            "ordinal {ordinal} is outside the StatefulSet's ordinals {first}..{}",
            first + replicas
        ));
    }
    let service = match spec.service_name.as_deref() {
        Some(name) => services
            .into_iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .map_or(ServiceFact::Unknown, |s| ServiceFact::Found(Box::new(s))),
        None => ServiceFact::Unknown,
    };
    let pod = pod_for(&sts, ordinal);
    let facts = Facts { statefulset: sts, service, sidecar_can_label: None };
    match decision::decide(&pod, &facts, settings) {
        Decision::Deny(msg) => bail!("the webhook would refuse this pod: {msg}"),
        Decision::Inject(injection) => {
            warnings.extend(injection.warnings);
            Ok(Rendered { pod: injection.pod, warnings })
        }
    }
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
