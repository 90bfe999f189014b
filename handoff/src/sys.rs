//! The kernel calls of the handoff: `sendmsg`/`recvmsg` with `SCM_RIGHTS`,
//! `SO_PEERCRED`, `SO_TYPE`/`SO_ACCEPTCONN`, `poll`, and the failpoints' `SIGKILL`.
//!
//! # Safety
//! Every call here takes a descriptor borrowed from a live `BorrowedFd`/`AsFd` for
//! the length of the call, and buffers owned by the caller whose lengths are passed
//! alongside them. Descriptors the kernel installs in this process (received with
//! `SCM_RIGHTS`) become `OwnedFd` in exactly one place, [`recv_with_fds`], right after
//! the call that created them, so none is leaked or closed twice. Control messages
//! are walked only with the `CMSG_*` macros over the buffer the kernel filled, and
//! read with `read_unaligned`, as the buffer gives no alignment guarantee for the
//! `int` array.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The most descriptors one message carries (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Identity of a socket's peer, as the kernel recorded it at `connect`/`listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// `getsockopt(SOL_SOCKET, SO_PEERCRED)`.
pub fn peer_cred(sock: BorrowedFd<'_>) -> io::Result<Cred> {
    // SAFETY: an all-zero ucred is a valid value.
    let mut cred: libc::ucred = unsafe { zeroed() };
    let mut len = socklen(size_of::<libc::ucred>());
    // SAFETY: see the module header; `cred` and `len` are locals of the right size.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Cred {
        pid: u32::try_from(cred.pid).unwrap_or(0),
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// An integer socket option at `SOL_SOCKET`; `Err(ENOTSOCK)` for a descriptor that is
/// not a socket.
fn sockopt_int(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = socklen(size_of::<libc::c_int>());
    // SAFETY: see the module header; `value` and `len` are locals of the right size.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if ret == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What a descriptor is as a socket: `None` if it is not a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketKind {
    /// `SO_TYPE` is `SOCK_STREAM`.
    pub stream: bool,
    /// `SO_ACCEPTCONN`: the socket is listening.
    pub listening: bool,
}

/// `SO_TYPE` and `SO_ACCEPTCONN` of `fd`; `Ok(None)` when `fd` is not a socket.
pub fn socket_kind(fd: BorrowedFd<'_>) -> io::Result<Option<SocketKind>> {
    let ty = match sockopt_int(fd, libc::SO_TYPE) {
        Ok(ty) => ty,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => return Ok(None),
        Err(e) => return Err(e),
    };
    let listening = sockopt_int(fd, libc::SO_ACCEPTCONN)? != 0;
    Ok(Some(SocketKind {
        stream: ty == libc::SOCK_STREAM,
        listening,
    }))
}

/// Waits until `fd` is readable or hung up, at most `timeout` (`None`: forever).
/// Returns whether it became ready.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let ms = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_millis().max(u128::from(!t.is_zero())))
            .unwrap_or(libc::c_int::MAX)
    });
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: see the module header; one pollfd owned by this frame.
        let ret = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if ret >= 0 {
            return Ok(ret > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends all of `bytes` on the stream socket `sock`, with `fds` attached (as
/// `SCM_RIGHTS`) to the first byte. `MSG_NOSIGNAL`: a closed peer is `EPIPE`, not a
/// signal.
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message; the kernel passes at most {MAX_FDS_PER_MESSAGE}",
                fds.len()
            ),
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut rest = bytes;
    if !raw.is_empty() {
        // A stream socket carries ancillary data only with at least one byte.
        if rest.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "descriptors need at least one byte of data to travel with",
            ));
        }
        let n = send_first(sock, rest, &raw)?;
        rest = rest.get(n..).unwrap_or_default();
    }
    while !rest.is_empty() {
        let n = send_plain(sock, rest)?;
        rest = rest.get(n..).unwrap_or_default();
    }
    Ok(())
}

fn send_plain(sock: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: see the module header.
    retry(|| unsafe {
        libc::send(
            sock.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

/// Runs a call returning a byte count or -1 with errno, again while it is
/// interrupted by a signal.
fn retry(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        if let Ok(n) = usize::try_from(call()) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn send_first(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let payload = std::mem::size_of_val(fds);
    let payload32 = u32::try_from(payload).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(payload32) } as usize;
    // u64 words keep the buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(size_of::<u64>())];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no control).
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `control`, which holds CMSG_SPACE(payload) bytes, so the
    // first header and its data (CMSG_LEN(payload) <= CMSG_SPACE(payload)) fit; the
    // fd array is copied with an unaligned-safe byte copy.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), payload);
    }
    // SAFETY: see the module header; `msg` and everything it points to live until
    // the call returns. The descriptors in the control message are borrowed from
    // the caller for the call; the kernel takes its own references.
    retry(|| unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const msg, libc::MSG_NOSIGNAL) })
}

/// What one `recvmsg` brought.
#[derive(Debug)]
pub struct Received {
    /// Bytes written to the buffer; 0 is end of stream.
    pub len: usize,
    /// The control data did not fit: the kernel closed the descriptors that did not.
    pub truncated: bool,
}

/// One `recvmsg` into `buf`, appending every descriptor that came with it to `fds`
/// (close-on-exec), owned from here on: a caller that does not want them drops them.
/// A receive timeout set on the socket (`SO_RCVTIMEO`) shows as `WouldBlock`.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Received> {
    let payload = u32::try_from(size_of::<RawFd>() * MAX_FDS_PER_MESSAGE)
        .map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    let mut control = vec![0u64; space.div_ceil(size_of::<u64>())];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: see the module header; `msg` points at `buf` and `control`, both live
    // and of the lengths given.
    let n =
        retry(|| unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    // SAFETY: the kernel set msg_controllen to the bytes of `control` it filled; the
    // CMSG_* macros walk only within them. Each SCM_RIGHTS descriptor was just
    // installed in this process for us and is owned by nothing else yet.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let header = libc::CMSG_LEN(0) as usize;
                let bytes = ((*cmsg).cmsg_len as usize).saturating_sub(header);
                for i in 0..bytes / size_of::<RawFd>() {
                    let raw = data
                        .add(i * size_of::<RawFd>())
                        .cast::<RawFd>()
                        .read_unaligned();
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok(Received {
        len: n,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Kills this process with `SIGKILL`: a crash at a failpoint, with no unwinding,
/// no destructors and no chance to send a last message.
#[cfg(feature = "failpoints")]
pub fn kill_self() -> ! {
    // SAFETY: kill has no memory preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL to oneself is delivered before kill returns to user space.
    std::process::abort()
}

fn socklen(n: usize) -> libc::socklen_t {
    libc::socklen_t::try_from(n).unwrap_or(libc::socklen_t::MAX)
}
