//! The system calls the crate makes through libc, each behind a safe function: this
//! file holds all of their `unsafe` (the wire format has none of these). Waiting on
//! file descriptors (poll), process handles (pidfd_open) and signals (kill), pipe
//! sizes, peeking at sockets, a Unix socket's peer, the pre-exec hook of the socket
//! server's workers, and atexit.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// poll(2) on `fds` for up to `timeout_ms` (-1: no limit, 0: just look); how many
/// have events.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd structs.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Whether `fd` has data (or its end) to read within `timeout_ms` (-1: no limit).
pub(crate) fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
    poll(&mut p, timeout_ms).map(|n| n > 0)
}

/// A pidfd for process `pid` (readable once it has exited); None where pidfds are
/// missing (Linux before 5.3) or the process is gone. The caller makes sure `pid` is
/// its own unreaped child, so that it cannot name another process.
pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative result is a new file descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// kill(2): sends `sig` to `pid` (a negative pid: that process group).
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety requirements.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the capacity of the pipe `fd` (F_SETPIPE_SZ).
pub(crate) fn set_pipe_size(fd: RawFd, bytes: usize) -> io::Result<()> {
    // SAFETY: fcntl with F_SETPIPE_SZ takes an integer and touches no memory of ours.
    if unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes as libc::c_int) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The capacity of the pipe `fd` (F_GETPIPE_SZ).
#[cfg(test)]
pub(crate) fn pipe_size(fd: RawFd) -> io::Result<usize> {
    // SAFETY: fcntl with F_GETPIPE_SZ touches no memory of ours.
    let n = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// A new pipe: (read end, write end).
#[cfg(test)]
pub(crate) fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two file descriptors into `fds`.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new file descriptors that nothing else owns.
    Ok(unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) })
}

/// Copies what the socket `fd` holds into `buf` without consuming it (MSG_PEEK);
/// without blocking when `dont_wait`. Ok(0) at the end of the stream.
pub(crate) fn recv_peek(fd: RawFd, buf: &mut [u8], dont_wait: bool) -> io::Result<usize> {
    let flags = if dont_wait { libc::MSG_PEEK | libc::MSG_DONTWAIT } else { libc::MSG_PEEK };
    // SAFETY: recv writes at most buf.len() bytes into buf.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// The pid and uid of the process at the other end of the Unix socket `fd` (SO_PEERCRED).
pub(crate) fn peer_credentials(fd: RawFd) -> Option<(i32, u32)> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a ucred.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some((cred.pid, cred.uid))
}

/// Has the child that `cmd` starts get a process group of its own and inherit `fd`
/// (its close-on-exec flag cleared in the child only).
pub(crate) fn own_group_inheriting(cmd: &mut Command, fd: RawFd) {
    // SAFETY: only async-signal-safe calls (setpgid, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // A process group of its own: terminal signals go to the parent only,
            // and the parent can signal the child with its children.
            libc::setpgid(0, 0);
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Registers `f` to run when the process exits (atexit(3)).
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: registering a plain extern "C" function with the C runtime.
    unsafe {
        libc::atexit(f);
    }
}
