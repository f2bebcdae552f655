//! Hearing that something in a directory changed (inotify), so that a file
//! another program writes is followed at once rather than at the next poll.
//! Only "something changed" is told: the follower reads what it needs and
//! keeps polling as well (a directory that does not exist yet cannot be
//! watched, and a watch ends with its directory).

use std::{
    ffi::{CString, OsStr, OsString},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};
use tokio::io::{Interest, unix::AsyncFd};

/// What in a watched directory counts as a change: a file written and
/// closed, written to, created, deleted, renamed in or out (a ConfigMap's
/// atomic swap), its metadata changed, or the directory itself gone.
const CHANGES: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MODIFY
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// One inotify instance watching at most one directory at a time, for
/// changes to some of its names.
pub struct DirWatch {
    fd: AsyncFd<OwnedFd>,
    /// The directory watched and its watch descriptor.
    watching: Option<(PathBuf, i32)>,
    /// The names in it that matter (empty: any).
    names: Vec<OsString>,
}

impl DirWatch {
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the result is checked before use.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns `fd`, which stays open and the same
        // until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(DirWatch {
            fd,
            watching: None,
            names: Vec::new(),
        })
    }

    /// Watches `dir` for changes to `names` (any name if empty) instead of
    /// whatever was watched (None: nothing). Watching the same directory
    /// again changes nothing but the names; a directory that cannot be
    /// watched (missing) is an error and nothing is watched.
    pub fn watch(&mut self, dir: Option<&Path>, names: &[&OsStr]) -> io::Result<()> {
        self.names = names.iter().map(|n| n.to_os_string()).collect();
        if self.watching.as_ref().map(|(d, _)| d.as_path()) == dir {
            return Ok(());
        }
        if let Some((_, wd)) = self.watching.take() {
            // SAFETY: our descriptor and a watch of it; a watch already
            // gone (its directory deleted) is an error that changes nothing.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
        }
        let Some(dir) = dir else {
            return Ok(());
        };
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
        // SAFETY: a NUL-terminated path that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), CHANGES) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.watching = Some((dir.to_path_buf(), wd));
        Ok(())
    }

    /// The directory watched now (None also once the kernel dropped the
    /// watch: the directory was deleted or moved).
    pub fn watching(&self) -> Option<&Path> {
        self.watching.as_ref().map(|(d, _)| d.as_path())
    }

    /// Resolves when one of the names changed in the watched directory, or
    /// the watch ended (the directory gone: [`DirWatch::watching`] is then
    /// None) or events were lost. Every queued event is read; only
    /// "changed" is told. Never resolves while nothing is watched.
    /// Cancel-safe.
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            if self.watching.is_none() {
                return std::future::pending().await;
            }
            let mut ready = self.fd.readable().await?;
            let mut seen = Seen::default();
            let mut buffer = [0u8; 4096];
            loop {
                // SAFETY: reads into a buffer of the length passed.
                let n = unsafe {
                    libc::read(
                        self.fd.as_raw_fd(),
                        buffer.as_mut_ptr().cast(),
                        buffer.len(),
                    )
                };
                if n > 0 {
                    let n = usize::try_from(n).unwrap_or(0);
                    seen.add(&buffer[..n], &self.names);
                    continue;
                }
                let error = io::Error::last_os_error();
                if n < 0 && error.kind() == io::ErrorKind::WouldBlock {
                    ready.clear_ready();
                    break;
                }
                return Err(error);
            }
            if seen.watch_ended {
                self.watching = None;
            }
            if seen.relevant || seen.watch_ended {
                return Ok(());
            }
        }
    }
}

/// What a read of events held.
#[derive(Default)]
struct Seen {
    relevant: bool,
    watch_ended: bool,
}

impl Seen {
    /// Adds the events in `buffer` (whole `inotify_event`s, as the kernel
    /// returns them).
    fn add(&mut self, mut buffer: &[u8], names: &[OsString]) {
        const HEADER: usize = 16;
        while buffer.len() >= HEADER {
            let field = |at: usize| {
                u32::from_ne_bytes([buffer[at], buffer[at + 1], buffer[at + 2], buffer[at + 3]])
            };
            let (mask, len) = (field(4), field(12) as usize);
            let Some(name) = buffer.get(HEADER..HEADER + len) else {
                // A cut event: whatever it was, look.
                self.relevant = true;
                return;
            };
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            if mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                self.watch_ended = true;
            }
            if mask & libc::IN_Q_OVERFLOW != 0
                || names.is_empty()
                || names.iter().any(|n| n.as_bytes() == name)
            {
                self.relevant = true;
            }
            buffer = &buffer[HEADER + len..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Nothing heard within 100 ms.
    async fn quiet(watch: &mut DirWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(100), watch.changed())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_named_file_changed_in_the_watched_directory_is_heard_and_nothing_else() {
        let dir = tempfile::tempdir().expect("dir");
        let other = tempfile::tempdir().expect("dir");
        let mut watch = DirWatch::new().expect("inotify");
        watch
            .watch(
                Some(dir.path()),
                &[OsStr::new("ovnkube.conf"), OsStr::new("..data")],
            )
            .expect("watch");
        assert!(quiet(&mut watch).await, "heard a change before any");
        std::fs::write(other.path().join("ovnkube.conf"), "elsewhere").expect("write");
        assert!(
            quiet(&mut watch).await,
            "heard a change in another directory"
        );
        // Another file in the directory (OVSDB's conf.db, say): nothing.
        for _ in 0..50 {
            std::fs::write(dir.path().join("conf.db"), "x").expect("write");
        }
        assert!(quiet(&mut watch).await, "heard another file");
        std::fs::write(dir.path().join("ovnkube.conf"), "[default]\n").expect("write");
        tokio::time::timeout(Duration::from_secs(1), watch.changed())
            .await
            .expect("heard in time")
            .expect("read");
        // All the events of that write were read at once.
        assert!(quiet(&mut watch).await, "one write heard twice");
        // A ConfigMap's swap renames its data directory into place.
        std::fs::create_dir(dir.path().join("..data_tmp")).expect("mkdir");
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("mv");
        tokio::time::timeout(Duration::from_secs(1), watch.changed())
            .await
            .expect("heard the swap")
            .expect("read");
        // The directory gone: told, and nothing is watched any more.
        let path = dir.path().to_path_buf();
        drop(dir);
        tokio::time::timeout(Duration::from_secs(1), watch.changed())
            .await
            .expect("heard the end")
            .expect("read");
        assert_eq!(watch.watching(), None);
        // A missing directory cannot be watched: said, and nothing is.
        assert!(watch.watch(Some(&path), &[]).is_err());
        assert_eq!(watch.watching(), None);
    }
}
