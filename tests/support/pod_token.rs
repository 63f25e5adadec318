//! A pod's ServiceAccount token and a kubeconfig that uses only it: how the end-to-end tests run a
//! sidecar with exactly the rights its pod would have (`tests/e2e_sidecar.rs`, `tests/e2e_habitat`).

use std::path::Path;

use base64::Engine;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;

/// A token of `ns/service_account`, bound to `pod` when given (as the kubelet mounts it).
pub async fn service_account_token(
    admin: &Client,
    ns: &str,
    service_account: &str,
    pod: Option<&Pod>,
) -> Result<String, String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            bound_object_ref: pod.map(|pod| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(3600),
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token for {ns}/{service_account}: {e}"))?
        .status
        .map(|s| s.token)
        .ok_or_else(|| "no token in the answer".to_owned())
}

/// A kubeconfig that authenticates with `token` only (no client certificate).
pub fn write_token_kubeconfig(path: &Path, token: &str, ns: &str) {
    let server = std::env::var("CP_APISERVER_URL").expect("CP_APISERVER_URL");
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: pod\n\
         clusters:\n- name: cp\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: pod\n  user:\n    token: \"{token}\"\n\
         contexts:\n- name: pod\n  context:\n    cluster: cp\n    user: pod\n    namespace: {ns}\n",
        ca = api_server_ca()
    );
    std::fs::write(path, config).unwrap();
}

/// The API server's CA, base64, from the admin kubeconfig (inline data or a file it names).
fn api_server_ca() -> String {
    let path = std::env::var_os("KUBECONFIG").expect("KUBECONFIG");
    let config = Kubeconfig::read_from(&path).unwrap();
    let context = config.current_context.clone().expect("a current context");
    let cluster_name = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .expect("the current context");
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone())
        .expect("the current cluster");
    if let Some(data) = cluster.certificate_authority_data {
        return data;
    }
    let file = cluster.certificate_authority.expect("a CA in the admin kubeconfig");
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(file).unwrap())
}
