//! Reading a small file that someone else writes (a pidfile, say) without
//! letting it hold us: a FIFO does not block the open, a device or a huge
//! file is refused, and at most `max` bytes are read.

use std::{
    io::{self, Read},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

/// The file's text, if it is a regular file of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<String> {
    // O_NONBLOCK: opening a FIFO for reading would wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes, more than the {max} expected", meta.len()),
        ));
    }
    let mut text = String::new();
    file.take(max).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_file_is_read_and_anything_else_refused_without_waiting() {
        let dir = tempfile::tempdir().expect("dir");
        let small = dir.path().join("small");
        std::fs::write(&small, "4242\n").expect("write");
        assert_eq!(read_bounded(&small, 64).expect("read"), "4242\n");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'1'; 65]).expect("write");
        assert!(read_bounded(&big, 64).is_err());
        assert!(read_bounded(Path::new("/dev/zero"), 64).is_err());
        assert!(read_bounded(dir.path(), 64).is_err());
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        // Returns at once (a blocking open would hang the test).
        assert!(read_bounded(&fifo, 64).is_err());
    }
}
