//! The role sidecar's container spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::env::{POD_NAME, POD_NAMESPACE, downward};
use crate::injection::settings::InjectionSettings;

pub const SIDECAR_NAME: &str = "habitat-role";
/// Where the ServiceAccount admission plugin mounts the API token; it ran before us, so the
/// containers we add do not get the mount unless we copy it.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const GATEWAY_TOKEN_ENV: &str = "HABITAT_BOOTSTRAP_GATEWAY_TOKEN";

/// What the sidecar needs to know beyond the settings.
#[derive(Debug, Clone)]
pub struct SidecarInputs {
    pub http_port: u16,
    pub service_group: Option<String>,
    /// The supervisor's gateway token variable, copied under our name.
    pub gateway_token: Option<EnvVar>,
    pub service_account_mount: Option<VolumeMount>,
    /// None when the user passes peers themselves.
    pub watch_file: Option<WatchFileInputs>,
    /// False: the sidecar keeps the peer file and departs ghosts, but labels nothing.
    pub role_label: bool,
    /// The sidecar's `--interval` and `--unknown-grace`, when the StatefulSet sets them.
    pub poll_interval: Option<String>,
    pub unknown_grace: Option<String>,
    /// None when the Supervisor's state cannot be shared (the sidecar then neither forgets saved
    /// members nor departs its predecessor itself).
    pub state: Option<StateInputs>,
}

/// The Supervisor's `/hab/sup`, shared with the sidecar: it forgets the saved members there at pod
/// start and reads the control gateway's secret to depart this pod's dead predecessor.
#[derive(Debug, Clone)]
pub struct StateInputs {
    pub mount: VolumeMount,
    /// The Supervisor's `/hab/sup/default` as the sidecar sees it.
    pub dir: String,
    pub ctl_port: u16,
    /// The Supervisor's files are its user's: the sidecar runs as that user to read and rewrite them.
    pub run_as: RunAs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// The Supervisor runs as root (Habitat's default): so does the sidecar, with no capabilities.
    Root,
    /// The Supervisor's numeric user and group.
    User { uid: i64, gid: Option<i64> },
    /// Not known (the Supervisor image's non-root user): the sidecar image's user.
    Image,
}

#[derive(Debug, Clone)]
pub struct WatchFileInputs {
    pub path: String,
    pub mount: VolumeMount,
    pub statefulset: String,
    pub pod_selector: String,
    /// The pod's pod-index label, when it has one: the sidecar then watches the pods near it only.
    pub pod_index: Option<u32>,
    pub gossip_port: u16,
}

pub fn sidecar_container(settings: &InjectionSettings, inputs: &SidecarInputs) -> Container {
    let mut args = vec![
        "sidecar".to_owned(),
        "--census-url".to_owned(),
        format!("http://127.0.0.1:{}/census", inputs.http_port),
        "--label-key".to_owned(),
        settings.role_label_key.clone(),
        "--metrics-listen".to_owned(),
        format!("0.0.0.0:{}", settings.sidecar_metrics_port),
    ];
    if let Some(group) = &inputs.service_group {
        args.extend(["--service-group".to_owned(), group.clone()]);
    }
    let mut mounts: Vec<VolumeMount> = inputs.service_account_mount.iter().cloned().collect();
    if let Some(w) = &inputs.watch_file {
        args.extend([
            "--peer-watch-file".to_owned(),
            w.path.clone(),
            "--statefulset".to_owned(),
            w.statefulset.clone(),
            "--pod-selector".to_owned(),
            w.pod_selector.clone(),
            "--gossip-port".to_owned(),
            w.gossip_port.to_string(),
        ]);
        if let Some(index) = w.pod_index {
            args.extend(["--pod-index".to_owned(), index.to_string()]);
        }
        mounts.push(w.mount.clone());
    }
    if let Some(state) = &inputs.state {
        args.extend([
            "--sup-state-dir".to_owned(),
            state.dir.clone(),
            "--ctl-gateway".to_owned(),
            format!("127.0.0.1:{}", state.ctl_port),
        ]);
        mounts.push(state.mount.clone());
    }
    if !inputs.role_label {
        args.push("--no-role-label".to_owned());
    }
    for (flag, value) in [("--interval", &inputs.poll_interval), ("--unknown-grace", &inputs.unknown_grace)] {
        args.extend(value.iter().flat_map(|v| [flag.to_owned(), v.clone()]));
    }
    let mut env = vec![downward(POD_NAME, "metadata.name"), downward(POD_NAMESPACE, "metadata.namespace")];
    env.extend(
        inputs.gateway_token.iter().map(|t| EnvVar { name: GATEWAY_TOKEN_ENV.to_owned(), ..t.clone() }),
    );
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    Container {
        name: SIDECAR_NAME.to_owned(),
        image: Some(settings.sidecar_image.clone()),
        image_pull_policy: Some(settings.sidecar_image_pull_policy.clone()),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("role-metrics".to_owned()),
            container_port: settings.sidecar_metrics_port.into(),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/livez".to_owned()),
                port: IntOrString::Int(settings.sidecar_metrics_port.into()),
                ..Default::default()
            }),
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        // The supervisor should start after the sidecar wrote its peer file and forgot the saved
        // members: a native sidecar's startupProbe holds the containers after it until /readyz.
        startup_probe: (settings.native_sidecar && (inputs.watch_file.is_some() || inputs.state.is_some()))
            .then(|| Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/readyz".to_owned()),
                    port: IntOrString::Int(settings.sidecar_metrics_port.into()),
                    ..Default::default()
                }),
                period_seconds: Some(1),
                failure_threshold: Some(60),
                ..Default::default()
            }),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&settings.sidecar_cpu_request, &settings.sidecar_memory_request)),
            limits: Some(quantities(&settings.sidecar_cpu_limit, &settings.sidecar_memory_limit)),
            ..Default::default()
        }),
        security_context: Some(security_context(inputs.state.as_ref().map_or(RunAs::Image, |s| s.run_as))),
        restart_policy: settings.native_sidecar.then(|| "Always".to_owned()),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    }
}

/// The "restricted" Pod Security profile. With no UID the image's numeric non-root USER applies,
/// and platforms that assign UIDs (OpenShift) can; sharing the Supervisor's files means being its
/// user, root included (Habitat's default) — still with no capability and no escalation.
fn security_context(run_as: RunAs) -> SecurityContext {
    let (run_as_user, run_as_group, run_as_non_root) = match run_as {
        RunAs::Image => (None, None, true),
        RunAs::Root => (Some(0), Some(0), false),
        RunAs::User { uid, gid } => (Some(uid), gid, uid != 0),
    };
    SecurityContext {
        run_as_user,
        run_as_group,
        run_as_non_root: Some(run_as_non_root),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Default::default() }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), ..Default::default() }),
        ..Default::default()
    }
}
