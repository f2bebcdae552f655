//! Hearing that something in a directory changed (inotify), so that a file
//! another program writes is followed at once rather than at the next poll.
//! Only "something changed" is told: the follower reads what it needs and
//! keeps polling as well (a directory that does not exist yet cannot be
//! watched, and a watch ends with its directory).

use std::{
    ffi::CString,
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

/// One inotify instance watching at most one directory at a time.
pub struct DirWatch {
    fd: AsyncFd<OwnedFd>,
    /// The directory watched and its watch descriptor.
    watching: Option<(PathBuf, i32)>,
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
        Ok(DirWatch { fd, watching: None })
    }

    /// Watches `dir` instead of whatever was watched (None: nothing).
    /// Watching the same directory again changes nothing; a directory that
    /// cannot be watched (missing) is an error and nothing is watched.
    pub fn watch(&mut self, dir: Option<&Path>) -> io::Result<()> {
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

    /// The directory watched now.
    pub fn watching(&self) -> Option<&Path> {
        self.watching.as_ref().map(|(d, _)| d.as_path())
    }

    /// Resolves when something changed in the watched directory (the events
    /// are read and dropped: only "changed" is told). Never resolves while
    /// nothing is watched. Cancel-safe.
    pub async fn changed(&self) -> io::Result<()> {
        if self.watching.is_none() {
            return std::future::pending().await;
        }
        loop {
            let mut ready = self.fd.readable().await?;
            let mut buffer = [0u8; 4096];
            // SAFETY: reads into a buffer of the length passed.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if n > 0 {
                // More may wait: the next call reads them (or they count as
                // the same change).
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if n < 0 && error.kind() == io::ErrorKind::WouldBlock {
                ready.clear_ready();
                continue;
            }
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_file_written_in_the_watched_directory_is_heard_and_nothing_else() {
        let dir = tempfile::tempdir().expect("dir");
        let other = tempfile::tempdir().expect("dir");
        let mut watch = DirWatch::new().expect("inotify");
        watch.watch(Some(dir.path())).expect("watch");
        let quiet = tokio::time::timeout(Duration::from_millis(100), watch.changed()).await;
        assert!(quiet.is_err(), "heard a change before any");
        std::fs::write(other.path().join("x.conf"), "elsewhere").expect("write");
        let quiet = tokio::time::timeout(Duration::from_millis(100), watch.changed()).await;
        assert!(quiet.is_err(), "heard a change in another directory");
        std::fs::write(dir.path().join("ovnkube.conf"), "[default]\n").expect("write");
        tokio::time::timeout(Duration::from_secs(1), watch.changed())
            .await
            .expect("heard in time")
            .expect("read");
        // A missing directory cannot be watched: said, and nothing is.
        assert!(watch.watch(Some(&dir.path().join("missing"))).is_err());
        assert_eq!(watch.watching(), None);
    }
}
