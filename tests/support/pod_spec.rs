//! From a stored pod to a command line on this machine: Kubernetes' `$(VAR)` expansion, env
//! resolution (literal values, fieldRefs, Secret and ConfigMap keys) and the mapping of paths under
//! a volume mount to a host directory. Pure functions, tested at the bottom.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

/// Expands `$(NAME)` references in `input` as the kubelet does (k8s.io/kubernetes
/// third_party/forked/golang/expansion): `$(NAME)` becomes the value when NAME is defined and is
/// left as written when not; `$$` becomes `$` (so `$$(NAME)` stays a literal `$(NAME)`); any other
/// `$` is kept.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        match vars.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&input[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Where a value that the API server would have to look up comes from.
pub trait Lookup {
    fn secret_key(&self, name: &str, key: &str) -> Option<String>;
    fn config_map_key(&self, name: &str, key: &str) -> Option<String>;
}

/// The value of a `fieldRef` for `pod` (the fields the downward API offers as env).
pub fn field_ref(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        p => {
            let key =
                p.strip_prefix("metadata.labels['").or_else(|| p.strip_prefix("metadata.annotations['"))?;
            let key = key.strip_suffix("']")?;
            let map = if p.starts_with("metadata.labels") { &meta.labels } else { &meta.annotations };
            map.as_ref().and_then(|m| m.get(key).cloned())
        }
    }
}

/// The container's environment as the kubelet builds it, in order: each value may refer to the
/// variables defined before it. Unresolvable references are an error (the kubelet would refuse to
/// start the container), except optional ones.
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    lookup: &dyn Lookup,
) -> Result<Vec<(String, String)>, String> {
    let mut vars = BTreeMap::new();
    let mut out = Vec::new();
    for EnvVar { name, value, value_from } in container.env.iter().flatten() {
        let resolved = if let Some(from) = value_from {
            if let Some(f) = &from.field_ref {
                field_ref(pod, &f.field_path)
                    .ok_or_else(|| format!("env {name}: fieldRef {} empty", f.field_path))?
            } else if let Some(s) = &from.secret_key_ref {
                match lookup.secret_key(&s.name, &s.key) {
                    Some(v) => v,
                    None if s.optional == Some(true) => continue,
                    None => return Err(format!("env {name}: secret {}/{} not found", s.name, s.key)),
                }
            } else if let Some(c) = &from.config_map_key_ref {
                match lookup.config_map_key(&c.name, &c.key) {
                    Some(v) => v,
                    None if c.optional == Some(true) => continue,
                    None => return Err(format!("env {name}: configMap {}/{} not found", c.name, c.key)),
                }
            } else {
                return Err(format!("env {name}: unsupported valueFrom {from:?}"));
            }
        } else {
            expand(value.as_deref().unwrap_or(""), &vars)
        };
        vars.insert(name.clone(), resolved.clone());
        out.push((name.clone(), resolved));
    }
    Ok(out)
}

/// command + args with `$(VAR)` expanded from `env`. An empty command means the image's
/// entrypoint, which the caller names (`hab` for the Supervisor image, `hab-bootstrap` for ours).
pub fn argv(container: &Container, env: &[(String, String)], entrypoint: &str) -> Vec<String> {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    let command = container.command.clone().unwrap_or_else(|| vec![entrypoint.to_owned()]);
    command.iter().chain(container.args.iter().flatten()).map(|a| expand(a, &vars)).collect()
}

/// Container mount paths → host directories (longest mount path first, so nested mounts win).
#[derive(Debug, Clone, Default)]
pub struct Mounts(pub Vec<(String, PathBuf)>);

impl Mounts {
    pub fn new(mut mounts: Vec<(String, PathBuf)>) -> Self {
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Self(mounts)
    }

    /// The host path of container path `path` if a mount covers it.
    pub fn host_path(&self, path: &str) -> Option<PathBuf> {
        self.0.iter().find_map(|(mount, host)| {
            let mount = mount.trim_end_matches('/');
            if path == mount {
                Some(host.clone())
            } else {
                path.strip_prefix(mount).and_then(|rest| rest.strip_prefix('/')).map(|rest| host.join(rest))
            }
        })
    }

    /// `value` with a path under a mount rewritten to the host directory: the whole value, or the
    /// part after the first `=` (`--flag=/path`).
    pub fn rewrite(&self, value: &str) -> String {
        if let Some(p) = self.host_path(value) {
            return p.to_string_lossy().into_owned();
        }
        if let Some((flag, v)) = value.split_once('=')
            && let Some(p) = self.host_path(v)
        {
            return format!("{flag}={}", p.display());
        }
        value.to_owned()
    }
}

/// Points `fs_root` + `container_path` at `host` with a symlink (the container's own file system is
/// fresh at every start, so the link is made again each time).
pub fn link_into(fs_root: &Path, container_path: &str, host: &Path) -> std::io::Result<()> {
    let target = fs_root.join(container_path.trim_start_matches('/'));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::create_dir_all(host)?;
    std::os::unix::fs::symlink(host, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let v = vars(&[("A", "1"), ("POD", "redis-0")]);
        assert_eq!(expand("$(A)", &v), "1");
        assert_eq!(expand("x$(POD).y", &v), "xredis-0.y");
        assert_eq!(expand("$(MISSING)", &v), "$(MISSING)");
        assert_eq!(expand("$$(A)", &v), "$(A)");
        assert_eq!(expand("$A $", &v), "$A $");
        assert_eq!(expand("$(A", &v), "$(A");
    }

    #[test]
    fn paths_under_mounts_are_rewritten() {
        let m = Mounts::new(vec![
            ("/habitat-bootstrap".into(), "/tmp/x/peers".into()),
            ("/hab/sup".into(), "/tmp/x/sup".into()),
        ]);
        assert_eq!(m.rewrite("/habitat-bootstrap/peers"), "/tmp/x/peers/peers");
        assert_eq!(
            m.rewrite("--peer-watch-file=/habitat-bootstrap/peers"),
            "--peer-watch-file=/tmp/x/peers/peers"
        );
        assert_eq!(m.rewrite("/habitat-bootstrapx"), "/habitat-bootstrapx");
        assert_eq!(m.rewrite("/hab/sup"), "/tmp/x/sup");
        assert_eq!(m.rewrite("--topology"), "--topology");
    }
}
