//! `BPF_OBJ_PIN`, `BPF_OBJ_GET` and `BPF_*_GET_FD_BY_ID`.
//!
//! Pins relative to a directory descriptor use the `path_fd` field of kernels that
//! have `BPF_F_PATH_FD` (6.5 and later) and fall back to `/proc/self/fd/DIRFD/NAME`
//! elsewhere; both resolve the name against the directory the caller opened, not
//! against a path that could have been swapped since.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use zerocopy::FromZeros;

use super::attr::{IdAttr, ObjAttr};
use super::map::raw_fd;
use super::probe::Feature;
use super::{Bpf, Command, Error};

/// `BPF_F_PATH_FD`: `path_fd` holds the directory a relative path is resolved in.
const PATH_FD: u32 = 1 << 14;

/// Access requested for a descriptor of an existing object (`file_flags` of
/// `BPF_OBJ_GET`, `open_flags` of `BPF_*_GET_FD_BY_ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenFlags(pub u32);

impl OpenFlags {
    /// Read and write.
    pub const READ_WRITE: Self = Self(0);
    /// `BPF_F_RDONLY`.
    pub const READ_ONLY: Self = Self(1 << 3);
    /// `BPF_F_WRONLY`.
    pub const WRITE_ONLY: Self = Self(1 << 4);
}

/// The kinds of kernel objects that have ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A map.
    Map,
    /// A program.
    Program,
    /// A link.
    Link,
    /// A BTF object.
    Btf,
}

impl ObjectKind {
    fn by_id(self) -> Command {
        match self {
            ObjectKind::Map => Command::MapGetFdById,
            ObjectKind::Program => Command::ProgGetFdById,
            ObjectKind::Link => Command::LinkGetFdById,
            ObjectKind::Btf => Command::BtfGetFdById,
        }
    }

    fn next_id(self) -> Command {
        match self {
            ObjectKind::Map => Command::MapGetNextId,
            ObjectKind::Program => Command::ProgGetNextId,
            ObjectKind::Link => Command::LinkGetNextId,
            ObjectKind::Btf => Command::BtfGetNextId,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ObjectKind::Map => "map",
            ObjectKind::Program => "program",
            ObjectKind::Link => "link",
            ObjectKind::Btf => "BTF",
        }
    }
}

fn c_path(command: Command, bytes: &[u8]) -> Result<CString, Error> {
    CString::new(bytes).map_err(|_| Error::Argument {
        command: command.name(),
        object: String::from_utf8_lossy(bytes).into_owned(),
        reason: "a path cannot contain a NUL byte".to_owned(),
    })
}

fn check_name(command: Command, name: &str) -> Result<CString, Error> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Error::Argument {
            command: command.name(),
            object: format!("{name:?}"),
            reason: "a name relative to a directory must be one non-empty path component"
                .to_owned(),
        });
    }
    c_path(command, name.as_bytes())
}

impl Bpf {
    fn obj(
        &self,
        command: Command,
        path: &CString,
        bpf_fd: u32,
        flags: u32,
        path_fd: i32,
        object: impl FnOnce() -> String,
    ) -> Result<i64, Error> {
        let mut attr = ObjAttr::new_zeroed();
        attr.pathname = path.as_ptr() as u64;
        attr.bpf_fd = bpf_fd;
        attr.file_flags = flags;
        attr.path_fd = path_fd;
        self.raw(command, &mut attr, None, object)
    }

    /// Pins `object` (a map, program, link or BTF) at `path` on a bpffs.
    ///
    /// # Errors
    /// `EEXIST` when the path exists, `EPERM` when the name has a '.' or the
    /// directory is not on bpffs, and any other refusal of the kernel.
    #[doc(alias = "BPF_OBJ_PIN")]
    pub fn obj_pin(&self, object: impl AsFd, path: &Path) -> Result<(), Error> {
        let c = c_path(Command::ObjPin, path.as_os_str().as_bytes())?;
        self.obj(Command::ObjPin, &c, raw_fd(object), 0, 0, || {
            path.display().to_string()
        })
        .map(drop)
    }

    /// Opens the object pinned at `path`.
    ///
    /// # Errors
    /// `ENOENT` when nothing is pinned there, and any other refusal of the kernel.
    #[doc(alias = "BPF_OBJ_GET")]
    pub fn obj_get(&self, path: &Path, flags: OpenFlags) -> Result<OwnedFd, Error> {
        let c = c_path(Command::ObjGet, path.as_os_str().as_bytes())?;
        let ret = self.obj(Command::ObjGet, &c, 0, flags.0, 0, || {
            path.display().to_string()
        })?;
        super::syscall::owned_fd(Command::ObjGet, ret)
    }

    /// Pins `object` as `name` inside the directory `dir`.
    ///
    /// # Errors
    /// `name` is not a single path component, or as [`Bpf::obj_pin`].
    #[doc(alias = "BPF_OBJ_PIN")]
    pub fn obj_pin_at(&self, object: impl AsFd, dir: impl AsFd, name: &str) -> Result<(), Error> {
        let c = check_name(Command::ObjPin, name)?;
        let fd = raw_fd(object);
        self.at(Command::ObjPin, dir.as_fd(), name, &c, fd, 0)
            .map(drop)
    }

    /// Opens the object pinned as `name` inside the directory `dir`.
    ///
    /// # Errors
    /// `name` is not a single path component, or as [`Bpf::obj_get`].
    #[doc(alias = "BPF_OBJ_GET")]
    pub fn obj_get_at(
        &self,
        dir: impl AsFd,
        name: &str,
        flags: OpenFlags,
    ) -> Result<OwnedFd, Error> {
        let c = check_name(Command::ObjGet, name)?;
        let ret = self.at(Command::ObjGet, dir.as_fd(), name, &c, 0, flags.0)?;
        super::syscall::owned_fd(Command::ObjGet, ret)
    }

    /// Opens "x" relative to descriptor -1 with `BPF_F_PATH_FD`; the errno tells
    /// whether the kernel knows the flag.
    pub(super) fn probe_path_fd(&self) -> Option<i32> {
        let name = CString::from(c"x");
        self.obj(Command::ObjGet, &name, 0, PATH_FD, -1, String::new)
            .err()
            .and_then(|e| e.errno())
    }

    fn at(
        &self,
        command: Command,
        dir: BorrowedFd<'_>,
        name: &str,
        c_name: &CString,
        bpf_fd: u32,
        flags: u32,
    ) -> Result<i64, Error> {
        let object = || format!("{name:?} in directory fd {}", dir.as_raw_fd());
        if self.has(Feature::PathFd) {
            self.obj(
                command,
                c_name,
                bpf_fd,
                flags | PATH_FD,
                dir.as_raw_fd(),
                object,
            )
        } else {
            let path = format!("/proc/self/fd/{}/{name}", dir.as_raw_fd());
            let c = c_path(command, path.as_bytes())?;
            self.obj(command, &c, bpf_fd, flags, 0, object)
        }
    }

    /// Opens the object of `kind` with kernel-wide id `id`.
    ///
    /// # Errors
    /// `ENOENT` when no such object exists.
    #[doc(alias = "BPF_MAP_GET_FD_BY_ID")]
    #[doc(alias = "BPF_PROG_GET_FD_BY_ID")]
    #[doc(alias = "BPF_LINK_GET_FD_BY_ID")]
    #[doc(alias = "BPF_BTF_GET_FD_BY_ID")]
    pub fn fd_by_id(&self, kind: ObjectKind, id: u32, flags: OpenFlags) -> Result<OwnedFd, Error> {
        let mut attr = IdAttr::new_zeroed();
        attr.id = id;
        // Only maps take open flags; the other commands refuse a non-zero field.
        if kind == ObjectKind::Map {
            attr.open_flags = flags.0;
        }
        self.raw_fd(kind.by_id(), &mut attr, || {
            format!("{} id {id}", kind.name())
        })
    }

    /// The smallest id of an object of `kind` greater than `after`; `None` at the end.
    ///
    /// # Errors
    /// The kernel refuses (`EPERM` without privileges).
    #[doc(alias = "BPF_MAP_GET_NEXT_ID")]
    #[doc(alias = "BPF_PROG_GET_NEXT_ID")]
    pub fn next_id(&self, kind: ObjectKind, after: u32) -> Result<Option<u32>, Error> {
        let mut attr = IdAttr::new_zeroed();
        attr.id = after;
        match self.raw(kind.next_id(), &mut attr, None, || {
            format!("{} ids after {after}", kind.name())
        }) {
            Ok(_) => Ok(Some(attr.next_id)),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_are_one_component() {
        for bad in ["", ".", "..", "a/b", "/abs"] {
            assert!(check_name(Command::ObjPin, bad).is_err(), "{bad:?}");
        }
        assert!(check_name(Command::ObjPin, "a\0b").is_err());
        assert!(check_name(Command::ObjPin, "maps_v2").is_ok());
    }
}
