//! ovnkube's command line (`/proc/<pid>/cmdline`): whether it is an
//! ovnkube-node process, and what its flags set of our facts. Pure: the
//! arguments in, an [`Invocation`] out; an odd or hostile command line is
//! refused with the reason, never a panic.
//!
//! ovnkube parses its flags with Go's flag package (through urfave/cli):
//! `-name` or `--name`, the value after `=` or as the next argument; the
//! last of a repeated flag wins; parsing stops at `--` or at the first
//! argument that is not a flag. ovnkube takes no positional arguments, so
//! an argument after a flag we do not know is that flag's value unless it
//! starts with `-` (a boolean flag of ovnkube's followed by a bare word
//! would end ovnkube's parsing there, and ours would go on: no upstream
//! script writes that).

use crate::{Settings, parse_value};
use std::path::{Component, PathBuf};

/// More arguments than any ovnkube command line has: not one we read.
pub const MAX_ARGUMENTS: usize = 4096;
/// Longer than any value of ours can be.
pub const MAX_ARGUMENT_BYTES: usize = 64 * 1024;

/// An ovnkube-node command line, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `--init-node`'s node name.
    pub node: String,
    /// `--config-file`, if given.
    pub config_file: Option<PathBuf>,
    pub settings: Settings,
}

/// The flags that carry our facts, by ovnkube's name, and the name of the
/// fact (see [`crate::parse_value`]).
const FACT_FLAGS: &[(&str, &str)] = &[
    ("cluster-subnets", "cluster-subnets"),
    ("cluster-subnet", "cluster-subnet"),
    ("mtu", "mtu"),
    ("k8s-service-cidrs", "service-cidrs"),
    ("k8s-service-cidr", "deprecated-service-cidr"),
    ("service-cluster-ip-range", "service-cluster-ip-range"),
    ("gateway-v4-masquerade-subnet", "v4-masquerade-subnet"),
    ("gateway-v6-masquerade-subnet", "v6-masquerade-subnet"),
    ("gateway-mode", "gateway-mode"),
    ("ovnkube-node-mode", "node-mode"),
];

/// Whether `argv0` names the ovnkube binary (any directory).
pub fn is_ovnkube(argv0: &str) -> bool {
    argv0.rsplit('/').next() == Some("ovnkube")
}

/// The command line `argv` (argv[0] first): None when it is not ovnkube
/// or not a node (`--init-node` with a name; a command line that does not
/// say `init-node` at all is not judged).
pub fn parse(argv: &[String]) -> Result<Option<Invocation>, String> {
    parse_node(argv).or_else(|reason| {
        let names_node = argv
            .iter()
            .skip(1)
            .any(|a| a.trim_start_matches('-').split('=').next() == Some("init-node"));
        if names_node { Err(reason) } else { Ok(None) }
    })
}

fn parse_node(argv: &[String]) -> Result<Option<Invocation>, String> {
    let Some(argv0) = argv.first() else {
        return Ok(None);
    };
    if !is_ovnkube(argv0) {
        return Ok(None);
    }
    if argv.len() > MAX_ARGUMENTS {
        return Err(format!(
            "{} arguments, more than the {MAX_ARGUMENTS} read",
            argv.len()
        ));
    }
    let mut settings = Settings::default();
    let mut node = None;
    let mut config_file = None;
    let mut values = Vec::new();
    let mut index = 1;
    while let Some(arg) = argv.get(index) {
        index += 1;
        if arg.len() > MAX_ARGUMENT_BYTES {
            return Err(format!(
                "argument {} is {} bytes, more than the {MAX_ARGUMENT_BYTES} read",
                index - 1,
                arg.len()
            ));
        }
        if arg == "--" || arg == "-" || !arg.starts_with('-') {
            break;
        }
        let name = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(format!("{arg:?} is not a flag (ovnkube would not start)"));
        }
        let (name, inline) = match name.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (name, None),
        };
        let ours = name == "init-node"
            || name == "config-file"
            || FACT_FLAGS.iter().any(|(flag, _)| *flag == name);
        let value = match inline {
            Some(value) => Some(value),
            None => match argv.get(index) {
                Some(next) if ours || !next.starts_with('-') => {
                    index += 1;
                    Some(next.clone())
                }
                _ if ours => {
                    return Err(format!("--{name} has no value (ovnkube would not start)"));
                }
                _ => None,
            },
        };
        let Some(value) = value else { continue };
        match name {
            "init-node" => node = Some(value),
            "config-file" => config_file = Some(value),
            _ => {
                if let Some(&(flag, fact)) = FACT_FLAGS.iter().find(|(flag, _)| *flag == name) {
                    // The last of a repeated flag wins.
                    values.retain(|(f, _, _)| *f != flag);
                    values.push((flag, fact, value));
                }
            }
        }
    }
    // Not a node: its flags are none of our business, bad or not.
    let Some(node) = node.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    for (flag, fact, value) in values {
        parse_value(&mut settings, fact, &value, &format!("--{flag}"))?;
    }
    let config_file = config_file
        .filter(|path| !path.is_empty())
        .map(|path| config_path(&path))
        .transpose()?;
    Ok(Some(Invocation {
        node,
        config_file,
        settings,
    }))
}

/// `--config-file`'s path, read later through the process's root: no
/// `..` (it would climb out of that root), no NUL.
fn config_path(path: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(path);
    if path.components().any(|c| c == Component::ParentDir) || path.as_os_str().len() > 4096 {
        return Err(format!(
            "--config-file {:?} climbs with \"..\" or is too long: not read",
            path.display()
        ));
    }
    Ok(path)
}
