//! Where the old daemon listens: a socket file in a private directory, or a name in
//! the abstract namespace of the network namespace.

use std::fmt;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::sys;

/// The address of a handoff socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A socket file. Its directory must be owned by this user and closed to group
    /// and others (mode 0700 or stricter); anything else is refused.
    Path(PathBuf),
    /// A name in the abstract namespace: no file, visible to every process of this
    /// network namespace, so the peer credential check is what keeps others out.
    Abstract(String),
}

impl Address {
    /// `@name` is an abstract name; anything else a path.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s.strip_prefix('@') {
            Some(name) => Self::Abstract(name.to_owned()),
            None => Self::Path(PathBuf::from(s)),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

/// An address that is unsafe to use or cannot be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The socket path has no parent directory or no file name.
    #[error("{path}: a handoff socket path needs a directory and a file name")]
    NoDirectory {
        /// The path.
        path: PathBuf,
    },
    /// The directory cannot be inspected.
    #[error("{dir}: cannot inspect the handoff directory: {source}")]
    Inspect {
        /// The directory.
        dir: PathBuf,
        /// The failed call.
        #[source]
        source: io::Error,
    },
    /// The directory is not a real directory (a symlink, a file).
    #[error("{dir}: the handoff directory is not a directory (symlinks are refused)")]
    NotADirectory {
        /// The directory.
        dir: PathBuf,
    },
    /// Someone else owns the directory.
    #[error(
        "{dir}: the handoff directory is owned by uid {owner}, not by us (uid {us}); refusing it"
    )]
    WrongOwner {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        us: u32,
    },
    /// Group or others have access.
    #[error(
        "{dir}: the handoff directory has mode {mode:04o}; it must be 0700 (no access for group or others)"
    )]
    OpenMode {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Something other than a socket sits at the path.
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A live server already listens there.
    #[error("{address}: another process serves handoffs here; take over from it first")]
    InUse {
        /// The address.
        address: Address,
    },
    /// A socket call failed.
    #[error("{address}: {doing}: {source}")]
    Io {
        /// The address.
        address: Address,
        /// What was being done.
        doing: &'static str,
        /// The failed call.
        #[source]
        source: io::Error,
    },
}

/// Checks the directory of a socket path: a real directory, ours, mode 0700.
pub(crate) fn check_directory(path: &Path) -> Result<&Path, AddressError> {
    let dir = match (path.parent(), path.file_name()) {
        (Some(d), Some(_)) if !d.as_os_str().is_empty() => d,
        _ => {
            return Err(AddressError::NoDirectory {
                path: path.to_owned(),
            });
        }
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|source| AddressError::Inspect {
        dir: dir.to_owned(),
        source,
    })?;
    if !meta.file_type().is_dir() {
        return Err(AddressError::NotADirectory {
            dir: dir.to_owned(),
        });
    }
    let us = sys::euid();
    if meta.uid() != us {
        return Err(AddressError::WrongOwner {
            dir: dir.to_owned(),
            owner: meta.uid(),
            us,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(AddressError::OpenMode {
            dir: dir.to_owned(),
            mode,
        });
    }
    Ok(dir)
}

fn abstract_addr(name: &str) -> io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(name.as_bytes())
}

/// Connects to `address` (after checking a path's directory).
pub(crate) fn connect(address: &Address) -> Result<UnixStream, ConnectError> {
    match address {
        Address::Path(path) => {
            check_directory(path).map_err(ConnectError::Unsafe)?;
            UnixStream::connect(path).map_err(ConnectError::Io)
        }
        Address::Abstract(name) => {
            let addr = abstract_addr(name).map_err(ConnectError::Io)?;
            UnixStream::connect_addr(&addr).map_err(ConnectError::Io)
        }
    }
}

pub(crate) enum ConnectError {
    Unsafe(AddressError),
    Io(io::Error),
}

/// Identity of the socket file we bound, so that we remove only our own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

pub(crate) fn file_id(path: &Path) -> Option<FileId> {
    std::fs::symlink_metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

fn io_error(address: &Address, doing: &'static str, source: io::Error) -> AddressError {
    AddressError::Io {
        address: address.clone(),
        doing,
        source,
    }
}

/// Binds a fresh server at `address`. A socket file nobody listens on (left by a
/// crash) is replaced; a live one is refused.
pub(crate) fn bind(address: &Address) -> Result<(UnixListener, Option<FileId>), AddressError> {
    let io = |doing, source| io_error(address, doing, source);
    match address {
        Address::Path(path) => {
            check_directory(path)?;
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(AddressError::NotASocket { path: path.clone() });
                }
                match UnixStream::connect(path) {
                    Ok(_) => {
                        return Err(AddressError::InUse {
                            address: address.clone(),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::info!(path = %path.display(), "removing a stale handoff socket");
                        std::fs::remove_file(path)
                            .map_err(|e| io("removing the stale socket", e))?;
                    }
                    Err(e) => return Err(io("probing the existing socket", e)),
                }
            }
            let listener = UnixListener::bind(path).map_err(|e| io("binding", e))?;
            Ok((listener, file_id(path)))
        }
        Address::Abstract(name) => {
            let addr = abstract_addr(name).map_err(|e| io("building the abstract address", e))?;
            match UnixListener::bind_addr(&addr) {
                Ok(l) => Ok((l, None)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(AddressError::InUse {
                    address: address.clone(),
                }),
                Err(e) => Err(io("binding", e)),
            }
        }
    }
}

/// Binds at `address` after a take-over, replacing the old daemon's socket: a path
/// is bound under a temporary name and renamed over the old one (atomic: a
/// connecting process finds one or the other); an abstract name is retried while
/// the old process still holds it, until `wait` has passed.
pub(crate) fn bind_replacing(
    address: &Address,
    wait: std::time::Duration,
) -> Result<(UnixListener, Option<FileId>), AddressError> {
    let io = |doing, source| io_error(address, doing, source);
    match address {
        Address::Path(path) => {
            let dir = check_directory(path)?;
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(path.file_name().unwrap_or_default());
            tmp_name.push(format!(".{}.new", std::process::id()));
            let tmp = dir.join(tmp_name);
            let _ = std::fs::remove_file(&tmp);
            let listener = UnixListener::bind(&tmp).map_err(|e| io("binding", e))?;
            if let Err(e) = std::fs::rename(&tmp, path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(io("renaming the new socket into place", e));
            }
            Ok((listener, file_id(path)))
        }
        Address::Abstract(_) => {
            let until = std::time::Instant::now() + wait;
            loop {
                match bind(address) {
                    Err(AddressError::InUse { .. }) if std::time::Instant::now() < until => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    other => return other,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tempdir(mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "handoff-addr-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn parse_tells_abstract_from_path() {
        assert_eq!(Address::parse("@x"), Address::Abstract("x".into()));
        assert_eq!(
            Address::parse("/run/x.sock"),
            Address::Path("/run/x.sock".into())
        );
        assert_eq!(Address::parse("@x").to_string(), "@x");
    }

    #[test]
    fn an_open_directory_is_refused() {
        let dir = tempdir(0o755);
        let err = bind(&Address::Path(dir.join("s"))).unwrap_err();
        assert!(
            matches!(err, AddressError::OpenMode { mode: 0o755, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("must be 0700"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let dir = tempdir(0o700);
        let link = dir.with_extension("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = bind(&Address::Path(link.join("s"))).unwrap_err();
        assert!(matches!(err, AddressError::NotADirectory { .. }), "{err}");
        std::fs::remove_file(link).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_and_a_file_are_refused() {
        let dir = tempdir(0o700);
        let path = dir.join("s");
        let addr = Address::Path(path.clone());
        let (live, _) = bind(&addr).unwrap();
        assert!(matches!(bind(&addr), Err(AddressError::InUse { .. })));
        drop(live); // the file stays: stale now
        let (_again, id) = bind(&addr).unwrap();
        assert_eq!(id, file_id(&path));
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            bind(&Address::Path(file)),
            Err(AddressError::NotASocket { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
