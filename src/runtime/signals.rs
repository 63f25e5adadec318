//! Termination signals: SIGTERM and SIGINT.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM and SIGINT handlers, installed when this is created: a signal that arrives while the
/// caller is busy is seen by the next [`Termination::recv`].
pub struct Termination {
    term: Signal,
    int: Signal,
}

impl Termination {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT from now on.
pub async fn termination_signal() {
    Termination::install().expect("installing the SIGTERM and SIGINT handlers").recv().await;
}
