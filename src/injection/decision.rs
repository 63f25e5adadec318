//! The admission decision for one pod: which pods are ours, and for ours, what to inject and what
//! to tell the user. Pure: the facts are gathered by the caller (the webhook from its caches and
//! the API server, `inject` from a manifest).

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, Pod, Service, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::injection::annotations::{self, BootstrapOptions, PeerMode};
use crate::injection::peers::{PeerPlan, RingAddress, plan_peers, resolves_in_dns};
use crate::injection::pod_identity::{ordinal, statefulset_owner};
use crate::injection::render::env::{self, downward, literal};
use crate::injection::render::sidecar::{
    SERVICE_ACCOUNT_MOUNT, SIDECAR_NAME, SidecarInputs, WatchFileInputs, sidecar_container,
};
use crate::injection::render::{self, InjectionPlan, InjectionStatus, PEERS_FILE, peers_volume_mount};
use crate::injection::settings::InjectionSettings;
use crate::injection::supervisor_args::{self, SupervisorFlags};

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

/// What we know of the StatefulSet's headless Service.
#[derive(Debug, Clone)]
pub enum ServiceFact {
    Found(Box<Service>),
    Missing,
    /// Not looked up (offline `inject` without the Service in the manifest).
    Unknown,
}

/// Everything the decision needs besides the pod.
#[derive(Debug, Clone)]
pub struct Facts {
    pub statefulset: StatefulSet,
    pub service: ServiceFact,
    /// The pods of the StatefulSet that exist now (any state; liveness is decided here).
    pub siblings: Vec<Pod>,
    /// Whether the pod's ServiceAccount may patch pods (the sidecar's label); None: not checked.
    pub sidecar_can_label: Option<bool>,
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
    let sts = &facts.statefulset;
    let sts_name = sts.metadata.name.clone().unwrap_or_default();
    let sts_spec = sts.spec.as_ref().ok_or_else(|| format!("StatefulSet {sts_name:?} has no spec"))?;
    let options = BootstrapOptions::from_annotations(sts.metadata.annotations.as_ref())
        .map_err(|e| format!("StatefulSet {sts_name:?}: {e}"))?;
    let own_ordinal = ordinal(pod, &sts_name)?;
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .or_else(|| sts.metadata.namespace.clone())
        .filter(|ns| !ns.is_empty())
        .ok_or("the pod has no namespace")?;
    let service = sts_spec
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

    // Read the pod as the user wrote it, without an earlier injection of ours.
    let mut analysed = pod.clone();
    render::strip_previous(&mut analysed);
    let containers = analysed.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let sup_index = supervisor_args::find_supervisor(containers, options.supervisor_container.as_deref())?;
    let sup = &containers[sup_index];
    let flags = supervisor_args::parse_flags(sup);
    if let Some(clash) = containers_named(&analysed, SIDECAR_NAME).next().filter(|_| options.role_sidecar) {
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

    let mut warnings = Vec::new();
    let publish_not_ready = check_service(&facts.service, &service, &mut warnings);
    let ring = RingAddress {
        statefulset: sts_name.clone(),
        service: service.clone(),
        namespace: namespace.clone(),
        cluster_domain: settings.cluster_domain.clone(),
        gossip_port: flags.gossip_port,
    };
    let first_ordinal = sts_spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0) as u32;
    let live = live_ordinals(facts, &sts_name, sts.metadata.uid.as_deref(), publish_not_ready);
    let plan = plan_peers(&ring, first_ordinal, own_ordinal, &live);

    let user_peers = flags.has_peer || flags.has_peer_watch_file;
    if user_peers {
        warnings.push(format!(
            "container {:?} already passes --peer or --peer-watch-file: left as is, no peers injected",
            sup.name
        ));
    }
    if let PeerPlan::AwaitFirst(first) = &plan
        && !user_peers
        && options.peer_mode == PeerMode::Args
    {
        warnings
            .push(format!("no member is alive yet: peering {first}; it restarts until that name resolves"));
    }
    if supervisor_args::sup_run_flags_start(sup).is_none() && options.supervisor_container.is_none() {
        warnings.push(format!(
            "no container runs `hab sup run` visibly; using {:?} (set {})",
            sup.name,
            annotations::SUPERVISOR_CONTAINER
        ));
    }
    let gives_args = !user_peers && (options.peer_mode == PeerMode::WatchFile || !plan.peers().is_empty());
    if gives_args && sup.command.is_none() && sup.args.is_none() {
        warnings.push(format!(
            "container {:?} sets no command or args: peers are passed as args to its image entrypoint",
            sup.name
        ));
    }
    check_statefulset(sts, &flags, &sts_name, &mut warnings);
    check_state_volume(&analysed, sup, &mut warnings);
    let pod_name = ring.pod_name(own_ordinal);
    if pod_name.len() > 63 {
        warnings.push(format!(
            "pod name {pod_name:?} is longer than 63 characters: its DNS name will not resolve"
        ));
    }

    let service_account_mount =
        sup.volume_mounts.iter().flatten().find(|m| m.mount_path == SERVICE_ACCOUNT_MOUNT).cloned();
    let sidecar = options.role_sidecar.then(|| {
        if service_account_mount.is_none() {
            warnings
                .push("no ServiceAccount token is mounted: the role sidecar cannot label its pod".to_owned());
        } else if facts.sidecar_can_label == Some(false) {
            warnings.push(format!(
                "ServiceAccount {:?} may not patch pods: the role sidecar cannot label its pod (docs/sidecar.md)",
                service_account(pod)
            ));
        }
        let inputs = SidecarInputs {
            http_port: flags.http_port,
            service_group: options.service_group.clone().or_else(|| flags.service_group.clone()),
            gateway_token: sup.env.iter().flatten().find(|e| e.name == "HAB_SUP_GATEWAY_AUTH_TOKEN").cloned(),
            service_account_mount,
            watch_file: (options.peer_mode == PeerMode::WatchFile).then(|| WatchFileInputs {
                path: PEERS_FILE.to_owned(),
                mount: VolumeMount { read_only: None, ..peers_volume_mount() },
                statefulset: sts_name.clone(),
                pod_selector: selector_string(sts_spec.selector.clone()),
                gossip_port: flags.gossip_port,
            }),
        };
        sidecar_container(settings, &inputs)
    });

    let peers_env = plan.peers().join(" ");
    let injection_plan = InjectionPlan {
        supervisor: sup.name.clone(),
        peer_args: if !user_peers && options.peer_mode == PeerMode::Args {
            plan.peers().to_vec()
        } else {
            Vec::new()
        },
        peer_watch_file: !user_peers && options.peer_mode == PeerMode::WatchFile,
        env: vec![
            literal(env::STATEFULSET, &sts_name),
            literal(env::SERVICE, &service),
            literal(env::SERVICE_FQDN, ring.service_fqdn()),
            literal(env::ORDINAL, own_ordinal.to_string()),
            literal(env::POD_FQDN, ring.pod_fqdn(own_ordinal)),
            literal(env::PEERS, peers_env),
            downward(env::POD_NAME, "metadata.name"),
            downward(env::POD_NAMESPACE, "metadata.namespace"),
            downward(env::POD_IP, "status.podIP"),
        ],
        sidecar,
    };
    let mut mutated = pod.clone();
    let status = render::apply(&mut mutated, injection_plan);
    let summary = summarize(&pod_name, &plan, &status, options.peer_mode);
    Ok(Injection { pod: mutated, status, plan, warnings, summary })
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

/// Checks the headless Service; returns whether not-ready pods resolve.
fn check_service(fact: &ServiceFact, name: &str, warnings: &mut Vec<String>) -> bool {
    let spec = match fact {
        ServiceFact::Unknown => return false,
        ServiceFact::Missing => {
            warnings.push(format!(
                "Service {name:?} (spec.serviceName) not found: peer names resolve once it exists"
            ));
            return false;
        }
        ServiceFact::Found(svc) => svc.spec.clone().unwrap_or_default(),
    };
    if spec.cluster_ip.as_deref() != Some("None") {
        warnings.push(format!(
            "Service {name:?} is not headless (clusterIP: None): pods get no stable DNS names"
        ));
    }
    let publish = spec.publish_not_ready_addresses == Some(true);
    if !publish {
        warnings.push(format!(
            "Service {name:?}: set publishNotReadyAddresses: true so peers resolve before Ready"
        ));
    }
    publish
}

fn check_statefulset(sts: &StatefulSet, flags: &SupervisorFlags, name: &str, warnings: &mut Vec<String>) {
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    if flags.leader_topology && replicas % 2 == 0 {
        warnings.push(format!(
            "StatefulSet {name:?} has {replicas} replicas: leader elections want an odd count"
        ));
    }
    if spec.pod_management_policy.as_deref() == Some("Parallel") {
        warnings.push(format!(
            "StatefulSet {name:?} is Parallel: pods may start with no live peer; consider {}=watch-file",
            annotations::PEER_MODE
        ));
    }
}

/// Warns unless `/hab/sup` is on a PersistentVolume: without its state a rescheduled supervisor is
/// a new member, and only the peers we inject bring it back into the ring.
fn check_state_volume(pod: &Pod, sup: &Container, warnings: &mut Vec<String>) {
    const STATE: &str = "/hab/sup";
    let covers = |m: &&VolumeMount| {
        let path = m.mount_path.trim_end_matches('/');
        STATE == path || STATE.starts_with(&format!("{path}/")) || path.is_empty()
    };
    let mount = sup.volume_mounts.iter().flatten().filter(covers).max_by_key(|m| m.mount_path.len());
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    let persistent = mount.is_some_and(|m| {
        volumes
            .into_iter()
            .flatten()
            .any(|v| v.name == m.name && (v.persistent_volume_claim.is_some() || v.ephemeral.is_some()))
    });
    if !persistent {
        warnings.push(format!(
            "/hab/sup of container {:?} is not on a PersistentVolume: restarts lose ring state",
            sup.name
        ));
    }
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
