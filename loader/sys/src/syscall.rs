//! The kernel backend: the one `syscall(SYS_bpf, ...)` and the one place where a raw
//! file descriptor becomes an [`OwnedFd`].
//!
//! # Safety
//! `bpf(2)` reads `size` bytes at `attr` and follows the user pointers inside it. The
//! attr is a live, exclusively borrowed byte slice of the right size; the pointers in it
//! were taken from slices that the calling command keeps borrowed for the whole call,
//! with lengths written next to them, so the kernel reads and writes only memory the
//! command owns. A non-negative result of a descriptor-creating command is a fresh
//! descriptor that nothing else owns.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::{Backend, Command, Error};

/// Runs commands in the running kernel with `syscall(SYS_bpf, ...)`.
///
/// Crate-private: its safe [`Backend::bpf`] trusts the pointers inside `attr`, which
/// only the command builders of this module guarantee (see the module header).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KernelBackend;

// SAFETY: a non-negative result of a descriptor-creating bpf(2) command is a fresh
// descriptor the kernel gave this process and nothing else holds.
unsafe impl Backend for KernelBackend {
    fn bpf(&self, command: Command, attr: &mut [u8], _log: Option<&mut [u8]>) -> io::Result<i64> {
        let size = libc::c_uint::try_from(attr.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
        // One more try after raising RLIMIT_MEMLOCK (see memlock.rs).
        let mut memlock_raised = false;
        loop {
            // SAFETY: see the module header: `attr` is a valid, exclusively borrowed
            // buffer of `size` bytes whose embedded pointers outlive the call.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    command as libc::c_uint,
                    attr.as_mut_ptr(),
                    size,
                )
            };
            if ret >= 0 {
                return Ok(ret);
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EPERM)
                && !memlock_raised
                && super::memlock::charged(command)
                && super::memlock::raise()
            {
                memlock_raised = true;
                continue;
            }
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// Takes ownership of the descriptor returned by a descriptor-creating `command`.
///
/// This is the only place a raw descriptor becomes an [`OwnedFd`].
pub(super) fn owned_fd(command: Command, ret: i64) -> Result<OwnedFd, Error> {
    let fd = RawFd::try_from(ret)
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| Error::Argument {
            command: command.name(),
            object: "its result".to_owned(),
            reason: format!("{ret} is not a file descriptor"),
        })?;
    // SAFETY: `fd` is the non-negative result of a command that creates a descriptor
    // (the callers of `Bpf::raw_fd` are exactly those commands); the kernel gave it to
    // us alone, so owning and eventually closing it is sound.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
