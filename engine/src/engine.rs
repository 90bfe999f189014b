//! [`Engine`]: plan, apply, restart, recover and uninstall a daemon's object set.
//!
//! An upgrade runs [`Step::ALL`] in order under a write-ahead [`Journal`]: each step
//! is recorded as started before its first effect and as done after its last, and
//! every step is idempotent, so recovery re-runs the journal forward from the first
//! step not done (once the switch has started) or undoes it (before). Every object an
//! upgrade creates is pinned under `stage/` before anything live changes; the commit
//! exchanges those pins over the live ones, keeping the old objects at rollback pins
//! until the release.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::datapath::{self, Carry};
use crate::error::Error;
use crate::files::{LockWait, StateLock};
use crate::kernel::{Kernel, KernelError, ObjRef, ObjectSource};
use crate::migrate::{MARK_VALUE_SIZE, MapAccess, Patcher, UserPatcher};
use crate::options::{AttachPoint, Hold, Options, SwitchMethod, identity};
use crate::plan::{
    self, AttachAction, LiveState, MapAction, MapPlan, Plan, PlanInput, ProgramAction, Start,
    staged_pin,
};
use crate::progress::{ProgressFn, Reporter, Watched};
use crate::real::RealKernel;
use crate::state::{
    AttachedRecord, Direction, Journal, LinkRecord, MapCounts, Phase, Pinned, Staged, State,
    StateDir,
};
use crate::step::{Step, checkpoint};
use crate::writer::{MapWriter, Migration, Target as WriterTarget};

/// Choices of [`Engine::apply`] that are not part of the load's identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Accept a plan that loses entries (a `recreate` of a map holding state).
    pub allow_state_loss: bool,
    /// Entries per batch of the copy and the reconcile (`None`: the data path's
    /// default); kept in the journal, so a recovery runs with the same.
    pub batch: Option<usize>,
}

/// What recovery did with an interrupted upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    /// The transaction.
    pub tx: String,
    /// Finished forward (the new set is live) or back (the old one is).
    pub direction: Direction,
}

/// What [`Engine::apply`] did: a machine-readable report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The identity now installed.
    pub identity: String,
    /// How the start related to what was installed.
    pub start: Start,
    /// Per map: what was copied, reconciled, deleted, merged.
    pub maps: BTreeMap<String, MapCounts>,
    /// Attachments found missing on a restart and attached again.
    pub reattached: Vec<String>,
    /// Microseconds between the first and the last switch (old and new programs run
    /// side by side this long).
    pub switch_window_us: Option<u64>,
    /// An interrupted upgrade that was recovered instead.
    pub recovered: Option<Recovered>,
}

/// What [`Engine::uninstall`] removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uninstalled {
    /// Every kernel object of the installed set, to check that the kernel freed them.
    pub objects: Vec<ObjRef>,
    /// Pins removed.
    pub pins: Vec<String>,
}

/// A daemon's object set in the kernel: its state directory (locked while this value
/// lives) and the kernel it acts on.
#[derive(Debug)]
pub struct Engine<K: Kernel> {
    kernel: K,
    dir: StateDir,
    _lock: StateLock,
    /// Objects this process opened or created during the current operation.
    opened: BTreeSet<ObjRef>,
    /// The installed set's maps and programs, held for handles.
    maps: BTreeMap<String, ObjRef>,
    programs: BTreeMap<String, ObjRef>,
    /// The daemon's dual-write handles, by map key.
    writers: BTreeMap<String, MapWriter>,
    /// Where the copy step reports how far it is.
    progress: Reporter,
}

/// A carried map of an upgrade, its live map and its staged replacement open.
struct Carried {
    plan: MapPlan,
    old: Arc<dyn MapAccess>,
    new: Arc<dyn MapAccess>,
    old_ref: ObjRef,
    new_ref: ObjRef,
    /// Both versions' values hold a `bpf_spin_lock`: every read and write of them
    /// goes with `BPF_F_LOCK`.
    lock: bool,
    /// Either version's values hold kernel-managed fields (`carry::values_managed`).
    managed: bool,
}

impl Carried {
    fn carry(&self) -> Carry<'_> {
        Carry {
            key: &self.plan.key,
            old: Arc::clone(&self.old),
            new: Arc::clone(&self.new),
            key_plan: self.plan.key_plan.as_ref(),
            value_plan: self.plan.value_plan.as_ref(),
            lock: self.lock,
            managed: self.managed,
        }
    }

    /// The maps of a [`crate::Carry::Sockets`] or [`crate::Carry::InnerMaps`] map;
    /// `None` for the others.
    fn sockets(&self) -> Option<crate::sockets::SocketMaps<'_>> {
        let inner_maps = match self.plan.carry {
            crate::Carry::Sockets => false,
            crate::Carry::InnerMaps => true,
            _ => return None,
        };
        Some(crate::sockets::SocketMaps {
            key: &self.plan.key,
            old: self.old_ref,
            new: self.new_ref,
            old_access: self.old.as_ref(),
            new_access: self.new.as_ref(),
            inner_maps,
            key_plan: self.plan.key_plan.as_ref(),
        })
    }
}

/// A carried map ready for its reconcile (see `Engine::reconcile`), owning all it
/// runs with so that it can run on its own thread.
struct Prepared {
    c: Carried,
    fields: crate::migrate::ValueFields,
    /// The pin of its marks map.
    pin: String,
    marks: Arc<dyn MapAccess>,
    /// The in-kernel patcher; none where patches are made from user space.
    patcher: Option<Box<dyn Patcher>>,
    tombstones: Option<Arc<dyn MapAccess>>,
    /// Keys the daemon wrote through its dual-write handle after the replay.
    keep: Option<std::collections::HashSet<Vec<u8>>>,
}

impl Prepared {
    /// The reconcile itself.
    fn run(
        &self,
        state_dir: &Path,
        batch: Option<usize>,
    ) -> Result<crate::migrate::ReconcileReport, Error> {
        let key = &self.c.plan.key;
        let _span = tracing::info_span!("map", map = %key).entered();
        let user = UserPatcher::new(self.c.new.as_ref(), key, self.fields.clone(), self.c.lock);
        let patcher: &dyn Patcher = self.patcher.as_deref().unwrap_or(&user);
        datapath::reconcile_map(
            &self.c.carry(),
            state_dir,
            &datapath::Reconcile {
                fields: &self.fields,
                patcher,
                marks: self.marks.as_ref(),
                tombstones: self.tombstones.as_deref(),
                keep: self.keep.as_ref(),
                batch,
            },
        )
    }
}

/// The pin of the reconcile's marks of map `key` (all of them: `key` empty).
fn marks_pin(key: &str) -> String {
    staged_pin(&format!("reconcile/{}", plan::pin_name(key)))
}

/// `point` on the installed set's map where its hook is on a map.
fn in_state<'a>(state: &State, point: &'a AttachPoint) -> Cow<'a, AttachPoint> {
    point.on_map(|key| state.maps.get(key).map(|p| p.id))
}

/// `point` on the map of the set being loaded where its hook is on a map: the new
/// map the upgrade created, or the old one it reuses (under its old key if renamed).
fn in_set<'a>(j: &Journal, point: &'a AttachPoint) -> Cow<'a, AttachPoint> {
    point.on_map(|key| {
        j.staged.maps.get(key).map(|r| r.id).or_else(|| {
            let old = j.old.as_ref()?;
            let key = j.plan.options.renames.get(key).map_or(key, String::as_str);
            old.maps.get(key).map(|p| p.id)
        })
    })
}

/// The id of the object a hook is on, where the point says it (a socket map's).
fn hook_target(point: &AttachPoint) -> u64 {
    match point {
        AttachPoint::SockMap {
            target: Some(id), ..
        } => u64::from(*id),
        _ => 0,
    }
}

fn kerr(step: &'static str, what: impl Into<String>) -> impl FnOnce(KernelError) -> Error {
    let what = what.into();
    move |source| Error::Kernel { step, what, source }
}

fn now_tx(identity: &str) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{}",
        identity.get(..12).unwrap_or(identity),
        t.as_nanos()
    )
}

impl Engine<RealKernel> {
    /// Opens the engine on the running kernel: takes the exclusive lock of
    /// `state_dir` (waiting as `wait` says), then opens the pin root `pin_root` (a
    /// directory on a bpffs).
    ///
    /// # Errors
    /// [`Error::Locked`]; the pin root is not on bpffs; I/O errors.
    pub fn open(pin_root: &Path, state_dir: &Path, wait: LockWait) -> Result<Self, Error> {
        let dir = StateDir::new(state_dir)?;
        let lock = StateLock::acquire(dir.path(), wait)?;
        let kernel = RealKernel::open(pin_root, state_dir)
            .map_err(kerr("open", format!("pin root {}", pin_root.display())))?;
        Ok(Self::locked(kernel, dir, lock))
    }
}

impl<K: Kernel> Engine<K> {
    /// Opens the state directory `state_dir` for `kernel`, taking its exclusive lock
    /// (waiting as `wait` says).
    ///
    /// # Errors
    /// [`Error::Locked`] when another process holds the lock; I/O errors.
    pub fn with_kernel(kernel: K, state_dir: &Path, wait: LockWait) -> Result<Self, Error> {
        let dir = StateDir::new(state_dir)?;
        let lock = StateLock::acquire(dir.path(), wait)?;
        Ok(Self::locked(kernel, dir, lock))
    }

    pub(crate) fn locked(kernel: K, dir: StateDir, lock: StateLock) -> Self {
        Self {
            kernel,
            dir,
            _lock: lock,
            opened: BTreeSet::new(),
            maps: BTreeMap::new(),
            programs: BTreeMap::new(),
            writers: BTreeMap::new(),
            progress: Reporter::default(),
        }
    }

    /// Reports the copy step's progress to `report` (from the copy's reader thread),
    /// or to nobody with `None`.
    pub fn set_progress(&mut self, report: Option<ProgressFn>) {
        self.progress = Reporter(report);
    }

    /// The kernel the engine acts on.
    pub fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// The installed state, verified; `None` when nothing is installed.
    ///
    /// # Errors
    /// The state file is unreadable or fails its checksum.
    pub fn state(&self) -> Result<Option<State>, Error> {
        self.dir.read_state()
    }

    /// The journal of an interrupted upgrade, if any.
    ///
    /// # Errors
    /// The journal is unreadable or fails its checksum.
    pub fn journal(&self) -> Result<Option<Journal>, Error> {
        self.dir.read_journal()
    }

    fn get(&mut self, step: &'static str, path: &str) -> Result<Option<ObjRef>, Error> {
        let r = self
            .kernel
            .get(path)
            .map_err(kerr(step, format!("open pin {path}")))?;
        self.opened.extend(r);
        Ok(r)
    }

    /// Releases what this operation opened, except the installed set's handles.
    fn release_opened(&mut self) {
        let keep: BTreeSet<ObjRef> = self
            .maps
            .values()
            .chain(self.programs.values())
            .copied()
            .collect();
        for r in std::mem::take(&mut self.opened) {
            if !keep.contains(&r) {
                self.kernel.release(r);
            }
        }
    }

    /// The live state as the installed state records it, and why it is stale if it
    /// is (pins gone or holding other objects).
    fn live(&mut self, state: &State) -> Result<(LiveState, Option<String>), Error> {
        let mut live = LiveState::default();
        let mut missing = Vec::new();
        let mut changed = Vec::new();
        let recorded: Vec<(String, u32)> = state
            .maps
            .values()
            .chain(state.programs.values())
            .map(|p| (p.pin.clone(), p.id))
            .chain(state.links.values().map(|l| (l.pin.clone(), l.id)))
            .collect();
        for (pin, id) in recorded {
            match self.get("plan", &pin)? {
                None => missing.push(pin),
                Some(r) => {
                    if r.id != id {
                        changed.push(pin.clone());
                    }
                    live.pins.insert(pin, r.id);
                }
            }
        }
        for l in state.links.values() {
            if let Some(&id) = live.pins.get(&l.pin) {
                let prog = self
                    .kernel
                    .link_program(ObjRef::link(id))
                    .map_err(kerr("plan", format!("inspect link {}", l.pin)))?;
                live.links.insert(l.pin.clone(), prog.unwrap_or(0));
            }
        }
        for (name, r) in &state.attached {
            let prog = match self
                .kernel
                .prog_query(&in_state(state, &r.attachment.point))
            {
                Ok((_, ids)) if ids.contains(&r.prog) => r.prog,
                Ok(_) => 0,
                // The kernel cannot say: the record stands.
                Err(KernelError::Unsupported { .. }) => r.prog,
                Err(e) => return Err(kerr("plan", format!("query attachment {name}"))(e)),
            };
            live.attached.insert(name.clone(), prog);
        }
        // Maps and programs must all be there; a missing link is re-attached.
        let maps_and_progs: BTreeSet<&str> = state
            .maps
            .values()
            .chain(state.programs.values())
            .map(|p| p.pin.as_str())
            .collect();
        let lost: Vec<&String> = missing
            .iter()
            .filter(|p| maps_and_progs.contains(p.as_str()))
            .collect();
        let stale = if !changed.is_empty() {
            Some(format!(
                "pins hold other objects than recorded: {}",
                changed.join(", ")
            ))
        } else if !lost.is_empty() && lost.len() == maps_and_progs.len() {
            Some("no recorded pin exists any more (bpffs was wiped, e.g. by a reboot)".to_owned())
        } else if !lost.is_empty() {
            Some(format!(
                "recorded pins are gone: {}",
                lost.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            None
        };
        Ok((live, stale))
    }

    /// Computes what loading `objects` with `options` would do, changing nothing.
    ///
    /// # Errors
    /// An object does not parse, the options do not fit the objects, the state is not
    /// trusted.
    pub fn plan(&mut self, objects: &[ObjectSource], options: &Options) -> Result<Plan, Error> {
        let result = self.plan_inner(objects, options);
        self.release_opened();
        result
    }

    fn plan_inner(&mut self, objects: &[ObjectSource], options: &Options) -> Result<Plan, Error> {
        if let Some(j) = self.dir.read_journal()? {
            return Ok(Plan {
                identity: identity(objects, options),
                start: Start::Interrupted { tx: j.tx },
                objects: plan::records(objects),
                options: options.clone(),
                live: LiveState::default(),
                maps: Vec::new(),
                programs: Vec::new(),
                attachments: Vec::new(),
                models: Vec::new(),
            });
        }
        let state = self.dir.read_state()?;
        let (live, stale) = match &state {
            Some(s) => self.live(s)?,
            None => (LiveState::default(), None),
        };
        let facts = self.kernel.facts();
        let trusted = if stale.is_some() {
            None
        } else {
            state.as_ref()
        };
        // Cgroup attachments that leave the way they are held to the kernel: a link
        // where the probe finds cgroup links at the hook.
        let holds = options
            .attachments
            .iter()
            .map(|a| {
                let hold = a.point.asked_hold().unwrap_or_else(|| {
                    if self.kernel.hook_links(&a.point) {
                        Hold::Link
                    } else {
                        Hold::ProgAttach
                    }
                });
                (a.name.clone(), hold)
            })
            .collect();
        let mut plan = plan::compute(PlanInput {
            objects,
            options,
            state: trusted,
            stale,
            live,
            facts,
            holds,
        })?;
        if let Some(state) = trusted {
            self.count_shrinks(&mut plan, state)?;
        }
        Ok(plan)
    }

    /// A shrink loses entries only when the live map holds more than the new
    /// capacity: its live entries are counted, and a shrink that fits is planned as
    /// losing nothing (the preflight counts again before anything changes).
    fn count_shrinks(&mut self, plan: &mut Plan, state: &State) -> Result<(), Error> {
        const STEP: &str = "plan";
        for m in plan
            .maps
            .iter_mut()
            .filter(|m| m.verdict == Some(crate::upstream::Verdict::Shrink) && m.loses_entries)
        {
            let old_key = m.from.as_deref().unwrap_or(&m.key);
            let Some(old) = state.maps.get(old_key) else {
                continue;
            };
            let Some(r) = self.get(STEP, &old.pin)? else {
                continue;
            };
            let live = self
                .access(STEP, r)?
                .count_entries()
                .map_err(|e| Error::Data {
                    step: STEP,
                    map: old_key.to_owned(),
                    reason: e.to_string(),
                })?;
            if live <= m.max_entries as usize {
                m.loses_entries = false;
                m.notes.push(
                    "the live entries fit the new capacity (counted again when executed)".into(),
                );
            } else {
                m.notes.push(format!(
                    "the live map holds more entries than the new capacity {}",
                    m.max_entries
                ));
            }
        }
        Ok(())
    }

    /// Executes `plan`, computed by [`Engine::plan`] for these `objects`: installs,
    /// restarts or upgrades, or recovers an interrupted upgrade when the plan says so.
    ///
    /// # Errors
    /// The plan no longer matches the live state or the objects ([`Error::Stale`]), it
    /// loses entries without [`ApplyOptions::allow_state_loss`], a step fails (the
    /// upgrade is rolled back when it fails before its switch or at a
    /// compare-and-swap mismatch: [`Error::Aborted`]).
    pub fn apply(
        &mut self,
        plan: &Plan,
        objects: &[ObjectSource],
        options: ApplyOptions,
    ) -> Result<Report, Error> {
        let result = self.apply_inner(plan, objects, options);
        if !matches!(result, Err(Error::Crashed { .. })) {
            self.release_opened();
        }
        result
    }

    fn apply_inner(
        &mut self,
        plan: &Plan,
        objects: &[ObjectSource],
        options: ApplyOptions,
    ) -> Result<Report, Error> {
        if let Start::Interrupted { .. } = plan.start {
            let recovered = self.recover_inner()?;
            return Ok(Report {
                identity: plan.identity.clone(),
                start: plan.start.clone(),
                maps: BTreeMap::new(),
                reattached: Vec::new(),
                switch_window_us: None,
                recovered,
            });
        }
        let now = self.plan_inner(objects, &plan.options)?;
        if now.identity != plan.identity {
            return Err(Error::Stale(
                "the objects or options given are not the ones the plan was made for".into(),
            ));
        }
        if now.live != plan.live {
            return Err(Error::Stale(describe_live_change(&plan.live, &now.live)));
        }
        if now != *plan {
            return Err(Error::Stale(
                "the installed state changed since the plan was made".into(),
            ));
        }
        let lost = plan.lost_maps();
        if !lost.is_empty() && !options.allow_state_loss {
            return Err(Error::StateLoss { maps: lost });
        }
        if plan.start == Start::Restart {
            return self.restart(plan);
        }
        let old = self
            .dir
            .read_state()?
            .filter(|_| matches!(plan.start, Start::Upgrade { .. }));
        let mut j = Journal {
            tx: now_tx(&plan.identity),
            plan: plan.clone(),
            old,
            staged: Staged::default(),
            new_links: BTreeMap::new(),
            attached: BTreeMap::new(),
            steps: Vec::new(),
            direction: Direction::Forward,
            counts: BTreeMap::new(),
            switch_window_ns: None,
            reconciled: BTreeSet::new(),
            batch: options.batch,
        };
        // Write-ahead: the journal exists before the first object does.
        self.dir.write_journal(&j)?;
        match self.forward(&mut j, Some((objects, options))) {
            Ok(()) => {}
            Err(e @ Error::Crashed { .. }) => return Err(e),
            Err(e) if !j.started(Step::Switch) || matches!(e, Error::Aborted { .. }) => {
                // The causes too: a verifier refusal is deep in the chain.
                let mut reason = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    let c_text = c.to_string();
                    if !reason.contains(&c_text) {
                        reason = format!("{reason}: {c_text}");
                    }
                    cause = c.source();
                }
                j.direction = Direction::Back;
                self.dir.write_journal(&j)?;
                self.rollback(&j)?;
                return Err(match e {
                    Error::Aborted { .. } => e,
                    Error::DoesNotFit { .. } => e,
                    _ => Error::Aborted { reason },
                });
            }
            Err(e) => return Err(e),
        }
        self.adopt(&plan_state(&j)?);
        Ok(Report {
            identity: plan.identity.clone(),
            start: plan.start.clone(),
            maps: j.counts.clone(),
            reattached: Vec::new(),
            switch_window_us: j.switch_window_ns.map(|(a, b)| b.saturating_sub(a) / 1000),
            recovered: None,
        })
    }

    /// Holds the installed set's maps and programs for handles.
    fn adopt(&mut self, state: &State) {
        self.maps = state
            .maps
            .iter()
            .map(|(k, p)| (k.clone(), ObjRef::map(p.id)))
            .collect();
        self.programs = state
            .programs
            .iter()
            .map(|(k, p)| (k.clone(), ObjRef::prog(p.id)))
            .collect();
        for r in self.maps.values().chain(self.programs.values()) {
            self.opened.remove(r);
        }
    }

    fn record(&mut self, j: &mut Journal, step: Step, phase: Phase) -> Result<(), Error> {
        j.steps.push((step, phase));
        self.dir.write_journal(j)
    }

    /// Runs the steps not done yet. `input` is given on the first run; recovery has
    /// none, and only runs forward once the switch started, when every object is
    /// pinned under `stage/`.
    fn forward(
        &mut self,
        j: &mut Journal,
        input: Option<(&[ObjectSource], ApplyOptions)>,
    ) -> Result<(), Error> {
        for step in Step::ALL {
            if j.done(step) {
                continue;
            }
            let span = tracing::info_span!("step", step = step.name(), tx = %j.tx);
            let _entered = span.enter();
            if !j.started(step) {
                self.record(j, step, Phase::Started)?;
            }
            checkpoint(step.start_point())?;
            match step {
                Step::Preflight => {
                    let (objects, _) = input.ok_or_else(|| Error::Aborted {
                        reason: "the preflight was interrupted; it is rolled back".into(),
                    })?;
                    self.preflight(j, objects)?;
                    self.writers_start_dual(j)?;
                }
                Step::Copy => self.copy(j)?,
                Step::Delta => self.delta(j)?,
                Step::Switch => self.switch(j)?,
                Step::Synchronize => self
                    .kernel
                    .synchronize()
                    .map_err(kerr("synchronize", "barrier"))?,
                Step::Reconcile => self.reconcile(j)?,
                Step::Commit => {
                    self.commit(j)?;
                    self.writers_settle(j)?;
                }
                Step::Release => self.release(j)?,
            }
            checkpoint(step.end_point())?;
            if step == Step::Release {
                // The journal's removal is the release's record.
                self.dir.remove_journal()?;
            } else {
                self.record(j, step, Phase::Done)?;
            }
        }
        Ok(())
    }

    fn preflight(&mut self, j: &mut Journal, objects: &[ObjectSource]) -> Result<(), Error> {
        const STEP: &str = "preflight";
        let plan = j.plan.clone();
        // Capacity: a copy into a smaller (or LRU) map must fit the live entry count.
        for m in plan.maps.iter().filter(|m| m.action == MapAction::Copy) {
            let old_key = m.from.as_deref().unwrap_or(&m.key);
            let Some(old) = j.old.as_ref().and_then(|s| s.maps.get(old_key)).cloned() else {
                continue;
            };
            let r = self
                .get(STEP, &old.pin)?
                .ok_or_else(|| Error::Stale(format!("{} is gone", old.pin)))?;
            let access = self
                .kernel
                .map_access(r)
                .map_err(kerr(STEP, format!("open map {old_key}")))?;
            let Some(model) = plan.models.iter().find(|x| x.name == m.key) else {
                continue;
            };
            let cpus = self.kernel.facts().possible_cpus;
            let Some(capacity) = crate::capacity::copy_capacity(model, cpus) else {
                continue;
            };
            let live = access.count_entries().map_err(|e| Error::Data {
                step: STEP,
                map: old_key.to_owned(),
                reason: e.to_string(),
            })?;
            if live > capacity as usize {
                return Err(Error::DoesNotFit {
                    map: m.key.clone(),
                    live,
                    capacity,
                    why: crate::capacity::why(model, cpus),
                });
            }
        }
        // Unchanged maps are reused as they are; program arrays are never (the diff
        // never says reuse for them).
        let mut reuse = BTreeMap::new();
        for m in plan.maps.iter().filter(|m| m.action == MapAction::Reuse) {
            let r = self
                .get(STEP, &m.pin)?
                .ok_or_else(|| Error::Stale(format!("{} is gone", m.pin)))?;
            reuse.insert(m.key.clone(), r);
        }
        let loaded = self
            .kernel
            .load(objects, &plan.options, &reuse)
            .map_err(kerr(STEP, "load the new object set"))?;
        self.opened.extend(loaded.maps.values().copied());
        self.opened.extend(loaded.programs.values().copied());
        self.opened.extend(loaded.btf.iter().copied());
        let mut staged = Staged {
            btf: loaded.btf.clone(),
            ..Staged::default()
        };
        for (key, r) in &loaded.maps {
            if reuse.contains_key(key) {
                continue;
            }
            checkpoint(Step::Preflight.item_point())?;
            let pin = staged_pin(&plan::map_pin(key));
            self.kernel
                .pin(*r, &pin)
                .map_err(kerr(STEP, format!("pin {pin}")))?;
            staged.maps.insert(key.clone(), *r);
        }
        for (name, r) in &loaded.programs {
            checkpoint(Step::Preflight.item_point())?;
            let pin = staged_pin(&plan::prog_pin(name));
            self.kernel
                .pin(*r, &pin)
                .map_err(kerr(STEP, format!("pin {pin}")))?;
            staged.programs.insert(name.clone(), *r);
        }
        j.staged = staged;
        Ok(())
    }

    /// Opens a staged object, checking it is the one the journal recorded.
    fn staged(
        &mut self,
        step: &'static str,
        live_pin: &str,
        expected: ObjRef,
    ) -> Result<ObjRef, Error> {
        let pin = staged_pin(live_pin);
        match self.get(step, &pin)? {
            Some(r) if r == expected => Ok(r),
            other => Err(Error::Kernel {
                step,
                what: format!("staged {pin}"),
                source: KernelError::Missing {
                    what: format!("{expected} at {pin} (found {other:?})"),
                },
            }),
        }
    }

    /// The maps an upgrade carries, each with its live map and its staged
    /// replacement opened.
    fn carried(&mut self, j: &Journal, step: Step) -> Result<Vec<Carried>, Error> {
        let name = step.name();
        let mut out = Vec::new();
        for m in j.plan.maps.iter().filter(|m| m.action == MapAction::Copy) {
            let old_key = m.from.as_deref().unwrap_or(&m.key);
            let Some(old) = j.old.as_ref().and_then(|s| s.maps.get(old_key)).cloned() else {
                continue;
            };
            let Some(&new) = j.staged.maps.get(&m.key) else {
                continue;
            };
            let old_r = self
                .get(name, &old.pin)?
                .ok_or_else(|| Error::Stale(format!("{} is gone", old.pin)))?;
            let new_r = self.staged(name, &m.pin, new)?;
            let old_model = j
                .old
                .as_ref()
                .and_then(|s| s.models.iter().find(|x| x.name == old_key));
            let new_model = j.plan.models.iter().find(|x| x.name == m.key);
            let lock = crate::carry::values_locked(old_model, new_model);
            let managed = crate::carry::values_managed(old_model, new_model);
            out.push(Carried {
                plan: m.clone(),
                old: self.access(name, old_r)?,
                new: self.access(name, new_r)?,
                old_ref: old_r,
                new_ref: new_r,
                lock,
                managed,
            });
        }
        Ok(out)
    }

    fn copy(&mut self, j: &mut Journal) -> Result<(), Error> {
        for c in self.carried(j, Step::Copy)? {
            checkpoint(Step::Copy.item_point())?;
            let _span = tracing::info_span!("map", map = %c.plan.key).entered();
            if let Some(s) = c.sockets() {
                let (copied, _) =
                    crate::sockets::pass(&mut self.kernel, &s, Step::Copy, self.dir.path())?;
                tracing::info!(copied, "sockets carried");
                j.counts.insert(
                    c.plan.key.clone(),
                    crate::state::MapCounts {
                        copied,
                        ..Default::default()
                    },
                );
                continue;
            }
            let watched = self
                .progress
                .0
                .clone()
                .map(|report| Arc::new(Watched::new(&c.plan.key, Arc::clone(&c.old), report)));
            let mut carry = c.carry();
            if let Some(w) = &watched {
                carry.old = Arc::clone(w) as Arc<dyn MapAccess>;
            }
            let counts = datapath::copy(&carry, self.dir.path(), j.batch)?;
            if let Some(w) = watched {
                w.finish();
            }
            tracing::info!(copied = counts.copied, "copied");
            j.counts.insert(c.plan.key.clone(), counts);
        }
        Ok(())
    }

    /// Delta passes of every carried map, bounded by the options; then one more of
    /// each, right before the switch.
    fn delta(&mut self, j: &mut Journal) -> Result<(), Error> {
        let carried = self.carried(j, Step::Delta)?;
        let limits = j.plan.options.delta.limits();
        for last in [false, true] {
            for c in &carried {
                checkpoint(Step::Delta.item_point())?;
                let _span =
                    tracing::info_span!("map", map = %c.plan.key, final_pass = last).entered();
                if let Some(s) = c.sockets() {
                    let (added, deleted) =
                        crate::sockets::pass(&mut self.kernel, &s, Step::Delta, self.dir.path())?;
                    tracing::info!(added, deleted, "socket pass");
                    j.counts.entry(c.plan.key.clone()).or_default().delta += added + deleted;
                    continue;
                }
                let carry = c.carry();
                let n = datapath::delta(&carry, self.dir.path(), (!last).then_some(&limits))?;
                tracing::info!(carried = n, "delta passes");
                j.counts.entry(c.plan.key.clone()).or_default().delta += n;
            }
        }
        // Right after the last pass: the daemon's writes, which the passes may have
        // carried over with the old map's converted entry.
        for w in self.writers.values() {
            let n = w.replay()?;
            tracing::info!(map = w.key(), replayed = n, "daemon writes replayed");
        }
        Ok(())
    }

    /// A dual-write handle to map `key` for the daemon's own writes, in the layout of
    /// the set `plan` applies; see [`MapWriter`]. Before an upgrade of the map it
    /// writes the installed map through the reverse conversion; while the upgrade
    /// runs, both maps; after it, the new map.
    ///
    /// # Errors
    /// Nothing is installed, or the plan creates the map (there is nothing to write
    /// before its commit).
    pub fn map_writer(&mut self, plan: &Plan, key: &str) -> Result<MapWriter, Error> {
        const STEP: &str = "handle";
        let m = plan.map(key).ok_or_else(|| Error::NoSuch {
            kind: "map",
            name: key.to_owned(),
        })?;
        let state = self
            .dir
            .read_state()?
            .ok_or_else(|| Error::Stale("nothing is installed: apply the plan first".into()))?;
        let old_key = m.from.as_deref().unwrap_or(key);
        let installed = state.maps.get(old_key).ok_or_else(|| Error::NoSuch {
            kind: "installed map",
            name: old_key.to_owned(),
        })?;
        let r = self
            .get(STEP, &installed.pin)?
            .ok_or_else(|| Error::Stale(format!("{} is gone", installed.pin)))?;
        let old = self.access(STEP, r)?;
        let target = match (&plan.start, m.action) {
            (Start::Upgrade { .. }, MapAction::Copy)
                if matches!(m.carry, crate::Carry::Sockets | crate::Carry::InnerMaps) =>
            {
                // A write of a descriptor cannot be replayed later: the descriptor may
                // be closed or reused by then.
                return Err(Error::Options(format!(
                    "map {key} holds sockets or inner maps, which this plan carries by \
                     reference: write its installed map (the upgrade's passes carry the \
                     change) or ask for its writer after the apply"
                )));
            }
            (Start::Upgrade { .. }, MapAction::Copy) => {
                let conversion = datapath::conversion(
                    &old.geometry(),
                    m.key_plan.as_ref(),
                    m.value_plan.as_ref(),
                );
                let fields = datapath::value_fields(key, &plan.models, &plan.options.merge_rules)?;
                let old_model = state.models.iter().find(|x| x.name == old_key);
                let new_model = plan.models.iter().find(|x| x.name == key);
                let locks = (
                    crate::carry::values_locked(old_model, new_model),
                    crate::carry::values_locked(new_model, new_model),
                );
                WriterTarget::Migrating(Box::new(Migration::new(old, conversion, fields, locks)))
            }
            (Start::Upgrade { .. }, MapAction::Create) => {
                return Err(Error::Options(format!(
                    "map {key} is created empty by this plan: ask for its writer after the apply"
                )));
            }
            _ => {
                let model = state.models.iter().find(|x| x.name == old_key);
                WriterTarget::Map(old, crate::carry::values_locked(model, model))
            }
        };
        let w = MapWriter::new(key, target);
        self.writers.insert(key.to_owned(), w.clone());
        Ok(w)
    }

    /// The new maps exist: the writers of carried maps write both.
    fn writers_start_dual(&mut self, j: &Journal) -> Result<(), Error> {
        let keys: Vec<(String, MapWriter)> = self
            .writers
            .iter()
            .map(|(k, w)| (k.clone(), w.clone()))
            .collect();
        for (key, w) in keys {
            if let Some(&r) = j.staged.maps.get(&key) {
                w.start_dual(self.access("preflight", r)?);
            }
        }
        Ok(())
    }

    /// The commit is done: the writers of replaced maps write the new map only.
    fn writers_settle(&mut self, j: &Journal) -> Result<(), Error> {
        let keys: Vec<(String, MapWriter)> = self
            .writers
            .iter()
            .map(|(k, w)| (k.clone(), w.clone()))
            .collect();
        for (key, w) in keys {
            if let Some(&r) = j.staged.maps.get(&key) {
                w.settle(self.access("commit", r)?);
            }
        }
        Ok(())
    }

    /// The three-way reconcile of every carried map not reconciled yet, the maps side
    /// by side (up to one thread per CPU), so that no map's undecidable window holds
    /// the reconciles of the others. Each map's marks (the keys done) are pinned under
    /// `stage/` while it runs, so a crash in the middle is followed by a run that
    /// carries on rather than applying a `sum` twice; the journal records each map
    /// when it is done.
    fn reconcile(&mut self, j: &mut Journal) -> Result<(), Error> {
        const STEP: &str = "reconcile";
        let mut prepared = Vec::new();
        for c in self.carried(j, Step::Reconcile)? {
            if j.reconciled.contains(&c.plan.key) {
                continue;
            }
            if let Some(s) = c.sockets() {
                // Sockets and inner maps: the last pass, before the merges run.
                let key = c.plan.key.clone();
                checkpoint(Step::Reconcile.item_point())?;
                let _span = tracing::info_span!("map", map = %key).entered();
                let n = crate::sockets::last_pass(&mut self.kernel, &s, self.dir.path())?;
                tracing::info!(
                    added = n.reconciled,
                    deleted = n.deleted,
                    unsure = n.sockets_unsure,
                    "sockets reconciled"
                );
                let counts = j.counts.entry(key.clone()).or_default();
                counts.reconciled += n.reconciled;
                counts.deleted += n.deleted;
                counts.sockets_unsure += n.sockets_unsure;
                j.reconciled.insert(key);
                self.dir.write_journal(j)?;
                continue;
            }
            prepared.push(self.prepare_reconcile(j, c)?);
        }
        let workers = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(prepared.len());
        let (dir, batch) = (self.dir.path().to_owned(), j.batch);
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let mut first_error = None;
        std::thread::scope(|s| -> Result<(), Error> {
            let (tx, rx) = mpsc::channel();
            for _ in 0..workers {
                let (tx, prepared, next, stop, dir) = (tx.clone(), &prepared, &next, &stop, &dir);
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = prepared.get(i) else {
                            break;
                        };
                        let r = checkpoint(Step::Reconcile.item_point())
                            .and_then(|()| p.run(dir, batch));
                        if r.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send((i, r)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for (i, r) in rx {
                let Some(p) = prepared.get(i) else {
                    continue;
                };
                match r {
                    Ok(report) => self.reconciled(j, p, &report)?,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            Ok(())
        })?;
        if let Some(e) = first_error {
            return Err(e);
        }
        // Marks of maps recorded done before a crash kept their unpin from running.
        self.drop_stage_pins(STEP, &marks_pin(""))?;
        Ok(())
    }

    /// What the reconcile of `c` runs with: its fields, its marks map (pinned), its
    /// patcher, tombstones and the keys the daemon wrote.
    fn prepare_reconcile(&mut self, j: &Journal, c: Carried) -> Result<Prepared, Error> {
        const STEP: &str = "reconcile";
        let key = c.plan.key.clone();
        let fields = datapath::value_fields(&key, &j.plan.models, &j.plan.options.merge_rules)?;
        let pin = marks_pin(&key);
        let marks = match self.get(STEP, &pin)? {
            Some(r) => r,
            None => {
                let max = c.old.geometry().max_entries;
                let r = self
                    .kernel
                    .create_map(c.new.geometry().key_size, MARK_VALUE_SIZE, max)
                    .map_err(kerr(STEP, format!("create the marks of {key}")))?;
                self.opened.insert(r);
                self.kernel
                    .pin(r, &pin)
                    .map_err(kerr(STEP, format!("pin {pin}")))?;
                r
            }
        };
        let marks_access = self.access(STEP, marks)?;
        // The in-kernel patcher takes the value's spin lock where it has one.
        let patcher = self
            .kernel
            .patcher(c.new_ref, &key, &fields, marks)
            .map_err(kerr(STEP, format!("the patcher of {key}")))?;
        let keep = self.writers.get(&key).map(MapWriter::written_after_replay);
        let tombstones = match j.plan.options.tombstones.get(&key) {
            Some(t) => {
                let pin = plan::map_pin(t);
                let r = match j.staged.maps.get(t) {
                    Some(&r) => self.staged(STEP, &pin, r)?,
                    // Reused from the installed set.
                    None => self.get(STEP, &pin)?.ok_or_else(|| {
                        Error::Options(format!(
                            "the tombstone map {t} of {key} is not a map of the set"
                        ))
                    })?,
                };
                Some(self.access(STEP, r)?)
            }
            None => None,
        };
        Ok(Prepared {
            c,
            fields,
            pin,
            marks: marks_access,
            patcher,
            tombstones,
            keep,
        })
    }

    /// Records the reconcile of `p` done: its counts in the journal, its marks unpinned.
    fn reconciled(
        &mut self,
        j: &mut Journal,
        p: &Prepared,
        report: &crate::migrate::ReconcileReport,
    ) -> Result<(), Error> {
        const STEP: &str = "reconcile";
        let key = &p.c.plan.key;
        tracing::info!(
            map = %key,
            added = report.added,
            changed = report.changed,
            deleted = report.deleted,
            kept_new = report.kept_new,
            resumed = report.resumed,
            tombstoned = report.tombstoned,
            ambiguous_adds = report.ambiguous_adds,
            rewritten = report.rewritten,
            window_us = report.window.as_micros(),
            "reconciled"
        );
        let counts = j.counts.entry(key.clone()).or_default();
        counts.reconciled += (report.added + report.changed) as u64;
        counts.deleted += report.deleted as u64;
        counts.conflicts +=
            (report.conflicts.new + report.conflicts.sum + report.conflicts.max) as u64;
        counts.window_us = u64::try_from(report.window.as_micros()).unwrap_or(u64::MAX);
        counts.tombstoned += report.tombstoned as u64;
        counts.ambiguous_adds += report.ambiguous_adds as u64;
        counts.rewritten += report.rewritten as u64;
        j.reconciled.insert(key.clone());
        self.dir.write_journal(j)?;
        self.kernel
            .unpin(&p.pin)
            .map_err(kerr(STEP, format!("unpin {}", p.pin)))?;
        Ok(())
    }

    /// Removes the merge bases of the maps the upgrade carries.
    fn remove_bases(&self, j: &Journal) -> Result<(), Error> {
        for m in j.plan.maps.iter().filter(|m| m.action == MapAction::Copy) {
            crate::files::remove(&crate::migrate::base_path(self.dir.path(), &m.key))?;
            crate::files::remove(&crate::sockets::record_path(self.dir.path(), &m.key))?;
        }
        Ok(())
    }

    /// Removes every pin under `prefix` (a directory of `stage/`).
    fn drop_stage_pins(&mut self, step: &'static str, prefix: &str) -> Result<(), Error> {
        let pins: Vec<String> = self
            .kernel
            .pins()
            .map_err(kerr(step, "list pins"))?
            .into_iter()
            .filter(|p| p.starts_with(prefix))
            .collect();
        for pin in pins {
            self.kernel
                .unpin(&pin)
                .map_err(kerr(step, format!("unpin {pin}")))?;
        }
        Ok(())
    }

    fn access(&mut self, step: &'static str, map: ObjRef) -> Result<Arc<dyn MapAccess>, Error> {
        self.kernel
            .map_access(map)
            .map_err(kerr(step, format!("open {map}")))
    }

    /// The program id the old set ran for an attachment.
    fn old_link(j: &Journal, name: &str) -> Option<LinkRecord> {
        j.old.as_ref().and_then(|s| s.links.get(name)).cloned()
    }

    fn switch(&mut self, j: &mut Journal) -> Result<(), Error> {
        const STEP: &str = "switch";
        let plan = j.plan.clone();
        let started = Instant::now();
        let base_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let base_ns = u64::try_from(base_ns).unwrap_or(u64::MAX);
        let mut first: Option<Duration> = None;
        let mut last = Duration::ZERO;
        for a in plan
            .attachments
            .iter()
            .filter(|a| a.action != AttachAction::Detach)
        {
            checkpoint(Step::Switch.item_point())?;
            let Some(&new_prog) = j.staged.programs.get(&a.program) else {
                return Err(Error::Options(format!(
                    "attachment {} names no loaded program",
                    a.name
                )));
            };
            let new_prog = self.staged(STEP, &plan::prog_pin(&a.program), new_prog)?;
            let mut switched = false;
            if a.hold == Hold::ProgAttach {
                switched = self.switch_attached(j, a, new_prog)?;
                if switched {
                    let t = started.elapsed();
                    first.get_or_insert(t);
                    last = t;
                }
                continue;
            }
            match a.action {
                AttachAction::Switch(SwitchMethod::LinkUpdate) => {
                    let old = Self::old_link(j, &a.name).ok_or_else(|| {
                        Error::Stale(format!(
                            "attachment {} is not in the installed state",
                            a.name
                        ))
                    })?;
                    let link = self
                        .get(STEP, &a.pin)?
                        .ok_or_else(|| Error::Stale(format!("link {} is gone", a.pin)))?;
                    let runs = self
                        .kernel
                        .link_program(link)
                        .map_err(kerr(STEP, format!("inspect {}", a.pin)))?;
                    if runs != Some(new_prog.id) {
                        let expected = ObjRef::prog(old.prog);
                        // The old program must be open for the compare-and-swap.
                        let old_prog = self.get(STEP, &plan::prog_pin(&old.attachment.program))?;
                        let expected = old_prog.filter(|p| p.id == old.prog).unwrap_or(expected);
                        match self.kernel.update_link(link, new_prog, expected) {
                            Ok(()) => switched = true,
                            Err(e @ KernelError::Mismatch { .. }) => {
                                return Err(Error::Aborted {
                                    reason: format!("attachment {}: {e}", a.name),
                                });
                            }
                            Err(e) => return Err(kerr(STEP, format!("update {}", a.pin))(e)),
                        }
                    }
                }
                AttachAction::Attach | AttachAction::Switch(SwitchMethod::AttachThenDetach) => {
                    let stage = staged_pin(&a.pin);
                    let link = match self.get(STEP, &stage)? {
                        Some(l) => l,
                        None => {
                            let point = in_set(j, &a.point);
                            let l = self.kernel.attach(new_prog, &point).map_err(kerr(
                                STEP,
                                format!("attach {} at {}", a.program, a.point),
                            ))?;
                            self.opened.insert(l);
                            self.kernel
                                .pin(l, &stage)
                                .map_err(kerr(STEP, format!("pin {stage}")))?;
                            switched = true;
                            l
                        }
                    };
                    j.new_links.insert(a.name.clone(), link);
                    if a.action == AttachAction::Switch(SwitchMethod::AttachThenDetach) {
                        // The new link runs; now the old one stops.
                        if let Some(old) = self.get(STEP, &a.pin)? {
                            let runs = self
                                .kernel
                                .link_program(old)
                                .map_err(kerr(STEP, format!("inspect {}", a.pin)))?;
                            if runs.is_some() {
                                self.stop_link(STEP, old, &a.pin)?;
                            }
                        }
                    }
                }
                AttachAction::Switch(
                    SwitchMethod::ProgAttachReplace | SwitchMethod::MapProgAttach,
                ) => {
                    return Err(Error::Options(format!(
                        "attachment {} is held by a link, which a prog attach cannot switch",
                        a.name
                    )));
                }
                AttachAction::Verify | AttachAction::Detach => {}
            }
            if switched {
                let t = started.elapsed();
                first.get_or_insert(t);
                last = t;
            }
        }
        if let Some(first) = first {
            let ns = |d: Duration| {
                base_ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            };
            j.switch_window_ns = Some((ns(first), ns(last)));
        }
        Ok(())
    }

    /// Stops the link `link` pinned at `pin`: detached, or, where the kernel has no
    /// detach for its type (tracing, raw tracepoint), unpinned and let go of, which
    /// frees it (a rollback attaches the old program again).
    fn stop_link(&mut self, step: &'static str, link: ObjRef, pin: &str) -> Result<(), Error> {
        match self.kernel.detach(link) {
            Ok(()) => Ok(()),
            Err(KernelError::Unsupported { .. }) => {
                self.kernel
                    .unpin(pin)
                    .map_err(kerr(step, format!("unpin {pin}")))?;
                self.opened.remove(&link);
                self.kernel.release(link);
                Ok(())
            }
            Err(e) => Err(kerr(step, format!("detach {pin}"))(e)),
        }
    }

    /// Switches or makes an attachment held by its cgroup without a link; whether
    /// it changed the hook (a run after a crash finds the new program attached).
    fn switch_attached(
        &mut self,
        j: &mut Journal,
        a: &plan::AttachPlan,
        new_prog: ObjRef,
    ) -> Result<bool, Error> {
        const STEP: &str = "switch";
        let point = in_set(j, &a.point).into_owned();
        let (cgroup, ids) = match self.kernel.prog_query(&point) {
            Ok(answer) => answer,
            // A socket map that answers no query: attached (again) below.
            Err(KernelError::Unsupported { .. }) => (hook_target(&point), Vec::new()),
            Err(e) => return Err(kerr(STEP, format!("query {point}"))(e)),
        };
        j.attached.insert(a.name.clone(), cgroup);
        if ids.contains(&new_prog.id) {
            return Ok(false);
        }
        match a.action {
            AttachAction::Switch(_) => {
                let old = j
                    .old
                    .as_ref()
                    .and_then(|s| s.attached.get(&a.name))
                    .cloned()
                    .ok_or_else(|| {
                        Error::Stale(format!(
                            "attachment {} is not in the installed state",
                            a.name
                        ))
                    })?;
                // The old program held open for the compare-and-swap.
                let pinned = self.get(STEP, &plan::prog_pin(&old.attachment.program))?;
                let expected = pinned
                    .filter(|p| p.id == old.prog)
                    .unwrap_or(ObjRef::prog(old.prog));
                match self.kernel.prog_replace(&point, new_prog, expected) {
                    Ok(()) => Ok(true),
                    Err(e @ KernelError::Mismatch { .. }) => Err(Error::Aborted {
                        reason: format!("attachment {}: {e}", a.name),
                    }),
                    Err(e) => Err(kerr(STEP, format!("replace at {point}"))(e)),
                }
            }
            AttachAction::Attach => {
                let cgroup = self
                    .kernel
                    .prog_attach(new_prog, &point)
                    .map_err(kerr(STEP, format!("attach {} at {point}", a.program)))?;
                j.attached.insert(a.name.clone(), cgroup);
                Ok(true)
            }
            AttachAction::Verify | AttachAction::Detach => Ok(false),
        }
    }

    /// Detaches a recorded program from a cgroup hook, if it is still attached.
    fn detach_attached(
        &mut self,
        step: &'static str,
        point: &AttachPoint,
        prog: u32,
    ) -> Result<bool, Error> {
        self.kernel
            .prog_detach(point, ObjRef::prog(prog))
            .map_err(kerr(step, format!("detach prog {prog} from {point}")))
    }

    fn commit(&mut self, j: &mut Journal) -> Result<(), Error> {
        const STEP: &str = "commit";
        let plan = j.plan.clone();
        let mut moves: Vec<(String, ObjRef)> = Vec::new();
        for (key, r) in &j.staged.maps {
            moves.push((plan::map_pin(key), *r));
        }
        for (name, r) in &j.staged.programs {
            moves.push((plan::prog_pin(name), *r));
        }
        for (name, r) in &j.new_links {
            moves.push((plan::link_pin(name), *r));
        }
        for (live, r) in moves {
            checkpoint(Step::Commit.item_point())?;
            let stage = staged_pin(&live);
            let at_live = self.get(STEP, &live)?;
            if at_live != Some(r) {
                let held = self.get(STEP, &stage)?.ok_or_else(|| Error::Kernel {
                    step: STEP,
                    what: format!("exchange {stage} over {live}"),
                    source: KernelError::Missing {
                        what: stage.clone(),
                    },
                })?;
                self.kernel
                    .exchange(held, &live)
                    .map_err(kerr(STEP, format!("exchange {stage} over {live}")))?;
            }
            self.kernel
                .unpin(&stage)
                .map_err(kerr(STEP, format!("unpin {stage}")))?;
        }
        // Attachments of the old set that the new one drops.
        for a in plan
            .attachments
            .iter()
            .filter(|a| a.action == AttachAction::Detach)
        {
            checkpoint(Step::Commit.item_point())?;
            if a.hold == Hold::ProgAttach {
                if let Some(s) = &j.old
                    && let Some(old) = s.attached.get(&a.name)
                {
                    let (point, prog) = (in_state(s, &old.attachment.point).into_owned(), old.prog);
                    self.detach_attached(STEP, &point, prog)?;
                }
                continue;
            }
            if let Some(link) = self.get(STEP, &a.pin)? {
                self.stop_link(STEP, link, &a.pin)?;
                self.kernel
                    .unpin(&a.pin)
                    .map_err(kerr(STEP, format!("unpin {}", a.pin)))?;
            }
        }
        let state = plan_state(j)?;
        self.dir.write_state(&state)
    }

    fn release(&mut self, j: &mut Journal) -> Result<(), Error> {
        const STEP: &str = "release";
        let new = plan_state(j)?;
        let live: BTreeSet<String> = new
            .maps
            .values()
            .chain(new.programs.values())
            .map(|p| p.pin.clone())
            .chain(new.links.values().map(|l| l.pin.clone()))
            .collect();
        for pin in &live {
            checkpoint(Step::Release.item_point())?;
            self.kernel
                .drop_rollback(pin)
                .map_err(kerr(STEP, format!("drop rollback of {pin}")))?;
        }
        if let Some(old) = &j.old {
            let gone: Vec<String> = old
                .maps
                .values()
                .chain(old.programs.values())
                .map(|p| p.pin.clone())
                .filter(|p| !live.contains(p))
                .collect();
            for pin in gone {
                checkpoint(Step::Release.item_point())?;
                self.kernel
                    .unpin(&pin)
                    .map_err(kerr(STEP, format!("unpin {pin}")))?;
            }
        }
        self.drop_stage_pins(STEP, "stage/")?;
        self.remove_bases(j)?;
        // Old objects this process opened are released now, not when it exits.
        for r in std::mem::take(&mut self.opened) {
            if !new.objects().contains(&r) {
                self.kernel.release(r);
            } else {
                self.opened.insert(r);
            }
        }
        Ok(())
    }

    /// Undoes an upgrade that did not reach its point of no return, or that was
    /// aborted: attachments moved back, every staged pin removed, the journal closed.
    fn rollback(&mut self, j: &Journal) -> Result<(), Error> {
        const STEP: &str = "rollback";
        for w in self.writers.values() {
            w.abandon();
        }
        checkpoint("rollback:start")?;
        // Attachments whose old program runs through a new link now, by name.
        let mut relinked = BTreeMap::new();
        for a in &j.plan.attachments {
            if a.hold == Hold::ProgAttach {
                checkpoint("rollback:item")?;
                self.rollback_attached(j, a)?;
                continue;
            }
            let AttachAction::Switch(method) = a.action else {
                continue;
            };
            let Some(old) = Self::old_link(j, &a.name) else {
                continue;
            };
            checkpoint("rollback:item")?;
            // A link without update nor detach was stopped by removing its pin.
            let link = self.get(STEP, &a.pin)?;
            let runs = match link {
                Some(link) => self
                    .kernel
                    .link_program(link)
                    .map_err(kerr(STEP, format!("inspect {}", a.pin)))?,
                None if method == SwitchMethod::AttachThenDetach => None,
                None => continue,
            };
            let new_prog = j.staged.programs.get(&a.program).copied();
            let old_prog = self.get(STEP, &plan::prog_pin(&old.attachment.program))?;
            match method {
                SwitchMethod::LinkUpdate => {
                    if let (Some(new), Some(old_prog)) = (new_prog, old_prog)
                        && runs == Some(new.id)
                        && old_prog.id == old.prog
                    {
                        let new = self.staged(STEP, &plan::prog_pin(&a.program), new)?;
                        let Some(link) = link else { continue };
                        self.kernel
                            .update_link(link, old_prog, new)
                            .map_err(kerr(STEP, format!("move {} back", a.pin)))?;
                    }
                }
                SwitchMethod::ProgAttachReplace | SwitchMethod::MapProgAttach => {}
                SwitchMethod::AttachThenDetach => {
                    if runs.is_none()
                        && let Some(old_prog) = old_prog.filter(|p| p.id == old.prog)
                    {
                        let point = match &j.old {
                            Some(s) => in_state(s, &a.point),
                            None => Cow::Borrowed(&a.point),
                        };
                        let l = self
                            .kernel
                            .attach(old_prog, &point)
                            .map_err(kerr(STEP, format!("attach {} again", a.program)))?;
                        self.opened.insert(l);
                        self.kernel
                            .exchange(l, &a.pin)
                            .map_err(kerr(STEP, format!("pin {}", a.pin)))?;
                        self.kernel
                            .drop_rollback(&a.pin)
                            .map_err(kerr(STEP, format!("drop {}", a.pin)))?;
                    }
                    // Also after a crash between the attach and the state's write.
                    if let Some(l) = self.get(STEP, &a.pin)?
                        && l.id != old.id
                    {
                        relinked.insert(a.name.clone(), l.id);
                    }
                }
            }
        }
        if !relinked.is_empty()
            && let Some(mut state) = self.dir.read_state()?
        {
            for (name, id) in &relinked {
                if let Some(l) = state.links.get_mut(name) {
                    l.id = *id;
                }
            }
            self.dir.write_state(&state)?;
        }
        let stage: Vec<String> = self
            .kernel
            .pins()
            .map_err(kerr(STEP, "list pins"))?
            .into_iter()
            .filter(|p| p.starts_with("stage/"))
            .collect();
        for pin in stage {
            checkpoint("rollback:item")?;
            self.kernel
                .unpin(&pin)
                .map_err(kerr(STEP, format!("unpin {pin}")))?;
        }
        self.remove_bases(j)?;
        checkpoint("rollback:end")?;
        self.dir.remove_journal()?;
        let staged: BTreeSet<ObjRef> = j
            .staged
            .maps
            .values()
            .chain(j.staged.programs.values())
            .chain(j.new_links.values())
            .chain(j.staged.btf.iter())
            .copied()
            .collect();
        for r in staged {
            self.opened.remove(&r);
            self.kernel.release(r);
        }
        Ok(())
    }

    /// Undoes the switch of an attachment held by its cgroup without a link: the old
    /// program put back in the new one's place (compare-and-swap), or a program this
    /// upgrade attached detached.
    fn rollback_attached(&mut self, j: &Journal, a: &plan::AttachPlan) -> Result<(), Error> {
        const STEP: &str = "rollback";
        let Some(&new) = j.staged.programs.get(&a.program) else {
            return Ok(());
        };
        let point = in_set(j, &a.point).into_owned();
        match a.action {
            AttachAction::Switch(_) => {
                match self.kernel.prog_query(&point) {
                    Ok((_, ids)) if !ids.contains(&new.id) => return Ok(()),
                    // Where the kernel cannot say, the old program is put back anyway.
                    Ok(_) | Err(KernelError::Unsupported { .. }) => {}
                    Err(e) => return Err(kerr(STEP, format!("query {point}"))(e)),
                }
                let Some(old) = j.old.as_ref().and_then(|s| s.attached.get(&a.name)) else {
                    return Ok(());
                };
                let (old_name, old_id) = (old.attachment.program.clone(), old.prog);
                let Some(old_prog) = self
                    .get(STEP, &plan::prog_pin(&old_name))?
                    .filter(|p| p.id == old_id)
                else {
                    return Ok(());
                };
                let new = self.staged(STEP, &plan::prog_pin(&a.program), new)?;
                self.kernel
                    .prog_replace(&point, old_prog, new)
                    .map_err(kerr(STEP, format!("move {point} back")))
            }
            AttachAction::Attach => {
                self.detach_attached(STEP, &point, new.id)?;
                Ok(())
            }
            AttachAction::Verify | AttachAction::Detach => Ok(()),
        }
    }

    /// Finishes an interrupted upgrade, forward or back as its journal says; `None`
    /// when there is none.
    ///
    /// # Errors
    /// The journal is not trusted, or a step fails again.
    pub fn recover(&mut self) -> Result<Option<Recovered>, Error> {
        let result = self.recover_inner();
        if !matches!(result, Err(Error::Crashed { .. })) {
            self.release_opened();
        }
        result
    }

    fn recover_inner(&mut self) -> Result<Option<Recovered>, Error> {
        let Some(mut j) = self.dir.read_journal()? else {
            return Ok(None);
        };
        let direction = j.recovery_direction();
        match direction {
            Direction::Forward => {
                self.forward(&mut j, None)?;
                self.adopt(&plan_state(&j)?);
            }
            Direction::Back => {
                if j.direction != Direction::Back {
                    j.direction = Direction::Back;
                    self.dir.write_journal(&j)?;
                }
                self.rollback(&j)?;
            }
        }
        Ok(Some(Recovered {
            tx: j.tx,
            direction,
        }))
    }

    /// A restart: reopens the pins, loads nothing, and attaches again what is
    /// recorded but no longer live.
    fn restart(&mut self, plan: &Plan) -> Result<Report, Error> {
        const STEP: &str = "restart";
        let mut state = self
            .dir
            .read_state()?
            .ok_or_else(|| Error::Stale("nothing is installed".into()))?;
        let mut reattached = Vec::new();
        let names: Vec<String> = state.links.keys().cloned().collect();
        for name in names {
            let Some(l) = state.links.get(&name).cloned() else {
                continue;
            };
            let live = match self.get(STEP, &l.pin)? {
                Some(link) => {
                    self.kernel
                        .link_program(link)
                        .map_err(kerr(STEP, format!("inspect {}", l.pin)))?
                        == Some(l.prog)
                }
                None => false,
            };
            if live {
                continue;
            }
            checkpoint("reattach:item")?;
            let pin = plan::prog_pin(&l.attachment.program);
            let prog = self
                .get(STEP, &pin)?
                .ok_or_else(|| Error::Stale(format!("program pin {pin} is gone")))?;
            let point = in_state(&state, &l.attachment.point).into_owned();
            let link = self.kernel.attach(prog, &point).map_err(kerr(
                STEP,
                format!("attach {} at {point}", l.attachment.program),
            ))?;
            self.opened.insert(link);
            self.kernel
                .exchange(link, &l.pin)
                .map_err(kerr(STEP, format!("pin {}", l.pin)))?;
            self.kernel
                .drop_rollback(&l.pin)
                .map_err(kerr(STEP, format!("drop {}", l.pin)))?;
            if let Some(rec) = state.links.get_mut(&name) {
                rec.id = link.id;
                rec.prog = prog.id;
            }
            self.dir.write_state(&state)?;
            reattached.push(name);
        }
        let names: Vec<String> = state.attached.keys().cloned().collect();
        for name in names {
            let Some(r) = state.attached.get(&name).cloned() else {
                continue;
            };
            let point = in_state(&state, &r.attachment.point).into_owned();
            let known = match self.kernel.prog_query(&point) {
                Ok((_, ids)) if ids.contains(&r.prog) => continue,
                Ok(_) => true,
                // A socket map that answers no query (before 5.19): the program is
                // attached again, which changes nothing where it is there.
                Err(KernelError::Unsupported { .. }) => false,
                Err(e) => return Err(kerr(STEP, format!("query {point}"))(e)),
            };
            checkpoint("reattach:item")?;
            let pin = plan::prog_pin(&r.attachment.program);
            let prog = self
                .get(STEP, &pin)?
                .ok_or_else(|| Error::Stale(format!("program pin {pin} is gone")))?;
            let cgroup = self.kernel.prog_attach(prog, &point).map_err(kerr(
                STEP,
                format!("attach {} at {point}", r.attachment.program),
            ))?;
            if !known && state.attached.get(&name).is_some_and(|r| r.prog == prog.id) {
                continue;
            }
            if let Some(rec) = state.attached.get_mut(&name) {
                rec.cgroup_id = cgroup;
                rec.prog = prog.id;
            }
            self.dir.write_state(&state)?;
            reattached.push(name);
        }
        for p in state.maps.values().chain(state.programs.values()) {
            self.get(STEP, &p.pin)?;
        }
        self.adopt(&state);
        state = self.dir.read_state()?.unwrap_or(state);
        Ok(Report {
            identity: state.identity,
            start: plan.start.clone(),
            maps: BTreeMap::new(),
            reattached,
            switch_window_us: None,
            recovered: None,
        })
    }

    /// Removes the installed set: links detached, every pin and the state removed.
    /// An interrupted upgrade is recovered first. Returns every kernel object of the
    /// set, which the kernel frees once nothing holds it (see [`wait_gone`]).
    ///
    /// # Errors
    /// A pin cannot be removed; the state is kept then, and uninstall can run again.
    pub fn uninstall(&mut self) -> Result<Uninstalled, Error> {
        const STEP: &str = "uninstall";
        self.recover_inner()?;
        let Some(state) = self.dir.read_state()? else {
            return Ok(Uninstalled {
                objects: Vec::new(),
                pins: Vec::new(),
            });
        };
        let mut pins = Vec::new();
        for l in state.links.values() {
            checkpoint("uninstall:item")?;
            if let Some(link) = self.get(STEP, &l.pin)? {
                match self.kernel.detach(link) {
                    // Freed with its pin, below, and the hold, after.
                    Ok(()) | Err(KernelError::Unsupported { .. }) => {}
                    Err(e) => return Err(kerr(STEP, format!("detach {}", l.pin))(e)),
                }
            }
            if self
                .kernel
                .unpin(&l.pin)
                .map_err(kerr(STEP, format!("unpin {}", l.pin)))?
            {
                pins.push(l.pin.clone());
            }
        }
        for r in state.attached.values() {
            checkpoint("uninstall:item")?;
            let point = in_state(&state, &r.attachment.point).into_owned();
            self.detach_attached(STEP, &point, r.prog)?;
        }
        for p in state.programs.values().chain(state.maps.values()) {
            checkpoint("uninstall:item")?;
            if self
                .kernel
                .unpin(&p.pin)
                .map_err(kerr(STEP, format!("unpin {}", p.pin)))?
            {
                pins.push(p.pin.clone());
            }
        }
        self.maps.clear();
        self.programs.clear();
        for r in state.objects() {
            self.kernel.release(r);
        }
        self.release_opened();
        self.kernel
            .cleanup()
            .map_err(kerr(STEP, "remove pin directories"))?;
        self.dir.remove_state()?;
        Ok(Uninstalled {
            objects: state.objects(),
            pins,
        })
    }

    /// Access to a map of the installed set by key.
    ///
    /// # Errors
    /// [`Error::NoSuch`] when the set has no such map.
    pub fn map_access(&mut self, key: &str) -> Result<Arc<dyn MapAccess>, Error> {
        let r = *self.maps.get(key).ok_or_else(|| Error::NoSuch {
            kind: "map",
            name: key.to_owned(),
        })?;
        self.access("handle", r)
    }

    /// A typed handle to a map of the installed set; `K` and `V` must have the map's
    /// key and value sizes.
    ///
    /// # Errors
    /// [`Error::NoSuch`], [`Error::Size`].
    pub fn map<Key, Value>(&mut self, key: &str) -> Result<TypedMap<Key, Value>, Error>
    where
        Key: zerocopy::IntoBytes + zerocopy::Immutable,
        Value: zerocopy::IntoBytes + zerocopy::FromBytes + zerocopy::Immutable,
    {
        let access = self.map_access(key)?;
        let g = access.geometry();
        for (what, actual, expected) in [
            ("key", g.key_size, size_of::<Key>()),
            ("value", g.value_len, size_of::<Value>()),
        ] {
            if actual != expected {
                return Err(Error::Size {
                    map: key.to_owned(),
                    what,
                    actual,
                    expected,
                });
            }
        }
        Ok(TypedMap {
            access,
            _types: PhantomData,
        })
    }

    /// The installed program `name`.
    ///
    /// # Errors
    /// [`Error::NoSuch`].
    pub fn program(&self, name: &str) -> Result<ObjRef, Error> {
        self.programs
            .get(name)
            .copied()
            .ok_or_else(|| Error::NoSuch {
                kind: "program",
                name: name.to_owned(),
            })
    }
}

/// A map of the installed set with typed keys and values.
pub struct TypedMap<K, V> {
    access: Arc<dyn MapAccess>,
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V> std::fmt::Debug for TypedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedMap")
            .field("geometry", &self.access.geometry())
            .finish()
    }
}

impl<K, V> TypedMap<K, V>
where
    K: zerocopy::IntoBytes + zerocopy::Immutable,
    V: zerocopy::IntoBytes + zerocopy::FromBytes + zerocopy::Immutable,
{
    /// The value at `key`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn get(&self, key: &K) -> Result<Option<V>, handover_sys::Error> {
        let mut v = V::new_zeroed();
        let found = self.access.lookup(
            key.as_bytes(),
            v.as_mut_bytes(),
            handover_sys::UpdateFlags::ANY,
        )?;
        Ok(found.then_some(v))
    }

    /// Writes `value` at `key`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn insert(&self, key: &K, value: &V) -> Result<(), handover_sys::Error> {
        self.access.update(
            key.as_bytes(),
            value.as_bytes(),
            handover_sys::UpdateFlags::ANY,
        )
    }

    /// Deletes `key`; `false` when there was none.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn remove(&self, key: &K) -> Result<bool, handover_sys::Error> {
        self.access.delete(key.as_bytes())
    }
}

/// The state a journal's upgrade commits: the plan's set with the staged ids, reused
/// maps with their live ids.
fn plan_state(j: &Journal) -> Result<State, Error> {
    let plan = &j.plan;
    let mut maps = BTreeMap::new();
    for m in plan.maps.iter().filter(|m| m.action != MapAction::Remove) {
        let id = match j.staged.maps.get(&m.key) {
            Some(r) => r.id,
            None => {
                let old = j
                    .old
                    .as_ref()
                    .and_then(|s| s.maps.get(&m.key))
                    .ok_or_else(|| {
                        Error::Stale(format!("map {} is neither staged nor installed", m.key))
                    })?;
                old.id
            }
        };
        maps.insert(
            m.key.clone(),
            Pinned {
                pin: m.pin.clone(),
                id,
            },
        );
    }
    let mut programs = BTreeMap::new();
    for p in plan
        .programs
        .iter()
        .filter(|p| p.action != ProgramAction::Remove)
    {
        let id = j
            .staged
            .programs
            .get(&p.name)
            .ok_or_else(|| Error::Stale(format!("program {} was not staged", p.name)))?
            .id;
        programs.insert(
            p.name.clone(),
            Pinned {
                pin: p.pin.clone(),
                id,
            },
        );
    }
    let mut links = BTreeMap::new();
    let mut attached = BTreeMap::new();
    for a in plan
        .attachments
        .iter()
        .filter(|a| a.action != AttachAction::Detach)
    {
        let prog = programs.get(&a.program).map_or(0, |p| p.id);
        let attachment = plan
            .options
            .attachments
            .iter()
            .find(|x| x.name == a.name)
            .cloned()
            .ok_or_else(|| {
                Error::Options(format!("attachment {} is not in the options", a.name))
            })?;
        if a.hold == Hold::ProgAttach {
            let cgroup_id = j
                .attached
                .get(&a.name)
                .copied()
                .or_else(|| {
                    j.old
                        .as_ref()
                        .and_then(|s| s.attached.get(&a.name))
                        .map(|r| r.cgroup_id)
                })
                .unwrap_or(0);
            attached.insert(
                a.name.clone(),
                AttachedRecord {
                    attachment,
                    cgroup_id,
                    prog,
                },
            );
            continue;
        }
        let id = match j.new_links.get(&a.name) {
            Some(r) => r.id,
            None => j
                .old
                .as_ref()
                .and_then(|s| s.links.get(&a.name))
                .map_or(0, |l| l.id),
        };
        links.insert(
            a.name.clone(),
            LinkRecord {
                attachment,
                pin: a.pin.clone(),
                id,
                prog,
            },
        );
    }
    Ok(State {
        identity: plan.identity.clone(),
        objects: plan.objects.clone(),
        options: plan.options.clone(),
        models: plan.models.clone(),
        maps,
        programs,
        links,
        attached,
        btf: j.staged.btf.iter().map(|r| r.id).collect(),
    })
}

fn describe_live_change(then: &LiveState, now: &LiveState) -> String {
    let mut changes = Vec::new();
    for (pin, id) in &then.pins {
        match now.pins.get(pin) {
            None => changes.push(format!("{pin} is gone")),
            Some(n) if n != id => changes.push(format!("{pin} holds id {n}, not {id}")),
            _ => {}
        }
    }
    for pin in now.pins.keys().filter(|p| !then.pins.contains_key(*p)) {
        changes.push(format!("{pin} appeared"));
    }
    for (pin, prog) in &then.links {
        if let Some(n) = now.links.get(pin).filter(|n| *n != prog) {
            changes.push(format!("link {pin} runs program {n}, not {prog}"));
        }
    }
    for (name, prog) in &then.attached {
        if let Some(n) = now.attached.get(name).filter(|n| *n != prog) {
            changes.push(match n {
                0 => format!("attachment {name}: program {prog} is no longer attached"),
                n => format!("attachment {name}: program {n} is attached, not {prog}"),
            });
        }
    }
    format!("the live state changed: {}", changes.join("; "))
}

/// Waits until none of `objects` exists in the kernel any more (the kernel frees
/// them after an RCU grace period), at most `timeout`; returns those still alive.
pub fn wait_gone<K: Kernel>(kernel: &mut K, objects: &[ObjRef], timeout: Duration) -> Vec<ObjRef> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<ObjRef> = objects
            .iter()
            .copied()
            .filter(|r| kernel.alive(*r))
            .collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
