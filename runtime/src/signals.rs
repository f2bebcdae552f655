//! The signals an agent answers: SIGTERM and SIGINT stop it, SIGHUP asks it
//! to reload its config.

use crate::RuntimeError;
use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Stop,
    Reload,
}

pub struct Signals {
    terminate: UnixSignal,
    interrupt: UnixSignal,
    hangup: UnixSignal,
}

impl Signals {
    pub fn install() -> Result<Self, RuntimeError> {
        let install =
            |kind: SignalKind, name| signal(kind).map_err(|e| RuntimeError::Signal(name, e));
        Ok(Signals {
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal that matters.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.hangup.recv() => Signal::Reload,
        }
    }
}
