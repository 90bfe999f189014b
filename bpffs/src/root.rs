//! [`PinRoot`]: pins, atomic replacement, exchange with rollback, and cleanup.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use handover_sys::{Bpf, OpenFlags};

use crate::fsys::{self, BPF_FS_MAGIC};
use crate::manifest::{Entry, EntryKind, Manifest};
use crate::{Error, PinPath};

const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

/// What [`PinRoot::recover`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Temporary pins left by an interrupted replacement.
    pub removed_temporaries: Vec<String>,
}

/// A directory on a bpffs under which handover pins objects, with the manifest of
/// what it created there.
#[derive(Debug)]
pub struct PinRoot {
    bpf: Bpf,
    root: OwnedFd,
    root_path: PathBuf,
    manifest: Mutex<Manifest>,
}

fn cname(name: &str) -> CString {
    // Names were checked by `PinPath` (no NUL); an empty string is the safe fallback.
    CString::new(name).unwrap_or_default()
}

fn ignore_enoent(r: io::Result<()>) -> io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

impl PinRoot {
    /// Opens the pin root `root` (which must be a directory on a bpffs) with the
    /// manifest kept at `manifest` (a path outside bpffs; created on first write).
    ///
    /// # Errors
    /// `root` is missing, a symlink, or not on bpffs; the manifest is unreadable.
    pub fn open(bpf: &Bpf, root: &Path, manifest: &Path) -> Result<Self, Error> {
        let c = fsys::c_path(root).map_err(|source| Error::Io {
            op: "open",
            path: root.display().to_string(),
            source,
        })?;
        let fd = fsys::open_dir(None, &c).map_err(|source| Error::Io {
            op: "open pin root",
            path: root.display().to_string(),
            source,
        })?;
        check_bpffs(&fd, &root.display().to_string())?;
        Ok(Self {
            bpf: bpf.clone(),
            root: fd,
            root_path: root.to_owned(),
            manifest: Mutex::new(Manifest::load(manifest, root)?),
        })
    }

    /// The pin root's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.root_path
    }

    /// A copy of the manifest's entries.
    #[must_use]
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().entries().to_vec()
    }

    fn lock(&self) -> MutexGuard<'_, Manifest> {
        self.manifest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn io(op: &'static str, path: &str) -> impl FnOnce(io::Error) -> Error {
        let path = path.to_owned();
        move |source| Error::Io { op, path, source }
    }

    /// Opens the directory holding `path`'s pin, creating missing directories (mode
    /// 0700, recorded in the manifest first) when `manifest` is given.
    fn parent(
        &self,
        path: &PinPath,
        mut manifest: Option<&mut Manifest>,
    ) -> Result<OwnedFd, Error> {
        let mut dir = self.root.try_clone().map_err(Self::io("dup", "pin root"))?;
        let mut walked = String::new();
        for name in path.dirs() {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(name);
            let c = cname(name);
            let next = match fsys::open_dir(Some(dir.as_fd()), &c) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let Some(m) = manifest.as_deref_mut() else {
                        return Err(Error::Io {
                            op: "open",
                            path: walked,
                            source: e,
                        });
                    };
                    let added = m.add(Entry::dir(&walked))?;
                    if let Err(e) = fsys::mkdir_at(dir.as_fd(), &c, 0o700) {
                        // Not created by us (it appeared meanwhile, or mkdir failed):
                        // not ours to remove later.
                        if added {
                            m.remove(EntryKind::Dir, &walked)?;
                        }
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(Error::Io {
                                op: "mkdir",
                                path: walked,
                                source: e,
                            });
                        }
                    }
                    fsys::open_dir(Some(dir.as_fd()), &c).map_err(Self::io("open", &walked))?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    return Err(Error::NotADirectory { path: walked });
                }
                Err(e) => {
                    return Err(Error::Io {
                        op: "open",
                        path: walked,
                        source: e,
                    });
                }
            };
            check_bpffs(&next, &walked)?;
            dir = next;
        }
        Ok(dir)
    }

    fn bpf_err(op: &'static str, path: &PinPath) -> impl FnOnce(handover_sys::Error) -> Error {
        let path = path.to_string();
        move |source| Error::Bpf { op, path, source }
    }

    /// Pins `object` at the temporary name of `path` in `dir`, removing a stale
    /// temporary of ours first.
    fn pin_temp(
        &self,
        dir: BorrowedFd<'_>,
        object: BorrowedFd<'_>,
        path: &PinPath,
    ) -> Result<CString, Error> {
        let temp = path.temp_name();
        let c = cname(&temp);
        ignore_enoent(fsys::unlink_at(dir, &c, false)).map_err(Self::io("remove stale", &temp))?;
        self.bpf
            .obj_pin_at(object, dir, &temp)
            .map_err(Self::bpf_err("pin temporary for", path))?;
        Ok(c)
    }

    fn rename(dir: BorrowedFd<'_>, from: &CString, to: &str, flags: u32) -> io::Result<()> {
        fsys::rename_at(dir, from, dir, &cname(to), flags)
    }

    /// Pins `object` at `path`, which must not exist yet: the object is pinned at a
    /// temporary name and renamed with `RENAME_NOREPLACE`, so a pin that appeared
    /// meanwhile is never overwritten.
    ///
    /// # Errors
    /// `EEXIST` ([`Error::errno`]) if `path` is pinned already; bpf or file system
    /// errors otherwise.
    pub fn pin(&self, object: impl AsFd, path: &PinPath) -> Result<(), Error> {
        self.place(
            object.as_fd(),
            path,
            RENAME_NOREPLACE,
            "pin (rename without replace) at",
        )
    }

    /// Pins `object` at `path`, atomically replacing what is pinned there: readers
    /// opening `path` see the old object or the new one, never nothing.
    ///
    /// # Errors
    /// bpf or file system errors; `path` is left as it was.
    pub fn replace(&self, object: impl AsFd, path: &PinPath) -> Result<(), Error> {
        self.place(object.as_fd(), path, 0, "replace (rename over)")
    }

    /// Pins `object` at its temporary name and renames it to `path` with `flags`.
    ///
    /// `path` is recorded before anything is created; if the rename fails, the record
    /// is dropped again when it is new, since what is at `path` then (a pin somebody
    /// else made, or nothing) is not ours to remove later.
    fn place(
        &self,
        object: BorrowedFd<'_>,
        path: &PinPath,
        flags: u32,
        op: &'static str,
    ) -> Result<(), Error> {
        let mut m = self.lock();
        let dir = self.parent(path, Some(&mut m))?;
        let added = m.add(Entry::pin(path))?;
        let result = self.pin_temp(dir.as_fd(), object, path).and_then(|temp| {
            Self::rename(dir.as_fd(), &temp, path.name(), flags).map_err(|source| {
                Self::discard_temp(dir.as_fd(), &temp);
                Error::Io {
                    op,
                    path: path.to_string(),
                    source,
                }
            })
        });
        if result.is_err() {
            Self::forget_new(&mut m, added, dir.as_fd(), path);
        }
        result
    }

    /// Removes a temporary pin after a failed rename, as well as it can: the error
    /// of the rename is what the caller reports.
    fn discard_temp(dir: BorrowedFd<'_>, temp: &CString) {
        let _ = fsys::unlink_at(dir, temp, false);
    }

    /// Drops the record of `path` made by a pin that failed, if the record is new
    /// and no temporary of ours is left under it.
    fn forget_new(m: &mut Manifest, added: bool, dir: BorrowedFd<'_>, path: &PinPath) {
        let temp_gone = match fsys::unlink_at(dir, &cname(&path.temp_name()), false) {
            Ok(()) => true,
            Err(e) => e.raw_os_error() == Some(libc::ENOENT),
        };
        if added && temp_gone {
            // Best effort: a record too many only makes cleanup look for a pin that
            // is not there; the failure of the pin is what the caller reports.
            let _ = m.remove(EntryKind::Pin, &path.to_string());
        }
    }

    /// Pins `object` at `path` atomically (`RENAME_EXCHANGE`) and keeps the object
    /// that was there under [`PinPath::rollback_path`] for [`PinRoot::rollback`];
    /// a first pin simply appears.
    ///
    /// # Errors
    /// bpf or file system errors; `path` still holds the old object then.
    pub fn exchange(&self, object: impl AsFd, path: &PinPath) -> Result<(), Error> {
        let mut m = self.lock();
        let dir = self.parent(path, Some(&mut m))?;
        let added = m.add(Entry::pin(path))?;
        let temp = match self.pin_temp(dir.as_fd(), object.as_fd(), path) {
            Ok(temp) => temp,
            Err(e) => {
                Self::forget_new(&mut m, added, dir.as_fd(), path);
                return Err(e);
            }
        };
        let failed = |m: &mut Manifest, op: &'static str, source: io::Error| {
            Self::discard_temp(dir.as_fd(), &temp);
            Self::forget_new(m, added, dir.as_fd(), path);
            Error::Io {
                op,
                path: path.to_string(),
                source,
            }
        };
        match Self::rename(dir.as_fd(), &temp, path.name(), RENAME_EXCHANGE) {
            Ok(()) => {
                // The temporary name now holds the old object: keep it for rollback.
                fsys::rename_at(
                    dir.as_fd(),
                    &temp,
                    dir.as_fd(),
                    &cname(&path.rollback_name()),
                    0,
                )
                .map_err(Self::io("keep rollback of", &path.to_string()))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                Self::rename(dir.as_fd(), &temp, path.name(), RENAME_NOREPLACE)
                    .map_err(|e| failed(&mut m, "pin (rename without replace) at", e))
            }
            // bpffs before 5.15 refuses RENAME_EXCHANGE.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let result = self.exchange_by_second_pin(dir.as_fd(), &temp, path);
                if result.is_err() {
                    Self::discard_temp(dir.as_fd(), &temp);
                    Self::forget_new(&mut m, added, dir.as_fd(), path);
                }
                result
            }
            Err(e) => Err(failed(&mut m, "exchange", e)),
        }
    }

    /// [`PinRoot::exchange`] without `RENAME_EXCHANGE`: the object at `path` is pinned
    /// a second time under the rollback name, then the new one (pinned at `temp`) is
    /// renamed over `path`, which readers still see change in one step. Unlike the
    /// exchange, an object pinned at `path` by someone else between the two steps
    /// would be replaced without being kept.
    fn exchange_by_second_pin(
        &self,
        dir: BorrowedFd<'_>,
        temp: &CString,
        path: &PinPath,
    ) -> Result<(), Error> {
        let old = match self.bpf.obj_get_at(dir, path.name(), OpenFlags::READ_WRITE) {
            Ok(fd) => fd,
            Err(e) if e.errno() == Some(libc::ENOENT) => {
                return Self::rename(dir, temp, path.name(), RENAME_NOREPLACE).map_err(Self::io(
                    "pin (rename without replace) at",
                    &path.to_string(),
                ));
            }
            Err(e) => return Err(Self::bpf_err("open the pinned object at", path)(e)),
        };
        let rollback = path.rollback_name();
        ignore_enoent(fsys::unlink_at(dir, &cname(&rollback), false))
            .map_err(Self::io("remove old rollback of", &path.to_string()))?;
        self.bpf
            .obj_pin_at(&old, dir, &rollback)
            .map_err(Self::bpf_err("pin rollback of", path))?;
        Self::rename(dir, temp, path.name(), 0).map_err(|source| {
            let _ = fsys::unlink_at(dir, &cname(&rollback), false);
            Error::Io {
                op: "replace (rename over)",
                path: path.to_string(),
                source,
            }
        })
    }

    /// Puts the object kept by [`PinRoot::exchange`] back at `path` atomically and
    /// drops the pin of the newer one.
    ///
    /// # Errors
    /// `ENOENT` when there is no rollback pin; file system errors.
    pub fn rollback(&self, path: &PinPath) -> Result<(), Error> {
        let _m = self.lock();
        let dir = self.parent(path, None)?;
        let rb = cname(&path.rollback_name());
        match Self::rename(dir.as_fd(), &rb, path.name(), RENAME_EXCHANGE) {
            // Without RENAME_EXCHANGE (bpffs before 5.15) the kept object is renamed
            // over the newer one, which goes with its pin.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Self::rename(dir.as_fd(), &rb, path.name(), 0)
                    .map_err(Self::io("roll back", &path.to_string()));
            }
            other => other.map_err(Self::io("roll back", &path.to_string()))?,
        }
        fsys::unlink_at(dir.as_fd(), &rb, false)
            .map_err(Self::io("drop the replaced pin of", &path.to_string()))
    }

    /// Drops the rollback pin of `path`, if any: the exchange is final.
    ///
    /// # Errors
    /// File system errors.
    pub fn commit(&self, path: &PinPath) -> Result<(), Error> {
        let _m = self.lock();
        let dir = self.parent(path, None)?;
        ignore_enoent(fsys::unlink_at(
            dir.as_fd(),
            &cname(&path.rollback_name()),
            false,
        ))
        .map(drop)
        .map_err(Self::io("remove rollback of", &path.to_string()))
    }

    /// Opens the object pinned at `path`.
    ///
    /// # Errors
    /// `ENOENT` when nothing is pinned there; a directory on the way is a symlink or
    /// not on bpffs; the pin itself is a symlink.
    pub fn get(&self, path: &PinPath, flags: OpenFlags) -> Result<OwnedFd, Error> {
        let dir = self.parent(path, None)?;
        // BPF_OBJ_GET follows a symlink in the last component; pins never are one.
        if fsys::is_symlink_at(dir.as_fd(), &cname(path.name()))
            .map_err(Self::io("inspect", &path.to_string()))?
        {
            return Err(Error::Symlink {
                path: path.to_string(),
            });
        }
        self.bpf
            .obj_get_at(dir.as_fd(), path.name(), flags)
            .map_err(Self::bpf_err("open pin", path))
    }

    /// Removes the pin at `path` with its temporary and rollback pins, and forgets
    /// it. Only pins recorded in the manifest are removed.
    ///
    /// # Errors
    /// `path` is not in the manifest; file system errors.
    pub fn unpin(&self, path: &PinPath) -> Result<(), Error> {
        let mut m = self.lock();
        let key = path.to_string();
        if !m
            .entries()
            .iter()
            .any(|e| e.kind == EntryKind::Pin && e.path == key)
        {
            return Err(Error::Manifest {
                path: self.root_path.display().to_string(),
                reason: format!("{key} was not pinned by this tool; refusing to remove it"),
            });
        }
        self.remove_pin(path)?;
        m.remove(EntryKind::Pin, &key)
    }

    fn remove_pin(&self, path: &PinPath) -> Result<(), Error> {
        let dir = match self.parent(path, None) {
            Ok(dir) => dir,
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        for name in [
            path.name().to_owned(),
            path.temp_name(),
            path.rollback_name(),
        ] {
            ignore_enoent(fsys::unlink_at(dir.as_fd(), &cname(&name), false))
                .map_err(Self::io("unpin", &name))?;
        }
        Ok(())
    }

    /// Removes temporary pins left by an interrupted replacement.
    ///
    /// # Errors
    /// File system errors.
    pub fn recover(&self) -> Result<Recovery, Error> {
        let m = self.lock();
        let mut out = Recovery::default();
        for e in m.entries().iter().filter(|e| e.kind == EntryKind::Pin) {
            let path = PinPath::new(&e.path)?;
            let dir = match self.parent(&path, None) {
                Ok(dir) => dir,
                Err(e) if e.errno() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            let temp = path.temp_name();
            if ignore_enoent(fsys::unlink_at(dir.as_fd(), &cname(&temp), false))
                .map_err(Self::io("remove temporary", &temp))?
            {
                out.removed_temporaries.extend(e.temporary.clone());
            }
        }
        Ok(out)
    }

    /// Removes every pin and directory the manifest records (directories only when
    /// empty: something not ours inside is left alone) and empties the manifest.
    ///
    /// # Errors
    /// File system errors; the manifest keeps what could not be removed.
    pub fn uninstall(&self) -> Result<(), Error> {
        let mut m = self.lock();
        let entries = m.entries().to_vec();
        for e in entries.iter().filter(|e| e.kind == EntryKind::Pin) {
            self.remove_pin(&PinPath::new(&e.path)?)?;
            m.remove(EntryKind::Pin, &e.path)?;
        }
        // Deepest directories first.
        let mut dirs: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .collect();
        dirs.sort_by_key(|e| std::cmp::Reverse(e.path.matches('/').count()));
        for e in dirs {
            let path = PinPath::new(&e.path)?;
            let parent = match self.parent(&path, None) {
                Ok(dir) => dir,
                Err(err) if err.errno() == Some(libc::ENOENT) => {
                    m.remove(EntryKind::Dir, &e.path)?;
                    continue;
                }
                Err(err) => return Err(err),
            };
            match fsys::unlink_at(parent.as_fd(), &cname(path.name()), true) {
                Ok(()) => m.remove(EntryKind::Dir, &e.path)?,
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                    m.remove(EntryKind::Dir, &e.path)?;
                }
                Err(err) if err.raw_os_error() == Some(libc::ENOTEMPTY) => {}
                Err(err) => {
                    return Err(Error::Io {
                        op: "remove directory",
                        path: e.path.clone(),
                        source: err,
                    });
                }
            }
        }
        m.save()
    }
}

fn check_bpffs(fd: &OwnedFd, path: &str) -> Result<(), Error> {
    match fsys::fs_magic(fd) {
        Ok(BPF_FS_MAGIC) => Ok(()),
        Ok(_) => Err(Error::NotBpffs {
            path: path.to_owned(),
        }),
        Err(source) => Err(Error::Io {
            op: "fstatfs",
            path: path.to_owned(),
            source,
        }),
    }
}
