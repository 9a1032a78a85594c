//! Whether anybody holds a file open for writing, asked of the kernel: a read lease
//! (`F_SETLEASE`, `F_RDLCK`) is refused with `EAGAIN` while any process has the file open for
//! writing, whatever its user. The crate's one module with `unsafe`.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Once;

/// What the kernel says about writers of a file.
#[derive(Debug)]
pub(crate) enum Writers {
    /// Nobody has it open for writing.
    None,
    /// Some process has it open for writing.
    Open,
    /// The kernel would not say (not the file's owner without `CAP_LEASE`, or a filesystem
    /// without leases, such as NFS); the settle timer is all there is.
    Unknown(std::io::Error),
}

static IGNORE_SIGIO: Once = Once::new();

/// Asks whether `path` is open for writing anywhere on the host. The lease is released at
/// once; it exists only for the kernel's answer.
pub(crate) fn open_for_writing(path: &Path) -> Writers {
    // A writer opening the file in the instant the lease is held makes the kernel send the
    // holder SIGIO, whose default action ends the process; the agent uses no SIGIO otherwise.
    IGNORE_SIGIO.call_once(|| {
        // SAFETY: installs the SIG_IGN disposition; no handler code runs.
        unsafe {
            libc::signal(libc::SIGIO, libc::SIG_IGN);
        }
    });
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return Writers::Unknown(e),
    };
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is a descriptor this function owns for the duration of both calls.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
    if rc == 0 {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        return Writers::None;
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) => Writers::Open,
        _ => Writers::Unknown(err),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_file_open_for_writing_is_seen_and_a_closed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slow.mp4");
        let mut writer = std::fs::File::create(&path).unwrap();
        writer.write_all(b"first half").unwrap();
        match open_for_writing(&path) {
            Writers::Open => {}
            // The test owns the file, so the kernel grants the lease question to it.
            Writers::Unknown(e) => panic!("lease refused to the file's owner: {e}"),
            Writers::None => panic!("a file open for writing was reported closed"),
        }
        drop(writer);
        assert!(matches!(open_for_writing(&path), Writers::None));
        // Readers are not writers.
        let _reader = std::fs::File::open(&path).unwrap();
        assert!(matches!(open_for_writing(&path), Writers::None));
    }
}
