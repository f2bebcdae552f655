//! The status of each source of the agent's state (OVSDB ports, flows, the
//! peer, reloads), each set on its own: one source's success never hides
//! another's error.

use noverlay_proto::pb;
use std::fmt;

/// The sources of the agent's state, each with its own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Port discovery from OVSDB.
    Ovsdb,
    /// Installing and verifying our flows.
    Flows,
    /// Negotiations with the host and its reports.
    Peer,
    /// The last config reload (SIGHUP).
    Reload,
    /// The uplink guard (nftables, netdev egress).
    Guard,
    /// OVN's half of the contract, checked in the northbound database.
    Ovn,
}

impl Source {
    pub const ALL: [Source; 6] = [
        Source::Ovsdb,
        Source::Flows,
        Source::Peer,
        Source::Reload,
        Source::Guard,
        Source::Ovn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::Ovsdb => "ovsdb",
            Source::Flows => "flows",
            Source::Peer => "peer",
            Source::Reload => "reload",
            Source::Guard => "guard",
            Source::Ovn => "ovn",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one source last did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SourceStatus {
    /// Nothing yet (e.g. no host has connected, no reload happened).
    #[default]
    Pending,
    /// Not configured (e.g. no `[ovn]` section): nothing to report.
    Off,
    Ok {
        since_unix: i64,
    },
    Failed {
        error: String,
        since_unix: i64,
    },
}

impl SourceStatus {
    pub fn error(&self) -> Option<&str> {
        match self {
            SourceStatus::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    fn to_pb(&self, source: Source) -> pb::SourceStatus {
        let (state, error, since_unix) = match self {
            SourceStatus::Pending => ("pending", String::new(), 0),
            SourceStatus::Off => ("off", String::new(), 0),
            SourceStatus::Ok { since_unix } => ("ok", String::new(), *since_unix),
            SourceStatus::Failed { error, since_unix } => ("failed", error.clone(), *since_unix),
        };
        pb::SourceStatus {
            source: source.name().into(),
            state: state.into(),
            error,
            since_unix,
        }
    }
}

/// The status of every source, each set on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources([SourceStatus; Source::ALL.len()]);

impl Sources {
    /// Records an outcome at `now`; a state that does not change keeps the
    /// time it began.
    pub fn set(&mut self, source: Source, outcome: Result<(), String>, now: i64) {
        let status = &mut self.0[source.index()];
        let unchanged = match (&*status, &outcome) {
            (SourceStatus::Ok { .. }, Ok(())) => true,
            (SourceStatus::Failed { error, .. }, Err(new)) => error == new,
            _ => false,
        };
        if !unchanged {
            *status = match outcome {
                Ok(()) => SourceStatus::Ok { since_unix: now },
                Err(error) => SourceStatus::Failed {
                    error,
                    since_unix: now,
                },
            };
        }
    }

    /// The source is not configured.
    pub fn set_off(&mut self, source: Source) {
        self.0[source.index()] = SourceStatus::Off;
    }

    pub fn get(&self, source: Source) -> &SourceStatus {
        &self.0[source.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (Source, &SourceStatus)> {
        Source::ALL.iter().map(|s| (*s, self.get(*s)))
    }

    /// "source: error" of each failing source, joined by "; ".
    pub fn summary(&self) -> String {
        self.iter()
            .filter_map(|(source, status)| status.error().map(|e| format!("{source}: {e}")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn to_pb(&self) -> Vec<pb::SourceStatus> {
        self.iter()
            .map(|(source, status)| status.to_pb(source))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sources_success_never_hides_anothers_error() {
        let mut sources = Sources::default();
        assert_eq!(sources.summary(), "");
        sources.set(Source::Ovsdb, Err("bridge \"breth0\" not found".into()), 10);
        sources.set(Source::Flows, Ok(()), 11);
        sources.set(Source::Peer, Ok(()), 12);
        assert_eq!(sources.summary(), "ovsdb: bridge \"breth0\" not found");
        sources.set(Source::Flows, Err("switch unreachable".into()), 13);
        assert_eq!(
            sources.summary(),
            "ovsdb: bridge \"breth0\" not found; flows: switch unreachable"
        );
        // The same error again keeps the time it began; a recovery clears
        // only its own source.
        sources.set(Source::Flows, Err("switch unreachable".into()), 20);
        assert_eq!(
            sources.get(Source::Flows),
            &SourceStatus::Failed {
                error: "switch unreachable".into(),
                since_unix: 13
            }
        );
        sources.set(Source::Flows, Ok(()), 21);
        assert_eq!(sources.summary(), "ovsdb: bridge \"breth0\" not found");
        assert_eq!(sources.get(Source::Reload), &SourceStatus::Pending);
        sources.set_off(Source::Ovn);
        let states: Vec<String> = sources.to_pb().into_iter().map(|s| s.state).collect();
        assert_eq!(states, ["failed", "ok", "ok", "pending", "pending", "off"]);
    }
}
