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

/// A TCP connection to `dest` from the local address `source` (outbound
/// delivery's `source_ipv4`/`source_ipv6`): glommio cannot bind before
/// connecting, so this runs a blocking connect (call it on the blocking
/// pool) bounded by `timeout`, and returns the connected socket for
/// [`tcp_stream_from`].
pub fn connect_from(source: std::net::IpAddr, dest: std::net::SocketAddr, timeout: Duration) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (family, local, remote) = (if dest.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 }, socket2_addr(std::net::SocketAddr::new(source, 0)), socket2_addr(dest));
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own; OwnedFd closes it on every path.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: timeout.subsec_micros() as libc::suseconds_t };
    // SAFETY: setsockopt reads exactly one timeval from a valid pointer;
    // SO_SNDTIMEO bounds a blocking connect(2) on Linux.
    let rc = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, (&tv as *const libc::timeval).cast(), std::mem::size_of::<libc::timeval>() as libc::socklen_t) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (source.is_ipv4()) != dest.is_ipv4() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "source and destination address families differ"));
    }
    // SAFETY: `local`/`remote` hold a sockaddr of the stated length.
    if unsafe { libc::bind(fd, local.0.as_ptr().cast(), local.1) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::connect(fd, remote.0.as_ptr().cast(), remote.1) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EINPROGRESS) { io::Error::new(io::ErrorKind::TimedOut, "connect timed out") } else { e });
    }
    // SAFETY: fcntl on our own fd; glommio expects non-blocking sockets.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// A sockaddr_in/sockaddr_in6 in a byte buffer, with its length.
fn socket2_addr(addr: std::net::SocketAddr) -> ([u8; 28], libc::socklen_t) {
    let mut buf = [0u8; 28];
    match addr {
        std::net::SocketAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            let n = std::mem::size_of::<libc::sockaddr_in>();
            // SAFETY: sockaddr_in is plain old data of `n` ≤ 28 bytes.
            buf[..n].copy_from_slice(unsafe { std::slice::from_raw_parts((&sa as *const libc::sockaddr_in).cast::<u8>(), n) });
            (buf, n as libc::socklen_t)
        }
        std::net::SocketAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            let n = std::mem::size_of::<libc::sockaddr_in6>();
            // SAFETY: sockaddr_in6 is plain old data of `n` = 28 bytes.
            buf[..n].copy_from_slice(unsafe { std::slice::from_raw_parts((&sa as *const libc::sockaddr_in6).cast::<u8>(), n) });
            (buf, n as libc::socklen_t)
        }
    }
}

/// Hands a connected socket from [`connect_from`] to glommio.
pub fn tcp_stream_from(fd: std::os::fd::OwnedFd) -> glommio::net::TcpStream {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the fd is a connected TCP socket we own; ownership moves to
    // the TcpStream, which closes it.
    unsafe { glommio::net::TcpStream::from_raw_fd(fd.into_raw_fd()) }
}
