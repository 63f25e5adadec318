//! The Kubernetes client of a command a person runs (`check`, `inject --from-cluster`): the
//! kubeconfig and context named on its command line, else the usual places ($KUBECONFIG,
//! ~/.kube/config, in-cluster), and the namespace that context defaults to.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The client, each request bounded by `timeout`, and the context's default namespace.
pub async fn client_for(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
    let mut config = match (kubeconfig, context) {
        (Some(path), _) => {
            let kubeconfig =
                Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await?,
        (None, None) => Config::infer().await?,
    };
    let namespace = config.default_namespace.clone();
    config.read_timeout = Some(timeout);
    config.connect_timeout = Some(timeout);
    Ok((Client::try_from(config)?, namespace))
}
