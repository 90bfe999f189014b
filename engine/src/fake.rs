//! [`FakeKernel`]: the kernel as an in-memory model, for driving the executor and its
//! recovery through every crash point without privileges.
//!
//! A [`FakeWorld`] is one machine: objects with ids, pins, links at attach points.
//! Each [`FakeKernel`] is one process on it, holding the objects it opened or
//! created. Objects are freed the way the kernel frees them: an object that no pin,
//! no process and no other live object refers to is gone (programs hold their maps and
//! BTF, links their program, program arrays their programs); a freed link detaches.
//! Dropping a `FakeKernel` is a process dying: its holds go, and with them every
//! object only it kept alive, such as a map it created but never pinned.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use handover_loader::{MapOrigin, Object, ObjectOptions};

use crate::kernel::{Kernel, KernelError, KernelFacts, Kind, LoadedSet, ObjRef, ObjectSource};
use crate::migrate::{FakeMap, Geometry, MapAccess, SocketReport};
use crate::options::{AttachPoint, Options};
use crate::plan::map_key;

const ROLLBACK_SUFFIX: &str = "__handover_prev";

#[derive(Debug)]
enum Obj {
    Map { name: String, map: Arc<FakeMap> },
    Prog { name: String, refs: Vec<ObjRef> },
    Link { prog: Option<ObjRef>, point: String },
    Btf,
}

#[derive(Debug, Default)]
struct World {
    next: BTreeMap<Kind, u32>,
    objects: BTreeMap<ObjRef, Obj>,
    pins: BTreeMap<String, ObjRef>,
    holds: BTreeMap<u64, BTreeSet<ObjRef>>,
    next_process: u64,
    refuse_loads: Option<String>,
    refuse_attach: bool,
    barriers: usize,
    no_tcx: bool,
    no_sockmap_iter: bool,
    /// Programs held by cgroup hooks without a link (`BPF_PROG_ATTACH`), by hook
    /// (the attach point's text), in the order they run.
    cgroup_progs: BTreeMap<String, Vec<ObjRef>>,
    /// Ids of the cgroups by path, given on first use.
    cgroup_ids: BTreeMap<String, u64>,
    no_cgroup_links: bool,
    no_sockmap_links: bool,
    /// The map of each socket map hook in [`World::cgroup_progs`]: its programs are
    /// held while the map has a user (a pin or a descriptor), as the kernel releases
    /// a socket map's programs when its last user goes.
    hook_maps: BTreeMap<String, ObjRef>,
    /// A kernel without perf-event links (before 5.15), without the `kprobe` PMU,
    /// without the `uprobe` PMU.
    no_perf_links: bool,
    no_kprobes: bool,
    no_uprobes: bool,
}

/// The cgroup path of a cgroup hook (the map id of a socket map hook); the hook's key
/// in [`World::cgroup_progs`].
fn cgroup_hook(point: &AttachPoint) -> Result<(String, String), KernelError> {
    match point {
        AttachPoint::Cgroup { path, .. } => Ok((path.display().to_string(), point.to_string())),
        AttachPoint::SockMap {
            target: Some(id), ..
        } => Ok((id.to_string(), point.to_string())),
        _ => Err(KernelError::failed(
            format!("attach without a link at {point}"),
            std::io::Error::from_raw_os_error(libc::EINVAL),
        )),
    }
}

impl World {
    fn cgroup_id(&mut self, path: String) -> u64 {
        let next = self.cgroup_ids.len() as u64 + 1;
        *self.cgroup_ids.entry(path).or_insert(next)
    }

    fn new_id(&mut self, kind: Kind) -> ObjRef {
        let n = self.next.entry(kind).or_insert(0);
        *n += 1;
        ObjRef { kind, id: *n }
    }

    fn add(&mut self, process: u64, obj: Obj, kind: Kind) -> ObjRef {
        let r = self.new_id(kind);
        self.objects.insert(r, obj);
        self.holds.entry(process).or_default().insert(r);
        r
    }

    /// Frees every object nothing reaches from the pins and the holds.
    fn collect(&mut self) {
        let mut live: BTreeSet<ObjRef> = self.pins.values().copied().collect();
        live.extend(self.holds.values().flatten().copied());
        let users = live.clone();
        // A socket map whose last user went released its programs.
        let hook_maps = &self.hook_maps;
        self.cgroup_progs
            .retain(|key, _| hook_maps.get(key).is_none_or(|m| users.contains(m)));
        self.hook_maps.retain(|_, m| users.contains(m));
        live.extend(self.cgroup_progs.values().flatten().copied());
        let mut todo: Vec<ObjRef> = live.iter().copied().collect();
        while let Some(r) = todo.pop() {
            let edges: Vec<ObjRef> = match self.objects.get(&r) {
                Some(Obj::Prog { refs, .. }) => refs.clone(),
                Some(Obj::Link { prog, .. }) => prog.iter().copied().collect(),
                // A map-in-map holds its inner maps, by the ids its values are.
                Some(Obj::Map { map, .. })
                    if matches!(
                        map.geometry().map_type,
                        handover_sys::MapType::ArrayOfMaps | handover_sys::MapType::HashOfMaps
                    ) =>
                {
                    map.entries()
                        .values()
                        .filter_map(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                        .map(|v| ObjRef::map(u32::from_ne_bytes(v)))
                        .collect()
                }
                _ => Vec::new(),
            };
            for e in edges {
                if live.insert(e) {
                    todo.push(e);
                }
            }
        }
        self.objects.retain(|r, _| live.contains(r));
    }

    fn held(&self, process: u64, r: ObjRef) -> Result<(), KernelError> {
        if self.holds.get(&process).is_some_and(|h| h.contains(&r)) && self.objects.contains_key(&r)
        {
            Ok(())
        } else {
            Err(KernelError::Missing {
                what: format!("{r} held by this process"),
            })
        }
    }
}

/// One simulated machine; cheap to clone (clones share it).
#[derive(Debug, Clone, Default)]
pub struct FakeWorld {
    inner: Arc<Mutex<World>>,
    traffic: Traffic,
}

/// A program of the machine running on traffic: called by [`FakeWorld::set_traffic`]'s
/// function once per attached program, each time the engine calls into the kernel.
#[derive(Debug)]
pub struct Running {
    /// The program.
    pub program: ObjRef,
    /// Its name.
    pub name: String,
    /// The maps it uses, by name.
    pub maps: BTreeMap<String, Arc<FakeMap>>,
}

type TrafficFn = Box<dyn FnMut(&Running) + Send>;

/// The traffic of a machine: what its attached programs do.
#[derive(Clone, Default)]
struct Traffic(Arc<Mutex<Option<TrafficFn>>>);

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Traffic")
    }
}

impl FakeWorld {
    /// An empty machine.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new process on this machine.
    #[must_use]
    pub fn process(&self) -> FakeKernel {
        let mut w = self.lock();
        w.next_process += 1;
        let pid = w.next_process;
        w.holds.insert(pid, BTreeSet::new());
        FakeKernel {
            world: self.clone(),
            pid,
        }
    }

    /// A copy of this machine as it would be after every process on it died: the
    /// same objects (maps with copies of their entries), pins and ids, no holds.
    #[must_use]
    pub fn crashed_copy(&self) -> FakeWorld {
        let w = self.lock();
        let objects = w
            .objects
            .iter()
            .map(|(r, o)| {
                let o = match o {
                    Obj::Map { name, map } => {
                        let copy = FakeMap::new(map.geometry());
                        let entries = map.entries();
                        copy.with_entries(|e| *e = entries);
                        Obj::Map {
                            name: name.clone(),
                            map: Arc::new(copy),
                        }
                    }
                    Obj::Prog { name, refs } => Obj::Prog {
                        name: name.clone(),
                        refs: refs.clone(),
                    },
                    Obj::Link { prog, point } => Obj::Link {
                        prog: *prog,
                        point: point.clone(),
                    },
                    Obj::Btf => Obj::Btf,
                };
                (*r, o)
            })
            .collect();
        let mut copy = World {
            next: w.next.clone(),
            objects,
            pins: w.pins.clone(),
            holds: BTreeMap::new(),
            next_process: w.next_process,
            refuse_loads: w.refuse_loads.clone(),
            refuse_attach: w.refuse_attach,
            barriers: w.barriers,
            no_tcx: w.no_tcx,
            no_sockmap_iter: w.no_sockmap_iter,
            cgroup_progs: w.cgroup_progs.clone(),
            cgroup_ids: w.cgroup_ids.clone(),
            no_cgroup_links: w.no_cgroup_links,
            no_sockmap_links: w.no_sockmap_links,
            hook_maps: w.hook_maps.clone(),
            no_perf_links: w.no_perf_links,
            no_kprobes: w.no_kprobes,
            no_uprobes: w.no_uprobes,
        };
        copy.collect();
        FakeWorld {
            inner: Arc::new(Mutex::new(copy)),
            traffic: Traffic::default(),
        }
    }

    /// Every pin path, sorted.
    #[must_use]
    pub fn pins(&self) -> Vec<String> {
        self.lock().pins.keys().cloned().collect()
    }

    /// The object pinned at `path`.
    #[must_use]
    pub fn pinned(&self, path: &str) -> Option<ObjRef> {
        self.lock().pins.get(path).copied()
    }

    /// The map pinned at `path`.
    #[must_use]
    pub fn map_at(&self, path: &str) -> Option<Arc<FakeMap>> {
        let w = self.lock();
        let r = w.pins.get(path)?;
        match w.objects.get(r)? {
            Obj::Map { map, .. } => Some(Arc::clone(map)),
            _ => None,
        }
    }

    /// Whether `object` exists.
    #[must_use]
    pub fn exists(&self, object: ObjRef) -> bool {
        self.lock().objects.contains_key(&object)
    }

    /// How many objects of `kind` exist.
    #[must_use]
    pub fn count(&self, kind: Kind) -> usize {
        self.lock()
            .objects
            .keys()
            .filter(|r| r.kind == kind)
            .count()
    }

    /// The programs attached at `point` (by the live links there, then those the
    /// cgroup holds without a link), by name.
    #[must_use]
    pub fn attached(&self, point: &AttachPoint) -> Vec<String> {
        let w = self.lock();
        let key = point.to_string();
        let name = |p: &ObjRef| match w.objects.get(p) {
            Some(Obj::Prog { name, .. }) => Some(name.clone()),
            _ => None,
        };
        let mut names: Vec<String> = w
            .objects
            .values()
            .filter_map(|o| match o {
                Obj::Link {
                    prog: Some(p),
                    point,
                } if *point == key => name(p),
                _ => None,
            })
            .collect();
        names.extend(
            w.cgroup_progs
                .get(&key)
                .into_iter()
                .flatten()
                .filter_map(name),
        );
        names
    }

    /// The programs a cgroup hook holds without a link, in the order they run.
    #[must_use]
    pub fn prog_attached(&self, point: &AttachPoint) -> Vec<ObjRef> {
        self.lock()
            .cgroup_progs
            .get(&point.to_string())
            .cloned()
            .unwrap_or_default()
    }

    /// Makes the machine's kernel one without cgroup links (before 5.7), or with them.
    pub fn set_cgroup_links(&self, present: bool) {
        self.lock().no_cgroup_links = !present;
    }

    /// Makes the machine's kernel one without socket map links (before 6.10), or
    /// with them.
    pub fn set_sockmap_links(&self, present: bool) {
        self.lock().no_sockmap_links = !present;
    }

    /// Replaces the first program the cgroup hook `point` holds without a link by a
    /// stray program named `name`, as another process would with `BPF_F_REPLACE` (to
    /// test compare-and-swap). The stray is pinned at `other/NAME`.
    pub fn replace_attached_program(&self, point: &AttachPoint, name: &str) {
        let mut w = self.lock();
        let key = point.to_string();
        if w.cgroup_progs.get(&key).is_none_or(Vec::is_empty) {
            return;
        }
        let stray = w.new_id(Kind::Prog);
        w.objects.insert(
            stray,
            Obj::Prog {
                name: name.to_owned(),
                refs: Vec::new(),
            },
        );
        w.pins.insert(format!("other/{name}"), stray);
        if let Some(first) = w.cgroup_progs.get_mut(&key).and_then(|v| v.first_mut()) {
            *first = stray;
        }
        w.collect();
    }

    /// Detaches every program the cgroup hook `point` holds without a link, as
    /// another process would; how many there were.
    pub fn detach_attached(&self, point: &AttachPoint) -> usize {
        let mut w = self.lock();
        let n = w
            .cgroup_progs
            .remove(&point.to_string())
            .map_or(0, |v| v.len());
        w.collect();
        n
    }

    /// The name of a map object.
    #[must_use]
    pub fn map_name(&self, map: ObjRef) -> Option<String> {
        match self.lock().objects.get(&map)? {
            Obj::Map { name, .. } => Some(name.clone()),
            _ => None,
        }
    }

    /// Makes every later load fail as a verifier refusal with `reason` (`None`: loads
    /// succeed again).
    pub fn refuse_loads(&self, reason: Option<&str>) {
        self.lock().refuse_loads = reason.map(str::to_owned);
    }

    /// Makes the machine's kernel one without tcx links (before 6.6), or with them.
    pub fn set_tcx_links(&self, present: bool) {
        self.lock().no_tcx = !present;
    }

    /// Makes the machine's kernel one without the sockmap iterator (before 5.10, or
    /// without BTF), or with it.
    pub fn set_sockmap_iter(&self, present: bool) {
        self.lock().no_sockmap_iter = !present;
    }

    /// Makes the machine's kernel one without perf-event links (before 5.15), or with
    /// them: kprobe and uprobe attachments cannot be made then.
    pub fn set_perf_links(&self, present: bool) {
        self.lock().no_perf_links = !present;
    }

    /// Makes the machine's kernel one without the `kprobe` PMU (no
    /// `CONFIG_KPROBE_EVENTS`), or with it.
    pub fn set_kprobes(&self, present: bool) {
        self.lock().no_kprobes = !present;
    }

    /// Makes the machine's kernel one without the `uprobe` PMU, or with it.
    pub fn set_uprobes(&self, present: bool) {
        self.lock().no_uprobes = !present;
    }

    /// Makes every later attach fail.
    pub fn refuse_attach(&self, refuse: bool) {
        self.lock().refuse_attach = refuse;
    }

    /// Points the link pinned at `path` to another program, as another process would
    /// (to test compare-and-swap). Creates a stray program of that name.
    pub fn replace_link_program(&self, path: &str, name: &str) {
        let mut w = self.lock();
        let Some(link) = w.pins.get(path).copied() else {
            return;
        };
        let stray = w.new_id(Kind::Prog);
        w.objects.insert(
            stray,
            Obj::Prog {
                name: name.to_owned(),
                refs: Vec::new(),
            },
        );
        // Held by a pin of its own, as a program another tool pinned.
        w.pins.insert(format!("other/{name}"), stray);
        if let Some(Obj::Link { prog, .. }) = w.objects.get_mut(&link) {
            *prog = Some(stray);
        }
        w.collect();
    }

    /// Makes the attached programs run: before each call the engine makes into the
    /// kernel, `f` is called once for every program a live link runs, with its maps,
    /// as traffic through the hooks would run them. A [`FakeWorld::crashed_copy`] has
    /// no traffic.
    pub fn set_traffic(&self, f: impl FnMut(&Running) + Send + 'static) {
        *self
            .traffic
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
    }

    /// Runs every attached program once ([`FakeWorld::set_traffic`]).
    pub fn tick(&self) {
        let running: Vec<Running> = {
            let w = self.lock();
            w.objects
                .values()
                .filter_map(|o| match o {
                    Obj::Link { prog: Some(p), .. } => Some(*p),
                    _ => None,
                })
                .chain(w.cgroup_progs.values().flatten().copied())
                .filter_map(|p| match w.objects.get(&p) {
                    Some(Obj::Prog { name, refs }) => Some(Running {
                        program: p,
                        name: name.clone(),
                        maps: refs
                            .iter()
                            .filter_map(|r| match w.objects.get(r) {
                                Some(Obj::Map { name, map }) => {
                                    Some((name.clone(), Arc::clone(map)))
                                }
                                _ => None,
                            })
                            .collect(),
                    }),
                    _ => None,
                })
                .collect()
        };
        let mut traffic = self
            .traffic
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = traffic.as_mut() {
            for r in &running {
                f(r);
            }
        }
    }

    /// How many synchronize barriers ran.
    #[must_use]
    pub fn barriers(&self) -> usize {
        self.lock().barriers
    }
}

/// One process on a [`FakeWorld`]; dropping it is the process dying.
#[derive(Debug)]
pub struct FakeKernel {
    world: FakeWorld,
    pid: u64,
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        let mut w = self.world.lock();
        w.holds.remove(&self.pid);
        w.collect();
    }
}

impl FakeKernel {
    /// The machine this process runs on.
    #[must_use]
    pub fn world(&self) -> &FakeWorld {
        &self.world
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock()
    }
}

fn geometry(spec: &handover_loader::MapSpec, cpus: u32) -> Geometry {
    Geometry::new(
        spec.map_type,
        spec.key_size as usize,
        spec.value_size as usize,
        spec.max_entries,
        cpus as usize,
    )
}

fn parse<'a>(o: &'a ObjectSource, options: &Options) -> Result<Object<'a>, KernelError> {
    let mut oo = ObjectOptions::new();
    for (section, t) in &options.program_types {
        let prog_type = t
            .prog_type
            .parse()
            .map_err(|e| KernelError::failed(format!("program type of section {section}"), e))?;
        let attach_type = match &t.attach_type {
            Some(a) => Some(a.parse().map_err(|e| {
                KernelError::failed(format!("attach type of section {section}"), e)
            })?),
            None => None,
        };
        oo = oo.program_type(section, prog_type, attach_type);
    }
    Object::parse_with(&o.bytes, &oo)
        .map_err(|e| KernelError::failed(format!("parse {}", o.name), e))
}

const FAKE_CPUS: u32 = 2;

impl Kernel for FakeKernel {
    fn facts(&mut self) -> KernelFacts {
        let w = self.world.lock();
        KernelFacts {
            page_size: 4096,
            possible_cpus: FAKE_CPUS,
            rename_exchange: true,
            tcx_links: !w.no_tcx,
            sockmap_iter: !w.no_sockmap_iter,
            perf_links: !w.no_perf_links,
            kprobes: !w.no_kprobes,
            uprobes: !w.no_uprobes,
        }
    }

    fn load(
        &mut self,
        objects: &[ObjectSource],
        options: &Options,
        reuse: &BTreeMap<String, ObjRef>,
    ) -> Result<LoadedSet, KernelError> {
        self.world.tick();
        let parsed: Vec<(&ObjectSource, Object<'_>)> = objects
            .iter()
            .map(|o| parse(o, options).map(|p| (o, p)))
            .collect::<Result<_, _>>()?;
        let mut w = self.lock();
        if let Some(reason) = w.refuse_loads.clone() {
            return Err(KernelError::failed(
                "BPF_PROG_LOAD",
                std::io::Error::other(format!("verifier refused: {reason}")),
            ));
        }
        for r in reuse.values() {
            w.held(self.pid, *r)?;
        }
        let mut set = LoadedSet::default();
        for (o, object) in &parsed {
            let btf = object
                .btf()
                .is_some()
                .then(|| w.add(self.pid, Obj::Btf, Kind::Btf));
            set.btf.extend(btf);
            let mut own = Vec::new();
            for spec in object.maps() {
                if matches!(spec.origin, MapOrigin::Inner) {
                    continue;
                }
                let key = map_key(&o.name, &spec.name);
                if let Some(r) = set
                    .maps
                    .get(&key)
                    .copied()
                    .or_else(|| reuse.get(&key).copied())
                {
                    set.maps.insert(key, r);
                    own.push(r);
                    continue;
                }
                let mut map = FakeMap::new(geometry(spec, FAKE_CPUS));
                // Values holding a bpf_spin_lock take BPF_F_LOCK, as the kernel's do.
                let model = crate::upstream::map_model(&o.name, object, spec).ok();
                if crate::carry::values_locked(model.as_ref(), model.as_ref()) {
                    map = map.with_spin_lock();
                }
                if let Some(data) = &spec.initial_data {
                    let mut value = vec![0u8; map.geometry().value_len];
                    let n = data.len().min(value.len());
                    value
                        .get_mut(..n)
                        .unwrap_or_default()
                        .copy_from_slice(data.get(..n).unwrap_or_default());
                    map.update(&0u32.to_ne_bytes(), &value, handover_sys::UpdateFlags::ANY)
                        .map_err(|e| KernelError::failed(format!("initial data of {key}"), e))?;
                }
                let r = w.add(
                    self.pid,
                    Obj::Map {
                        name: key.clone(),
                        map: Arc::new(map),
                    },
                    Kind::Map,
                );
                set.maps.insert(key, r);
                own.push(r);
            }
            for p in object.programs() {
                let mut refs = own.clone();
                refs.extend(btf);
                let r = w.add(
                    self.pid,
                    Obj::Prog {
                        name: p.name.clone(),
                        refs,
                    },
                    Kind::Prog,
                );
                set.programs.insert(p.name.clone(), r);
            }
        }
        Ok(set)
    }

    fn get(&mut self, path: &str) -> Result<Option<ObjRef>, KernelError> {
        self.world.tick();
        let mut w = self.lock();
        let Some(r) = w.pins.get(path).copied() else {
            return Ok(None);
        };
        w.holds.entry(self.pid).or_default().insert(r);
        Ok(Some(r))
    }

    fn pin(&mut self, object: ObjRef, path: &str) -> Result<(), KernelError> {
        self.world.tick();
        let mut w = self.lock();
        w.held(self.pid, object)?;
        if w.pins.contains_key(path) {
            return Err(KernelError::Exists {
                path: path.to_owned(),
            });
        }
        w.pins.insert(path.to_owned(), object);
        Ok(())
    }

    fn exchange(&mut self, object: ObjRef, path: &str) -> Result<(), KernelError> {
        self.world.tick();
        let mut w = self.lock();
        w.held(self.pid, object)?;
        if let Some(old) = w.pins.insert(path.to_owned(), object) {
            w.pins.insert(format!("{path}{ROLLBACK_SUFFIX}"), old);
        }
        Ok(())
    }

    fn drop_rollback(&mut self, path: &str) -> Result<(), KernelError> {
        self.world.tick();
        let mut w = self.lock();
        w.pins.remove(&format!("{path}{ROLLBACK_SUFFIX}"));
        w.collect();
        Ok(())
    }

    fn unpin(&mut self, path: &str) -> Result<bool, KernelError> {
        self.world.tick();
        let mut w = self.lock();
        let had = w.pins.remove(path).is_some();
        w.pins.remove(&format!("{path}{ROLLBACK_SUFFIX}"));
        w.collect();
        Ok(had)
    }

    fn pins(&mut self) -> Result<Vec<String>, KernelError> {
        Ok(self.world.pins())
    }

    fn attach(&mut self, program: ObjRef, point: &AttachPoint) -> Result<ObjRef, KernelError> {
        self.world.tick();
        let mut w = self.lock();
        w.held(self.pid, program)?;
        if w.refuse_attach {
            return Err(KernelError::failed(
                format!("attach at {point}"),
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        // A socket map link is made on a map, as the kernel's.
        if let AttachPoint::SockMap { target, .. } = point
            && !target.is_some_and(|id| w.objects.contains_key(&ObjRef::map(id)))
        {
            return Err(KernelError::Missing {
                what: format!("the map of {point}"),
            });
        }
        // As the kernel: a probe needs its PMU (ENOENT: no such sysfs file) and a
        // perf-event link (EINVAL: an attach type it does not know).
        let probe_lacks = match point {
            AttachPoint::Kprobe { .. } => Some(w.no_kprobes),
            AttachPoint::Uprobe { .. } => Some(w.no_uprobes),
            _ => None,
        };
        if let Some(no_pmu) = probe_lacks
            && (no_pmu || w.no_perf_links)
        {
            let errno = if no_pmu { libc::ENOENT } else { libc::EINVAL };
            return Err(KernelError::failed(
                format!("attach at {point}"),
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        Ok(w.add(
            self.pid,
            Obj::Link {
                prog: Some(program),
                point: point.to_string(),
            },
            Kind::Link,
        ))
    }

    fn link_program(&mut self, link: ObjRef) -> Result<Option<u32>, KernelError> {
        self.world.tick();
        let w = self.lock();
        w.held(self.pid, link)?;
        match w.objects.get(&link) {
            Some(Obj::Link { prog, .. }) => Ok(prog.map(|p| p.id)),
            _ => Err(KernelError::Missing {
                what: link.to_string(),
            }),
        }
    }

    fn update_link(
        &mut self,
        link: ObjRef,
        new: ObjRef,
        expected: ObjRef,
    ) -> Result<(), KernelError> {
        self.world.tick();
        let mut w = self.lock();
        w.held(self.pid, link)?;
        w.held(self.pid, new)?;
        let Some(Obj::Link { prog, point }) = w.objects.get_mut(&link) else {
            return Err(KernelError::Missing {
                what: link.to_string(),
            });
        };
        if *prog != Some(expected) {
            return Err(KernelError::Mismatch {
                what: format!("{link} at {point}"),
                expected: expected.id,
                actual: prog.map(|p| p.id),
            });
        }
        *prog = Some(new);
        w.collect();
        Ok(())
    }

    fn detach(&mut self, link: ObjRef) -> Result<(), KernelError> {
        self.world.tick();
        let mut w = self.lock();
        w.held(self.pid, link)?;
        // As the kernel: tracing, raw tracepoint and perf-event (kprobe, uprobe)
        // links have no detach.
        let tracing = [
            AttachPoint::Tracing.to_string(),
            "raw tracepoint ".to_owned(),
            "kprobe ".to_owned(),
            "kretprobe ".to_owned(),
            "uprobe ".to_owned(),
            "uretprobe ".to_owned(),
        ];
        if let Some(Obj::Link { point, .. }) = w.objects.get(&link)
            && tracing.iter().any(|t| point.starts_with(t.as_str()))
        {
            return Err(KernelError::Unsupported {
                what: format!("detach {link} at {point}"),
            });
        }
        if let Some(Obj::Link { prog, .. }) = w.objects.get_mut(&link) {
            *prog = None;
        }
        w.collect();
        Ok(())
    }

    fn hook_links(&mut self, point: &AttachPoint) -> bool {
        let w = self.lock();
        match point {
            AttachPoint::Cgroup { .. } => !w.no_cgroup_links,
            AttachPoint::SockMap { .. } => !w.no_sockmap_links,
            _ => false,
        }
    }

    fn prog_attach(&mut self, program: ObjRef, point: &AttachPoint) -> Result<u64, KernelError> {
        self.world.tick();
        let (path, key) = cgroup_hook(point)?;
        let mut w = self.lock();
        w.held(self.pid, program)?;
        if w.refuse_attach {
            return Err(KernelError::failed(
                format!("attach at {point}"),
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        if let AttachPoint::SockMap {
            target: Some(id), ..
        } = point
        {
            // One program per attach type: the map's is exchanged.
            let map = ObjRef::map(*id);
            if !w.objects.contains_key(&map) {
                return Err(KernelError::Missing {
                    what: point.to_string(),
                });
            }
            w.hook_maps.insert(key.clone(), map);
            w.cgroup_progs.insert(key, vec![program]);
            w.collect();
            return Ok(u64::from(*id));
        }
        let progs = w.cgroup_progs.entry(key).or_default();
        if progs.contains(&program) {
            // The kernel refuses a program twice at one hook.
            return Err(KernelError::failed(
                format!("attach {program} at {point}"),
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        progs.push(program);
        Ok(w.cgroup_id(path))
    }

    fn prog_replace(
        &mut self,
        point: &AttachPoint,
        new: ObjRef,
        expected: ObjRef,
    ) -> Result<(), KernelError> {
        self.world.tick();
        let (_, key) = cgroup_hook(point)?;
        let mut w = self.lock();
        w.held(self.pid, new)?;
        let progs = w.cgroup_progs.entry(key).or_default();
        if progs.contains(&new) {
            return Err(KernelError::failed(
                format!("replace {expected} by {new} at {point}"),
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let Some(slot) = progs.iter_mut().find(|p| **p == expected) else {
            return Err(KernelError::Mismatch {
                what: point.to_string(),
                expected: expected.id,
                actual: None,
            });
        };
        *slot = new;
        w.collect();
        Ok(())
    }

    fn prog_detach(&mut self, point: &AttachPoint, program: ObjRef) -> Result<bool, KernelError> {
        self.world.tick();
        let (_, key) = cgroup_hook(point)?;
        let mut w = self.lock();
        let Some(progs) = w.cgroup_progs.get_mut(&key) else {
            return Ok(false);
        };
        let before = progs.len();
        progs.retain(|p| *p != program);
        let had = progs.len() != before;
        w.collect();
        Ok(had)
    }

    fn prog_query(&mut self, point: &AttachPoint) -> Result<(u64, Vec<u32>), KernelError> {
        self.world.tick();
        let (path, key) = cgroup_hook(point)?;
        let mut w = self.lock();
        if let AttachPoint::SockMap {
            target: Some(id), ..
        } = point
        {
            let ids = w.cgroup_progs.get(&key).into_iter().flatten().map(|p| p.id);
            return Ok((u64::from(*id), ids.collect()));
        }
        let ids = w
            .cgroup_progs
            .get(&key)
            .into_iter()
            .flatten()
            .map(|p| p.id)
            .collect();
        Ok((w.cgroup_id(path), ids))
    }

    fn synchronize(&mut self) -> Result<(), KernelError> {
        self.world.tick();
        self.lock().barriers += 1;
        Ok(())
    }

    fn map_access(&mut self, map: ObjRef) -> Result<Arc<dyn MapAccess>, KernelError> {
        self.world.tick();
        let w = self.lock();
        w.held(self.pid, map)?;
        match w.objects.get(&map) {
            Some(Obj::Map { map, .. }) => Ok(Arc::clone(map) as Arc<dyn MapAccess>),
            _ => Err(KernelError::Missing {
                what: map.to_string(),
            }),
        }
    }

    fn create_map(
        &mut self,
        key_size: usize,
        value_size: usize,
        max_entries: u32,
    ) -> Result<ObjRef, KernelError> {
        self.world.tick();
        let g = Geometry::new(
            handover_sys::MapType::Hash,
            key_size,
            value_size,
            max_entries,
            1,
        );
        let pid = self.pid;
        let mut w = self.lock();
        Ok(w.add(
            pid,
            Obj::Map {
                name: "scratch".into(),
                map: Arc::new(FakeMap::new(g)),
            },
            Kind::Map,
        ))
    }

    /// A socket is modelled by its cookie, the value a lookup of a socket map
    /// returns: the carry inserts the old map's value under the same key, or the
    /// key `only` pairs with it, with the kernel's refusals (a sockmap index past the
    /// new capacity, a full sockhash, a key taken under `BPF_NOEXIST`).
    fn carry_sockets(
        &mut self,
        name: &str,
        old: ObjRef,
        new: ObjRef,
        only: Option<&[(Vec<u8>, Vec<u8>)]>,
        keep_existing: bool,
    ) -> Result<SocketReport, KernelError> {
        use handover_sys::{MapType, UpdateFlags};
        let op = || format!("carry the sockets of {name}");
        if self.lock().no_sockmap_iter {
            return Err(KernelError::failed(
                op(),
                std::io::Error::other("the kernel has no sockmap iterator"),
            ));
        }
        let (old, new) = (self.map_access(old)?, self.map_access(new)?);
        let (og, ng) = (old.geometry(), new.geometry());
        let sockets = |t: MapType| matches!(t, MapType::Sockmap | MapType::Sockhash);
        if !sockets(og.map_type)
            || og.map_type != ng.map_type
            || (only.is_none() && og.key_size != ng.key_size)
            || only.is_some_and(|pairs| {
                pairs
                    .iter()
                    .any(|(k, to)| k.len() != og.key_size || to.len() != ng.key_size)
            })
        {
            return Err(KernelError::failed(
                op(),
                std::io::Error::other(
                    "not two socket maps of one type, and keys of one size or pairs of their sizes",
                ),
            ));
        }
        let started = std::time::Instant::now();
        let mut report = SocketReport::default();
        let mut prev: Option<Vec<u8>> = None;
        let mut key = vec![0u8; og.key_size];
        let mut value = vec![0u8; og.value_len];
        while old
            .next_key(prev.as_deref(), &mut key)
            .map_err(|e| KernelError::failed(op(), e))?
        {
            prev = Some(key.clone());
            if !old
                .lookup(&key, &mut value, UpdateFlags::ANY)
                .map_err(|e| KernelError::failed(op(), e))?
            {
                continue;
            }
            let to = match only {
                None => key.clone(),
                Some(pairs) => match pairs.iter().find(|(k, _)| *k == key) {
                    Some((_, to)) => to.clone(),
                    None => continue,
                },
            };
            report.seen += 1;
            let mut cookie = value.clone();
            cookie.resize(ng.value_len, 0);
            let index = <[u8; 4]>::try_from(to.as_slice()).map(u32::from_ne_bytes);
            let result =
                if og.map_type == MapType::Sockmap && index.is_ok_and(|i| i >= ng.max_entries) {
                    Err(libc::E2BIG)
                } else {
                    let flags = if keep_existing {
                        UpdateFlags::NOEXIST
                    } else {
                        UpdateFlags::ANY
                    };
                    new.update(&to, &cookie, flags)
                        .map_err(|e| e.errno().unwrap_or(libc::EINVAL))
                };
            match result {
                Ok(()) => {
                    report.carried += 1;
                    report.keys.push(key.clone());
                }
                Err(errno) => report.refused.push((key.clone(), errno)),
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// An outer map's value is its inner map's id, as a lookup from user space
    /// answers.
    fn insert_inner_map(
        &mut self,
        outer: ObjRef,
        key: &[u8],
        inner: u32,
        keep_existing: bool,
    ) -> Result<bool, KernelError> {
        let what = || format!("insert map {inner} into {outer}");
        if !self.world.exists(ObjRef::map(inner)) {
            return Err(KernelError::Missing {
                what: format!("map {inner}"),
            });
        }
        let outer = self.map_access(outer)?;
        let flags = if keep_existing {
            handover_sys::UpdateFlags::NOEXIST
        } else {
            handover_sys::UpdateFlags::ANY
        };
        match outer.update(key, &inner.to_ne_bytes(), flags) {
            Ok(()) => Ok(true),
            Err(e) if keep_existing && e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(KernelError::failed(what(), e)),
        }
    }

    fn alive(&mut self, object: ObjRef) -> bool {
        self.world.exists(object)
    }

    fn release(&mut self, object: ObjRef) {
        let mut w = self.lock();
        if let Some(h) = w.holds.get_mut(&self.pid) {
            h.remove(&object);
        }
        w.collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unpinned_object_dies_with_its_process_and_a_pinned_one_does_not() {
        let world = FakeWorld::new();
        let mut k = world.process();
        let a = {
            let mut w = k.lock();
            let pid = k.pid;
            w.add(pid, Obj::Btf, Kind::Btf)
        };
        let b = {
            let mut w = k.lock();
            let pid = k.pid;
            w.add(pid, Obj::Btf, Kind::Btf)
        };
        k.pin(b, "kept").unwrap();
        assert!(matches!(k.pin(a, "kept"), Err(KernelError::Exists { .. })));
        drop(k);
        assert!(!world.exists(a));
        assert!(world.exists(b));
        let mut k = world.process();
        assert_eq!(k.get("kept").unwrap(), Some(b));
        k.unpin("kept").unwrap();
        assert!(world.exists(b), "still held by the process");
        k.release(b);
        assert!(!world.exists(b));
    }
}
