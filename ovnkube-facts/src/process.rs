//! The edge: ovnkube-node's effective configuration on this node. The
//! running ovnkube-node is found in `/proc` (in a container it is still a
//! process of this kernel) among the processes of our network namespace
//! (ovnkube-node runs with the host's network; another namespace's
//! ovnkube is another node's); its file is read through its root
//! (`/proc/<pid>/root`), so a container's file is found where ovnkube
//! sees it. Every read is bounded; the whole lookup has a deadline (a read
//! of a process's cmdline can wait on that process's memory lock).

use crate::{FileNamedBy, FileRef, OvnkubeError, OvnkubeFacts, cmdline, ini, resolve};
use std::{
    io::Read,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

/// A command line longer than this is not read (ovnkube's is a few KiB).
pub const MAX_CMDLINE_BYTES: u64 = 256 * 1024;
/// How long finding ovnkube-node and reading its file may take.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// Where to look for ovnkube's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// `/proc` (a directory of the same shape in tests).
    pub proc_dir: PathBuf,
    /// Look for the running ovnkube-node (`[ovnkube] process`).
    pub process: bool,
    /// The file to read when no ovnkube-node runs here (`[ovnkube]
    /// config`, or ovnkube's default path).
    pub file: Option<FileRef>,
}

/// The ovnkube-node process found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    pub argv: Vec<String>,
    pub invocation: cmdline::Invocation,
}

/// What the facts were read from, to tell when they change: the process
/// (pid and command line) and the file (its path as ovnkube names it, and
/// as we reach it), with its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub process: Option<(u32, Vec<String>)>,
    pub file: Option<(PathBuf, Option<FileState>)>,
    /// Where the file is read (through /proc/<pid>/root for ovnkube-node's).
    pub seen_at: Option<PathBuf>,
}

/// A file's modification time, size and a digest of its content (None:
/// not readable as ours is, e.g. over the size bound): two reads that
/// agree found the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    pub modified: SystemTime,
    pub len: u64,
    pub digest: Option<u64>,
}

impl FileState {
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        let digest = read_bounded(path).ok().map(|text| {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut hasher);
            hasher.finish()
        });
        Some(FileState {
            modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            len: metadata.len(),
            digest,
        })
    }
}

impl Lookup {
    /// ovnkube's facts: from the running ovnkube-node and its file, else
    /// from the configured file; None when neither is there. Within
    /// `deadline`.
    pub fn facts(&self, deadline: Duration) -> Result<Option<OvnkubeFacts>, OvnkubeError> {
        let lookup = self.clone();
        within(deadline, move || lookup.facts_now())
    }

    /// What [`Lookup::facts`] would read, within `deadline`.
    pub fn inputs(&self, deadline: Duration) -> Result<Inputs, OvnkubeError> {
        let lookup = self.clone();
        within(deadline, move || lookup.inputs_now())
    }

    fn found(&self) -> Result<Option<Found>, OvnkubeError> {
        if self.process {
            find(&self.proc_dir)
        } else {
            Ok(None)
        }
    }

    fn facts_now(&self) -> Result<Option<OvnkubeFacts>, OvnkubeError> {
        if let Some(found) = self.found()? {
            let (file, named_by) = found.file();
            let read = read_in_root(&self.proc_dir, found.pid, &file, named_by.clone())?;
            let settings = read
                .as_ref()
                .map(|text| ini::parse(&file, text))
                .transpose()?;
            let file = settings.as_ref().map(|settings| {
                (
                    settings,
                    FileRef {
                        path: file.clone(),
                        named_by,
                    },
                )
            });
            return Ok(Some(resolve(
                Some((&found.invocation.settings, found.pid)),
                file,
            )));
        }
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let text = read_file(&file.path)?;
        OvnkubeFacts::from_file(file.clone(), &text).map(Some)
    }

    fn inputs_now(&self) -> Result<Inputs, OvnkubeError> {
        Ok(match self.found()? {
            Some(found) => {
                let (file, _) = found.file();
                let seen = in_root(&self.proc_dir, found.pid, &file);
                Inputs {
                    process: Some((found.pid, found.argv)),
                    file: Some((file, FileState::of(&seen))),
                    seen_at: Some(seen),
                }
            }
            None => Inputs {
                process: None,
                file: self
                    .file
                    .as_ref()
                    .map(|f| (f.path.clone(), FileState::of(&f.path))),
                seen_at: self.file.as_ref().map(|f| f.path.clone()),
            },
        })
    }
}

impl Found {
    /// The file this ovnkube reads, as it names it.
    pub fn file(&self) -> (PathBuf, FileNamedBy) {
        match &self.invocation.config_file {
            Some(path) => (path.clone(), FileNamedBy::ConfigFileFlag),
            None => (
                PathBuf::from(crate::DEFAULT_PATH),
                FileNamedBy::OvnkubeDefault,
            ),
        }
    }
}

/// Runs `read` on a thread of its own and waits at most `deadline`.
fn within<T: Send + 'static>(
    deadline: Duration,
    read: impl FnOnce() -> Result<T, OvnkubeError> + Send + 'static,
) -> Result<T, OvnkubeError> {
    let (send, receive) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("ovnkube-lookup".into())
        .spawn(move || {
            let _ = send.send(read());
        })
        .map_err(|e| OvnkubeError::Process(format!("cannot start a thread: {e}")))?;
    receive.recv_timeout(deadline).unwrap_or_else(|_| {
        Err(OvnkubeError::Process(format!(
            "no answer within {deadline:?} (a process stuck in the kernel?)"
        )))
    })
}

/// The capability that lets us see and read processes more privileged
/// than ours in /proc (ptrace read access).
const CAP_SYS_PTRACE: u32 = 19;

/// Why this /proc cannot show us ovnkube-node, if it cannot: mounted with
/// `hidepid` (systemd's ProtectProc) while we lack CAP_SYS_PTRACE, every
/// process we may not ptrace-read is hidden, ovnkube-node's privileged
/// container among them, and a lookup would find nothing without a word.
fn blind(proc_dir: &Path) -> Option<String> {
    let status = std::fs::read_to_string(proc_dir.join("self/status")).ok()?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())?;
    if effective & (1 << CAP_SYS_PTRACE) != 0 {
        return None;
    }
    let mounts = std::fs::read_to_string(proc_dir.join("self/mountinfo")).ok()?;
    let mount_point = proc_dir.to_str()?;
    // The last mount at the point is the one on top (a namespace may mount
    // a proc of its own over the host's).
    let options = mounts
        .lines()
        .rev()
        .find(|line| line.split(' ').nth(4) == Some(mount_point))?
        .split(" - ")
        .nth(1)?
        .split(' ')
        .nth(2)?;
    let hidepid = options
        .split(',')
        .find_map(|o| o.strip_prefix("hidepid="))
        .filter(|v| !matches!(*v, "0" | "off"))?;
    Some(format!(
        "{mount_point} is mounted with hidepid={hidepid} (systemd's ProtectProc) and this agent lacks CAP_SYS_PTRACE: ovnkube-node is hidden from it; grant CAP_SYS_PTRACE (the shipped units do), or set [ovnkube] process = false"
    ))
}

/// The one ovnkube-node of our network namespace, if it runs.
pub fn find(proc_dir: &Path) -> Result<Option<Found>, OvnkubeError> {
    if let Some(why) = blind(proc_dir) {
        return Err(OvnkubeError::Process(why));
    }
    let ours = std::fs::read_link(proc_dir.join("self/ns/net")).map_err(|e| {
        OvnkubeError::Process(format!(
            "cannot read our own network namespace ({}): {e}",
            proc_dir.join("self/ns/net").display()
        ))
    })?;
    let entries = std::fs::read_dir(proc_dir)
        .map_err(|e| OvnkubeError::Process(format!("{}: {e}", proc_dir.display())))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        // Gone meanwhile, a kernel thread, not ours to read: not ovnkube.
        let Ok(Some((argv, whole))) = read_cmdline(&dir.join("cmdline")) else {
            continue;
        };
        if !argv.first().is_some_and(|a| cmdline::is_ovnkube(a)) {
            continue;
        }
        let parsed = if whole {
            cmdline::parse(&argv)
        } else {
            Err(format!("longer than the {MAX_CMDLINE_BYTES} bytes read"))
        };
        // Not a node (or not ovnkube after all): none of our business.
        if let Ok(None) = parsed {
            continue;
        }
        // A node, or a command line we cannot read: it matters only in our
        // network namespace.
        match std::fs::read_link(dir.join("ns/net")) {
            Ok(theirs) if theirs == ours => match parsed {
                Ok(Some(invocation)) => found.push(Found {
                    pid,
                    argv,
                    invocation,
                }),
                Ok(None) => {}
                Err(reason) => return Err(OvnkubeError::CommandLine { pid, reason }),
            },
            // Another node's.
            Ok(_) => {}
            // Gone meanwhile (reaped after the walk the kernel says EACCES).
            Err(_) if !dir.join("cmdline").exists() => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // An ovnkube-node whose namespace we may not read could be
            // ours: never skipped in silence.
            Err(e) => {
                return Err(OvnkubeError::Process(format!(
                    "pid {pid} is ovnkube-node, but its network namespace cannot be read ({e}): reading another process's namespace and root needs CAP_SYS_PTRACE (the shipped units grant it); or set [ovnkube] process = false"
                )));
            }
        }
    }
    found.sort_by_key(|f| f.pid);
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(OvnkubeError::Process(format!(
            "{} ovnkube-node processes in this network namespace (pids {}): set [ovnkube] process = false and name the file in [ovnkube] config",
            found.len(),
            found
                .iter()
                .map(|f| f.pid.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A process's arguments, and whether they were read whole (within
/// [`MAX_CMDLINE_BYTES`]); Ok(None) for an empty command line (a kernel
/// thread, a zombie).
fn read_cmdline(path: &Path) -> std::io::Result<Option<(Vec<String>, bool)>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CMDLINE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let whole = bytes.len() as u64 <= MAX_CMDLINE_BYTES;
    let argv = bytes
        .strip_suffix(&[0])
        .unwrap_or(&bytes)
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    Ok(Some((argv, whole)))
}

/// `path` as process `pid` sees it: through its root, or its working
/// directory for a relative path.
fn in_root(proc_dir: &Path, pid: u32, path: &Path) -> PathBuf {
    let process = proc_dir.join(pid.to_string());
    match path.strip_prefix("/") {
        Ok(relative) => process.join("root").join(relative),
        Err(_) => process.join("cwd").join(path),
    }
}

/// The file ovnkube reads; None if it is ovnkube's default file and
/// missing (ovnkube skips it too). A file ovnkube was told to read and
/// that is not there is an error (ovnkube would not start).
fn read_in_root(
    proc_dir: &Path,
    pid: u32,
    path: &Path,
    named_by: FileNamedBy,
) -> Result<Option<String>, OvnkubeError> {
    let seen = in_root(proc_dir, pid, path);
    match read_bounded(&seen) {
        Ok(text) => Ok(Some(text)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && named_by == FileNamedBy::OvnkubeDefault =>
        {
            Ok(None)
        }
        Err(e) => Err(OvnkubeError::Read {
            file: path.to_path_buf(),
            reason: format!("{e} (read as {})", seen.display()),
        }),
    }
}

fn read_file(path: &Path) -> Result<String, OvnkubeError> {
    read_bounded(path).map_err(|e| OvnkubeError::Read {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A regular file within [`crate::MAX_BYTES`] (a FIFO or a device is
/// refused without waiting on it).
fn read_bounded(path: &Path) -> std::io::Result<String> {
    noverlay_runtime::files::read_bounded(path, crate::MAX_BYTES)
}
