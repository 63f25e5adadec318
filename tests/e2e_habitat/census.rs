//! Reading a Supervisor's `/census` and judging a ring from all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// A plain HTTP/1.0 GET to `ip:port`; None on any failure.
pub fn http_get(ip: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = format!("{ip}:{port}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// What one Supervisor says about service group `group`.
#[derive(Debug, Clone)]
pub struct View {
    pub local: String,
    pub election: String,
    pub leader: Option<String>,
    /// member id → (alive, hostname)
    pub members: BTreeMap<String, (bool, String)>,
}

impl View {
    pub fn alive(&self) -> BTreeSet<String> {
        self.members.iter().filter(|(_, (alive, _))| *alive).map(|(id, _)| id.clone()).collect()
    }
}

pub fn view(ip: &str, group: &str) -> Option<View> {
    let (status, body) = http_get(ip, 9631, "/census")?;
    if status != 200 {
        return None;
    }
    let census: Value = serde_json::from_str(&body).ok()?;
    let g = census.get("census_groups")?.get(group)?;
    let members = g
        .get("population")?
        .as_object()?
        .iter()
        .map(|(id, m)| {
            let alive = m.get("alive").and_then(Value::as_bool).unwrap_or(false);
            let host = m.pointer("/sys/hostname").and_then(Value::as_str).unwrap_or("").to_owned();
            (id.clone(), (alive, host))
        })
        .collect();
    Some(View {
        local: g.get("local_member_id")?.as_str()?.to_owned(),
        election: g.get("election_status").and_then(Value::as_str).unwrap_or("").to_owned(),
        leader: g.get("leader_id").and_then(Value::as_str).map(str::to_owned),
        members,
    })
}

/// How the Supervisor at `ip` sees member `id` of `group`: its health flags as the census gives
/// them (`alive`, `suspect`, `confirmed`, `departed`), or why there is nothing to say. For failure
/// messages.
pub fn health_of(ip: &str, group: &str, id: &str) -> String {
    let Some((200, body)) = http_get(ip, 9631, "/census") else { return "no census".to_owned() };
    let Ok(census) = serde_json::from_str::<Value>(&body) else { return "census not JSON".to_owned() };
    let Some(member) = census.pointer(&format!("/census_groups/{group}/population/{id}")) else {
        return "not in the population".to_owned();
    };
    let flags: Vec<&str> = ["alive", "suspect", "confirmed", "departed"]
        .into_iter()
        .filter(|f| member.get(*f).and_then(Value::as_bool) == Some(true))
        .collect();
    if flags.is_empty() { "no health flag (not in its member list)".to_owned() } else { flags.join("+") }
}

/// One ring: every Supervisor answers, all list the same alive members, and that set is exactly
/// the Supervisors asked (each one's local member id). Returns the views when true.
pub fn one_ring(ips: &[String], group: &str) -> Result<Vec<View>, String> {
    let views: Vec<View> = ips
        .iter()
        .map(|ip| view(ip, group).ok_or_else(|| format!("{ip}: no census for {group}")))
        .collect::<Result<_, _>>()?;
    let locals: BTreeSet<String> = views.iter().map(|v| v.local.clone()).collect();
    for (ip, v) in ips.iter().zip(&views) {
        if v.alive() != locals {
            return Err(format!("{ip} sees alive {:?}, want {:?}", short(&v.alive()), short(&locals)));
        }
    }
    Ok(views)
}

/// One finished election everywhere, with the same leader; returns that leader's member id.
pub fn one_leader(views: &[View]) -> Result<String, String> {
    let mut leaders = BTreeSet::new();
    for v in views {
        if v.election != "ElectionFinished" {
            return Err(format!("{}: {}", &v.local[..8], v.election));
        }
        leaders.insert(v.leader.clone().unwrap_or_default());
    }
    match leaders.len() {
        1 => Ok(leaders.into_iter().next().unwrap()),
        _ => Err(format!("leaders differ: {leaders:?}")),
    }
}

fn short(ids: &BTreeSet<String>) -> Vec<&str> {
    ids.iter().map(|i| &i[..8.min(i.len())]).collect()
}
