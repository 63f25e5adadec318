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
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_CPU_REQUEST", value_parser = quantity_flag, default_value = "5m")]
    pub sidecar_cpu_request: String,
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_MEMORY_REQUEST", value_parser = quantity_flag, default_value = "16Mi")]
    pub sidecar_memory_request: String,
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_CPU_LIMIT", value_parser = quantity_flag, default_value = "100m")]
    pub sidecar_cpu_limit: String,
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_MEMORY_LIMIT", value_parser = quantity_flag, default_value = "32Mi")]
    pub sidecar_memory_limit: String,
    /// Port of the sidecar's `/metrics` and `/livez`.
    #[arg(long, env = "HABITAT_BOOTSTRAP_SIDECAR_METRICS_PORT", default_value_t = 9639)]
    pub sidecar_metrics_port: u16,
}

/// A resource flag is a Kubernetes quantity: refused at startup, not by the API server per pod.
fn quantity_flag(text: &str) -> Result<String, String> {
    crate::injection::quantity::parse(text).map(|_| text.to_owned())
}

impl InjectionSettings {
    /// What the flags cannot say one at a time: no sidecar limit below its request.
    pub fn check(&self) -> Result<(), String> {
        use crate::injection::quantity::parse;
        for (resource, request, limit) in [
            ("cpu", &self.sidecar_cpu_request, &self.sidecar_cpu_limit),
            ("memory", &self.sidecar_memory_request, &self.sidecar_memory_limit),
        ] {
            if parse(request)? > parse(limit)? {
                return Err(format!(
                    "--sidecar-{resource}-limit {limit} is below --sidecar-{resource}-request {request}: \
                     every injected pod would be refused; raise the limit or lower the request"
                ));
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: InjectionSettings,
    }

    #[test]
    fn resource_flags_are_quantities_and_limits_cover_requests() {
        assert!(InjectionSettings::default().check().is_ok());
        let err = Flags::try_parse_from(["x", "--sidecar-memory-limit", "32 MiB"]).err().unwrap().to_string();
        assert!(err.contains("--sidecar-memory-limit"), "{err}");
        let flags = Flags::try_parse_from(["x", "--sidecar-cpu-request", "1", "--sidecar-cpu-limit", "500m"])
            .unwrap();
        let err = flags.settings.check().unwrap_err();
        assert!(err.contains("--sidecar-cpu-limit 500m is below --sidecar-cpu-request 1"), "{err}");
    }
}
