//! The admission decision for one pod: which pods are ours, and for ours, what to inject and what
//! to tell the user. Pure: the facts are gathered by the caller (the webhook from its caches and
//! the API server, `inject` from a manifest).

use std::borrow::Cow;

use k8s_openapi::api::apps::v1::StatefulSetSpec;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::injection::annotations::{self, BootstrapOptions};
pub use crate::injection::facts::{Facts, ServiceFact};
use crate::injection::pod_identity::{has_pod_index_label, ordinal, statefulset_owner};
use crate::injection::render::env::{self, downward, literal};
use crate::injection::render::sidecar::{
    ApiToken, RunAs, SERVICE_ACCOUNT_MOUNT, SIDECAR_NAME, SidecarInputs, StateInputs, WatchFileInputs,
    own_token_volume, sidecar_container,
};
use crate::injection::render::{self, InjectionPlan, InjectionStatus, PEERS_FILE};
use crate::injection::ring_address::RingAddress;
use crate::injection::ring_key;
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
    // The StatefulSet's own sidecar settings over the webhook's.
    let sts_name = &target.sts_name;
    let settings =
        target.options.sidecar.apply(settings).map_err(|e| format!("StatefulSet {sts_name:?}: {e}"))?;
    let settings = &*settings;
    // Read the pod as the user wrote it, without an earlier injection of ours.
    let analysed = as_written(pod);
    let sup = Supervisor::find(&analysed, &target.options)?;
    let mut warnings = Vec::new();
    warnings::check_service(&facts.service, &target.service, &mut warnings);
    let ring = RingAddress {
        statefulset: target.sts_name.clone(),
        service: target.service.clone(),
        namespace: target.namespace.clone(),
        cluster_domain: settings.cluster_domain.clone(),
    };
    let user_peers = sup.flags.has_peer || sup.flags.has_peer_watch_file;
    warnings::check_peers(sup.container, user_peers, target.options.legacy_peer_mode, &mut warnings);
    if supervisor_args::sup_run_flags_start(sup.container).is_none()
        && target.options.supervisor_container.is_none()
    {
        warnings.push(format!(
            "no container runs `hab sup run` visibly; using {:?} (set {})",
            sup.container.name,
            annotations::SUPERVISOR_CONTAINER
        ));
    }
    warnings::check_entrypoint(sup.container, !user_peers, &mut warnings);
    warnings::check_statefulset(&facts.statefulset, &sup.flags, &target.sts_name, &mut warnings);
    let state = SupervisorState::of(&analysed, sup.container);
    warnings::check_state_volume(sup.container, state.persistent, state.shared.is_some(), &mut warnings);
    let pod_name = ring.pod_name(target.ordinal);
    warnings::check_pod_name(&pod_name, &mut warnings);
    if !target.options.role_label {
        warnings.push(format!(
            "{}=\"false\": the sidecar still keeps the peer file and departs dead predecessors, but \
             labels nothing",
            annotations::ROLE_SIDECAR
        ));
    }

    let ring_key_secret = ring_key_secret(&target, &sup, &mut warnings);
    let mut env = identity_env(&target, &ring);
    env.extend(ring_key_secret.as_deref().map(ring_key::env_var));
    env.push(persist_period(target.spec.replicas));
    let inputs = sidecar_inputs(pod, facts, &target, &sup, &state, user_peers, &mut warnings);
    let sidecar_volumes = (inputs.api_token == ApiToken::Own).then(own_token_volume).into_iter().collect();
    let injection_plan = InjectionPlan {
        supervisor: sup.container.name.clone(),
        peer_watch_file: !user_peers,
        env,
        volumes: (!user_peers).then(render::peers_volume).into_iter().chain(state.injected).collect(),
        sidecar_volumes,
        ring_key_secret,
        sidecar: Some(sidecar_container(settings, &inputs)),
    };
    let mut mutated = pod.clone();
    let status = render::apply(&mut mutated, injection_plan);
    let summary = summarize(&pod_name, &status);
    Ok(Injection { pod: mutated, status, warnings, summary })
}

/// The ring key the Supervisor gets: the StatefulSet's Secret, unless the user brings a key.
fn ring_key_secret(target: &Target<'_>, sup: &Supervisor<'_>, warnings: &mut Vec<String>) -> Option<String> {
    let user_env =
        sup.container.env.iter().flatten().any(|e| ring_key::USER_RING_ENV.contains(&e.name.as_str()));
    if sup.flags.has_ring_key || user_env {
        return None;
    }
    let secret = target.options.ring_key_secret.clone();
    if secret.is_none() {
        let sts = &target.sts_name;
        warnings.push(format!(
            "no ring key (annotation {}): this ring's gossip is not encrypted and may merge with \
             another ring that reuses a pod IP; see docs/sidecar.md to add one to StatefulSet {sts:?}",
            annotations::RING_KEY_SECRET
        ));
    }
    secret
}

/// Where the Supervisor keeps `/hab/sup`, and how the sidecar reaches it.
struct SupervisorState {
    /// The emptyDir we add when no volume of the user's holds `/hab/sup/default`.
    injected: Option<(k8s_openapi::api::core::v1::Volume, VolumeMount)>,
    /// Kept across pod recreation (a PersistentVolumeClaim or an ephemeral volume).
    persistent: bool,
    /// The sidecar's mount of it and the state directory as the sidecar sees it; None when it
    /// cannot be shared (a `subPathExpr` we cannot follow).
    shared: Option<(VolumeMount, String)>,
}

/// Where the sidecar mounts the Supervisor's state.
const SIDECAR_STATE_MOUNT: &str = "/habitat-supervisor";

impl SupervisorState {
    const DEFAULT_DIR: &'static str = "/hab/sup/default";

    fn of(pod: &Pod, sup: &Container) -> Self {
        let covering = sup
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| {
                let path = m.mount_path.trim_end_matches('/');
                path.is_empty()
                    || Self::DEFAULT_DIR == path
                    || Self::DEFAULT_DIR.starts_with(&format!("{path}/"))
            })
            .max_by_key(|m| m.mount_path.len());
        let Some(mount) = covering else {
            let (volume, mount) = render::state_volume();
            let shared = VolumeMount { mount_path: SIDECAR_STATE_MOUNT.to_owned(), ..mount.clone() };
            return Self {
                injected: Some((volume, mount)),
                persistent: false,
                shared: Some((shared, format!("{SIDECAR_STATE_MOUNT}/default"))),
            };
        };
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        let persistent = volumes
            .into_iter()
            .flatten()
            .any(|v| v.name == mount.name && (v.persistent_volume_claim.is_some() || v.ephemeral.is_some()));
        let below =
            Self::DEFAULT_DIR.strip_prefix(mount.mount_path.trim_end_matches('/')).unwrap_or_default();
        let shared = mount.sub_path_expr.is_none().then(|| {
            let sidecar_mount = VolumeMount {
                name: mount.name.clone(),
                mount_path: SIDECAR_STATE_MOUNT.to_owned(),
                sub_path: mount.sub_path.clone(),
                ..Default::default()
            };
            (sidecar_mount, format!("{SIDECAR_STATE_MOUNT}{below}"))
        });
        Self { injected: None, persistent, shared }
    }
}

/// The user the Supervisor runs as: its container's, else the pod's security context.
fn supervisor_user(pod: &Pod, sup: &Container) -> RunAs {
    let container = sup.security_context.as_ref();
    let pod_level = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let uid = container.and_then(|c| c.run_as_user).or(pod_level.and_then(|p| p.run_as_user));
    let gid = container.and_then(|c| c.run_as_group).or(pod_level.and_then(|p| p.run_as_group));
    let non_root = container
        .and_then(|c| c.run_as_non_root)
        .or(pod_level.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    match uid {
        Some(0) => RunAs::Root,
        Some(uid) => RunAs::User { uid, gid },
        None if non_root => RunAs::Image,
        None => RunAs::Root,
    }
}

/// The pod's place in its StatefulSet, or why it has none we can peer.
struct Target<'a> {
    sts_name: String,
    spec: &'a StatefulSetSpec,
    options: BootstrapOptions,
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
        Ok(Self { sts_name, spec, options, ordinal, namespace, service })
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
        if let Some(clash) = containers_named(analysed, SIDECAR_NAME).next() {
            return Err(format!(
                "the pod already has a container named {:?}, the name of the sidecar that keeps the \
                 ring's peers; rename it",
                clash.name
            ));
        }
        Ok(Self { container, flags })
    }
}

/// What the sidecar needs from the Supervisor's container, with a warning when it will not be able
/// to do its work.
fn sidecar_inputs(
    pod: &Pod,
    facts: &Facts,
    target: &Target<'_>,
    sup: &Supervisor<'_>,
    state: &SupervisorState,
    user_peers: bool,
    warnings: &mut Vec<String>,
) -> SidecarInputs {
    // A token the Supervisor's container holds is the pod's automounted one, which every container
    // shares; without it the sidecar gets a token of its own that no other container mounts.
    let api_token = sup
        .container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT)
        .map_or(ApiToken::Own, |m| ApiToken::Shared(m.clone()));
    warnings::check_sidecar_access(
        matches!(api_token, ApiToken::Shared(_)),
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
        api_token,
        watch_file: (!user_peers).then(|| WatchFileInputs {
            path: PEERS_FILE.to_owned(),
            mount: render::peers_volume().1,
            statefulset: target.sts_name.clone(),
            pod_selector: selector_string(target.spec.selector.clone()),
            // Set by the StatefulSet controller (PodIndexLabel, on since 1.28); `ordinal` checked
            // it against the name.
            pod_index: has_pod_index_label(pod).then_some(target.ordinal),
            gossip_port: sup.flags.gossip_port,
        }),
        role_label: options.role_label,
        poll_interval: options.sidecar.poll_interval.clone(),
        unknown_grace: options.sidecar.unknown_grace.clone(),
        state: state.shared.clone().map(|(mount, dir)| StateInputs {
            mount,
            dir,
            ctl_port: sup.flags.ctl_port,
            run_as: supervisor_user(pod, sup.container),
        }),
    }
}

/// The environment that tells the Supervisor's container who it is.
fn identity_env(target: &Target<'_>, ring: &RingAddress) -> Vec<EnvVar> {
    vec![
        literal(env::STATEFULSET, &target.sts_name),
        literal(env::SERVICE, &target.service),
        literal(env::SERVICE_FQDN, ring.service_fqdn()),
        literal(env::ORDINAL, target.ordinal.to_string()),
        literal(env::POD_FQDN, ring.pod_fqdn(target.ordinal)),
        downward(env::POD_NAME, "metadata.name"),
        downward(env::POD_NAMESPACE, "metadata.namespace"),
        downward(env::POD_IP, "status.podIP"),
    ]
}

/// How often the Supervisor saves what it knows of the ring (Habitat's default: every 30 s).
///
/// A Supervisor that restarts in place (a crash, an OOM kill) restores its last save. A save taken
/// before it had heard the other members' service rumors, with an election naming one of them as
/// leader, makes Habitat 2.1.78 panic ("No leader with finished election", service.rs) at every
/// restart, because the ring does not send a member that came back under the same id the rumors it
/// already sent it (observed with real Supervisors: tests/e2e_habitat, restarts). Saving every
/// second leaves a young Supervisor at most a second of that window. A save costs one write of a
/// file of about 300 bytes per member, so large rings save less often: a second per 50 replicas,
/// up to Habitat's own 30 s.
fn persist_period(replicas: Option<i32>) -> EnvVar {
    let seconds = (replicas.unwrap_or(1).max(1) / 50).clamp(1, 30);
    literal(env::PERSIST_PERIOD, seconds.to_string())
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

fn summarize(pod: &str, status: &InjectionStatus) -> String {
    let peers =
        if status.peer_watch_file.is_some() { "peers from the watch file" } else { "the user's own peers" };
    let key = if status.ring_key_secret.is_some() { ", ring key" } else { "" };
    let sidecar = status.sidecar.as_deref().map(|s| format!(", sidecar {s}")).unwrap_or_default();
    format!("{pod}: {peers}{key}; {} env vars{sidecar}", status.env.len())
}
