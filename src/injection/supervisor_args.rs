//! Reading a container's command line as `hab sup run` would: which container runs the Supervisor,
//! and the flags that change what we inject (gossip and HTTP ports, peers the user already gave,
//! the service group).

use k8s_openapi::api::core::v1::Container;

pub const DEFAULT_GOSSIP_PORT: u16 = 9638;
pub const DEFAULT_HTTP_PORT: u16 = 9631;
pub const DEFAULT_CTL_PORT: u16 = 9632;

/// The flags of `hab sup run` that take a value (as a separate token when not written `--f=v`).
/// Needed to tell a flag's value from the package identifier, the first positional argument.
/// Checked against the real `hab sup run --help` (2.1.78) by tests/sup_run_flags.rs; hidden
/// flags (`--ring-key`, `--svc-config-paths`, `--pkg-ident-file`) are listed from the source.
pub const FLAGS_WITH_VALUE: &[&str] = &[
    "--listen-gossip",
    "--listen-http",
    "--listen-ctl",
    "--org",
    "--peer",
    "--peer-watch-file",
    "--ring",
    "-r",
    "--ring-key",
    "--cache-key-path",
    "--channel",
    "--url",
    "-u",
    "--auto-update-period",
    "--service-update-period",
    "--svc-config-paths",
    "--config-files",
    "--config-from",
    "--group",
    "--topology",
    "-t",
    "--strategy",
    "-s",
    "--bind",
    "--binding-mode",
    "--health-check-interval",
    "--update-condition",
    "--shutdown-timeout",
    "--sys-ip-address",
    "--event-stream-application",
    "--event-stream-environment",
    "--event-stream-site",
    "--event-stream-url",
    "--event-stream-token",
    "--event-meta",
    "--event-stream-server-certificate",
    "--event-stream-connect-timeout",
    "--keep-latest-packages",
    "--ctl-server-certificate",
    "--ctl-server-key",
    "--ctl-client-ca-certificate",
    "--key",
    "--certs",
    "--ca-certs",
    "--service-min-backoff-period",
    "--service-max-backoff-period",
    "--service-restart-cooldown-period",
    "--pkg-ident-file",
];

/// What the Supervisor's command line tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorFlags {
    /// The user passes `--peer` themselves (not counting peers we injected earlier).
    pub has_peer: bool,
    pub has_peer_watch_file: bool,
    pub gossip_port: u16,
    pub http_port: u16,
    /// The control gateway's port (`--listen-ctl`, on 127.0.0.1 by default).
    pub ctl_port: u16,
    /// The user brings a ring key of their own (`--ring`, `--ring-key`).
    pub has_ring_key: bool,
    /// `<service>.<group>` of the package on the `sup run` line, if there is one.
    pub service_group: Option<String>,
    pub leader_topology: bool,
}

impl Default for SupervisorFlags {
    fn default() -> Self {
        Self {
            has_peer: false,
            has_peer_watch_file: false,
            gossip_port: DEFAULT_GOSSIP_PORT,
            http_port: DEFAULT_HTTP_PORT,
            ctl_port: DEFAULT_CTL_PORT,
            has_ring_key: false,
            service_group: None,
            leader_topology: false,
        }
    }
}

/// The container's full argv as the runtime would build it (command, then args).
pub fn argv(container: &Container) -> Vec<&str> {
    let command = container.command.iter().flatten();
    let args = container.args.iter().flatten();
    command.chain(args).map(String::as_str).collect()
}

/// Where `sup run`'s own flags start in `argv`, if this command line starts a Supervisor:
/// `hab sup run`, `hab-sup run`, `hab-launch run`, or (no command, an image entrypoint) `sup run`.
pub fn sup_run_flags_start(container: &Container) -> Option<usize> {
    let argv = argv(container);
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    let entrypoint_form = container.command.as_ref().is_none_or(Vec::is_empty)
        && argv.first() == Some(&"sup")
        && argv.get(1) == Some(&"run");
    if entrypoint_form {
        return Some(2);
    }
    argv.windows(3)
        .position(|w| base(w[0]) == "hab" && w[1] == "sup" && w[2] == "run")
        .map(|i| i + 3)
        .or_else(|| {
            argv.windows(2)
                .position(|w| matches!(base(w[0]).as_str(), "hab-sup" | "hab-launch") && w[1] == "run")
                .map(|i| i + 2)
        })
}

/// Which container runs the Supervisor: the one the annotation names, else the first whose command
/// line starts one, else the first container. Err carries a message for the user.
pub fn find_supervisor(containers: &[Container], named: Option<&str>) -> Result<usize, String> {
    if let Some(name) = named {
        return containers.iter().position(|c| c.name == name).ok_or_else(|| {
            let names: Vec<_> = containers.iter().map(|c| c.name.as_str()).collect();
            format!(
                "annotation {}={name:?} names no container of the pod (containers: {})",
                crate::injection::annotations::SUPERVISOR_CONTAINER,
                names.join(", ")
            )
        });
    }
    if containers.is_empty() {
        return Err("the pod has no containers".to_owned());
    }
    Ok(containers.iter().position(|c| sup_run_flags_start(c).is_some()).unwrap_or(0))
}

/// Reads the `sup run` flags of `container` (from which any earlier injection of ours has been
/// stripped, so every `--peer` left is the user's).
pub fn parse_flags(container: &Container) -> SupervisorFlags {
    let argv = argv(container);
    let start = sup_run_flags_start(container).unwrap_or(0);
    let mut flags = SupervisorFlags::default();
    let mut package: Option<&str> = None;
    let mut group = "default";
    let mut tokens = argv[start.min(argv.len())..].iter().copied();
    while let Some(token) = tokens.next() {
        let (flag, inline) = match token.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v)),
            _ => (token, None),
        };
        if !flag.starts_with('-') {
            package.get_or_insert(token);
            continue;
        }
        let value = if FLAGS_WITH_VALUE.contains(&flag) { inline.or_else(|| tokens.next()) } else { inline };
        match (flag, value) {
            ("--peer", Some(_)) => flags.has_peer = true,
            ("--peer-watch-file", _) => flags.has_peer_watch_file = true,
            ("--listen-gossip", Some(v)) => flags.gossip_port = port_of(v).unwrap_or(DEFAULT_GOSSIP_PORT),
            ("--listen-http", Some(v)) => flags.http_port = port_of(v).unwrap_or(DEFAULT_HTTP_PORT),
            ("--listen-ctl", Some(v)) => flags.ctl_port = port_of(v).unwrap_or(DEFAULT_CTL_PORT),
            ("--ring" | "-r" | "--ring-key", Some(_)) => flags.has_ring_key = true,
            ("--group", Some(v)) => group = v,
            ("--topology" | "-t", Some(v)) => flags.leader_topology = v == "leader",
            _ => {}
        }
    }
    // A package identifier is origin/name[/version[/release]]; a .hart path names no service.
    flags.service_group = package
        .filter(|p| !p.ends_with(".hart"))
        .and_then(|p| p.split('/').nth(1))
        .filter(|name| !name.is_empty())
        .map(|name| format!("{name}.{group}"));
    flags
}

fn port_of(listen: &str) -> Option<u16> {
    listen.rsplit_once(':').and_then(|(_, port)| port.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, command: &[&str], args: &[&str]) -> Container {
        let strings = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
        Container { name: name.into(), command: strings(command), args: strings(args), ..Default::default() }
    }

    #[test]
    fn detects_every_supervisor_form() {
        let cases = [
            (container("a", &["hab", "sup", "run"], &["core/redis"]), Some(3)),
            (container("a", &["/bin/hab", "sup", "run", "core/redis"], &[]), Some(3)),
            (container("a", &["hab-sup", "run"], &[]), Some(2)),
            (container("a", &["/hab/bin/hab-launch", "run"], &[]), Some(2)),
            (container("a", &[], &["sup", "run", "core/redis"]), Some(2)),
            (container("a", &["tini", "--", "hab", "sup", "run"], &[]), Some(5)),
            // `sup run` as args of some other entrypoint is not the image entrypoint form.
            (container("a", &["redis-server"], &["sup", "run"]), None),
            (container("a", &["redis-server"], &[]), None),
            (container("a", &["sh", "-c", "hab sup run core/redis"], &[]), None),
        ];
        for (c, want) in cases {
            assert_eq!(sup_run_flags_start(&c), want, "{:?}", argv(&c));
        }
    }

    #[test]
    fn picks_named_then_detected_then_first() {
        let pod = [container("metrics", &["exporter"], &[]), container("sup", &["hab", "sup", "run"], &[])];
        assert_eq!(find_supervisor(&pod, None), Ok(1));
        assert_eq!(find_supervisor(&pod, Some("metrics")), Ok(0));
        assert!(find_supervisor(&pod, Some("nope")).unwrap_err().contains("metrics, sup"));
        assert_eq!(find_supervisor(&pod[..1], None), Ok(0));
        assert!(find_supervisor(&[], None).is_err());
    }

    #[test]
    fn reads_ports_group_topology_and_user_peers() {
        let c = container(
            "sup",
            &[],
            &[
                "sup",
                "run",
                "--listen-gossip",
                "0.0.0.0:9700",
                "--listen-http=0.0.0.0:9700",
                "core/redis/7.0",
                "--group",
                "prod",
                "--topology",
                "leader",
                "--peer",
                "seed.example",
                "--listen-ctl",
                "127.0.0.1:9800",
                "--ring",
                "prod-ring",
            ],
        );
        let f = parse_flags(&c);
        assert_eq!(
            f,
            SupervisorFlags {
                has_peer: true,
                has_peer_watch_file: false,
                gossip_port: 9700,
                http_port: 9700,
                ctl_port: 9800,
                has_ring_key: true,
                service_group: Some("redis.prod".into()),
                leader_topology: true,
            }
        );
    }

    #[test]
    fn defaults_without_flags() {
        let f = parse_flags(&container("sup", &["hab", "sup", "run"], &[]));
        assert_eq!(f, SupervisorFlags::default());
        let hart = parse_flags(&container(
            "sup",
            &["hab", "sup", "run", "/tmp/x.hart", "--peer-watch-file", "/p"],
            &[],
        ));
        assert_eq!(hart.service_group, None);
        assert!(hart.has_peer_watch_file);
    }
}
