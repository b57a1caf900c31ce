//! The only module allowed to use `unsafe`: three system calls that `std`
//! does not wrap. Each call takes a file descriptor borrowed from a live
//! `File` (or NUL-terminated paths owned by the caller) and plain integer
//! flags.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

/// `renameat2(from, to, RENAME_EXCHANGE)`: atomically swaps two existing
/// names. Fails with `NotFound` when either is missing, which is what
/// makes "replace this file only if it still exists" atomic (a queue
/// entry deleted meanwhile is not brought back). `Unsupported` on file
/// systems without it (Linux ≥ 3.15 on ext4, xfs, btrfs and tmpfs have it).
pub(crate) fn rename_exchange(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"));
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both pointers come from CStrings that live until the call
    // returns and are NUL-terminated; AT_FDCWD is a constant; renameat2
    // only reads the two strings.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => io::Error::new(io::ErrorKind::Unsupported, e),
        _ => e,
    })
}
