//! Start-up checks that turn obscure runtime failures into clear advice.

use crate::sys;

/// glommio refuses to start below this much lockable memory.
const MEMLOCK_MIN: u64 = 512 << 10;

/// Verifies io_uring is usable and enough memory can be locked for the
/// rings; raises RLIMIT_MEMLOCK when permitted. Returns advice on failure.
pub fn check_runtime(io_memory: u64, shards: usize) -> Result<(), String> {
    if let Err(e) = sys::probe_io_uring() {
        let why = match e.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no io_uring (Linux 5.8 or newer is needed)".to_owned(),
            Some(libc::EPERM) | Some(libc::EACCES) => "io_uring is blocked: by a seccomp profile (Docker 25+ blocks it by default: run with \
                 --security-opt seccomp=unconfined or a profile that allows io_uring_setup/io_uring_enter/io_uring_register) \
                 or by the sysctl kernel.io_uring_disabled (set it to 0)"
                .to_owned(),
            Some(libc::ENOMEM) => "the kernel could not allocate an io_uring; raise RLIMIT_MEMLOCK (systemd: LimitMEMLOCK=infinity)".to_owned(),
            _ => format!("io_uring_setup failed: {e}"),
        };
        return Err(format!("Varan needs io_uring, but {why}."));
    }
    let want = io_memory.saturating_mul(shards as u64 + 1).saturating_add(8 << 20);
    if let Ok((soft, _)) = sys::memlock_limit() {
        if soft != u64::MAX && soft < want {
            let _ = sys::raise_memlock(want);
        }
    }
    match sys::memlock_limit() {
        Ok((soft, _)) if soft != u64::MAX && soft < MEMLOCK_MIN => Err(format!(
            "RLIMIT_MEMLOCK is {soft} bytes; io_uring needs at least {MEMLOCK_MIN}. Raise it: systemd `LimitMEMLOCK=infinity`, \
             or `ulimit -l unlimited` in the starting shell, or /etc/security/limits.conf `mail - memlock unlimited`."
        )),
        Ok((soft, _)) if soft != u64::MAX && soft < want => {
            tracing::warn!(memlock = soft, wanted = want, "RLIMIT_MEMLOCK is low; io_uring buffer registration may be skipped (slower). Set LimitMEMLOCK=infinity.");
            Ok(())
        }
        _ => Ok(()),
    }
}
