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
        let io = |source| ObjectError::Io {
            path: path.clone(),
            source,
        };
        // The type is checked before opening: opening a FIFO for reading blocks until a
        // writer comes.
        let kind = std::fs::metadata(&path).map_err(io)?.file_type();
        if !kind.is_file() {
            let kind = if kind.is_fifo() {
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
            };
            return Err(ObjectError::NotRegular { path, kind });
        }
        let file = File::open(&path).map_err(io)?;
        // The file may have been replaced between the check and the open.
        let meta = file.metadata().map_err(io)?;
        if !meta.file_type().is_file() {
            return Err(ObjectError::NotRegular {
                path,
                kind: "not a regular file",
            });
        }
        let too_large = |size| ObjectError::TooLarge {
            path: path.clone(),
            size,
            limit,
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
