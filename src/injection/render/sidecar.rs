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
    pub watch_file: Option<WatchFileInputs>,
}

#[derive(Debug, Clone)]
pub struct WatchFileInputs {
    pub path: String,
    pub mount: VolumeMount,
    pub statefulset: String,
    pub pod_selector: String,
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
        mounts.push(w.mount.clone());
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
        // In watch-file mode the supervisor should start with its peer file written: a native
        // sidecar's startupProbe holds the containers after it until /readyz (first sync) passes.
        startup_probe: inputs.watch_file.as_ref().filter(|_| settings.native_sidecar).map(|_| Probe {
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
        // The "restricted" Pod Security profile, with no UID: the image's numeric non-root USER
        // applies, and platforms that assign UIDs (OpenShift) can.
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Default::default() }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        restart_policy: settings.native_sidecar.then(|| "Always".to_owned()),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    }
}
