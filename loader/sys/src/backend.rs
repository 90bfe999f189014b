//! What runs a bpf(2) command: the [`Backend`] trait, and [`FnBackend`] for tests.
//!
//! # Safety
//! [`Bpf`](crate::Bpf) turns the non-negative result of a descriptor-creating command
//! into an [`OwnedFd`](std::os::fd::OwnedFd), which closes it on drop. A backend that
//! returned an arbitrary integer there would let safe code own (and close) a
//! descriptor that belongs to someone else. So implementing [`Backend`] is `unsafe`:
//! the implementor promises that such results are descriptors it owns and hands over.
//! Safe code can neither implement it nor turn a closure into one:
//!
//! ```compile_fail
//! use handover_sys::{Backend, Bpf, Command};
//! struct Forger;
//! impl Backend for Forger {
//!     fn bpf(&self, _: Command, _: &mut [u8], _: Option<&mut [u8]>) -> std::io::Result<i64> {
//!         Ok(0) // stdin, about to be "owned" and closed
//!     }
//! }
//! let _ = Bpf::with_backend(Forger);
//! ```
//!
//! ```compile_fail
//! // A closure is no backend: it would forge descriptors from safe code.
//! use handover_sys::{Bpf, Command};
//! let forge = |_: Command, _: &mut [u8], _: Option<&mut [u8]>| -> std::io::Result<i64> { Ok(0) };
//! let _ = Bpf::with_backend(forge);
//! ```
//!
//! The same closure is accepted only through the unsafe constructor, whose caller
//! takes the promise on:
//!
//! ```
//! use handover_sys::{Bpf, Command, FnBackend};
//! let refuse = |_: Command, _: &mut [u8], _: Option<&mut [u8]>| -> std::io::Result<i64> {
//!     Err(std::io::Error::from_raw_os_error(1))
//! };
//! // SAFETY: the backend never returns a descriptor.
//! let bpf = Bpf::with_backend(unsafe { FnBackend::new(refuse) });
//! assert!(bpf.btf_load(&[], handover_sys::LogLevel::OnFailure).is_err());
//! ```
#![allow(unsafe_code)]

use std::fmt;
use std::io;

use crate::Command;

/// What runs a bpf(2) command: the kernel (the backend of [`Bpf::kernel`](crate::Bpf::kernel))
/// or a substitute in tests.
///
/// # Safety
/// For a command that creates a file descriptor (`BPF_MAP_CREATE`, `BPF_PROG_LOAD`,
/// `BPF_OBJ_GET`, `BPF_*_GET_FD_BY_ID`, `BPF_BTF_LOAD`, `BPF_LINK_CREATE`), a
/// non-negative `Ok` result must be an open descriptor that the backend owns and whose
/// ownership it passes to the caller: nothing else may use or close it afterwards.
pub unsafe trait Backend: Send + Sync {
    /// Runs `command` with `attr`, the bytes of its `union bpf_attr` variant, which the
    /// backend may update in place as the kernel does (batch counts, log sizes).
    ///
    /// `log` is the log buffer whose address is already in `attr`, for commands that
    /// take one; a backend other than the kernel writes its log text there.
    ///
    /// Returns the syscall's non-negative result (for descriptor-creating commands,
    /// a descriptor handed over to the caller: see the trait's safety contract).
    ///
    /// # Errors
    /// The errno of the failed call.
    fn bpf(&self, command: Command, attr: &mut [u8], log: Option<&mut [u8]>) -> io::Result<i64>;
}

/// A closure as a [`Backend`], for tests that stand in for the kernel.
pub struct FnBackend<F>(F);

impl<F> FnBackend<F>
where
    F: Fn(Command, &mut [u8], Option<&mut [u8]>) -> io::Result<i64> + Send + Sync,
{
    /// Wraps `f`.
    ///
    /// # Safety
    /// `f` keeps the contract of [`Backend`]: every non-negative result it returns for
    /// a descriptor-creating command is a descriptor it owns and gives away (for
    /// instance from `IntoRawFd::into_raw_fd` of a file it opened).
    pub unsafe fn new(f: F) -> Self {
        Self(f)
    }
}

impl<F> fmt::Debug for FnBackend<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnBackend")
    }
}

// SAFETY: `FnBackend::new` is unsafe and makes its caller promise the contract for `F`.
unsafe impl<F> Backend for FnBackend<F>
where
    F: Fn(Command, &mut [u8], Option<&mut [u8]>) -> io::Result<i64> + Send + Sync,
{
    fn bpf(&self, command: Command, attr: &mut [u8], log: Option<&mut [u8]>) -> io::Result<i64> {
        (self.0)(command, attr, log)
    }
}
