//! docs/configuration.md lists every key of both agents' configs, and no key
//! that they do not take. The keys are read off the config types themselves:
//! every section refuses unknown keys, and serde's refusal names the keys it
//! expected, so a key added to (or dropped from) a type shows up here.

use std::collections::BTreeSet;

const UNKNOWN: &str = "zz_not_a_key";

/// The keys a config parser takes, as `section.key` (root keys bare).
fn accepted_keys(parse: &dyn Fn(&str) -> Result<(), String>) -> BTreeSet<String> {
    let root = expected(parse, &format!("{UNKNOWN} = 1\n"));
    assert!(!root.is_empty(), "the root names no keys");
    let mut keys = BTreeSet::new();
    let mut pending: Vec<String> = root;
    while let Some(key) = pending.pop() {
        // A key is a section when `[key]` is read as a struct of its own.
        let inner = expected(parse, &format!("[{key}]\n{UNKNOWN} = 1\n"));
        if inner.is_empty() {
            keys.insert(key);
        } else {
            pending.extend(inner.into_iter().map(|name| format!("{key}.{name}")));
        }
    }
    keys
}

/// The keys the refusal of `zz_not_a_key` in `text` expected; none when the
/// text was refused for another reason.
fn expected(parse: &dyn Fn(&str) -> Result<(), String>, text: &str) -> Vec<String> {
    let Err(error) = parse(text) else {
        panic!("{text:?} was accepted");
    };
    let Some(list) = error
        .split_once(&format!("unknown field `{UNKNOWN}`, expected "))
        .map(|(_, list)| list)
    else {
        return Vec::new();
    };
    // "one of `a`, `b`", "`a` or `b`", or "`a`": the backticked names.
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The keys docs/configuration.md documents under the heading that starts
/// with `heading`: the first cell of each table row, `section.key` in
/// backticks.
fn documented_keys(heading: &str) -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let text = std::fs::read_to_string(path).expect("docs/configuration.md");
    let mut keys = BTreeSet::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("## ") {
            inside = line.starts_with(heading);
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(cell) = line
            .strip_prefix("| `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(key, _)| key)
        {
            keys.insert(cell.to_string());
        }
    }
    keys
}

fn compare(agent: &str, types: BTreeSet<String>, docs: BTreeSet<String>) {
    let missing: Vec<&String> = types.difference(&docs).collect();
    let extra: Vec<&String> = docs.difference(&types).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/configuration.md, {agent}: undocumented keys {missing:?}; documented keys the agent does not take {extra:?}"
    );
    println!("{agent}: {} keys, each documented", types.len());
}

#[test]
fn dpu_agent_keys_are_documented() {
    let parse = |text: &str| {
        dpu_agent::config::DpuConfig::parse(text)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    compare(
        "dpu-agent",
        accepted_keys(&parse),
        documented_keys("## dpu-agent"),
    );
}

#[test]
fn host_agent_keys_are_documented() {
    let parse = |text: &str| {
        host_agent::config::HostConfig::parse(text)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    compare(
        "host-agent",
        accepted_keys(&parse),
        documented_keys("## host-agent"),
    );
}

#[test]
fn the_reader_sees_a_removed_key() {
    // The comparison itself: a key the docs lack, or one they have extra.
    let types: BTreeSet<String> = ["a".to_string(), "b.c".to_string()].into();
    let docs: BTreeSet<String> = ["a".to_string()].into();
    let outcome = std::panic::catch_unwind(|| compare("x", types, docs));
    assert!(outcome.is_err());
}
