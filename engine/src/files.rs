//! Files of the state directory: every one checksummed and replaced atomically, and
//! the exclusive lock that keeps two daemons from interleaving.
//!
//! A file is one header line `handover-sha256 HEX\n` followed by its JSON body; the
//! checksum covers the body and is verified before anything in it is trusted. A write
//! goes to `NAME.tmp`, is fsynced, renamed over `NAME`, and the directory is fsynced,
//! so a crash leaves either the old file or the new one, never a torn one.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::Error;

const MAGIC: &str = "handover-sha256 ";

/// Hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

/// Writes `value` to `path` with its checksum, atomically and durably.
pub(crate) fn write_checked<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| Error::Corrupt {
        path: path.to_owned(),
        reason: format!("cannot encode: {e}"),
    })?;
    let mut bytes = format!("{MAGIC}{}\n", sha256_hex(&body)).into_bytes();
    bytes.extend_from_slice(&body);
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file: fsync, rename, fsync of the
/// directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temp_path(path);
    {
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    sync_dir(path)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

fn sync_dir(path: &Path) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Reads and verifies a file written by [`write_checked`]; `None` when it does not
/// exist.
pub(crate) fn read_checked<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                op: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no checksum header line".into()))?;
    let (header, rest) = bytes.split_at(newline);
    let body = rest.get(1..).unwrap_or_default();
    let header = std::str::from_utf8(header).map_err(|_| corrupt("header is not text".into()))?;
    let Some(expected) = header.strip_prefix(MAGIC) else {
        return Err(corrupt(format!(
            "header {header:?} does not start with {MAGIC:?}"
        )));
    };
    let actual = sha256_hex(body);
    if expected != actual {
        return Err(corrupt(format!(
            "checksum mismatch: header says {expected}, body hashes to {actual}; \
             the file was changed or torn and is not trusted"
        )));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| corrupt(format!("body does not decode: {e}")))
}

/// Removes `path` durably; absent is fine.
pub(crate) fn remove(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            op: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

/// How [`Engine::open`](crate::Engine::open) waits for the state directory's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once when another process holds it.
    Refuse,
    /// Wait at most this long.
    Timeout(Duration),
}

/// The exclusive lock on a state directory (`flock` on its `lock` file), held for the
/// life of the engine.
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: File,
}

impl StateLock {
    /// Whether another process holds the lock of `dir` now. The lock file is neither
    /// created nor kept locked: the probe takes the lock and drops it at once.
    pub(crate) fn held_by_other(dir: &Path) -> bool {
        let Ok(file) = OpenOptions::new().write(true).open(dir.join("lock")) else {
            return false;
        };
        matches!(file.try_lock(), Err(TryLockError::WouldBlock))
    }

    pub(crate) fn acquire(dir: &Path, wait: LockWait) -> Result<Self, Error> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        let deadline = match wait {
            LockWait::Refuse => None,
            LockWait::Timeout(t) => Some(Instant::now() + t),
        };
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) => {
                    if deadline.is_none_or(|d| Instant::now() >= d) {
                        return Err(Error::Locked { path });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::Error(source)) => {
                    return Err(Error::Io {
                        op: "lock",
                        path,
                        source,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("handover-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_checked_file_reads_back_and_a_changed_byte_is_refused() {
        let d = dir("checked");
        let p = d.join("state");
        write_checked(&p, &vec![1u32, 2, 3]).unwrap();
        assert_eq!(read_checked::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2, 3]));
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 3;
        if let Some(b) = bytes.get_mut(last) {
            *b ^= 1;
        }
        fs::write(&p, &bytes).unwrap();
        let err = read_checked::<Vec<u32>>(&p).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        fs::write(&p, b"[1,2,3]").unwrap();
        assert!(read_checked::<Vec<u32>>(&p).is_err());
        assert_eq!(read_checked::<Vec<u32>>(&d.join("absent")).unwrap(), None);
        assert!(!temp_path(&p).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let d = dir("lock");
        let first = StateLock::acquire(&d, LockWait::Refuse).unwrap();
        let err = StateLock::acquire(&d, LockWait::Timeout(Duration::from_millis(60)));
        assert!(matches!(err, Err(Error::Locked { .. })), "{err:?}");
        drop(first);
        StateLock::acquire(&d, LockWait::Refuse).unwrap();
        fs::remove_dir_all(&d).unwrap();
    }
}
