//! Plumbing shared by the long-running subcommands (webhook, sidecar, certs watch): the admin
//! server, the Kubernetes client, signals, logging and the tokio runtime.

pub mod access_review;
pub mod admin;
pub mod build_info;
pub mod kubeconfig;
pub mod logging;
pub mod signals;

use anyhow::Context;

/// The multi-threaded tokio runtime every async subcommand runs on.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("building the tokio runtime")
}

/// The Kubernetes client from the in-cluster service account or KUBECONFIG.
pub async fn kube_client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster service account or KUBECONFIG)")
}
