//! The record of every pin and directory handover created under a pin root.
//!
//! The manifest lives outside the pin root, in a regular directory chosen by the
//! caller (a state directory such as `/var/lib/NAME`): bpffs holds only pinned
//! objects and directories and cannot store a regular file. It is JSON, written
//! atomically (a sibling temporary file, `fsync`, `rename`, `fsync` of the directory),
//! and it is written *before* the pin or directory it announces is created, so a crash
//! at any point leaves nothing of ours unrecorded.
//!
//! A pin entry names its temporary and rollback pins explicitly: they are derived from
//! the target name, so recording the target once covers every replacement of it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, PinPath};

/// Format version of the manifest file.
const VERSION: u32 = 1;

/// What a manifest entry created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A directory (created with mode 0700).
    Dir,
    /// A pin, with its temporary and rollback pins.
    Pin,
}

/// One thing handover created under the pin root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// Its path relative to the pin root.
    pub path: String,
    /// For pins: the temporary pin replacements go through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary: Option<String>,
    /// For pins: the pin that keeps the previous object after an exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

impl Entry {
    pub(crate) fn dir(path: &str) -> Self {
        Self {
            kind: EntryKind::Dir,
            path: path.to_owned(),
            temporary: None,
            rollback: None,
        }
    }

    pub(crate) fn pin(path: &PinPath) -> Self {
        let with = |name: String| {
            let mut dirs = path.dirs().to_vec();
            dirs.push(name);
            dirs.join("/")
        };
        Self {
            kind: EntryKind::Pin,
            path: path.to_string(),
            temporary: Some(with(path.temp_name())),
            rollback: Some(with(path.rollback_name())),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    /// The pin root these paths are relative to, for people reading the file.
    root: String,
    entries: Vec<Entry>,
}

/// The manifest of one pin root, in memory and on disk.
#[derive(Debug)]
pub struct Manifest {
    path: PathBuf,
    root: String,
    entries: Vec<Entry>,
}

impl Manifest {
    /// Reads the manifest at `path`, or starts an empty one if there is none.
    ///
    /// # Errors
    /// The file cannot be read, is not a manifest, was written for another pin root,
    /// or holds a path that is not a valid pin path.
    pub fn load(path: &Path, root: &Path) -> Result<Self, Error> {
        let root = root.display().to_string();
        let bad = |reason: String| Error::Manifest {
            path: path.display().to_string(),
            reason,
        };
        let entries = match fs::read(path) {
            Ok(bytes) => {
                let file: File = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                if file.version != VERSION {
                    return Err(bad(format!("version {} is not {VERSION}", file.version)));
                }
                if file.root != root {
                    return Err(bad(format!(
                        "it records pins of {:?}, not {root:?}",
                        file.root
                    )));
                }
                for e in &file.entries {
                    // A damaged manifest must not make uninstall touch anything else.
                    PinPath::new(&e.path).map_err(|err| bad(err.to_string()))?;
                    if e.kind == EntryKind::Pin && *e != Entry::pin(&PinPath::new(&e.path)?) {
                        return Err(bad(format!(
                            "entry {:?} has foreign temporary names",
                            e.path
                        )));
                    }
                }
                file.entries
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            root,
            entries,
        })
    }

    /// The recorded entries, in creation order.
    #[must_use]
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Records `entry` (if new) and writes the manifest; whether it was new.
    pub(crate) fn add(&mut self, entry: Entry) -> Result<bool, Error> {
        if self.entries.contains(&entry) {
            return Ok(false);
        }
        self.entries.push(entry);
        self.save().map(|()| true)
    }

    /// Forgets the entry of `kind` at `path` and writes the manifest. A directory
    /// and a pin may be recorded at one path (a pin that failed on our directory);
    /// each is forgotten on its own.
    pub(crate) fn remove(&mut self, kind: EntryKind, path: &str) -> Result<(), Error> {
        let before = self.entries.len();
        self.entries.retain(|e| e.kind != kind || e.path != path);
        if self.entries.len() == before {
            Ok(())
        } else {
            self.save()
        }
    }

    /// Writes the manifest atomically.
    pub(crate) fn save(&self) -> Result<(), Error> {
        let io = |op: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| Error::Io { op, path, source }
        };
        let file = File {
            version: VERSION,
            root: self.root.clone(),
            entries: self.entries.clone(),
        };
        let mut text = serde_json::to_vec_pretty(&file).map_err(|e| Error::Manifest {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        // Owner-only, and never through a symlink planted at the temporary name.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(&text).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io("rename into place", &self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("fsync", dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_at_the_temporary_manifest_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("handover-manifest-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "keep").unwrap();
        let path = dir.join("pins.json");
        std::os::unix::fs::symlink(&victim, dir.join("pins.json.tmp")).unwrap();
        let mut m = Manifest::load(&path, Path::new("/sys/fs/bpf/x")).unwrap();
        let err = m.add(Entry::dir("a")).unwrap_err();
        let text = err.to_string();
        let victim_after = fs::read_to_string(&victim).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(text.contains("pins.json.tmp"), "{text}");
        assert_eq!(victim_after, "keep");
    }

    #[test]
    fn the_manifest_is_written_owner_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("handover-manifest-rw-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pins.json");
        let root = Path::new("/sys/fs/bpf/x");
        let mut m = Manifest::load(&path, root).unwrap();
        assert!(m.add(Entry::pin(&PinPath::new("a/b").unwrap())).unwrap());
        assert!(!m.add(Entry::pin(&PinPath::new("a/b").unwrap())).unwrap());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let again = Manifest::load(&path, root).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode, 0o600);
        assert_eq!(again.entries(), m.entries());
    }
}
