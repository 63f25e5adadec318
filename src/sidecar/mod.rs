//! The role sidecar: labels its pod `leader` or `follower` from the local Supervisor's census and,
//! in watch-file mode, keeps the Supervisor's `--peer-watch-file` equal to the other live pods of
//! its StatefulSet.
//!
//! Peers, two modes (chosen per StatefulSet by the webhook):
//! - `--peer` names injected at admission: nothing runs here; the Supervisor resolves them once
//!   at start. Enough when `/hab/sup` is on a PersistentVolume (a restart rejoins from its state).
//! - `--peer-watch-file` (this module's `pod_watch`): the file always lists the other live pods'
//!   IPs, and the Supervisor reads it whenever it knows no other member, so a pod restarted with
//!   no state and a new IP, or pods started in parallel, still find the ring. Costs a pod watch.
//!
//! Decisions are pure (`census::decide_role`, `role_state`, `peer_set`); the `sidecar` subcommand
//! ([`crate::commands::sidecar`]) wires them to the census client, the API server, the file system
//! and the signals.

pub mod census;
pub mod census_client;
pub mod ctl_gateway;
pub mod ghost_reaper;
pub mod ghosts;
pub mod label;
pub mod metrics;
pub mod peer_file;
pub mod peer_set;
pub mod pod_watch;
pub mod role_loop;
pub mod role_state;
pub mod rumor_file;
