//! The file system calls bpffs work needs and std lacks: `openat`, `mkdirat`,
//! `renameat2`, `unlinkat`, `fstatat`, `fstatfs`, `statfs`, `mount`, `umount2`.
//!
//! # Safety
//! Every call passes NUL-terminated strings that live across the call, descriptors
//! borrowed for the call, and out-parameters that are local, zero-initialised
//! `stat`/`statfs` structs. A descriptor returned by `openat` is fresh and owned by nobody
//! else, so it is wrapped into an `OwnedFd` right away.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `BPF_FS_MAGIC` of `include/uapi/linux/magic.h`.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens `name` under `dir` (or the absolute `name` when `dir` is `None`) as an
/// `O_PATH` directory without following a final symlink.
pub(crate) fn open_dir(dir: Option<BorrowedFd<'_>>, name: &CStr) -> io::Result<OwnedFd> {
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: see the module header.
    let fd = unsafe { libc::openat(dirfd, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor returned to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: see the module header.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })
}

pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: see the module header.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// `renameat2(2)`; `flags` is 0, `RENAME_NOREPLACE` or `RENAME_EXCHANGE`.
pub(crate) fn rename_at(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
    flags: u32,
) -> io::Result<()> {
    // The raw syscall, since not every libc target exposes a renameat2 wrapper.
    // SAFETY: see the module header.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            flags,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether `name` under `dir` is a symlink (`fstatat` with `AT_SYMLINK_NOFOLLOW`);
/// `false` when it does not exist.
pub(crate) fn is_symlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<bool> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: see the module header.
    let ret = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &raw mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(ret) {
        Ok(()) => Ok(st.st_mode & libc::S_IFMT == libc::S_IFLNK),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The file system magic of the file system holding `fd`.
pub(crate) fn fs_magic(fd: impl AsFd) -> io::Result<i64> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see the module header.
    check(unsafe { libc::fstatfs(fd.as_fd().as_raw_fd(), &raw mut st) })?;
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between targets"
    )]
    Ok(st.f_type as i64)
}

/// The file system magic of the file system holding `path`.
pub(crate) fn path_fs_magic(path: &Path) -> io::Result<i64> {
    let c = c_path(path)?;
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see the module header.
    check(unsafe { libc::statfs(c.as_ptr(), &raw mut st) })?;
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between targets"
    )]
    Ok(st.f_type as i64)
}

pub(crate) fn mount_bpf(target: &Path, mode: u32) -> io::Result<()> {
    let target = c_path(target)?;
    let data = CString::new(format!("mode={mode:o}"))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: see the module header.
    check(unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
}

pub(crate) fn unmount(target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: see the module header.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}
