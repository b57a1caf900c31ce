//! The only module allowed to use `unsafe`: two system calls that `std`
//! does not wrap. Each call takes a file descriptor borrowed from a live
//! `File` and plain integer flags; no memory crosses the boundary.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `syncfs(2)`: writes back every dirty page and inode of the filesystem
/// that holds `file`, then reports writeback errors recorded on that
/// filesystem since `file` was opened or since the previous `syncfs` on
/// the same open file description (Linux ≥ 5.8; older kernels always
/// return 0, see the man page's BUGS section).
pub(crate) fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: `file` is borrowed for the duration of the call, so the
    // descriptor stays open and refers to the same file; syncfs reads only
    // the integer descriptor and writes no memory of this process.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: an advisory whole-file lock that lives
/// as long as the open file description. Fails with `WouldBlock` when
/// another process (or another `File` in this one) holds it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: as above, the descriptor is borrowed from a live `File`;
    // flock takes the descriptor and constant flags and touches no memory.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
