//! What the tests share, as one module: each test file says `mod support;` and uses its part.
//!
//! - `cluster`: builders and the in-memory cluster double (also compiled into the benchmarks and
//!   the fuzz checks, which include that file alone), re-exported here.
//! - `tls_client`: the HTTPS client of the webhook's TLS tests.
//! - `supervisor`, `fake_api`: a stand-in Supervisor gateway and a fake Kubernetes API server.
//! - `control_plane`, `webhook_process`, `harness`, `injected`, `objects`, `pod_spec`, `pod_token`: the end-to-end tests against a
//!   real control plane (ignored by a plain `cargo test`; `scripts/test` runs them).
#![allow(dead_code, unused_imports)] // each test crate uses a different part

pub mod cluster;
pub mod control_plane;
pub mod fake_api;
pub mod harness;
pub mod injected;
pub mod objects;
pub mod pod_spec;
pub mod pod_token;
pub mod supervisor;
pub mod tls_client;
pub mod webhook_process;

pub use cluster::*;
