//! ovnkube's INI file (gcfg syntax: `[section]`, `key = value`, `#`/`;`
//! comments, names case-insensitive): what it sets of our facts. Text in,
//! settings out; an error names the line.

use crate::{OvnkubeError, Settings, parse_value};
use std::path::Path;

/// The settings `text` holds; `file` only names it in errors.
pub fn parse(file: &Path, text: &str) -> Result<Settings, OvnkubeError> {
    let mut settings = Settings::default();
    let mut section = String::new();
    for (index, raw) in text.lines().enumerate() {
        let at_line = |reason: String| OvnkubeError::Line {
            file: file.to_path_buf(),
            line: index + 1,
            reason,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            section = name
                .strip_suffix(']')
                .ok_or_else(|| at_line(format!("{line:?} is not a [section] header")))?
                .trim()
                .to_ascii_lowercase();
            continue;
        }
        // A key alone is a boolean (gcfg): none of ours.
        let Some((key, value)) = line.split_once('=') else {
            if line
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                continue;
            }
            return Err(at_line(format!(
                "{line:?} is neither key = value nor a section"
            )));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value_of(value.trim());
        let Some(name) = FILE_KEYS
            .iter()
            .find(|(s, k, _)| *s == section && *k == key)
            .map(|(_, _, name)| *name)
        else {
            // Everything else is ovnkube's own business.
            continue;
        };
        let label = match section.as_str() {
            "" => key.clone(),
            _ => format!("[{section}] {key}"),
        };
        parse_value(&mut settings, name, value, &label).map_err(at_line)?;
    }
    Ok(settings)
}

/// The file's (section, key) of each fact we read, by the fact's name.
const FILE_KEYS: &[(&str, &str, &str)] = &[
    ("default", "cluster-subnets", "cluster-subnets"),
    ("default", "mtu", "mtu"),
    ("kubernetes", "service-cidrs", "service-cidrs"),
    // Deprecated, and (as in ovnkube) winning over service-cidrs.
    ("kubernetes", "service-cidr", "deprecated-service-cidr"),
    ("gateway", "v4-masquerade-subnet", "v4-masquerade-subnet"),
    ("gateway", "v6-masquerade-subnet", "v6-masquerade-subnet"),
    ("gateway", "mode", "gateway-mode"),
    ("ovnkubenode", "mode", "node-mode"),
];

/// A value as ovnkube writes it: in quotes (whole), or bare up to a
/// comment (`mtu = 1400 ; set by the installer`).
fn value_of(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote)
            && let Some(end) = rest.find(quote)
        {
            return &rest[..end];
        }
    }
    value.split(['#', ';']).next().unwrap_or_default().trim()
}
