//! Putting the dataplane into the kernel, reopening it after a restart, upgrading it
//! to another version, and removing it: the [`Installer`] trait, and
//! [`EngineInstaller`], which does all of it with the upgrade engine
//! ([`handover_engine`]): install, restart (nothing loaded), upgrade (maps carried,
//! programs switched atomically), recovery of an interrupted upgrade, uninstall.
//!
//! Layout under the pin root is the engine's: `maps/NAME`, `progs/NAME`,
//! `links/PROGRAM`; its state (identity, journal, lock) is in the state directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use handover_engine::{
    ApplyOptions, AttachPoint, Attachment, Engine, LockWait, MapAction, ObjectSource, Options,
    Plan, Report, Via, pin_name,
};
use handover_loader::Object;
use handover_sys::{AttachType, Bpf, Map, OpenFlags};
use serde::{Deserialize, Serialize};
use tracing::{info, info_span};

use crate::dataplane::{Dataplane, DataplaneError};
use crate::layout::{Layout, LayoutError, maps};

/// The programs the dataplane attaches, each to the cgroup at its hook. The lb policy
/// programs are reached by tail call and attach nowhere.
pub const ATTACHMENTS: &[(&str, AttachType)] = &[
    ("mesh_connect4", AttachType::CgroupInet4Connect),
    ("mesh_sockops", AttachType::CgroupSockOps),
];

/// The name every version of the dataplane object is given to the engine: versions
/// are told apart by their bytes, and map keys do not change with the version.
pub const OBJECT_NAME: &str = "mesh.o";

/// How long an installer waits for another process holding the state lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// How the installation was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Start {
    /// Nothing was installed: everything was created.
    Fresh,
    /// The same version was installed: reopened, nothing loaded.
    Restart,
    /// Another version was installed: its maps were carried into this one.
    Upgrade,
    /// An upgrade had been interrupted (its daemon died): it was finished or undone,
    /// then this version installed.
    Recovered {
        /// `forward` or `back`.
        direction: String,
    },
}

/// What happened to one map in an [`Installer::open`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOutcome {
    /// `create`, `reuse`, `copy` or `remove`.
    pub action: String,
    /// The diff's verdict (`reuse`, `grow`, `migrate`, `rekey`, ...) on an upgrade.
    pub verdict: Option<String>,
    /// Entries copied into the new map.
    pub copied: u64,
    /// Entries the reconcile after the switch added or changed.
    pub reconciled: u64,
    /// Entries the reconcile deleted.
    pub deleted: u64,
}

/// The installed dataplane.
#[derive(Debug)]
pub struct Installed {
    /// How it was found.
    pub start: Start,
    /// Its maps.
    pub dataplane: Dataplane,
    /// Kernel ids of the attachments' links, by program name.
    pub links: BTreeMap<String, u32>,
    /// Per map: the action, the verdict and the entries carried.
    pub maps: BTreeMap<String, MapOutcome>,
    /// Microseconds during which old and new programs both ran (an upgrade).
    pub switch_window_us: Option<u64>,
}

/// What to install: the object's bytes and where to attach it.
#[derive(Clone, Copy, Debug)]
pub struct InstallRequest<'a> {
    /// The dataplane object (an ELF BPF object, programs/dataplane/vN.c).
    pub object: &'a [u8],
    /// The cgroup (v2) directory the programs attach to.
    pub cgroup: &'a Path,
}

/// Puts a dataplane into the kernel or reopens it, and removes it.
///
/// `open` leaves everything pinned and attached; a daemon that exits after it (a
/// restart, a crash) leaves the dataplane steering traffic, and the next `open` finds
/// it again.
pub trait Installer {
    /// Installs the dataplane of `request`, or reopens it when it is installed. `ready`
    /// runs once the maps exist and before any program is attached (so a fresh
    /// installation is configured before it steers a connect); on a restart, with
    /// everything attached.
    ///
    /// # Errors
    /// The object cannot be loaded or attached, the pins are not this object's, or
    /// `ready` failed (what was created stays pinned, for the next `open`).
    fn open(
        &mut self,
        request: &InstallRequest<'_>,
        ready: &mut dyn FnMut(&Dataplane) -> Result<(), DataplaneError>,
    ) -> Result<Installed, InstallError>;

    /// Detaches the programs and removes every pin and state file made by `open`.
    ///
    /// # Errors
    /// A pin or state file cannot be removed (what is left is kept in the manifest).
    fn uninstall(&mut self) -> Result<(), InstallError>;
}

/// Why the dataplane could not be installed, reopened or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The object cannot be parsed.
    #[error("parsing the dataplane object: {0}")]
    Object(#[from] handover_loader::ObjectError),
    /// The object is not a dataplane this daemon knows.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The engine refused or failed (its error says which step and what to do).
    #[error("upgrade engine: {0}")]
    Engine(#[from] handover_engine::Error),
    /// A map pinned by the engine cannot be opened.
    #[error("opening map pin {path}")]
    Pin {
        /// The pin.
        path: String,
        /// The kernel's error.
        #[source]
        source: handover_sys::Error,
    },
    /// The maps cannot be opened or configured.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// [`Installer`] over the upgrade engine ([`Engine`]) on the running kernel.
#[derive(Debug)]
pub struct EngineInstaller {
    bpf: Bpf,
    root: PathBuf,
    state: PathBuf,
}

impl EngineInstaller {
    /// An installer pinning under `root` (a directory on a bpffs) and keeping the
    /// engine's state in `state` (created when missing; not on bpffs).
    #[must_use]
    pub fn new(bpf: &Bpf, root: &Path, state: &Path) -> Self {
        Self {
            bpf: bpf.clone(),
            root: root.to_owned(),
            state: state.to_owned(),
        }
    }

    fn engine(&self) -> Result<Engine<handover_engine::RealKernel>, InstallError> {
        Ok(Engine::open(
            &self.root,
            &self.state,
            LockWait::Timeout(LOCK_WAIT),
        )?)
    }

    /// The engine options of the dataplane `object` attached to `cgroup`. An object
    /// that declares `conns_tombstones` writes there the key of every entry of `conns`
    /// it deletes or writes whole (the engine's tombstone contract): the engine is
    /// told, so that the reconcile of an upgrade to it neither adds back connections
    /// it closed during the switch nor merges into ones it opened again.
    #[must_use]
    pub fn options(object: &Object<'_>, cgroup: &Path) -> Options {
        let tombstones = object
            .map(maps::CONNS_TOMBSTONES)
            .map(|_| (maps::CONNS.to_owned(), maps::CONNS_TOMBSTONES.to_owned()))
            .into_iter()
            .collect();
        Options {
            attachments: ATTACHMENTS
                .iter()
                .map(|&(program, attach_type)| Attachment {
                    name: program.to_owned(),
                    program: program.to_owned(),
                    point: AttachPoint::Cgroup {
                        path: cgroup.to_owned(),
                        attach_type: attach_type.name().to_owned(),
                        via: Via::Auto,
                    },
                })
                .collect(),
            tombstones,
            ..Options::default()
        }
    }

    /// Opens the engine's pin of every map of `plan` that the new set keeps.
    fn maps(&self, plan: &Plan) -> Result<BTreeMap<String, Map>, InstallError> {
        let mut maps = BTreeMap::new();
        for m in plan.maps.iter().filter(|m| m.action != MapAction::Remove) {
            let path = self.root.join("maps").join(pin_name(&m.key));
            let pin_err = |source| InstallError::Pin {
                path: path.display().to_string(),
                source,
            };
            let fd = self
                .bpf
                .obj_get(&path, OpenFlags::READ_WRITE)
                .map_err(pin_err)?;
            let map = Map::new(&self.bpf, fd).map_err(pin_err)?;
            maps.insert(m.key.clone(), map);
        }
        Ok(maps)
    }
}

fn outcomes(plan: &Plan, report: &Report) -> BTreeMap<String, MapOutcome> {
    plan.maps
        .iter()
        .map(|m| {
            let counts = report.maps.get(&m.key).cloned().unwrap_or_default();
            let verdict = m
                .verdict
                .and_then(|v| serde_json::to_value(v).ok())
                .and_then(|v| v.as_str().map(str::to_owned));
            let action = serde_json::to_value(m.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let outcome = MapOutcome {
                action,
                verdict,
                copied: counts.copied + counts.delta,
                reconciled: counts.reconciled,
                deleted: counts.deleted,
            };
            (m.key.clone(), outcome)
        })
        .collect()
}

impl Installer for EngineInstaller {
    fn open(
        &mut self,
        request: &InstallRequest<'_>,
        ready: &mut dyn FnMut(&Dataplane) -> Result<(), DataplaneError>,
    ) -> Result<Installed, InstallError> {
        let _span = info_span!("install", root = %self.root.display()).entered();
        let object = Object::parse(request.object)?;
        let layout = Layout::of(&object)?;
        let objects = [ObjectSource::new(OBJECT_NAME, request.object)];
        let options = Self::options(&object, request.cgroup);
        // The engine (and its lock) is held for the install only: a successor can
        // take over while this daemon still runs.
        let mut engine = self.engine()?;
        let mut plan = engine.plan(&objects, &options)?;
        info!(start = ?plan.start, "plan");
        let mut report = engine.apply(&plan, &objects, ApplyOptions::default())?;
        let recovered = report.recovered.clone();
        if let Some(r) = &recovered {
            // Recovery finished or undid the interrupted upgrade; now install what
            // was asked for, from there.
            info!(tx = r.tx, direction = ?r.direction, "recovered an interrupted upgrade");
            plan = engine.plan(&objects, &options)?;
            info!(start = ?plan.start, "plan after recovery");
            report = engine.apply(&plan, &objects, ApplyOptions::default())?;
        }
        let start = match (&recovered, &plan.start) {
            (Some(r), _) => Start::Recovered {
                direction: format!("{:?}", r.direction).to_lowercase(),
            },
            (None, handover_engine::Start::Fresh { .. }) => Start::Fresh,
            (None, handover_engine::Start::Restart) => Start::Restart,
            (None, _) => Start::Upgrade,
        };
        let links = ATTACHMENTS
            .iter()
            .filter_map(|&(program, _)| {
                let id = engine.state().ok()??.links.get(program)?.id;
                Some((program.to_owned(), id))
            })
            .collect();
        drop(engine);
        let dataplane = Dataplane::from_maps(self.maps(&plan)?, layout);
        ready(&dataplane)?;
        Ok(Installed {
            start,
            dataplane,
            links,
            maps: outcomes(&plan, &report),
            switch_window_us: report.switch_window_us,
        })
    }

    fn uninstall(&mut self) -> Result<(), InstallError> {
        let _span = info_span!("uninstall", root = %self.root.display()).entered();
        let removed = self.engine()?.uninstall()?;
        info!(pins = removed.pins.len(), "removed every pin");
        Ok(())
    }
}
