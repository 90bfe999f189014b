//! Snapshot files: the map specs of a running version, kept on disk so that the next
//! version can be compared with them.
//!
//! A snapshot is a self-describing JSON document:
//!
//! ```json
//! {
//!   "format": "handover-snapshot",
//!   "format_version": 1,
//!   "checksum": "sha256:<64 hex digits>",
//!   "snapshot": { "tool_version": "0.1.0", "objects": [ { "name", "sha256", "maps" } ] }
//! }
//! ```
//!
//! The checksum is the SHA-256 of `handover-snapshot/<format_version>\n` followed by
//! the exact text of the `snapshot` value, so a damaged body or a lowered version is
//! caught; a version above [`FORMAT_VERSION`] is refused before anything else is
//! read, since a newer writer may lay out the rest differently.
//!
//! Files are written atomically: a temporary file in the same directory, `fsync`,
//! `rename` over the target, `fsync` of the directory.

use std::path::{Path, PathBuf};

use handover_loader::{ReadError, WriteError, read_regular, write_regular};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::spec::digest::sha256_hex;
use crate::spec::model::MapModel;
use handover_uapi::Endian;

/// Value of the `format` field.
pub const FORMAT_NAME: &str = "handover-snapshot";
/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The largest snapshot file read: 64 MiB, some hundred times the snapshot of an
/// object with a thousand maps.
pub const MAX_SNAPSHOT_SIZE: u64 = 64 << 20;

/// The maps of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectModel {
    /// Object name (its file name).
    pub name: String,
    /// SHA-256 of the object file, lower-case hex.
    pub sha256: String,
    /// Byte order of the object's keys and values (`little` when absent: files
    /// written before it was recorded).
    #[serde(default = "little")]
    pub endian: Endian,
    /// Its maps, in object order.
    pub maps: Vec<MapModel>,
}

fn little() -> Endian {
    Endian::Little
}

/// The contents of a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Version of the tool that wrote it.
    pub tool_version: String,
    /// One entry per object.
    pub objects: Vec<ObjectModel>,
}

impl Snapshot {
    /// A snapshot of `objects`, stamped with this tool's version.
    #[must_use]
    pub fn new(objects: Vec<ObjectModel>) -> Snapshot {
        Snapshot {
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            objects,
        }
    }
}

/// Why bytes are not a readable snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The document ends early.
    #[error("the file ends early (truncated at byte {len}): rewrite it with `handover snapshot`")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// Not valid JSON, or a field is missing or of the wrong type.
    #[error("not a valid snapshot at line {line}, column {column}: {reason}")]
    Malformed {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the JSON reader found.
        reason: String,
    },
    /// Valid JSON, but not a snapshot.
    #[error("not a handover snapshot (format is {found:?}, expected \"{FORMAT_NAME}\")")]
    NotASnapshot {
        /// The `format` field found, if any.
        found: Option<String>,
    },
    /// Written by a newer version of the format.
    #[error(
        "snapshot format version {found} is newer than the newest this tool reads ({supported}): use a newer handover"
    )]
    NewerFormat {
        /// Version in the file.
        found: u64,
        /// Newest version this build reads.
        supported: u32,
    },
    /// A name appears twice where names identify entries.
    #[error("{what} appears more than once")]
    Duplicate {
        /// The repeated name.
        what: String,
    },
    /// The checksum does not match the contents.
    #[error(
        "checksum mismatch: the file says {expected}, the contents hash to {actual}; the file is damaged"
    )]
    ChecksumMismatch {
        /// Checksum stored in the file.
        expected: String,
        /// Checksum of the contents.
        actual: String,
    },
}

impl FormatError {
    fn from_json(e: &serde_json::Error, len: usize) -> FormatError {
        if e.classify() == serde_json::error::Category::Eof {
            FormatError::Truncated { len }
        } else {
            FormatError::Malformed {
                line: e.line(),
                column: e.column(),
                reason: e.to_string(),
            }
        }
    }
}

/// A snapshot file that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The file system refused.
    #[error("{action} snapshot {path}")]
    Io {
        /// What was being done (`reading`, `writing`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be read: missing, not a regular file, or over
    /// [`MAX_SNAPSHOT_SIZE`].
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The path to write names something other than a regular file (a device, a FIFO,
    /// a symbolic link, a directory), which a snapshot must not replace.
    #[error(
        "writing snapshot {path}: refused, it is {kind}, not a regular file: give the path of a new or regular file"
    )]
    NotRegular {
        /// The path, left as it was.
        path: PathBuf,
        /// What it is ([`file_kind`](handover_loader::file_kind)).
        kind: &'static str,
    },
    /// The file is not a readable snapshot.
    #[error("reading snapshot {path}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// The snapshot would not be readable once written (two objects of one name:
    /// give the objects distinct file names).
    #[error(
        "writing snapshot {path}: refused, it could not be read back (objects are told apart by file name: give each a distinct one)"
    )]
    Unreadable {
        /// The file, left as it was.
        path: PathBuf,
        /// What the reader would refuse.
        #[source]
        source: FormatError,
    },
}

#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    format_version: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    format: &'a str,
    format_version: u32,
    checksum: String,
    #[serde(borrow)]
    snapshot: &'a RawValue,
}

fn checksum(version: u32, body: &str) -> String {
    let mut data = format!("{FORMAT_NAME}/{version}\n").into_bytes();
    data.extend_from_slice(body.as_bytes());
    format!("sha256:{}", sha256_hex(&data))
}

/// Encodes a snapshot as the text of a snapshot file.
///
/// # Panics
/// Never: the model serialises to JSON without fail (no maps with non-string keys,
/// no floats).
#[must_use]
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    #[expect(clippy::expect_used, reason = "serialising plain structs cannot fail")]
    let body = serde_json::to_string_pretty(snapshot)
        .expect("snapshot serialises")
        // Indented to sit under the envelope's `snapshot` key; pretty JSON has line
        // breaks only between tokens, so this changes no value.
        .replace('\n', "\n  ");
    let sum = checksum(FORMAT_VERSION, &body);
    #[expect(clippy::expect_used, reason = "the body was produced by serde_json")]
    let raw = RawValue::from_string(body).expect("body is valid JSON");
    let envelope = Envelope {
        format: FORMAT_NAME,
        format_version: FORMAT_VERSION,
        checksum: sum,
        snapshot: &raw,
    };
    #[expect(clippy::expect_used, reason = "serialising plain structs cannot fail")]
    let mut out = serde_json::to_vec_pretty(&envelope).expect("envelope serialises");
    out.push(b'\n');
    out
}

/// Decodes the text of a snapshot file.
///
/// # Errors
/// One [`FormatError`] per way the bytes can fail: truncated, malformed, not a
/// snapshot, newer format version, checksum mismatch.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, FormatError> {
    let header: Header =
        serde_json::from_slice(bytes).map_err(|e| FormatError::from_json(&e, bytes.len()))?;
    if header.format.as_deref() != Some(FORMAT_NAME) {
        return Err(FormatError::NotASnapshot {
            found: header.format,
        });
    }
    match header.format_version {
        Some(v) if v > u64::from(FORMAT_VERSION) => {
            return Err(FormatError::NewerFormat {
                found: v,
                supported: FORMAT_VERSION,
            });
        }
        Some(v) if v >= 1 => {}
        _ => {
            return Err(FormatError::Malformed {
                line: 1,
                column: 1,
                reason: "format_version is missing or 0".to_owned(),
            });
        }
    }
    let envelope: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| FormatError::from_json(&e, bytes.len()))?;
    let actual = checksum(envelope.format_version, envelope.snapshot.get());
    if actual != envelope.checksum {
        return Err(FormatError::ChecksumMismatch {
            expected: envelope.checksum,
            actual,
        });
    }
    let snapshot: Snapshot = serde_json::from_str(envelope.snapshot.get())
        .map_err(|e| FormatError::from_json(&e, bytes.len()))?;
    check_names(&snapshot)?;
    Ok(snapshot)
}

/// Maps are matched by name, so a name may appear once per object, and an object
/// name once per snapshot.
fn check_names(snapshot: &Snapshot) -> Result<(), FormatError> {
    let mut objects = std::collections::HashSet::new();
    for o in &snapshot.objects {
        if !objects.insert(o.name.as_str()) {
            return Err(FormatError::Duplicate {
                what: format!("object `{}`", o.name),
            });
        }
        let mut maps = std::collections::HashSet::new();
        for m in &o.maps {
            if !maps.insert(m.name.as_str()) {
                return Err(FormatError::Duplicate {
                    what: format!("map `{}` in object `{}`", m.name, o.name),
                });
            }
        }
    }
    Ok(())
}

/// Reads and checks a snapshot file.
///
/// # Errors
/// [`SnapshotError::Io`] when the file cannot be read, [`SnapshotError::Format`] when
/// its contents are not a valid snapshot.
pub fn read_snapshot(path: &Path) -> Result<Snapshot, SnapshotError> {
    let bytes = read_regular(
        path,
        MAX_SNAPSHOT_SIZE,
        "snapshot files (MAX_SNAPSHOT_SIZE)",
    )?;
    decode(&bytes).map_err(|source| SnapshotError::Format {
        path: path.to_owned(),
        source,
    })
}

/// Writes a snapshot file atomically: the file holds either its old contents or the
/// whole new snapshot, even across a crash.
///
/// # Errors
/// [`SnapshotError::Unreadable`] for a snapshot [`read_snapshot`] would refuse
/// (nothing is written); [`SnapshotError::NotRegular`] when `path` exists and is not a
/// regular file (nothing is written); [`SnapshotError::Io`] naming the step that failed.
pub fn write_snapshot(path: &Path, snapshot: &Snapshot) -> Result<(), SnapshotError> {
    check_names(snapshot).map_err(|source| SnapshotError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let bytes = encode(snapshot);
    write_regular(path, &bytes).map_err(|e| match e {
        WriteError::NotRegular { path, kind } => SnapshotError::NotRegular { path, kind },
        WriteError::Io {
            action,
            path,
            source,
        } => SnapshotError::Io {
            action,
            path,
            source,
        },
        // WriteError is non-exhaustive: a new refusal is still a refusal to write.
        other => SnapshotError::Io {
            action: "writing",
            path: path.to_owned(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}
