//! Injection settings shared by the webhook and the offline `inject` command, so both render the
//! same pod from the same flags.

use clap::{ArgAction, Args};

#[derive(Debug, Clone, Args)]
pub struct InjectionSettings {
    /// Cluster DNS domain used in peer names (`<pod>.<svc>.<ns>.svc.<domain>`).
    #[arg(long, env = "HABITAT_BOOTSTRAP_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Image of the role sidecar (this same binary).
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_IMAGE", default_value = concat!("hab-bootstrap:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,
    /// Whether a StatefulSet may run the sidecar from another image (annotation
    /// `habitat/sidecar-image`). Whoever may edit a StatefulSet already picks its containers' images,
    /// so this grants nothing new; turn it off to keep every sidecar on the image you vetted.
    #[arg(long, env = "HABITAT_BOOTSTRAP_ALLOW_SIDECAR_IMAGE_ANNOTATION", default_value_t = true, action = ArgAction::Set)]
    pub allow_sidecar_image_annotation: bool,
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub sidecar_image_pull_policy: String,
    /// Run the sidecar as a native sidecar (an init container with `restartPolicy: Always`, GA in
    /// Kubernetes 1.33) rather than as a regular container.
    #[arg(long, env = "HABITAT_BOOTSTRAP_NATIVE_SIDECAR", default_value_t = true, action = ArgAction::Set)]
    pub native_sidecar: bool,
    /// Label the sidecar sets to `leader` / `follower` on its pod.
    #[arg(long, env = "HABITAT_BOOTSTRAP_ROLE_LABEL_KEY", default_value = "role")]
    pub role_label_key: String,
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_CPU_REQUEST", default_value = "5m")]
    pub sidecar_cpu_request: String,
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_MEMORY_REQUEST", default_value = "16Mi")]
    pub sidecar_memory_request: String,
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_CPU_LIMIT", default_value = "100m")]
    pub sidecar_cpu_limit: String,
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_MEMORY_LIMIT", default_value = "32Mi")]
    pub sidecar_memory_limit: String,
    /// Port of the sidecar's `/metrics` and `/livez`.
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_METRICS_PORT", default_value_t = 9639)]
    pub sidecar_metrics_port: u16,
}

impl Default for InjectionSettings {
    fn default() -> Self {
        // One source of defaults: the clap attributes above.
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            settings: InjectionSettings,
        }
        <Wrapper as clap::Parser>::parse_from(["defaults"]).settings
    }
}
