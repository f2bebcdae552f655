//! A flow's identity for comparing what we planned with what a switch
//! dump shows: table, priority and match fields in a canonical form.

/// A flow's table, priority and match fields in a form independent of
/// field order and of the order of ct_state flags, so that a planned flow
/// and the same flow as OVS prints it compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatchKey {
    pub table: u8,
    pub priority: u16,
    fields: Vec<String>,
}

impl MatchKey {
    /// The match fields, sorted (`name=value`, or a keyword like `ip`).
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// Same table and match fields, whatever the priority.
    pub fn same_match(&self, other: &MatchKey) -> bool {
        self.table == other.table && self.fields == other.fields
    }

    /// A flow's key and packet counter from its `ovs-ofctl dump-flows` line.
    pub fn dumped(line: &str) -> (Self, u64) {
        let (table, priority, matches, packets) =
            noverlay_openflow::dump::dumped_match_and_packets(line);
        (MatchKey::new(table, priority, &matches), packets)
    }

    /// From the match fields (comma-separated, without table and priority).
    pub fn new(table: u8, priority: u16, matches: &str) -> Self {
        let mut fields: Vec<String> = matches
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|field| match field.strip_prefix("ct_state=") {
                Some(flags) => format!("ct_state={}", sorted_flags(flags)),
                None => field.to_string(),
            })
            .collect();
        fields.sort_unstable();
        MatchKey {
            table,
            priority,
            fields,
        }
    }
}

/// "+trk+est" and "+est+trk" alike: each signed flag, sorted.
fn sorted_flags(flags: &str) -> String {
    let mut signed: Vec<String> = Vec::new();
    for c in flags.chars() {
        match (c, signed.last_mut()) {
            ('+' | '-', _) | (_, None) => signed.push(c.to_string()),
            (_, Some(flag)) => flag.push(c),
        }
    }
    signed.sort_unstable();
    signed.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dumped_flow_has_the_match_key_of_its_plan() {
        let dumped = "cookie=0x6e6f7672, duration=3.1s, table=1, n_packets=42, n_bytes=4116, idle_age=0, priority=100,ct_state=+est+trk,ct_mark=0x1,ip actions=output:2";
        let planned = MatchKey::new(1, 100, "ip,ct_state=+trk+est,ct_mark=0x1");
        assert_eq!(MatchKey::dumped(dumped), (planned, 42));
        let catch_all = "cookie=0x6e6f7672, duration=3.1s, table=1, n_packets=7, n_bytes=0, priority=0 actions=NORMAL";
        assert_eq!(MatchKey::dumped(catch_all), (MatchKey::new(1, 0, ""), 7));
    }

    #[test]
    fn match_keys_ignore_field_and_flag_order() {
        assert_eq!(
            MatchKey::new(1, 100, "ip,ct_state=+trk+est,ct_mark=0x1"),
            MatchKey::new(1, 100, "ct_state=+est+trk,ct_mark=0x1,ip")
        );
        assert_ne!(
            MatchKey::new(1, 100, "ip,ct_state=+trk+est"),
            MatchKey::new(1, 100, "ip,ct_state=+trk-est")
        );
        assert_ne!(
            MatchKey::new(0, 510, "ip,in_port=1"),
            MatchKey::new(0, 500, "ip,in_port=1")
        );
    }
}
