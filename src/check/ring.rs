//! Every ring, from each pod's own `/census`: one ring (the member lists agree, no second ring, no
//! member that is no pod of this StatefulSet), a finished election with exactly one leader, the
//! role labels equal to the census, ghosts counted in the quorum, and how many more failures the
//! quorum survives.
//!
//! A ghost the sidecar departed keeps showing as confirmed (not departed) in every `/census` until
//! some other rumor changes (habitat-findings §3): the sidecar's `PredecessorDeparted` Events are
//! the evidence, and such a member is reported as departed, not counted.

use std::collections::{BTreeMap, BTreeSet};

use super::{Finding, qualified};
use crate::sidecar::census::{Census, CensusGroup, CensusMember, ElectionStatus};
use crate::sidecar::ghosts::Quorum;

#[derive(Debug, Clone)]
pub struct RingPod {
    pub name: String,
    /// The role label on the pod now.
    pub role_label: Option<String>,
    pub census: Result<Census, String>,
}

/// A `PredecessorDeparted` Event of a role sidecar.
#[derive(Debug, Clone)]
pub struct Departure {
    pub pod: String,
    /// The Event's note, which names the member id.
    pub note: String,
    pub at: String,
}

#[derive(Debug, Clone)]
pub struct RingFacts {
    pub namespace: String,
    pub statefulset: String,
    /// The service group, when the pods' sidecar or the annotation names it.
    pub group: Option<String>,
    pub role_label_key: String,
    /// Whether a role sidecar labels the pods.
    pub role_sidecar: bool,
    /// The container that runs the Supervisor, for the `kubectl exec` fixes.
    pub supervisor_container: String,
    pub pods: Vec<RingPod>,
    pub departures: Vec<Departure>,
}

pub fn section(facts: &RingFacts, group: Option<&str>) -> String {
    let sts = qualified(&facts.namespace, &facts.statefulset);
    match group {
        Some(g) => format!("ring {sts} ({g})"),
        None => format!("ring {sts}"),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn is_dead(m: &CensusMember) -> bool {
    m.confirmed && !m.alive && !m.departed
}

/// `<sts>-<n>`: a name a pod of this StatefulSet has or had.
fn ordinal_of<'a>(sts: &str, host: &'a str) -> Option<&'a str> {
    let rest = host.strip_prefix(sts)?.strip_prefix('-')?;
    (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
}

struct View<'c> {
    pod: &'c str,
    local: &'c str,
    group: &'c CensusGroup,
}

/// The sidecar's departure of member `id`, if one of its Events names it.
fn departure_of<'d>(departures: &'d [Departure], id: &str) -> Option<&'d Departure> {
    departures.iter().find(|d| d.note.contains(id))
}

impl<'c> View<'c> {
    /// Members that count, by id: not departed, in this census or by the sidecar (`departures`).
    fn counted(&self, departures: &[Departure]) -> BTreeSet<&'c str> {
        let group: &'c CensusGroup = self.group;
        group
            .population
            .iter()
            .filter(|(id, m)| !m.departed && departure_of(departures, id).is_none())
            .map(|(id, _)| id.as_str())
            .collect()
    }
}

/// The group to judge: the one named, or the only one with a leader election in any census.
fn choose_group(facts: &RingFacts) -> Result<String, String> {
    if let Some(g) = &facts.group {
        return Ok(g.clone());
    }
    let groups: BTreeSet<&str> = facts
        .pods
        .iter()
        .filter_map(|p| p.census.as_ref().ok())
        .flat_map(|c| c.census_groups.iter())
        .filter(|(_, g)| g.election_status != ElectionStatus::None || g.leader_id.is_some())
        .map(|(name, _)| name.as_str())
        .collect();
    match groups.len() {
        1 => Ok(groups.into_iter().next().unwrap().to_owned()),
        0 => Err("no service group with a leader election in any census".into()),
        _ => Err(format!(
            "several service groups with elections ({})",
            groups.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

pub fn check(facts: &RingFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let (ns, sts) = (facts.namespace.as_str(), facts.statefulset.as_str());
    let sup = facts.supervisor_container.as_str();
    if facts.pods.is_empty() {
        out.push(Finding::info(&section(facts, facts.group.as_deref()), "ring.census", "no pods: no ring"));
        return out;
    }
    let group = match choose_group(facts) {
        Ok(g) => g,
        Err(e) => {
            let s = section(facts, None);
            let unreadable: Vec<String> = facts
                .pods
                .iter()
                .filter_map(|p| p.census.as_ref().err().map(|e| format!("{}: {e}", p.name)))
                .collect();
            let message = if unreadable.len() == facts.pods.len() {
                format!("no pod's census could be read ({})", unreadable.join("; "))
            } else {
                format!("{e}: the ring cannot be judged")
            };
            out.push(Finding::error(
                &s,
                "ring.census",
                message,
                format!(
                    "name the group: kubectl -n {ns} annotate statefulset {sts} habitat/service-group=<service>.<group>; \
                     is the Supervisor up? kubectl -n {ns} logs <pod> -c {sup}"
                ),
            ));
            return out;
        }
    };
    let s = section(facts, Some(&group));
    let s = s.as_str();

    // 1. Each pod's view of the group.
    let mut views: Vec<View<'_>> = Vec::new();
    for pod in &facts.pods {
        match &pod.census {
            Err(e) => out.push(Finding::error(
                s,
                "ring.census",
                format!("pod {}: its census cannot be read: {e}", pod.name),
                format!("kubectl -n {ns} logs {} -c {sup} (is the Supervisor running, its HTTP gateway on port 9631?)", pod.name),
            )),
            Ok(census) => match census.census_groups.get(&group) {
                Some(g) if g.population.contains_key(&census.local_member_id) => {
                    views.push(View { pod: &pod.name, local: &census.local_member_id, group: g })
                }
                _ => out.push(Finding::error(
                    s,
                    "ring.census",
                    format!("pod {}: its Supervisor does not run {group} (not loaded yet, or another group)", pod.name),
                    format!("kubectl -n {ns} logs {} -c {sup}; check `hab sup run <pkg> --group` and habitat/service-group", pod.name),
                )),
            },
        }
    }
    if views.is_empty() {
        return out;
    }
    let pod_names: BTreeSet<&str> = facts.pods.iter().map(|p| p.name.as_str()).collect();
    let local_of: BTreeMap<&str, &str> = views.iter().map(|v| (v.local, v.pod)).collect();

    // A member the sidecar departed (its Event is the evidence) may linger in some views and not in
    // others, for minutes (seen with real Supervisors): it is neither a disagreement nor a ghost.
    let departed_by_sidecar = |id: &str| departure_of(&facts.departures, id);

    // 2. One ring: pods are in the same ring when one's census lists the other's member.
    let rings = components(&views);
    if rings.len() > 1 {
        let described: Vec<String> = rings.iter().map(|r| format!("{{{}}}", r.join(", "))).collect();
        let smaller = rings.iter().min_by_key(|r| r.len()).unwrap();
        out.push(Finding::error(
            s,
            "ring.one-ring",
            format!("the pods form {} separate rings: {} — a second ring with its own election", rings.len(), described.join(" and ")),
            format!(
                "recreate the pods of the smaller ring without their Supervisor state so that they join through \
                 their peers: kubectl -n {ns} delete pod {} (with /hab/sup on a PersistentVolume, delete its claim too)",
                smaller.join(" ")
            ),
        ));
    } else {
        let lists: BTreeSet<BTreeSet<&str>> = views.iter().map(|v| v.counted(&facts.departures)).collect();
        if lists.len() == 1 {
            out.push(Finding::ok(
                s,
                "ring.one-ring",
                format!("one ring: the {} pods' member lists agree", views.len()),
            ));
        } else {
            let detail: Vec<String> = views
                .iter()
                .map(|v| {
                    format!(
                        "{}: {}",
                        v.pod,
                        v.counted(&facts.departures).iter().map(|id| short(id)).collect::<Vec<_>>().join(",")
                    )
                })
                .collect();
            out.push(Finding::warning(
                s,
                "ring.one-ring",
                format!("one ring, but the member lists differ ({})", detail.join("; ")),
                "gossip may still be converging: run check again in a few seconds",
            ));
        }
    }

    // 3. Who is in it: the union of what every pod lists.
    let mut members: BTreeMap<&str, &CensusMember> = BTreeMap::new();
    for v in &views {
        for (id, m) in &v.group.population {
            // Prefer a live view of a member over a stale one.
            let keep = members.get(id.as_str()).is_some_and(|old| old.alive && !m.alive);
            if !keep {
                members.insert(id, m);
            }
        }
    }
    let host = |m: &CensusMember| m.sys.hostname.clone().unwrap_or_else(|| "?".into());
    let describe = |id: &str, m: &CensusMember| {
        format!("{} ({}, {})", short(id), host(m), m.sys.ip.as_deref().unwrap_or("?"))
    };
    let foreign: Vec<String> = members
        .iter()
        .filter(|(_, m)| !m.departed)
        .filter(|(_, m)| m.sys.hostname.as_deref().is_none_or(|h| ordinal_of(sts, h).is_none()))
        .map(|(id, m)| describe(id, m))
        .collect();
    if foreign.is_empty() {
        out.push(Finding::ok(s, "ring.merged", format!("every member is a pod of {sts}")));
    } else {
        out.push(Finding::error(
            s,
            "ring.merged",
            format!("member(s) {} are no pod of {sts}: another ring has merged into this one", foreign.join(", ")),
            format!(
                "give each StatefulSet its own ring key (habitat/ring-key-secret, HAB_RING_KEY), then depart the \
                 strangers: kubectl -n {ns} exec <pod> -c {sup} -- hab sup depart <member id>"
            ),
        ));
    }

    // 4. Dead members that still count: ghosts of current pods, members of pods that are gone.
    let mut discount = 0;
    for (id, m) in members.iter().filter(|(id, m)| is_dead(m) || departed_by_sidecar(id).is_some()) {
        let Some(hostname) = m.sys.hostname.as_deref() else { continue };
        if ordinal_of(sts, hostname).is_none() {
            continue; // reported as a stranger above
        }
        let live_pod = local_of.iter().find(|(_, pod)| **pod == hostname).map(|(_, p)| *p);
        if let Some(d) = departed_by_sidecar(id) {
            discount += 1;
            out.push(Finding::info(
                s,
                "ring.ghosts",
                format!(
                    "member {} was departed by the sidecar of {} at {}; the census shows it until the next rumor",
                    describe(id, m),
                    d.pod,
                    d.at
                ),
            ));
        } else if pod_names.contains(hostname) && live_pod.is_none() {
            out.push(Finding::info(
                s,
                "ring.ghosts",
                format!(
                    "member {} of pod {hostname} is confirmed dead: its Supervisor does not answer",
                    describe(id, m)
                ),
            ));
        } else if live_pod.is_some() {
            out.push(Finding::warning(
                s,
                "ring.ghosts",
                format!(
                    "ghost member {}: an earlier run of pod {hostname}, confirmed dead, still counted in the quorum",
                    describe(id, m)
                ),
                format!(
                    "the role sidecar of {hostname} departs it (kubectl -n {ns} describe pod {hostname}: Events \
                     PredecessorDeparted / PredecessorNotDeparted); by hand: kubectl -n {ns} exec {hostname} -c {sup} \
                     -- hab sup depart {id}"
                ),
            ));
        } else {
            let any = views[0].pod;
            out.push(Finding::warning(
                s,
                "ring.ghosts",
                format!(
                    "dead member {} of pod {hostname}, which no longer exists (scaled away after a crash), still counted in the quorum",
                    describe(id, m)
                ),
                format!("kubectl -n {ns} exec {any} -c {sup} -- hab sup depart {id}"),
            ));
        }
    }

    // 5. The election: finished everywhere, one leader.
    let statuses: BTreeMap<&str, Vec<&str>> = views.iter().fold(BTreeMap::new(), |mut acc, v| {
        acc.entry(election_name(v.group.election_status)).or_default().push(v.pod);
        acc
    });
    let finished: Vec<&View<'_>> =
        views.iter().filter(|v| v.group.election_status == ElectionStatus::ElectionFinished).collect();
    let leaders: BTreeSet<&str> = finished.iter().filter_map(|v| v.group.leader_id.as_deref()).collect();
    let mut leader_pod: Option<&str> = None;
    if finished.len() < views.len() {
        let detail: Vec<String> =
            statuses.iter().map(|(st, pods)| format!("{st} on {}", pods.join(", "))).collect();
        let no_quorum = statuses.contains_key("ElectionNoQuorum");
        let message = format!("the election is not finished: {}", detail.join("; "));
        out.push(if no_quorum {
            Finding::error(
                s,
                "ring.election",
                message,
                "no more than half of the members that count are alive: bring members back, or depart the dead ones \
                 (ghosts above)",
            )
        } else {
            Finding::warning(s, "ring.election", message, "an election takes seconds: run check again; if it stays, read the Supervisors' logs")
        });
    }
    match leaders.len() {
        0 if !finished.is_empty() => out.push(Finding::error(
            s,
            "ring.leader",
            "the election is finished but names no leader",
            format!("kubectl -n {ns} logs <pod> -c {sup}"),
        )),
        0 => {}
        1 => {
            let leader = *leaders.iter().next().unwrap();
            leader_pod = local_of.get(leader).copied();
            match leader_pod {
                Some(pod) if finished.len() == views.len() => out.push(Finding::ok(
                    s,
                    "ring.leader",
                    format!("election finished on every pod, one leader: {pod} ({})", short(leader)),
                )),
                Some(pod) => out.push(Finding::info(
                    s,
                    "ring.leader",
                    format!("the pods with a finished election agree on the leader {pod}"),
                )),
                None => {
                    let who =
                        members.get(leader).map_or_else(|| short(leader).to_owned(), |m| describe(leader, m));
                    out.push(Finding::error(
                        s,
                        "ring.leader",
                        format!("the leader {who} is none of the pods of {sts} (a merged ring, or a dead leader not yet replaced)"),
                        "see the ring and ghost findings above",
                    ));
                }
            }
        }
        _ => {
            let detail: Vec<String> = leaders
                .iter()
                .map(|l| {
                    let by: Vec<&str> = finished
                        .iter()
                        .filter(|v| v.group.leader_id.as_deref() == Some(*l))
                        .map(|v| v.pod)
                        .collect();
                    format!("{} according to {}", local_of.get(l).copied().unwrap_or(short(l)), by.join(", "))
                })
                .collect();
            out.push(Finding::error(
                s,
                "ring.leader",
                format!("{} leaders: {}", leaders.len(), detail.join("; ")),
                "two finished elections mean two rings or a partition: see the ring findings; it resolves when the \
                 pods gossip again",
            ));
        }
    }

    // 6. Labels equal to the census.
    if facts.role_sidecar {
        out.extend(check_labels(facts, s, &views, leader_pod, finished.len() == views.len()));
    }

    // 7. The quorum, as the leader (or the first pod) sees it.
    let judge = leader_pod.and_then(|p| views.iter().find(|v| v.pod == p)).unwrap_or(&views[0]);
    let q = Quorum::of(judge.group);
    let q = Quorum { counted: q.counted - discount.min(q.counted), dead: q.dead - discount.min(q.dead), ..q };
    let counts = format!("{} alive of {} counted ({} dead)", q.alive, q.counted, q.dead);
    if !q.has_quorum() {
        out.push(Finding::error(
            s,
            "ring.quorum",
            format!("no quorum: {counts}"),
            "bring members back, or depart dead ones (see the ghost findings)",
        ));
    } else {
        let spare = q.failures_tolerated();
        if spare == 0 {
            let fix = if q.dead > 0 {
                "depart the dead members (ghost findings above)".to_owned()
            } else {
                format!("kubectl -n {ns} scale statefulset {sts} --replicas 3 (an odd count of 3 or more)")
            };
            out.push(Finding::warning(
                s,
                "ring.quorum",
                format!("quorum with {counts}, but it survives no further failure"),
                fix,
            ));
        } else {
            out.push(Finding::ok(
                s,
                "ring.quorum",
                format!("quorum: {counts}; survives {spare} more failure(s)"),
            ));
        }
    }
    out
}

fn check_labels(
    facts: &RingFacts,
    s: &str,
    views: &[View<'_>],
    leader_pod: Option<&str>,
    all_finished: bool,
) -> Vec<Finding> {
    let key = &facts.role_label_key;
    let ns = &facts.namespace;
    let mut out = Vec::new();
    let labelled_leader: Vec<&str> = facts
        .pods
        .iter()
        .filter(|p| p.role_label.as_deref() == Some("leader"))
        .map(|p| p.name.as_str())
        .collect();
    let expected: Vec<&str> = leader_pod.into_iter().collect();
    let fix_for = |pods: &[&str]| {
        let label: Vec<String> =
            pods.iter().map(|p| format!("kubectl -n {ns} label pod {p} {key}-")).collect();
        format!(
            "{}; the role sidecar sets the label again from its census (its logs: kubectl -n {ns} logs <pod> -c habitat-role)",
            label.join("; ")
        )
    };
    if labelled_leader.len() > 1 {
        out.push(Finding::error(
            s,
            "ring.labels",
            format!(
                "{} pods are labelled {key}=leader ({}); the census leader is {}: a Service selecting {key}=leader \
                 sends traffic to both",
                labelled_leader.len(),
                labelled_leader.join(", "),
                leader_pod.unwrap_or("none")
            ),
            fix_for(&labelled_leader.iter().copied().filter(|p| Some(*p) != leader_pod).collect::<Vec<_>>()),
        ));
        return out;
    }
    if labelled_leader != expected && (all_finished || !labelled_leader.is_empty()) {
        let wrong: Vec<&str> = labelled_leader.iter().copied().filter(|p| Some(*p) != leader_pod).collect();
        out.push(Finding::error(
            s,
            "ring.labels",
            format!(
                "{key}=leader is on {}, the census leader is {}",
                if labelled_leader.is_empty() { "no pod".to_owned() } else { labelled_leader.join(", ") },
                leader_pod.unwrap_or("none")
            ),
            if wrong.is_empty() {
                format!(
                    "the leader's role sidecar has not labelled it: kubectl -n {ns} logs {} -c habitat-role",
                    leader_pod.unwrap_or("<pod>")
                )
            } else {
                fix_for(&wrong)
            },
        ));
        return out;
    }
    let mut wrong_followers = Vec::new();
    for v in views {
        if Some(v.pod) == leader_pod || v.group.election_status != ElectionStatus::ElectionFinished {
            continue;
        }
        let label = facts.pods.iter().find(|p| p.name == v.pod).and_then(|p| p.role_label.as_deref());
        if label != Some("follower") {
            wrong_followers.push(format!(
                "{} ({})",
                v.pod,
                label.map_or("no label".into(), |l| format!("{key}={l}"))
            ));
        }
    }
    if wrong_followers.is_empty() {
        if let Some(pod) = leader_pod {
            out.push(Finding::ok(
                s,
                "ring.labels",
                format!("labels equal the census: {key}=leader on {pod}, followers on the others"),
            ));
        }
    } else {
        out.push(Finding::warning(
            s,
            "ring.labels",
            format!("follower(s) not labelled {key}=follower: {}", wrong_followers.join(", ")),
            format!("the role sidecar labels them within a poll: kubectl -n {ns} logs <pod> -c habitat-role"),
        ));
    }
    out
}

fn election_name(status: ElectionStatus) -> &'static str {
    match status {
        ElectionStatus::None => "no election",
        ElectionStatus::ElectionInProgress => "ElectionInProgress",
        ElectionStatus::ElectionNoQuorum => "ElectionNoQuorum",
        ElectionStatus::ElectionFinished => "ElectionFinished",
        ElectionStatus::Unrecognized => "an unknown status",
    }
}

/// The pods grouped into rings (connected components of "lists the other's member").
fn components<'a>(views: &[View<'a>]) -> Vec<Vec<&'a str>> {
    let n = views.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], i: usize) -> usize {
        let mut r = i;
        while parent[r] != r {
            r = parent[r];
        }
        parent[i] = r;
        r
    }
    for a in 0..n {
        for b in 0..n {
            if a != b && views[a].group.population.get(views[b].local).is_some_and(|m| !m.departed) {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                parent[ra] = rb;
            }
        }
    }
    let mut rings: BTreeMap<usize, Vec<&'a str>> = BTreeMap::new();
    for (i, v) in views.iter().enumerate() {
        let root = find(&mut parent, i);
        rings.entry(root).or_default().push(v.pod);
    }
    rings.into_values().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn member(host: &str, health: &str, ip: &str) -> Value {
        json!({"alive": health == "alive", "suspect": health == "suspect", "confirmed": health == "confirmed",
               "departed": health == "departed", "sys": {"hostname": host, "ip": ip}})
    }

    /// A census as `local` sees `population`, the election finished with `leader`.
    fn census(local: &str, status: &str, leader: &str, population: &Value) -> Census {
        serde_json::from_value(json!({
            "local_member_id": local,
            "census_groups": {"redis.default": {"election_status": status, "leader_id": leader, "population": population}}
        }))
        .unwrap()
    }

    fn healthy() -> (Value, RingFacts) {
        let population = json!({
            "aaaaaaaa0": member("redis-0", "alive", "10.0.0.1"),
            "bbbbbbbb1": member("redis-1", "alive", "10.0.0.2"),
            "cccccccc2": member("redis-2", "alive", "10.0.0.3"),
        });
        let pods = [
            ("redis-0", "aaaaaaaa0", "leader"),
            ("redis-1", "bbbbbbbb1", "follower"),
            ("redis-2", "cccccccc2", "follower"),
        ]
        .iter()
        .map(|(pod, id, role)| RingPod {
            name: (*pod).into(),
            role_label: Some((*role).into()),
            census: Ok(census(id, "ElectionFinished", "aaaaaaaa0", &population)),
        })
        .collect();
        let facts = RingFacts {
            namespace: "ns".into(),
            statefulset: "redis".into(),
            group: None,
            role_label_key: "role".into(),
            role_sidecar: true,
            supervisor_container: "redis".into(),
            pods,
            departures: vec![],
        };
        (population, facts)
    }

    fn problems(f: &[Finding]) -> Vec<&'static str> {
        f.iter().filter(|f| f.status.is_problem()).map(|f| f.check).collect()
    }

    fn set_all(facts: &mut RingFacts, population: &Value, leader: &str) {
        for p in &mut facts.pods {
            let local = p.census.as_ref().unwrap().local_member_id.clone();
            p.census = Ok(census(&local, "ElectionFinished", leader, population));
        }
    }

    #[test]
    fn a_healthy_ring_has_no_problem() {
        let (_, facts) = healthy();
        let found = check(&facts);
        assert_eq!(problems(&found), Vec::<&str>::new(), "{found:#?}");
        assert!(found.iter().any(|f| f.message.contains("survives 1 more failure")));
    }

    #[test]
    fn two_leaders_by_label() {
        let (_, mut facts) = healthy();
        facts.pods[2].role_label = Some("leader".into());
        let found = check(&facts);
        assert_eq!(problems(&found), ["ring.labels"]);
        let f = found.iter().find(|f| f.check == "ring.labels").unwrap();
        assert!(f.message.contains("2 pods are labelled role=leader (redis-0, redis-2)"), "{f:?}");
        assert!(f.fix.as_ref().unwrap().contains("label pod redis-2 role-"), "{f:?}");
    }

    #[test]
    fn a_ghost_counts_until_the_sidecar_departs_it() {
        let (mut population, mut facts) = healthy();
        population["dddddddd0"] = member("redis-0", "confirmed", "10.0.0.9");
        set_all(&mut facts, &population, "aaaaaaaa0");
        let found = check(&facts);
        assert_eq!(problems(&found), ["ring.ghosts", "ring.quorum"], "{found:#?}");
        assert!(found.iter().any(|f| f.message.contains("3 alive of 4 counted (1 dead)")));
        facts.departures.push(Departure {
            pod: "redis-0".into(),
            note: "Supervisor member dddddddd0 ran this pod before".into(),
            at: "2026-12-01T00:00:00Z".into(),
        });
        let found = check(&facts);
        assert_eq!(problems(&found), Vec::<&str>::new(), "{found:#?}");
        assert!(found.iter().any(|f| f.message.contains("departed by the sidecar of redis-0")));
    }

    /// Seen with real Supervisors: once departed, the predecessor was gone from two pods' census
    /// and still listed (suspect) by its successor's for minutes.
    #[test]
    fn a_departed_predecessor_listed_by_one_pod_only_is_no_disagreement() {
        let (population, mut facts) = healthy();
        let mut lingering = population.clone();
        lingering["dddddddd1"] = member("redis-1", "suspect", "10.0.0.9");
        let local = facts.pods[1].census.as_ref().unwrap().local_member_id.clone();
        facts.pods[1].census = Ok(census(&local, "ElectionFinished", "aaaaaaaa0", &lingering));
        let found = check(&facts);
        assert_eq!(problems(&found), ["ring.one-ring"], "{found:#?}");
        facts.departures.push(Departure {
            pod: "redis-1".into(),
            note: "Supervisor member dddddddd1 ran this pod before".into(),
            at: "2026-12-01T00:00:00Z".into(),
        });
        let found = check(&facts);
        assert_eq!(problems(&found), Vec::<&str>::new(), "{found:#?}");
        assert!(
            found.iter().any(|f| f.message.contains("member dddddddd")
                && f.message.contains("departed by the sidecar of redis-1")),
            "{found:#?}"
        );
    }

    #[test]
    fn a_merged_ring_and_a_dead_member_of_a_scaled_away_pod() {
        let (mut population, mut facts) = healthy();
        population["eeeeeeee"] = member("other-1", "alive", "10.0.1.1");
        population["ffffffff"] = member("redis-7", "confirmed", "10.0.0.8");
        set_all(&mut facts, &population, "aaaaaaaa0");
        let found = check(&facts);
        assert_eq!(problems(&found), ["ring.merged", "ring.ghosts"], "{found:#?}");
        assert!(found.iter().any(|f| f.message.contains("eeeeeeee (other-1, 10.0.1.1) are no pod of redis")));
        assert!(found.iter().any(|f| f.message.contains("pod redis-7, which no longer exists")));
    }

    #[test]
    fn a_second_ring_and_an_unfinished_election() {
        let (_, mut facts) = healthy();
        let ab = json!({"aaaaaaaa0": member("redis-0", "alive", "1"), "bbbbbbbb1": member("redis-1", "alive", "2")});
        let c = json!({"cccccccc2": member("redis-2", "alive", "3")});
        facts.pods[0].census = Ok(census("aaaaaaaa0", "ElectionFinished", "aaaaaaaa0", &ab));
        facts.pods[1].census = Ok(census("bbbbbbbb1", "ElectionFinished", "aaaaaaaa0", &ab));
        facts.pods[2].census = Ok(census("cccccccc2", "ElectionInProgress", "", &c));
        facts.pods[2].role_label = None;
        let found = check(&facts);
        let p = problems(&found);
        assert!(p.contains(&"ring.one-ring") && p.contains(&"ring.election"), "{found:#?}");
        assert!(
            found.iter().any(|f| f.message.contains("2 separate rings: {redis-0, redis-1} and {redis-2}"))
        );
    }

    #[test]
    fn unreadable_censuses_are_named() {
        let (_, mut facts) = healthy();
        facts.pods[1].census = Err("connection refused".into());
        let found = check(&facts);
        assert!(problems(&found).contains(&"ring.census"));
        assert!(
            found
                .iter()
                .any(|f| f.message.contains("pod redis-1: its census cannot be read: connection refused"))
        );
    }
}
