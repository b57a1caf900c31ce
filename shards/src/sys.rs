//! The few system calls the runtime needs that std does not wrap.
//! This is the crate's only module with `unsafe`; each block says why it
//! is sound.
#![allow(unsafe_code)]

use std::io;
use std::time::Duration;

/// Size of `struct io_uring_params` (linux/io_uring.h): 120 bytes on every
/// architecture since 5.1.
const IO_URING_PARAMS_BYTES: usize = 120;

/// Creates and closes a tiny io_uring, to explain its absence before
/// glommio fails with a misleading message.
pub fn probe_io_uring() -> io::Result<()> {
    let mut params = [0u64; IO_URING_PARAMS_BYTES / 8];
    // SAFETY: io_uring_setup reads and writes exactly one io_uring_params,
    // which `params` provides (zeroed, correctly sized and aligned).
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned to us by the kernel and is not shared.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// RLIMIT_MEMLOCK (soft, hard) in bytes; `u64::MAX` means unlimited.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
pub fn memlock_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Raises the soft RLIMIT_MEMLOCK to `want` (or to the hard limit).
pub fn raise_memlock(want: u64) -> io::Result<()> {
    let (_, hard) = memlock_limit()?;
    // Root (CAP_SYS_RESOURCE) may raise the hard limit too; otherwise the
    // kernel refuses and we retry within the hard limit.
    let raised = libc::rlimit { rlim_cur: want as libc::rlim_t, rlim_max: want.max(hard) as libc::rlim_t };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
        return Ok(());
    }
    let lim = libc::rlimit { rlim_cur: want.min(hard) as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs this process may run on (sched_getaffinity): glommio reads
/// /sys and would ignore taskset and cgroup cpusets.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: we pass the size of the set we own; pid 0 = this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    // SAFETY: CPU_ISSET reads within the set for indexes < CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set we own; sigaddset only
    // touches it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Signals the main thread handles synchronously with [`wait_signal`].
pub const HANDLED_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Blocks the handled signals in this thread (and in every thread it
/// spawns afterwards), so that only `wait_signal` receives them.
pub fn block_signals() -> io::Result<()> {
    let set = signal_set(&HANDLED_SIGNALS);
    // SAFETY: the set is initialised; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits up to `timeout` for one of the handled signals.
pub fn wait_signal(timeout: Duration) -> Option<libc::c_int> {
    let set = signal_set(&HANDLED_SIGNALS);
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: the set and timespec are initialised; siginfo is not needed.
    let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (rc > 0).then_some(rc)
}
