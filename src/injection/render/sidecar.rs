//! The role sidecar's container spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, DownwardAPIProjection,
    DownwardAPIVolumeFile, EnvVar, HTTPGetAction, KeyToPath, ObjectFieldSelector, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::env::{POD_NAME, POD_NAMESPACE, downward};
use crate::injection::settings::InjectionSettings;

pub const SIDECAR_NAME: &str = "habitat-role";
/// Where the ServiceAccount admission plugin mounts the API token; it ran before us, so the
/// containers we add do not get the mount unless we copy it.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The sidecar's own token volume, when the pod's containers get none.
pub const SIDECAR_TOKEN_VOLUME: &str = "habitat-role-api-access";
pub const GATEWAY_TOKEN_ENV: &str = "HABITAT_BOOTSTRAP_GATEWAY_TOKEN";

/// What the sidecar needs to know beyond the settings.
#[derive(Debug, Clone)]
pub struct SidecarInputs {
    pub http_port: u16,
    pub service_group: Option<String>,
    /// The supervisor's gateway token variable, copied under our name.
    pub gateway_token: Option<EnvVar>,
    pub api_token: ApiToken,
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

/// The API token the sidecar labels its pod and watches its peers with.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiToken {
    /// The pod's automounted token, which every container of the pod holds: the mount is copied.
    Shared(VolumeMount),
    /// The pod mounts no token (`automountServiceAccountToken: false` on the pod or its
    /// ServiceAccount): the sidecar alone mounts [`own_token_volume`].
    Own,
}

impl ApiToken {
    fn mount(&self) -> VolumeMount {
        match self {
            ApiToken::Shared(mount) => mount.clone(),
            ApiToken::Own => VolumeMount {
                name: SIDECAR_TOKEN_VOLUME.to_owned(),
                mount_path: SERVICE_ACCOUNT_MOUNT.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
        }
    }
}

/// What the kubelet's `kube-api-access-*` volume holds — a token bound to the pod, the cluster's CA
/// and the namespace — under a name of ours, for the sidecar alone.
pub fn own_token_volume() -> Volume {
    Volume {
        name: SIDECAR_TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: Some(3607),
                        path: "token".to_owned(),
                        audience: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_owned(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_owned(),
                            path: "ca.crt".to_owned(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".to_owned(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".to_owned()),
                                field_path: "metadata.namespace".to_owned(),
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Default::default()
    }
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
    let mut mounts = vec![inputs.api_token.mount()];
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
        volume_mounts: Some(mounts),
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
