//! Flows in the text form of `ovs-ofctl dump-flows` (what [`crate::decode`]
//! writes for people, and what a controller compares another controller's
//! flows in): cookie, table, priority, match fields and counters.

/// The cookie of a dumped flow (OVS prints `cookie=0x...` first).
pub fn dumped_cookie(flow: &str) -> Option<u64> {
    let value = flow
        .split([',', ' '])
        .find_map(|part| part.strip_prefix("cookie="))?;
    u64::from_str_radix(value.trim_start_matches("0x"), 16).ok()
}

/// A dumped flow without its counters and ages, for comparing flow sets.
pub fn without_counters(flow: &str) -> String {
    flow.split(", ")
        .filter(|part| {
            ![
                "duration=",
                "n_packets=",
                "n_bytes=",
                "idle_age=",
                "hard_age=",
            ]
            .iter()
            .any(|k| part.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A dumped flow's table, priority, match fields (as printed, without the
/// priority) and packet counter.
pub fn dumped_match_and_packets(flow: &str) -> (u8, u16, String, u64) {
    let head = flow.split(" actions=").next().unwrap_or(flow);
    let (table, priority) = table_and_priority(head);
    let mut packets = 0;
    let mut matches = "";
    for part in head.split(", ") {
        if let Some(n) = part.strip_prefix("n_packets=") {
            packets = n.parse().unwrap_or(0);
        } else if !DUMP_HEADER_FIELDS.iter().any(|k| part.starts_with(k)) {
            matches = part;
        }
    }
    let fields: Vec<&str> = matches
        .split(',')
        .filter(|f| !f.starts_with("priority="))
        .collect();
    (table, priority, fields.join(","), packets)
}

/// The comma-and-space separated fields before a dumped flow's match.
const DUMP_HEADER_FIELDS: [&str; 9] = [
    "cookie=",
    "duration=",
    "table=",
    "n_packets=",
    "n_bytes=",
    "idle_age=",
    "hard_age=",
    "idle_timeout=",
    "hard_timeout=",
];

/// The (table, priority) of a dumped flow; OVS omits table 0 and the
/// default priority.
pub fn table_and_priority(flow: &str) -> (u8, u16) {
    fn field<T: std::str::FromStr>(flow: &str, key: &str) -> Option<T> {
        flow.split([',', ' '])
            .find_map(|part| part.strip_prefix(key))
            .and_then(|v| v.parse().ok())
    }
    (
        field(flow, "table=").unwrap_or(0),
        field(flow, "priority=").unwrap_or(32768),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_priority_are_read_with_ovs_defaults() {
        assert_eq!(
            table_and_priority(
                "cookie=0x1, duration=1s, table=3, n_packets=0, n_bytes=0, priority=100 actions=NORMAL"
            ),
            (3, 100)
        );
        assert_eq!(
            table_and_priority("cookie=0x1, priority=510,ip,in_port=1 actions=goto_table:2"),
            (0, 510)
        );
        assert_eq!(table_and_priority("cookie=0x1, actions=drop"), (0, 32768));
    }

    #[test]
    fn a_dumped_flows_match_and_counter_are_read_apart_from_its_header() {
        let dumped = "cookie=0x6e6f7672, duration=3.1s, table=1, n_packets=42, n_bytes=4116, idle_age=0, priority=100,ct_state=+est+trk,ct_mark=0x1,ip actions=output:2";
        assert_eq!(
            dumped_match_and_packets(dumped),
            (1, 100, "ct_state=+est+trk,ct_mark=0x1,ip".to_string(), 42)
        );
        let catch_all = "cookie=0x6e6f7672, duration=3.1s, table=1, n_packets=7, n_bytes=0, priority=0 actions=NORMAL";
        assert_eq!(
            dumped_match_and_packets(catch_all),
            (1, 0, String::new(), 7)
        );
    }

    #[test]
    fn counters_and_ages_are_stripped() {
        let dumped = "cookie=0x6e6f7672, duration=12.5s, table=0, n_packets=4, n_bytes=392, idle_age=3, priority=510,ip,in_port=1 actions=goto_table:2";
        assert_eq!(
            without_counters(dumped),
            "cookie=0x6e6f7672, table=0, priority=510,ip,in_port=1 actions=goto_table:2"
        );
    }
}
