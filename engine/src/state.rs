//! What the engine keeps in its state directory: the installed [`State`] (snapshot of
//! the map specs, pins, attachments, kernel ids) and, while an upgrade runs, its
//! [`Journal`]. Both are checksummed files replaced atomically (`files.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::files;
use crate::kernel::ObjRef;
use crate::options::{Attachment, Options};
use crate::plan::Plan;
use crate::step::Step;
use crate::upstream::MapModel;

/// One object of an installed set: enough to tell it again, not its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Its name in the set.
    pub name: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub size: usize,
}

/// A pinned object of the installed set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinned {
    /// Pin path under the pin root.
    pub pin: String,
    /// Kernel id of the object pinned there.
    pub id: u32,
}

/// An attachment of the installed set: its pinned link and the program it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// What was attached where.
    pub attachment: Attachment,
    /// Pin path of the link.
    pub pin: String,
    /// Link id.
    pub id: u32,
    /// Id of the program it runs.
    pub prog: u32,
}

/// An attachment of the installed set held by its cgroup without a link
/// (`BPF_PROG_ATTACH`): where, and the program the engine attached there. Nothing is
/// pinned for it; a restart asks the kernel (`BPF_PROG_QUERY`) whether the program is
/// still attached, and uninstall detaches exactly this program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedRecord {
    /// What was attached where (the cgroup path and the attach type).
    pub attachment: Attachment,
    /// The id of the cgroup when the program was attached (its directory's inode
    /// number): a cgroup removed and made again under the same path has another.
    pub cgroup_id: u64,
    /// Id of the program attached.
    pub prog: u32,
}

/// The installed set, as of the last commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Identity of the load ([`crate::identity`]).
    pub identity: String,
    /// The objects.
    pub objects: Vec<ObjectRecord>,
    /// The options.
    pub options: Options,
    /// Snapshot of every map's spec, by map key: what the next upgrade diffs against.
    pub models: Vec<MapModel>,
    /// Maps by key.
    pub maps: BTreeMap<String, Pinned>,
    /// Programs by name.
    pub programs: BTreeMap<String, Pinned>,
    /// Attachments by name.
    pub links: BTreeMap<String, LinkRecord>,
    /// Attachments held by their cgroup without a link, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attached: BTreeMap<String, AttachedRecord>,
    /// BTF objects loaded with the set (held by its maps and programs).
    pub btf: Vec<u32>,
}

impl State {
    /// Every kernel object of the installed set.
    #[must_use]
    pub fn objects(&self) -> Vec<ObjRef> {
        let mut v: Vec<ObjRef> = self.maps.values().map(|p| ObjRef::map(p.id)).collect();
        v.extend(self.programs.values().map(|p| ObjRef::prog(p.id)));
        v.extend(self.links.values().map(|l| ObjRef::link(l.id)));
        v.extend(self.btf.iter().map(|&id| ObjRef {
            kind: crate::kernel::Kind::Btf,
            id,
        }));
        v
    }
}

/// Objects created by the preflight of an upgrade, pinned at temporary pins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// New maps by key (reused maps are not here).
    pub maps: BTreeMap<String, ObjRef>,
    /// Every new program by name.
    pub programs: BTreeMap<String, ObjRef>,
    /// BTF loaded for the new set.
    pub btf: Vec<ObjRef>,
}

/// Where a step of the journal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Recorded before the step's first effect.
    Started,
    /// Recorded after its last.
    Done,
}

/// Which way an interrupted upgrade is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Towards the new set.
    Forward,
    /// Back to the old set.
    Back,
}

/// Entries moved for one map, per step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapCounts {
    /// Entries copied by the copy step.
    pub copied: u64,
    /// Entries carried by delta passes.
    pub delta: u64,
    /// Entries the reconcile added or changed.
    pub reconciled: u64,
    /// Entries the reconcile deleted.
    pub deleted: u64,
    /// Entries both versions changed, merged by rule.
    pub conflicts: u64,
    /// Microseconds from the last delta pass to the reconcile: an entry the old
    /// programs created in this window and the new ones deleted comes back (see the
    /// tombstone contract of the reconcile).
    #[serde(default)]
    pub window_us: u64,
    /// Entries old created that the reconcile did not add back because the new
    /// programs' tombstone map held their key (deleted by the new programs).
    #[serde(default)]
    pub tombstoned: u64,
    /// Entries the reconcile added back that fell in the window with no tombstone
    /// map to tell: either created by old and never seen by new (right), or created
    /// by old and deleted by new (brought back).
    #[serde(default)]
    pub ambiguous_adds: u64,
    /// Sockets the last pass after the switch carried without being able to tell
    /// them from the new programs' (a socket map of 4-byte values, whose cookies
    /// cannot be read): added back at keys the new map left empty, which the new
    /// programs may have emptied; and sockets the old programs removed stay.
    #[serde(default)]
    pub sockets_unsure: u64,
    /// Patches and deletes the reconcile merged again because the new programs wrote
    /// the entry between its read and the change (their write kept).
    #[serde(default)]
    pub rewritten: u64,
}

/// The write-ahead journal of one upgrade.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    /// Transaction id (the new identity and a start time).
    pub tx: String,
    /// The plan being executed.
    pub plan: Plan,
    /// The installed state before the upgrade (`None`: fresh install).
    pub old: Option<State>,
    /// What the preflight created (filled as the preflight records it).
    pub staged: Staged,
    /// Links created by this upgrade (fresh attachments and attach-then-detach
    /// switches), by attachment name.
    pub new_links: BTreeMap<String, ObjRef>,
    /// Cgroup ids of the attachments this upgrade made or switched without a link,
    /// by attachment name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attached: BTreeMap<String, u64>,
    /// Steps, in order, with their phase.
    pub steps: Vec<(Step, Phase)>,
    /// Which way it goes.
    pub direction: Direction,
    /// Per-map counts.
    pub counts: BTreeMap<String, MapCounts>,
    /// Monotonic nanoseconds of the first and last switch, for the report's window.
    pub switch_window_ns: Option<(u64, u64)>,
    /// Maps whose reconcile is done: one interrupted in the middle of the reconcile
    /// runs it again for the others only.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub reconciled: BTreeSet<String>,
    /// Entries per batch of the copy and the reconcile, when the apply chose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
}

impl Journal {
    /// Whether `step` was recorded as done.
    #[must_use]
    pub fn done(&self, step: Step) -> bool {
        self.steps.contains(&(step, Phase::Done))
    }

    /// Whether `step` was recorded as started.
    #[must_use]
    pub fn started(&self, step: Step) -> bool {
        self.steps.iter().any(|(s, _)| *s == step)
    }

    /// The way recovery finishes it: forward once the switch started (unless an
    /// abort turned it back), back before.
    #[must_use]
    pub fn recovery_direction(&self) -> Direction {
        match self.direction {
            Direction::Back => Direction::Back,
            Direction::Forward if self.steps.iter().any(|(s, _)| s.point_of_no_return()) => {
                Direction::Forward
            }
            Direction::Forward => Direction::Back,
        }
    }
}

/// The files of a state directory.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub(crate) fn new(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            op: "create state directory",
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// A state directory to read only: not created when it does not exist (its files
    /// are then absent).
    pub(crate) fn existing(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.json")
    }

    pub(crate) fn read_state(&self) -> Result<Option<State>, Error> {
        files::read_checked(&self.state_path())
    }

    pub(crate) fn write_state(&self, state: &State) -> Result<(), Error> {
        files::write_checked(&self.state_path(), state)
    }

    pub(crate) fn remove_state(&self) -> Result<(), Error> {
        files::remove(&self.state_path())
    }

    pub(crate) fn read_journal(&self) -> Result<Option<Journal>, Error> {
        files::read_checked(&self.journal_path())
    }

    pub(crate) fn write_journal(&self, journal: &Journal) -> Result<(), Error> {
        files::write_checked(&self.journal_path(), journal)
    }

    pub(crate) fn remove_journal(&self) -> Result<(), Error> {
        files::remove(&self.journal_path())
    }
}
