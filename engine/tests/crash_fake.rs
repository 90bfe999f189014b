//! Crash tests against the fake kernel: an upgrade from programs/engine_v1.c to
//! engine_v2.c is killed at every failpoint of the engine (every occurrence of each,
//! including between the batches of a copy and of a reconcile), then its recovery is
//! killed at every failpoint, then recovered again; each run must end with exactly one
//! consistent set of pins (version 1's or version 2's), every entry there, no
//! temporary or rollback pin left, and no object leaked.
//!
//! The programs run while the upgrade does: before every call the engine makes into
//! the fake kernel, the attached program counts a connect in `backends` (version 1's
//! or version 2's, whichever the link runs), creating keys past the filled ones, and
//! version 1 also deletes keys version 2 never touches. The counters at the end must
//! equal the connects counted (the `sum` rule, declared by a tag in engine_v2.c, exact
//! even when a reconcile killed in its middle runs again), and every deleted key must
//! be gone.
//!
//! The whole matrix runs three times: with the program attached at the cgroup hook
//! through a pinned link (switched by a link update), held by the cgroup without a
//! link (`BPF_PROG_ATTACH`, switched by a prog attach replace, recorded in the
//! state), and at a hook whose links have neither update nor detach (a raw
//! tracepoint: the new program attached, then the old link unpinned and dropped, so
//! both versions run for a while).
//!
//! The failpoints come from `failpoints()`, derived from the step list, so a new step
//! is covered here without a change to this file. One test in this binary: the
//! failpoint registry is global to the process.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{StateDir, backend_v1, backend_v2, crashed, fill, objects, options_via, with_crash};
use handover_engine::migrate::FakeEntries;
use handover_engine::{
    ApplyOptions, AttachPoint, Direction, Engine, Error, FakeKernel, FakeWorld, Kind, LockWait,
    Options, Running, Via, failpoints, identity,
};

/// Where the program attaches, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// The cgroup hook, held as the options say.
    Cgroup(Via),
    /// A raw tracepoint.
    RawTracepoint,
}

impl Hook {
    fn point(self) -> AttachPoint {
        match self {
            Hook::Cgroup(via) => common::cgroup_point_via(Path::new(CGROUP), via),
            Hook::RawTracepoint => AttachPoint::RawTracepoint {
                tracepoint: "sys_enter".into(),
            },
        }
    }
}

const CGROUP: &str = "/fake/cgroup";
const ENTRIES: u32 = 300;
/// Keys the programs count connects in: the filled ones and ten more.
const KEYS: u32 = ENTRIES + 10;
/// Keys only version 1 touches: it deletes them as well as counting in them.
const DELETED_BY_V1: std::ops::Range<u32> = 280..290;
/// Entries per batch of the copy and the reconcile: several batches per map.
const BATCH: usize = 64;

type Expected = BTreeMap<&'static str, FakeEntries>;

/// What the maps must hold: connects per key index (absent: no entry).
#[derive(Debug, Clone, Default)]
struct Model {
    connects: BTreeMap<u32, u64>,
    events: usize,
}

fn backend_key(i: u32) -> Vec<u8> {
    (0x7f00_0000u32 + i).to_ne_bytes().to_vec()
}

struct Setup {
    world: FakeWorld,
    dir: StateDir,
    conns: FakeEntries,
    model: Arc<Mutex<Model>>,
    hook: Hook,
}

impl Setup {
    fn options(&self) -> Options {
        let mut o = options_via(Path::new(CGROUP), Via::Auto);
        o.attachments[0].point = self.hook.point();
        o
    }

    fn expected(&self, version: u32) -> Expected {
        let model = self.model.lock().unwrap().clone();
        let backends = model
            .connects
            .iter()
            .map(|(&i, &c)| {
                let v = if version == 2 {
                    backend_v2(c, 1000 + i)
                } else {
                    backend_v1(c, 1000 + i)
                };
                (backend_key(i), v)
            })
            .collect();
        [("backends", backends), ("conns", self.conns.clone())]
            .into_iter()
            .collect()
    }
}

/// Version 1's program (`v1`, by id) or version 2's counting one connect.
fn connect(model: &Mutex<Model>, v1: u32, r: &Running) {
    let Some(backends) = r.maps.get("backends") else {
        return;
    };
    let old = r.program.id == v1;
    let mut m = model.lock().unwrap();
    let n = m.events;
    m.events += 1;
    let i = u32::try_from(n).unwrap() % KEYS;
    let key = backend_key(i);
    if DELETED_BY_V1.contains(&i) {
        if !old {
            return;
        }
        if n.is_multiple_of(3) {
            m.connects.remove(&i);
            backends.with_entries(|e| e.remove(&key));
            return;
        }
    }
    *m.connects.entry(i).or_insert(0) += 1;
    backends.with_entries(|e| {
        let v = e.entry(key).or_insert_with(|| {
            if old {
                backend_v1(0, 1000 + i)
            } else {
                backend_v2(0, 1000 + i)
            }
        });
        let c = u64::from_ne_bytes(v[..8].try_into().unwrap()) + 1;
        v[..8].copy_from_slice(&c.to_ne_bytes());
    });
}

fn engine(s: &Setup) -> Engine<FakeKernel> {
    Engine::with_kernel(
        s.world.process(),
        &s.dir.0,
        LockWait::Timeout(std::time::Duration::from_secs(10)),
    )
    .unwrap()
}

fn apply_version(s: &Setup, version: u32) -> Result<handover_engine::Report, Error> {
    let mut e = engine(s);
    let objs = objects(version);
    let plan = e.plan(&objs, &s.options())?;
    let apply = ApplyOptions {
        batch: Some(BATCH),
        ..ApplyOptions::default()
    };
    e.apply(&plan, &objs, apply)
}

impl Setup {
    /// The machine and the state directory as they are, after every process died.
    fn crashed_copy(&self) -> Setup {
        let dir = self.dir.crashed_copy("crash-copy");
        Setup {
            world: self.world.crashed_copy(),
            dir,
            conns: self.conns.clone(),
            model: Arc::new(Mutex::new(self.model.lock().unwrap().clone())),
            hook: self.hook,
        }
    }
}

fn installed(hook: Hook) -> Setup {
    let mut s = Setup {
        world: FakeWorld::new(),
        dir: StateDir::new("crash"),
        conns: FakeEntries::new(),
        model: Arc::default(),
        hook,
    };
    apply_version(&s, 1).unwrap();
    let (v1, _) = fill(&s.world, ENTRIES);
    s.conns = v1["conns"].clone();
    s.model.lock().unwrap().connects = (0..ENTRIES).map(|i| (i, u64::from(i) * 3)).collect();
    let v1_prog = engine(&s).state().unwrap().unwrap().programs["count_connect"].id;
    let model = Arc::clone(&s.model);
    s.world
        .set_traffic(move |r: &Running| connect(&model, v1_prog, r));
    s
}

/// The invariants after a completed recovery; returns which version is live.
fn check(s: &Setup, context: &str) -> u32 {
    let e = engine(s);
    assert!(e.journal().unwrap().is_none(), "{context}: journal left");
    let state = e.state().unwrap().expect("a state");
    drop(e);
    let version = if state.identity == identity(&objects(2), &s.options()) {
        2
    } else {
        assert_eq!(
            state.identity,
            identity(&objects(1), &s.options()),
            "{context}"
        );
        1
    };
    let pins = s.world.pins();
    let mut recorded: Vec<String> = state
        .maps
        .values()
        .chain(state.programs.values())
        .map(|p| p.pin.clone())
        .chain(state.links.values().map(|l| l.pin.clone()))
        .collect();
    recorded.sort();
    assert_eq!(
        pins, recorded,
        "{context}: exactly the recorded pins, no temporary or rollback pin"
    );
    for p in state.maps.values().chain(state.programs.values()) {
        assert_eq!(
            s.world.pinned(&p.pin).map(|r| r.id),
            Some(p.id),
            "{context}: {}",
            p.pin
        );
    }
    let expected = s.expected(version);
    for (map, entries) in &expected {
        let got = s.world.map_at(&format!("maps/{map}")).unwrap().entries();
        let differ: Vec<String> = entries
            .keys()
            .chain(got.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| entries.get(*k) != got.get(*k))
            .take(5)
            .map(|k| format!("{k:?}: expected {:?}, got {:?}", entries.get(k), got.get(k)))
            .collect();
        assert!(
            differ.is_empty(),
            "{context}: entries of {map} (version {version}) differ:\n{}",
            differ.join("\n")
        );
    }
    assert_eq!(
        s.world.attached(&s.hook.point()),
        ["count_connect"],
        "{context}: one live attachment"
    );
    let point = s.hook.point();
    let links = if s.hook == Hook::Cgroup(Via::ProgAttach) {
        assert!(state.links.is_empty(), "{context}: {:?}", state.links);
        let held = &state.attached["connect"];
        assert_eq!(held.prog, state.programs["count_connect"].id, "{context}");
        assert_eq!(
            s.world
                .prog_attached(&point)
                .iter()
                .map(|p| p.id)
                .collect::<Vec<_>>(),
            [held.prog],
            "{context}: exactly the recorded program held by the cgroup"
        );
        0
    } else {
        assert!(state.attached.is_empty(), "{context}");
        let link = state.links.get("connect").unwrap();
        assert_eq!(link.prog, state.programs["count_connect"].id, "{context}");
        assert!(s.world.prog_attached(&point).is_empty(), "{context}");
        1
    };
    // Nothing leaked: every object is reachable from a pin of the set.
    assert_eq!(
        s.world.count(Kind::Map),
        state.maps.len(),
        "{context}: maps"
    );
    assert_eq!(
        s.world.count(Kind::Prog),
        state.programs.len(),
        "{context}: programs"
    );
    assert_eq!(s.world.count(Kind::Link), links, "{context}: links");
    version
}

fn recover(s: &Setup) -> Result<Option<handover_engine::Recovered>, Error> {
    engine(s).recover()
}

#[test]
fn every_crash_of_an_upgrade_and_of_its_recovery_ends_in_one_consistent_set() {
    let _scenario = fail::FailScenario::setup();
    for hook in [
        Hook::Cgroup(Via::Link),
        Hook::Cgroup(Via::ProgAttach),
        Hook::RawTracepoint,
    ] {
        crash_matrix(hook);
    }
}

fn crash_matrix(hook: Hook) {
    let points = failpoints();
    let mut upgrade_crashes = 0;
    let mut recovery_crashes = 0;
    let mut outcomes = BTreeMap::<u32, usize>::new();
    for point in &points {
        for n in 0.. {
            let s = installed(hook);
            let r = with_crash(point, n, || apply_version(&s, 2));
            if !crashed(&r) {
                assert_eq!(check(&s, &format!("{point} #{n} not reached")), 2);
                break;
            }
            upgrade_crashes += 1;
            // Every crash point of the recovery, each on a copy of the machine and the
            // state directory as this crash left them.
            let mut live_after_recovery = None;
            for rpoint in &points {
                for m in 0.. {
                    let c = s.crashed_copy();
                    let r = with_crash(rpoint, m, || recover(&c));
                    let context =
                        format!("upgrade crash {point} #{n}, recovery crash {rpoint} #{m}");
                    let recovery_crashed = crashed(&r);
                    let (v, direction) = if recovery_crashed {
                        recovery_crashes += 1;
                        // Recovery of the recovery.
                        let again = recover(&c).unwrap().expect("a journal to recover");
                        (check(&c, &context), again.direction)
                    } else {
                        let rec = r.unwrap().expect("a journal to recover");
                        (check(&c, &context), rec.direction)
                    };
                    assert_eq!(v == 2, direction == Direction::Forward, "{context}");
                    if let Some(prev) = live_after_recovery {
                        assert_eq!(
                            prev, v,
                            "{context}: the direction depends only on the upgrade's crash"
                        );
                    }
                    live_after_recovery = Some(v);
                    if !recovery_crashed {
                        *outcomes.entry(v).or_default() += 1;
                        if rpoint == &points[0] {
                            // The set works afterwards: upgrading (or restarting) succeeds.
                            apply_version(&c, 2).unwrap();
                            assert_eq!(check(&c, &format!("{context}, then upgraded")), 2);
                        }
                        break;
                    }
                }
            }
        }
    }
    eprintln!(
        "{hook:?}: {} failpoints; {upgrade_crashes} upgrade crashes x recovery crashes: {recovery_crashes}; \
         outcomes by version: {outcomes:?}",
        points.len()
    );
    assert!(upgrade_crashes >= 20, "{upgrade_crashes}");
    assert!(outcomes.get(&1).is_some_and(|&n| n > 0) && outcomes.get(&2).is_some_and(|&n| n > 0));
}
