//! One value of ours as ovnkube writes it (a flag's or a file key's text)
//! into [`Settings`]: CIDR lists, cluster subnets with host prefixes,
//! masquerade subnets, modes. Errors name the key and the value.

use crate::{Setting, Settings};
use ipnet::IpNet;

/// Parses the value of the fact `name` (a key of [`ini`] or a flag of
/// [`cmdline`], by the fact's flag name) into `settings`; an empty value
/// sets nothing. The error names the key and the value.
pub(crate) fn parse_value(
    settings: &mut Settings,
    name: &str,
    text: &str,
    key: &str,
) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(());
    }
    fn setting<T>(value: T, text: &str, key: &str) -> Setting<T> {
        Setting {
            value,
            text: text.to_string(),
            key: key.to_string(),
        }
    }
    match name {
        "cluster-subnets" => {
            settings.cluster_subnets = Some(setting(cluster_subnets(key, text)?, text, key))
        }
        "cluster-subnet" => {
            settings.deprecated_cluster_subnet =
                Some(setting(cluster_subnets(key, text)?, text, key))
        }
        "mtu" => {
            let mtu: u32 = text
                .parse()
                .map_err(|_| format!("{key} {text:?} is not a number"))?;
            // ovnkube compares the number, not its text.
            settings.mtu = Some(Setting {
                value: mtu,
                text: mtu.to_string(),
                key: key.to_string(),
            });
        }
        "service-cidrs" => settings.service_cidrs = Some(setting(cidr_list(key, text)?, text, key)),
        "deprecated-service-cidr" => {
            settings.deprecated_service_cidr = Some(setting(cidr_list(key, text)?, text, key))
        }
        "service-cluster-ip-range" => {
            settings.service_cluster_ip_range = Some(setting(cidr_list(key, text)?, text, key))
        }
        "v4-masquerade-subnet" => {
            settings.v4_masquerade = Some(setting(masquerade(key, text, false)?, text, key))
        }
        "v6-masquerade-subnet" => {
            settings.v6_masquerade = Some(setting(masquerade(key, text, true)?, text, key))
        }
        "gateway-mode" => {
            let mode = one_of(key, text, &["shared", "local"])?;
            settings.gateway_mode = Some(setting(mode, text, key));
        }
        "node-mode" => {
            let mode = one_of(key, text, &["full", "dpu", "dpu-host"])?;
            settings.node_mode = Some(setting(mode, text, key));
        }
        // The callers map only the names above.
        _ => {}
    }
    Ok(())
}

fn one_of(key: &str, text: &str, allowed: &[&str]) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    if allowed.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(format!(
            "{key} {text:?} is not one of {}",
            allowed.join(", ")
        ))
    }
}

fn masquerade(key: &str, text: &str, v6: bool) -> Result<IpNet, String> {
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("{key} {text:?} is not a CIDR"))?;
    if net.addr().is_ipv6() != v6 {
        return Err(format!("{key} {text:?} is of the other address family"));
    }
    Ok(net)
}

fn cidr_list(key: &str, text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse()
                .map_err(|_| format!("{key} entry {entry:?} is not a CIDR"))
        })
        .collect()
}

/// `10.128.0.0/14/23,fd00:10:244::/48/64`: each a CIDR and, optionally,
/// the host prefix ovnkube carves node subnets with (not ours to use).
pub(crate) fn cluster_subnets(key: &str, text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let cidr = match entry.rsplit_once('/') {
                // CIDR/hostPrefix: two slashes.
                Some((head, tail)) if head.contains('/') => {
                    tail.parse::<u8>().map_err(|_| {
                        format!("{key} entry {entry:?}: host prefix {tail:?} is not a number")
                    })?;
                    head
                }
                _ => entry,
            };
            cidr.parse::<IpNet>()
                .map_err(|_| format!("{key} entry {entry:?} is not CIDR[/hostPrefix]"))
        })
        .collect()
}
