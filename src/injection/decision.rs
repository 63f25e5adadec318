//! The admission decision for one pod: which pods are ours, and for ours, what to inject and what
//! to tell the user. Pure: the facts are gathered by the caller (the webhook from its caches and
//! the API server, `inject` from a manifest).

use std::borrow::Cow;
use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSetSpec;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::injection::annotations::{self, BootstrapOptions, PeerMode};
pub use crate::injection::facts::{Facts, ServiceFact};
use crate::injection::peers::{PeerPlan, RingAddress, plan_peers, resolves_in_dns};
use crate::injection::pod_identity::{ordinal, statefulset_owner};
use crate::injection::render::env::{self, downward, literal};
use crate::injection::render::sidecar::{
    SERVICE_ACCOUNT_MOUNT, SIDECAR_NAME, SidecarInputs, WatchFileInputs, sidecar_container,
};
use crate::injection::render::{self, InjectionPlan, InjectionStatus, PEERS_FILE, peers_volume_mount};
use crate::injection::settings::InjectionSettings;
use crate::injection::supervisor_args::{self, SupervisorFlags};
use crate::injection::warnings;

/// Why a pod is left alone without looking anything up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotOurs {
    NotAPodCreate,
    NoStatefulSetOwner,
}

impl NotOurs {
    pub fn reason(self) -> &'static str {
        match self {
            NotOurs::NotAPodCreate => "not_a_pod_create",
            NotOurs::NoStatefulSetOwner => "no_statefulset_owner",
        }
    }
}

/// A pod owned by a StatefulSet, before we know whether that StatefulSet opted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub statefulset: String,
    pub statefulset_uid: String,
    /// Carries our opt-in label, stamped on the template by the StatefulSet webhook: the API server
    /// called us with `failurePolicy: Fail`, so we must decide rather than shrug.
    pub labelled: bool,
}

pub fn classify(pod: &Pod) -> Result<Candidate, NotOurs> {
    let owner = statefulset_owner(pod).ok_or(NotOurs::NoStatefulSetOwner)?;
    let labelled =
        pod.metadata.labels.as_ref().and_then(|l| l.get(annotations::BOOTSTRAP)).is_some_and(|v| v == "true");
    Ok(Candidate { statefulset: owner.name.clone(), statefulset_uid: owner.uid.clone(), labelled })
}

#[derive(Debug, Clone)]
pub struct Injection {
    pub pod: Pod,
    pub status: InjectionStatus,
    pub plan: PeerPlan,
    pub warnings: Vec<String>,
    /// One line for logs and the Event.
    pub summary: String,
}

#[derive(Debug, Clone)]
pub enum Decision {
    Inject(Box<Injection>),
    /// The pod is ours but cannot be injected correctly; the message tells the user what to fix.
    Deny(String),
}

/// Decides the injection for `pod`, a pod of the opted-in StatefulSet in `facts`.
pub fn decide(pod: &Pod, facts: &Facts, settings: &InjectionSettings) -> Decision {
    match try_decide(pod, facts, settings) {
        Ok(injection) => Decision::Inject(Box::new(injection)),
        Err(message) => Decision::Deny(message),
    }
}

fn try_decide(pod: &Pod, facts: &Facts, settings: &InjectionSettings) -> Result<Injection, String> {
    let target = Target::of(pod, facts)?;
    // Read the pod as the user wrote it, without an earlier injection of ours.
    let analysed = as_written(pod);
    let sup = Supervisor::find(&analysed, &target.options)?;
    let mut warnings = Vec::new();
    let publish_not_ready = warnings::check_service(&facts.service, &target.service, &mut warnings);
    let ring = RingAddress {
        statefulset: target.sts_name.clone(),
        service: target.service.clone(),
        namespace: target.namespace.clone(),
        cluster_domain: settings.cluster_domain.clone(),
        gossip_port: sup.flags.gossip_port,
    };
    let live =
        live_ordinals(facts, &target.sts_name, facts.statefulset.metadata.uid.as_deref(), publish_not_ready);
    let plan = plan_peers(&ring, target.first_ordinal, target.ordinal, &live);
    let user_peers = sup.flags.has_peer || sup.flags.has_peer_watch_file;
    let peer_mode = target.options.peer_mode;
    warnings::check_peers(sup.container, &plan, user_peers, peer_mode, &mut warnings);
    if supervisor_args::sup_run_flags_start(sup.container).is_none()
        && target.options.supervisor_container.is_none()
    {
        warnings.push(format!(
            "no container runs `hab sup run` visibly; using {:?} (set {})",
            sup.container.name,
            annotations::SUPERVISOR_CONTAINER
        ));
    }
    let gives_args = !user_peers && (peer_mode == PeerMode::WatchFile || !plan.peers().is_empty());
    warnings::check_entrypoint(sup.container, gives_args, &mut warnings);
    warnings::check_statefulset(&facts.statefulset, &sup.flags, &target.sts_name, &mut warnings);
    warnings::check_state_volume(&analysed, sup.container, &mut warnings);
    let pod_name = ring.pod_name(target.ordinal);
    warnings::check_pod_name(&pod_name, &mut warnings);

    let sidecar = target.options.role_sidecar.then(|| {
        let inputs = sidecar_inputs(pod, facts, &target, &sup, &mut warnings);
        sidecar_container(settings, &inputs)
    });
    let injection_plan = InjectionPlan {
        supervisor: sup.container.name.clone(),
        peer_args: if !user_peers && peer_mode == PeerMode::Args {
            plan.peers().to_vec()
        } else {
            Vec::new()
        },
        peer_watch_file: !user_peers && peer_mode == PeerMode::WatchFile,
        env: identity_env(&target, &ring, &plan),
        sidecar,
    };
    let mut mutated = pod.clone();
    let status = render::apply(&mut mutated, injection_plan);
    let summary = summarize(&pod_name, &plan, &status, peer_mode);
    Ok(Injection { pod: mutated, status, plan, warnings, summary })
}

/// The pod's place in its StatefulSet, or why it has none we can peer.
struct Target<'a> {
    sts_name: String,
    spec: &'a StatefulSetSpec,
    options: BootstrapOptions,
    first_ordinal: u32,
    ordinal: u32,
    namespace: String,
    service: String,
}

impl<'a> Target<'a> {
    fn of(pod: &Pod, facts: &'a Facts) -> Result<Self, String> {
        let sts = &facts.statefulset;
        let sts_name = sts.metadata.name.clone().unwrap_or_default();
        let spec = sts.spec.as_ref().ok_or_else(|| format!("StatefulSet {sts_name:?} has no spec"))?;
        let options = BootstrapOptions::from_annotations(sts.metadata.annotations.as_ref())
            .map_err(|e| format!("StatefulSet {sts_name:?}: {e}"))?;
        let ordinal = ordinal(pod, &sts_name)?;
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .or_else(|| sts.metadata.namespace.clone())
            .filter(|ns| !ns.is_empty())
            .ok_or("the pod has no namespace")?;
        let service = spec
            .service_name
            .clone()
            .or_else(|| pod.spec.as_ref().and_then(|s| s.subdomain.clone()))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                format!(
                    "StatefulSet {sts_name:?} has no spec.serviceName: its pods have no stable DNS names \
                     to peer; set it to a headless Service"
                )
            })?;
        let first_ordinal = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0) as u32;
        Ok(Self { sts_name, spec, options, first_ordinal, ordinal, namespace, service })
    }
}

/// The pod without an earlier injection of ours; borrowed when it carries none.
fn as_written(pod: &Pod) -> Cow<'_, Pod> {
    let injected_before =
        pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(annotations::STATUS));
    if !injected_before {
        return Cow::Borrowed(pod);
    }
    let mut analysed = pod.clone();
    render::strip_previous(&mut analysed);
    Cow::Owned(analysed)
}

/// The container that runs the Supervisor, and what its `hab sup run` line says.
struct Supervisor<'p> {
    container: &'p Container,
    flags: SupervisorFlags,
}

impl<'p> Supervisor<'p> {
    fn find(analysed: &'p Pod, options: &BootstrapOptions) -> Result<Self, String> {
        let containers = analysed.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
        let index = supervisor_args::find_supervisor(containers, options.supervisor_container.as_deref())?;
        let container = &containers[index];
        let flags = supervisor_args::parse_flags(container);
        if let Some(clash) = containers_named(analysed, SIDECAR_NAME).next().filter(|_| options.role_sidecar)
        {
            return Err(format!(
                "the pod already has a container named {:?}, the role sidecar's name; rename it or set \
                 {}=\"false\"",
                clash.name,
                annotations::ROLE_SIDECAR
            ));
        }
        if options.peer_mode == PeerMode::WatchFile && !options.role_sidecar {
            return Err(format!(
                "{}=watch-file needs the role sidecar to keep the file current, but {}=\"false\"",
                annotations::PEER_MODE,
                annotations::ROLE_SIDECAR
            ));
        }
        Ok(Self { container, flags })
    }
}

/// What the role sidecar needs from the Supervisor's container, with a warning when it will not
/// be able to label its pod.
fn sidecar_inputs(
    pod: &Pod,
    facts: &Facts,
    target: &Target<'_>,
    sup: &Supervisor<'_>,
    warnings: &mut Vec<String>,
) -> SidecarInputs {
    let service_account_mount =
        sup.container.volume_mounts.iter().flatten().find(|m| m.mount_path == SERVICE_ACCOUNT_MOUNT).cloned();
    warnings::check_sidecar_access(
        service_account_mount.is_some(),
        facts.sidecar_can_label,
        service_account(pod),
        warnings,
    );
    let options = &target.options;
    SidecarInputs {
        http_port: sup.flags.http_port,
        service_group: options.service_group.clone().or_else(|| sup.flags.service_group.clone()),
        gateway_token: sup
            .container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "HAB_SUP_GATEWAY_AUTH_TOKEN")
            .cloned(),
        service_account_mount,
        watch_file: (options.peer_mode == PeerMode::WatchFile).then(|| WatchFileInputs {
            path: PEERS_FILE.to_owned(),
            mount: VolumeMount { read_only: None, ..peers_volume_mount() },
            statefulset: target.sts_name.clone(),
            pod_selector: selector_string(target.spec.selector.clone()),
            gossip_port: sup.flags.gossip_port,
        }),
    }
}

/// The environment that tells the Supervisor's container who it is and who its peers are.
fn identity_env(target: &Target<'_>, ring: &RingAddress, plan: &PeerPlan) -> Vec<EnvVar> {
    vec![
        literal(env::STATEFULSET, &target.sts_name),
        literal(env::SERVICE, &target.service),
        literal(env::SERVICE_FQDN, ring.service_fqdn()),
        literal(env::ORDINAL, target.ordinal.to_string()),
        literal(env::POD_FQDN, ring.pod_fqdn(target.ordinal)),
        literal(env::PEERS, plan.peers().join(" ")),
        downward(env::POD_NAME, "metadata.name"),
        downward(env::POD_NAMESPACE, "metadata.namespace"),
        downward(env::POD_IP, "status.podIP"),
    ]
}

/// The ServiceAccount the pod runs as (the API server defaults it before calling us).
pub fn service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

fn containers_named<'a>(pod: &'a Pod, name: &'a str) -> impl Iterator<Item = &'a Container> {
    let spec = pod.spec.as_ref();
    let main = spec.map(|s| s.containers.iter()).into_iter().flatten();
    let init = spec.and_then(|s| s.init_containers.as_ref()).into_iter().flatten();
    main.chain(init).filter(move |c| c.name == name)
}

/// Ordinals of the StatefulSet's other pods whose DNS names resolve now.
fn live_ordinals(
    facts: &Facts,
    sts_name: &str,
    sts_uid: Option<&str>,
    publish_not_ready: bool,
) -> BTreeSet<u32> {
    facts
        .siblings
        .iter()
        .filter(|p| {
            statefulset_owner(p).is_some_and(|o| o.name == sts_name && sts_uid.is_none_or(|uid| uid == o.uid))
        })
        .filter(|p| resolves_in_dns(p, publish_not_ready))
        .filter_map(|p| ordinal(p, sts_name).ok())
        .collect()
}

/// A label selector in the string form the API's `labelSelector` parameter takes.
pub fn selector_string(selector: LabelSelector) -> String {
    let mut terms: Vec<String> =
        selector.match_labels.unwrap_or_default().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    for expr in selector.match_expressions.unwrap_or_default() {
        let values = expr.values.unwrap_or_default().join(",");
        terms.push(match expr.operator.as_str() {
            "In" => format!("{} in ({values})", expr.key),
            "NotIn" => format!("{} notin ({values})", expr.key),
            "Exists" => expr.key,
            _ => format!("!{}", expr.key),
        });
    }
    terms.join(",")
}

fn summarize(pod: &str, plan: &PeerPlan, status: &InjectionStatus, mode: PeerMode) -> String {
    let peers = match (mode, plan, status.peers.is_empty()) {
        (PeerMode::WatchFile, _, _) => "peers from a watch file".to_owned(),
        (_, PeerPlan::FoundRing, _) => "no peers (founds the ring)".to_owned(),
        (_, _, true) => "no peers injected (the user's own)".to_owned(),
        (_, _, false) => format!("peers {}", status.peers.join(", ")),
    };
    let sidecar = status.sidecar.as_deref().map(|s| format!(", sidecar {s}")).unwrap_or_default();
    format!("{pod}: {peers}; {} env vars{sidecar}", status.env.len())
}
