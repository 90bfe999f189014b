//! The narrow interface through which the executor acts on the kernel: [`Kernel`].
//!
//! Everything the executor does to the kernel is one of these calls, so the same
//! executor and recovery run against the real kernel ([`RealKernel`](crate::RealKernel))
//! and against an in-memory model ([`FakeKernel`](crate::FakeKernel)) that the crash
//! tests drive through every interleaving of crash points.
//!
//! Objects are named by kernel id ([`ObjRef`]); the implementation keeps the
//! descriptors it opened or created for this process (a *hold*). A hold is dropped by
//! [`Kernel::release`] or when the process ends: an object with no pin, no hold and no
//! other object referring to it is freed by the kernel, which is what makes unpinned
//! staging objects vanish when a daemon is killed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::migrate::{MapAccess, Patcher, SocketReport, ValueFields};
use crate::options::{AttachPoint, Options};

/// What kind of kernel object an id names (ids are per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A map.
    Map,
    /// A program.
    Prog,
    /// A link.
    Link,
    /// A BTF object.
    Btf,
}

/// A kernel object by kind and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjRef {
    /// Its kind.
    pub kind: Kind,
    /// Its kernel-wide id.
    pub id: u32,
}

impl ObjRef {
    /// A map id.
    #[must_use]
    pub const fn map(id: u32) -> Self {
        Self {
            kind: Kind::Map,
            id,
        }
    }
    /// A program id.
    #[must_use]
    pub const fn prog(id: u32) -> Self {
        Self {
            kind: Kind::Prog,
            id,
        }
    }
    /// A link id.
    #[must_use]
    pub const fn link(id: u32) -> Self {
        Self {
            kind: Kind::Link,
            id,
        }
    }
}

impl fmt::Display for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Map => "map",
            Kind::Prog => "prog",
            Kind::Link => "link",
            Kind::Btf => "btf",
        };
        write!(f, "{kind} {}", self.id)
    }
}

/// One BPF object file of a daemon's set, as bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectSource {
    /// Its name in the set (the file name, usually); part of the identity.
    pub name: String,
    /// The ELF bytes.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for ObjectSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectSource")
            .field("name", &self.name)
            .field("bytes", &format_args!("{} bytes", self.bytes.len()))
            .finish()
    }
}

impl ObjectSource {
    /// An object named `name` with `bytes`.
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
        }
    }
}

/// What [`Kernel::load`] created for an object set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedSet {
    /// Every map of the set by its key ([`crate::map_key`]), reused or created.
    pub maps: BTreeMap<String, ObjRef>,
    /// Every program by name.
    pub programs: BTreeMap<String, ObjRef>,
    /// BTF objects loaded for the set.
    pub btf: Vec<ObjRef>,
}

/// Facts about the running kernel that the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFacts {
    /// Page size (ring buffer sizes).
    pub page_size: u32,
    /// Possible CPUs (per-CPU value geometry).
    pub possible_cpus: u32,
    /// Whether bpffs renames can exchange two pins atomically (`RENAME_EXCHANGE`).
    pub rename_exchange: bool,
    /// Whether the kernel has tcx links (`BPF_TCX_INGRESS`/`BPF_TCX_EGRESS`, 6.6),
    /// probed: without them tc attachments are refused by the plan.
    pub tcx_links: bool,
    /// Whether the kernel runs the generated `iter/sockmap` program that carries the
    /// sockets of a sockmap or sockhash into a new map, probed by attaching it to a
    /// throwaway sockmap (5.10 with BTF): without it their entries are lost on a
    /// recreate.
    pub sockmap_iter: bool,
    /// Whether the kernel has perf-event links (`BPF_LINK_CREATE` with
    /// `BPF_PERF_EVENT`, 5.15), probed: kprobe and uprobe attachments need them to
    /// outlive the daemon, and are refused by the plan without them.
    pub perf_links: bool,
    /// Whether the kernel has the `kprobe` PMU (`/sys/bus/event_source/devices/kprobe`,
    /// `CONFIG_KPROBE_EVENTS`): without it kprobe attachments are refused by the plan.
    pub kprobes: bool,
    /// Whether the kernel has the `uprobe` PMU (`CONFIG_UPROBE_EVENTS`): without it
    /// uprobe attachments are refused by the plan.
    pub uprobes: bool,
}

/// A kernel call that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A compare-and-swap found another program than the expected one.
    #[error("{what}: runs {actual:?} rather than the expected {expected}")]
    Mismatch {
        /// The attachment.
        what: String,
        /// The program id expected.
        expected: u32,
        /// The program id found (`None`: detached).
        actual: Option<u32>,
    },
    /// Something is pinned where a new pin was to go.
    #[error("{path} is pinned already")]
    Exists {
        /// The pin path.
        path: String,
    },
    /// An object or pin that should exist does not.
    #[error("{what} does not exist")]
    Missing {
        /// What was looked for.
        what: String,
    },
    /// The kernel has no such operation for this object (`BPF_LINK_DETACH` of a
    /// tracing, raw tracepoint or perf-event link).
    #[error("{what}: the kernel cannot do this for it")]
    Unsupported {
        /// What was being done.
        what: String,
    },
    /// Any other refusal, with its cause.
    #[error("{op}: {source}")]
    Failed {
        /// What was being done.
        op: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl KernelError {
    /// A failure of `op` caused by `source`.
    pub fn failed(
        op: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Failed {
            op: op.into(),
            source: Box::new(source),
        }
    }
}

/// The kernel as the executor sees it. Pin paths are relative to the pin root.
pub trait Kernel {
    /// Page size, CPUs and probed features.
    fn facts(&mut self) -> KernelFacts;

    /// Loads an object set: every map (taking those in `reuse` instead of creating
    /// them; program arrays are never in it), every program verified against that map
    /// set, program arrays filled with the set's programs. Returns holds on all of it.
    ///
    /// # Errors
    /// A map or program the kernel refuses; nothing created is kept.
    fn load(
        &mut self,
        objects: &[ObjectSource],
        options: &Options,
        reuse: &BTreeMap<String, ObjRef>,
    ) -> Result<LoadedSet, KernelError>;

    /// Opens the object pinned at `path` and holds it; `None` when nothing is there.
    ///
    /// # Errors
    /// The pin cannot be read.
    fn get(&mut self, path: &str) -> Result<Option<ObjRef>, KernelError>;

    /// Pins a held object at `path`, which must be free ([`KernelError::Exists`]).
    ///
    /// # Errors
    /// The path is taken or the pin fails.
    fn pin(&mut self, object: ObjRef, path: &str) -> Result<(), KernelError>;

    /// Pins a held object at `path` atomically in place of what is there, keeping the
    /// previous object at the path's rollback pin until [`Kernel::drop_rollback`].
    ///
    /// # Errors
    /// The pin fails; `path` is unchanged then.
    fn exchange(&mut self, object: ObjRef, path: &str) -> Result<(), KernelError>;

    /// Removes the rollback pin [`Kernel::exchange`] kept for `path`, if any.
    ///
    /// # Errors
    /// The unpin fails.
    fn drop_rollback(&mut self, path: &str) -> Result<(), KernelError>;

    /// Removes the pin at `path` (and its temporary and rollback pins); `false` when
    /// nothing was pinned.
    ///
    /// # Errors
    /// The unpin fails.
    fn unpin(&mut self, path: &str) -> Result<bool, KernelError>;

    /// Every pin under the pin root, temporaries included, sorted.
    ///
    /// # Errors
    /// The directory cannot be read.
    fn pins(&mut self) -> Result<Vec<String>, KernelError>;

    /// Attaches a held program at `point` through a new link, held.
    ///
    /// # Errors
    /// The kernel refuses.
    fn attach(&mut self, program: ObjRef, point: &AttachPoint) -> Result<ObjRef, KernelError>;

    /// The program a held link runs now (`None`: detached).
    ///
    /// # Errors
    /// The link cannot be inspected.
    fn link_program(&mut self, link: ObjRef) -> Result<Option<u32>, KernelError>;

    /// Replaces the program of `link` with `new` if and only if it runs `expected`
    /// (`BPF_LINK_UPDATE` with `BPF_F_REPLACE`).
    ///
    /// # Errors
    /// [`KernelError::Mismatch`] when it runs another program.
    fn update_link(
        &mut self,
        link: ObjRef,
        new: ObjRef,
        expected: ObjRef,
    ) -> Result<(), KernelError>;

    /// Detaches the program of a held link (the link stays, defunct).
    ///
    /// # Errors
    /// [`KernelError::Unsupported`] for link types the kernel cannot detach (tracing,
    /// raw tracepoint, perf event: such a link runs until it is freed); any other
    /// refusal.
    fn detach(&mut self, link: ObjRef) -> Result<(), KernelError>;

    /// Whether the kernel has links for the hook `point`: cgroup links at a cgroup
    /// hook (probed once per attach type with a link on a throwaway cgroup made under
    /// `point`'s cgroup), socket map links at a socket map hook (probed once per
    /// attach type on a throwaway sockhash); `false` for other hooks.
    fn hook_links(&mut self, point: &AttachPoint) -> bool;

    /// Attaches a held program to the cgroup hook `point` without a link
    /// (`BPF_PROG_ATTACH` with `BPF_F_ALLOW_MULTI`): the cgroup holds it until it is
    /// detached. Returns the cgroup's id.
    ///
    /// # Errors
    /// The kernel refuses (the program is attached there already, or does not fit
    /// the hook).
    fn prog_attach(&mut self, program: ObjRef, point: &AttachPoint) -> Result<u64, KernelError>;

    /// Puts the held program `new` in the place of `expected` at the cgroup hook
    /// `point` (`BPF_PROG_ATTACH` with `BPF_F_ALLOW_MULTI | BPF_F_REPLACE`).
    ///
    /// # Errors
    /// [`KernelError::Mismatch`] when `expected` is not attached there (nothing
    /// changes then).
    fn prog_replace(
        &mut self,
        point: &AttachPoint,
        new: ObjRef,
        expected: ObjRef,
    ) -> Result<(), KernelError>;

    /// Detaches `program` from the cgroup hook `point` (`BPF_PROG_DETACH`); `false`
    /// when it was not attached there (or the cgroup no longer exists).
    ///
    /// # Errors
    /// The kernel refuses.
    fn prog_detach(&mut self, point: &AttachPoint, program: ObjRef) -> Result<bool, KernelError>;

    /// The cgroup's id and the ids of the programs attached to the cgroup hook
    /// `point` itself, in the order they run (`BPF_PROG_QUERY`); none, and id 0, when
    /// the cgroup no longer exists.
    ///
    /// # Errors
    /// The cgroup cannot be opened or queried; [`KernelError::Unsupported`] where
    /// the kernel answers no query at the hook (socket maps before 5.19).
    fn prog_query(&mut self, point: &AttachPoint) -> Result<(u64, Vec<u32>), KernelError>;

    /// Returns once no program that was replaced before the call can still be running
    /// (an update of a map-in-map waits for running programs, as the kernel's
    /// `maybe_wait_bpf_programs` does).
    ///
    /// # Errors
    /// The barrier cannot be created.
    fn synchronize(&mut self) -> Result<(), KernelError>;

    /// Map access to a held map, for copy, delta passes, reconcile and daemon writes.
    ///
    /// # Errors
    /// The map is not held or cannot be opened.
    fn map_access(&mut self, map: ObjRef) -> Result<Arc<dyn MapAccess>, KernelError>;

    /// Creates a hash map of `key_size`-byte keys and `value_size`-byte values, for at
    /// most `max_entries`, without preallocation, and holds it: scratch state of an
    /// upgrade, such as the reconcile's marks.
    ///
    /// # Errors
    /// The kernel refuses.
    fn create_map(
        &mut self,
        key_size: usize,
        value_size: usize,
        max_entries: u32,
    ) -> Result<ObjRef, KernelError>;

    /// A patcher applying the reconcile's patches to the held map `map` in the kernel
    /// (atomic adds for `sum` fields), marking each key done in the held map `marks`
    /// in the same step, under the value's spin lock where it has one; `None` when
    /// patches are applied from user space
    /// ([`UserPatcher`](crate::migrate::UserPatcher)), as on the fake kernel.
    ///
    /// # Errors
    /// The patch program cannot be made or loaded.
    fn patcher(
        &mut self,
        map: ObjRef,
        name: &str,
        fields: &ValueFields,
        marks: ObjRef,
    ) -> Result<Option<Box<dyn Patcher>>, KernelError> {
        let _ = (map, name, fields, marks);
        Ok(None)
    }

    /// Inserts the sockets of the held sockmap or sockhash `old` into the held socket
    /// map `new`, in the kernel (the generated `iter/sockmap` program): every socket
    /// under the same key, or only those at the old keys `only` lists, each under the
    /// new key paired with it (old key, new key); with `keep_existing` a key `new`
    /// holds already keeps its socket (`BPF_NOEXIST`, reported refused with
    /// `EEXIST`). The report's keys are old keys. `name` names the map in errors.
    ///
    /// # Errors
    /// The kernel has no sockmap iterator, or a command fails.
    fn carry_sockets(
        &mut self,
        name: &str,
        old: ObjRef,
        new: ObjRef,
        only: Option<&[(Vec<u8>, Vec<u8>)]>,
        keep_existing: bool,
    ) -> Result<SocketReport, KernelError> {
        let _ = (old, new, only, keep_existing);
        Err(KernelError::failed(
            format!("carry the sockets of {name}"),
            std::io::Error::other("this kernel cannot carry sockets"),
        ))
    }

    /// Inserts the live map of id `inner` into the held map-in-map `outer` at `key`
    /// (`BPF_MAP_GET_FD_BY_ID`, then an update with the descriptor); with
    /// `keep_existing` a key `outer` holds already keeps its map (`Ok(false)`).
    ///
    /// # Errors
    /// The inner map is gone, or the outer map refuses it (an inner map that does
    /// not fit the outer map's template, an index past its capacity).
    fn insert_inner_map(
        &mut self,
        outer: ObjRef,
        key: &[u8],
        inner: u32,
        keep_existing: bool,
    ) -> Result<bool, KernelError> {
        let _ = (key, keep_existing);
        Err(KernelError::failed(
            format!("insert map {inner} into {outer}"),
            std::io::Error::other("this kernel cannot insert inner maps"),
        ))
    }

    /// Whether the object still exists in the kernel (`BPF_*_GET_FD_BY_ID`); does not
    /// hold it.
    fn alive(&mut self, object: ObjRef) -> bool;

    /// Drops this process's hold on an object.
    fn release(&mut self, object: ObjRef);

    /// After an uninstall: removes what the pin root holds besides pins (the
    /// directories the pins were made in).
    ///
    /// # Errors
    /// File system errors.
    fn cleanup(&mut self) -> Result<(), KernelError> {
        Ok(())
    }
}
