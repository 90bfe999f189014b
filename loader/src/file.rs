//! Objects read from files, whole and bounded.
//!
//! The file is read into memory (not mapped: a mapped file that another process
//! truncates raises `SIGBUS`, and one that changes under a `&[u8]` breaks the slice's
//! guarantee). Only regular files are read, up to [`MAX_OBJECT_SIZE`] bytes, so a FIFO
//! without a writer, a device such as `/dev/zero` or a huge sparse file is refused
//! with an error instead of hanging or filling memory.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::ObjectError;
use crate::object::{Object, ObjectOptions};

/// The largest BPF object file [`ObjectFile::open`] reads: 256 MiB, far above any real
/// object (the largest in common use are a few MiB).
pub const MAX_OBJECT_SIZE: u64 = 256 << 20;

/// A BPF object file read into memory; [`ObjectFile::parse`] borrows from it.
#[derive(Debug)]
pub struct ObjectFile {
    path: PathBuf,
    data: Vec<u8>,
}

impl ObjectFile {
    /// Reads `path`, a regular file of at most [`MAX_OBJECT_SIZE`] bytes.
    ///
    /// # Errors
    /// [`ObjectError::Io`] if the file cannot be opened or read,
    /// [`ObjectError::NotRegular`] for a FIFO, device, socket or directory,
    /// [`ObjectError::TooLarge`] past the limit.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ObjectError> {
        Self::open_limited(path, MAX_OBJECT_SIZE)
    }

    fn open_limited(path: impl AsRef<Path>, limit: u64) -> Result<Self, ObjectError> {
        let path = path.as_ref().to_path_buf();
        let data = read_regular(&path, limit, "BPF object files (MAX_OBJECT_SIZE)").map_err(
            |e| match e {
                ReadError::Io { path, source } => ObjectError::Io { path, source },
                ReadError::NotRegular { path, kind } => ObjectError::NotRegular { path, kind },
                ReadError::TooLarge {
                    path, size, limit, ..
                } => ObjectError::TooLarge { path, size, limit },
            },
        )?;
        Ok(Self { path, data })
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Parses the object; see [`Object::parse`].
    ///
    /// # Errors
    /// As [`Object::parse`].
    pub fn parse(&self) -> Result<Object<'_>, ObjectError> {
        Object::parse(&self.data)
    }

    /// Parses the object with options; see [`Object::parse_with`].
    ///
    /// # Errors
    /// As [`Object::parse`].
    pub fn parse_with(&self, options: &ObjectOptions) -> Result<Object<'_>, ObjectError> {
        Object::parse_with(&self.data, options)
    }
}

/// A file that [`read_regular`] did not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path names a FIFO, a device, a socket or a directory.
    #[error("{path}: not a regular file ({kind})")]
    NotRegular {
        /// The path given.
        path: PathBuf,
        /// What it is instead ([`file_kind`]).
        kind: &'static str,
    },
    /// The file is larger than the limit for its kind.
    #[error("{path}: {size} bytes is larger than the {limit}-byte limit on {what}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, or the bytes read before the limit was passed.
        size: u64,
        /// The limit.
        limit: u64,
        /// What the limit is for, with its constant's name.
        what: &'static str,
    },
}

/// What a file type is, in words: `a regular file`, `a FIFO`, `a symbolic link`...
#[must_use]
pub fn file_kind(kind: std::fs::FileType) -> &'static str {
    if kind.is_file() {
        "a regular file"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// Reads the regular file at `path` whole, refusing anything else and anything larger
/// than `limit` bytes; `what` names the limit in the error (`snapshot files
/// (MAX_SNAPSHOT_SIZE)`). Every untrusted file the workspace reads goes through here.
///
/// # Errors
/// [`ReadError`] naming the path: unreadable, not a regular file, or over the limit.
pub fn read_regular(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    // The type is checked before opening: opening a FIFO for reading blocks until a
    // writer comes.
    let kind = std::fs::metadata(path).map_err(io)?.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(kind),
        });
    }
    let file = File::open(path).map_err(io)?;
    // The file may have been replaced between the check and the open.
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(meta.file_type()),
        });
    }
    let too_large = |size| ReadError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit,
        what,
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // Read one byte past the limit, so that a file that grew is refused too.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(io)?;
    let read = u64::try_from(data.len()).unwrap_or(u64::MAX);
    if read > limit {
        return Err(too_large(read));
    }
    Ok(data)
}

/// A file that [`write_regular`] did not write; the path is left as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The path names something other than a regular file (a device, a FIFO, a
    /// symbolic link, a directory), which an output must not replace.
    #[error(
        "{path}: refused, it is {kind}, not a regular file: give the path of a new or regular file"
    )]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is ([`file_kind`]).
        kind: &'static str,
    },
    /// The file system refused.
    #[error("{action} {path}")]
    Io {
        /// What was being done (`creating temporary file for`, `renaming into place`...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn refuse_non_regular(path: &Path) -> Result<(), WriteError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => Err(WriteError::NotRegular {
            path: path.to_owned(),
            kind: file_kind(meta.file_type()),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(WriteError::Io {
            action: "checking",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `bytes` to `path` atomically and durably: the file holds either its old
/// contents or all of `bytes`, even across a crash. `path` must be a new path or a
/// regular file: the rename that puts the file in place would replace a device
/// node, a FIFO or a symbolic link itself. Every output file of the workspace is
/// written through here.
///
/// # Errors
/// [`WriteError::NotRegular`] (nothing is written), [`WriteError::Io`] naming the step
/// that failed.
pub fn write_regular(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| WriteError::Io {
        action: "naming",
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let io = |action: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| WriteError::Io {
            action,
            path: p,
            source,
        }
    };
    refuse_non_regular(path)?;
    let result = (|| {
        // create_new: never write through a file or symlink someone else put there.
        let create = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
        };
        let mut f = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Left by an earlier process that had the same pid and died mid-write.
                std::fs::remove_file(&tmp).and_then(|()| create())
            }
            other => other,
        }
        .map_err(io("creating temporary file for", &tmp))?;
        f.write_all(bytes).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        // Checked again just before the rename, which would replace whatever is there.
        refuse_non_regular(path)?;
        std::fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the directory of", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused_by_kind() {
        let err = ObjectFile::open("/dev/zero").unwrap_err();
        assert!(
            matches!(
                err,
                ObjectError::NotRegular {
                    kind: "a character device",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/dev/zero"), "{err}");
        let err = ObjectFile::open("/").unwrap_err();
        assert!(matches!(
            err,
            ObjectError::NotRegular {
                kind: "a directory",
                ..
            }
        ));

        let dir = std::env::temp_dir().join(format!("handover-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if status.is_ok_and(|s| s.success()) {
            // Without a writer, opening would block: the check comes first.
            let err = ObjectFile::open(&fifo).unwrap_err();
            assert!(
                matches!(err, ObjectError::NotRegular { kind: "a FIFO", .. }),
                "{err}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_over_the_limit_is_refused_naming_the_limit() {
        let dir = std::env::temp_dir().join(format!("handover-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.o");
        std::fs::write(&path, [0u8; 100]).unwrap();
        let err = ObjectFile::open_limited(&path, 64).unwrap_err();
        assert!(
            matches!(
                err,
                ObjectError::TooLarge {
                    size: 100,
                    limit: 64,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("MAX_OBJECT_SIZE"), "{err}");
        let ok = ObjectFile::open_limited(&path, 100).unwrap();
        assert_eq!(ok.data().len(), 100);
        // An empty file reads as no bytes.
        std::fs::write(&path, []).unwrap();
        assert!(ObjectFile::open(&path).unwrap().data().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
