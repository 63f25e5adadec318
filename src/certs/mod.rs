//! The webhook's certificates: issue them (`authority`), read them back (`inspect`), decide what
//! to renew (`plan`, pure, with the time passed in) and keep them in a Secret (`ensure`, the I/O).
//! The `certs` subcommand is [`crate::commands::certs`].

pub mod authority;
pub mod ensure;
pub mod inspect;
pub mod plan;
pub mod span;

pub use self::authority::{CertificateAuthority, ServingCert, write};
