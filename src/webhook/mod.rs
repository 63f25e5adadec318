//! The webhook's edge: from an HTTPS request to an AdmissionReview answer, with the cluster read
//! through caches. The decision itself is [`crate::injection`].

pub mod admission;
pub mod cluster;
pub mod deadline;
pub mod escaped;
pub mod event_pace;
pub mod metrics;
pub mod outcome;
pub mod patch;
pub mod review;
pub mod scan;
pub mod server;
