//! Kernel and user probe attachments on the running kernel (root), in the test's own
//! bpffs: programs/engine_probe_v1.c's kprobe and kretprobe programs at
//! `__x64_sys_getppid` (triggered by this process's getppid calls), and its uprobe and
//! uretprobe programs at a function of this test binary (triggered by calling it),
//! attached through perf-event links, then upgraded to engine_probe_v2.c. The links
//! have no update (nor a detach), so the plan switches each by attaching the new
//! program, then dropping the old link: after the upgrade the new programs count every
//! hit, the old ones none, and the old links are gone. A restart before and after the
//! upgrade verifies the live links and keeps them. Uninstall leaves every recorded
//! object gone.
//!
//! On a kernel without the probe's PMU (`/sys/bus/event_source/devices/kprobe`
//! missing: no `CONFIG_KPROBE_EVENTS`) or without perf-event links (before 5.15), the
//! test checks that the plan refuses the attachment, says so in a KERNEL LACKS line,
//! and stops there.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use handover_engine::{
    ApplyOptions, AttachAction, AttachPoint, Attachment, Engine, Error, Kernel, LinkRecord,
    LockWait, ObjRef, ObjectSource, Options, RealKernel, Start, SwitchMethod, wait_gone,
};

fn objects(version: u32) -> Vec<ObjectSource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_probe_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("probe.o", bytes)]
}

/// The kernel function the kprobes of programs/engine_probe.h sit at.
const FUNCTION: &str = "__x64_sys_getppid";

/// The function of this binary the uprobes sit at.
const USER_SYMBOL: &str = "handover_kernel_probe_target";

// An unmangled name for the uprobe to find in this binary's symbol table; the
// function itself is safe, and nothing else defines the name.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn handover_kernel_probe_target(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_add(1)
}

/// Which probe PMU a test exercises.
#[derive(Clone, Copy)]
enum Probe {
    Kernel,
    User,
}

impl Probe {
    const fn pmu(self) -> &'static str {
        match self {
            Probe::Kernel => "kprobe",
            Probe::User => "uprobe",
        }
    }

    /// The entry and return attachments and the hit map each counts in.
    fn attachments(self) -> Vec<(Attachment, &'static str)> {
        let exe = || std::fs::read_link("/proc/self/exe").expect("/proc/self/exe");
        let point = |retprobe: bool| match self {
            Probe::Kernel => AttachPoint::Kprobe {
                function: FUNCTION.into(),
                retprobe,
            },
            Probe::User => AttachPoint::Uprobe {
                path: exe(),
                symbol: Some(USER_SYMBOL.into()),
                offset: 0,
                retprobe,
            },
        };
        let (entry, ret) = match self {
            Probe::Kernel => ("kprobe", "kretprobe"),
            Probe::User => ("uprobe", "uretprobe"),
        };
        [(entry, false), (ret, true)]
            .into_iter()
            .map(|(name, retprobe)| {
                let map = if retprobe { ret } else { entry };
                (
                    Attachment {
                        name: name.into(),
                        program: format!("count_{name}"),
                        point: point(retprobe),
                    },
                    match map {
                        "kprobe" => "kprobe_hits",
                        "kretprobe" => "kretprobe_hits",
                        "uprobe" => "uprobe_hits",
                        _ => "uretprobe_hits",
                    },
                )
            })
            .collect()
    }

    fn options(self) -> Options {
        Options {
            attachments: self.attachments().into_iter().map(|(a, _)| a).collect(),
            ..Options::default()
        }
    }

    fn maps(self) -> Vec<&'static str> {
        self.attachments().into_iter().map(|(_, m)| m).collect()
    }

    /// Hits the probed function `n` times from this process.
    fn trigger(self, n: u64) {
        for i in 0..n {
            match self {
                // getppid(2).
                Probe::Kernel => {
                    std::hint::black_box(std::os::unix::process::parent_id());
                }
                Probe::User => {
                    std::hint::black_box(handover_kernel_probe_target(i));
                }
            }
        }
    }
}

/// The counts of slots 1 and 2 (versions 1 and 2) of a hit map.
fn hits<K: Kernel>(e: &mut Engine<K>, map: &str) -> [u64; 2] {
    let m = e.map::<u32, u64>(map).unwrap();
    [1, 2].map(|slot| m.get(&slot).unwrap().unwrap_or(0))
}

/// The kernel's release as (major, minor).
fn release() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = r.trim().split(['.', '-']);
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

/// What the probe test found the kernel to lack, after checking that the plan refuses
/// the attachments for exactly that reason; `None`: the kernel has what it takes.
fn lacking(probe: Probe, fs: &Path, state: &Path) -> Option<String> {
    let pmu = probe.pmu();
    let has_pmu = Path::new("/sys/bus/event_source/devices")
        .join(pmu)
        .join("type")
        .exists();
    let mut k = RealKernel::open(fs, state).unwrap();
    let facts = k.facts();
    // What a fresh bpffs holds of its own (`maps.debug`, `progs.debug` on recent
    // kernels).
    let pins = k.pins().unwrap();
    drop(k);
    let has_pmu_fact = match probe {
        Probe::Kernel => facts.kprobes,
        Probe::User => facts.uprobes,
    };
    assert_eq!(has_pmu_fact, has_pmu, "the engine's {pmu} PMU fact");
    if facts.perf_links {
        assert!(release() >= (5, 15), "perf-event links before 5.15?");
    } else {
        assert!(
            release() < (5, 15),
            "{:?} has perf-event links (5.15), the engine's probe says not",
            release()
        );
    }
    let why = match (has_pmu, facts.perf_links) {
        (true, true) => return None,
        (false, _) => (format!("no {pmu} PMU"), format!("the {pmu} PMU")),
        (true, false) => (
            "no perf-event links".to_owned(),
            "perf-event links (BPF_LINK_CREATE with BPF_PERF_EVENT, 5.15)".to_owned(),
        ),
    };
    let mut e = Engine::open(fs, state, LockWait::Refuse).unwrap();
    match e.plan(&objects(1), &probe.options()) {
        Err(Error::Options(text)) => {
            assert!(text.contains(&why.0), "{text}");
            assert!(text.contains(&format!("attachment {pmu} at")), "{text}");
            println!("the plan refuses, as it should: {text}");
        }
        other => panic!("a {pmu} attachment planned without {}: {other:?}", why.1),
    }
    drop(e);
    assert_eq!(
        RealKernel::open(fs, state).unwrap().pins().unwrap(),
        pins,
        "a refused plan leaves nothing"
    );
    Some(why.1)
}

/// The kernel's description of a probe's link, opened by id: a perf-event link
/// running the recorded program, of the probe's kind where the kernel says (6.6).
fn link_describes_its_probe(probe: Probe, l: &LinkRecord, retprobe: bool) {
    use handover_sys::{Bpf, LinkTarget, LinkType, ObjectKind, OpenFlags, PerfEventType};
    let bpf = Bpf::kernel();
    let fd = bpf
        .fd_by_id(ObjectKind::Link, l.id, OpenFlags::READ_WRITE)
        .unwrap();
    let info = bpf.link_info(&fd).unwrap();
    assert_eq!(info.link_type, Some(LinkType::PerfEvent), "{l:?}");
    assert_eq!(info.prog_id, l.prog, "{l:?}");
    let expected = match (probe, retprobe) {
        (Probe::Kernel, false) => PerfEventType::Kprobe,
        (Probe::Kernel, true) => PerfEventType::Kretprobe,
        (Probe::User, false) => PerfEventType::Uprobe,
        (Probe::User, true) => PerfEventType::Uretprobe,
    };
    let LinkTarget::PerfEvent { event } = info.target else {
        panic!("{l:?}: {:?}", info.target);
    };
    if release() >= (6, 6) {
        assert_eq!(event, Some(expected), "{l:?}");
    } else {
        assert_eq!(event, None, "{l:?}: before 6.6 the kernel does not say");
    }
}

fn links<K: Kernel>(e: &Engine<K>) -> BTreeMap<String, LinkRecord> {
    e.state().unwrap().unwrap().links
}

fn probe_links_are_switched_by_attaching_the_new_program_then_dropping_the_old_link(
    probe: Probe,
    test: &str,
) {
    if !testenv::privileged(test) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-probe-state");
    if let Some(what) = lacking(probe, fs.path(), state.path()) {
        testenv::kernel_lacks(test, &what);
        return;
    }
    let opts = probe.options();
    let maps = probe.maps();
    const N: u64 = 20;
    let pins = RealKernel::open(fs.path(), state.path())
        .unwrap()
        .pins()
        .unwrap();

    // Version 1, installed; its programs count this process's hits.
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let v1 = objects(1);
    let plan = e.plan(&v1, &opts).unwrap();
    assert!(
        plan.attachments
            .iter()
            .all(|a| a.action == AttachAction::Attach),
        "{plan}"
    );
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    e.map::<u32, u32>("probe_pid")
        .unwrap()
        .insert(&0, &std::process::id())
        .unwrap();
    probe.trigger(N);
    for map in &maps {
        let h = hits(&mut e, map);
        assert!(h[0] >= N && h[1] == 0, "{map}: {h:?}");
    }
    let before = links(&e);
    drop(e);
    for (name, l) in &before {
        link_describes_its_probe(probe, l, name == "kretprobe" || name == "uretprobe");
    }

    // A restart: the live links are verified and kept; they still run version 1.
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let plan = e.plan(&v1, &opts).unwrap();
    assert_eq!(plan.start, Start::Restart, "{plan}");
    assert!(
        plan.attachments
            .iter()
            .all(|a| a.action == AttachAction::Verify),
        "{plan}"
    );
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    assert_eq!(links(&e), before, "a restart keeps the links");
    let then: Vec<_> = maps.iter().map(|m| hits(&mut e, m)).collect();
    probe.trigger(N);
    for (map, then) in maps.iter().zip(&then) {
        let now = hits(&mut e, map);
        assert!(now[0] >= then[0] + N && now[1] == 0, "{map}: {now:?}");
    }
    drop(e);

    // The upgrade to version 2 switches each attachment: new link, old one dropped.
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let v2 = objects(2);
    let plan = e.plan(&v2, &opts).unwrap();
    for a in &plan.attachments {
        assert_eq!(
            a.action,
            AttachAction::Switch(SwitchMethod::AttachThenDetach),
            "{plan}"
        );
    }
    assert_eq!(
        plan.to_string()
            .matches("switch: attach new, then detach old")
            .count(),
        2,
        "{plan}"
    );
    e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    let after = links(&e);
    for (name, l) in &after {
        assert_ne!(l.id, before[name].id, "{name}: a new link");
        assert_ne!(l.prog, before[name].prog, "{name}: the new program");
        assert_eq!(
            l.attachment, before[name].attachment,
            "{name}: the same hook"
        );
    }
    let mut k = RealKernel::open(fs.path(), state.path()).unwrap();
    let old: Vec<_> = before.values().map(|l| ObjRef::link(l.id)).collect();
    let alive = wait_gone(&mut k, &old, Duration::from_secs(10));
    assert!(alive.is_empty(), "old links still in the kernel: {alive:?}");
    drop(k);
    let then: Vec<_> = maps.iter().map(|m| hits(&mut e, m)).collect();
    probe.trigger(N);
    for (map, then) in maps.iter().zip(&then) {
        let now = hits(&mut e, map);
        assert_eq!(now[0], then[0], "{map}: the old program no longer runs");
        assert!(now[1] >= then[1] + N, "{map}: {now:?}");
    }
    drop(e);

    // A restart of version 2 verifies the new links and keeps them.
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let plan = e.plan(&v2, &opts).unwrap();
    assert_eq!(plan.start, Start::Restart, "{plan}");
    e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    assert_eq!(links(&e), after);

    let gone = e.uninstall().unwrap();
    drop(e);
    let mut k = RealKernel::open(fs.path(), state.path()).unwrap();
    let alive = wait_gone(&mut k, &gone.objects, Duration::from_secs(10));
    assert!(alive.is_empty(), "still in the kernel: {alive:?}");
    for l in after.values() {
        assert!(gone.objects.contains(&ObjRef::link(l.id)), "{l:?}");
    }
    assert_eq!(k.pins().unwrap(), pins, "uninstall leaves no pin of ours");
}

#[test]
fn kprobe_links_are_switched_by_attaching_the_new_program_then_dropping_the_old_link() {
    probe_links_are_switched_by_attaching_the_new_program_then_dropping_the_old_link(
        Probe::Kernel,
        "kprobe_links_are_switched_by_attaching_the_new_program_then_dropping_the_old_link",
    );
}

#[test]
fn uprobe_links_are_switched_by_attaching_the_new_program_then_dropping_the_old_link() {
    probe_links_are_switched_by_attaching_the_new_program_then_dropping_the_old_link(
        Probe::User,
        "uprobe_links_are_switched_by_attaching_the_new_program_then_dropping_the_old_link",
    );
}

/// A uprobe at a symbol the file does not have fails at attach with the file and the
/// symbol named, and leaves nothing installed.
#[test]
fn a_uprobe_at_a_missing_symbol_is_refused_naming_the_file_and_the_symbol() {
    const TEST: &str = "a_uprobe_at_a_missing_symbol_is_refused_naming_the_file_and_the_symbol";
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-probe-state");
    if let Some(what) = lacking(Probe::User, fs.path(), state.path()) {
        testenv::kernel_lacks(TEST, &what);
        return;
    }
    let exe: PathBuf = std::fs::read_link("/proc/self/exe").unwrap();
    let opts = Options {
        attachments: vec![Attachment {
            name: "uprobe".into(),
            program: "count_uprobe".into(),
            point: AttachPoint::Uprobe {
                path: exe.clone(),
                symbol: Some("no_such_function_here".into()),
                offset: 0,
                retprobe: false,
            },
        }],
        ..Options::default()
    };
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let v1 = objects(1);
    let plan = e.plan(&v1, &opts).unwrap();
    let err = e.apply(&plan, &v1, ApplyOptions::default()).unwrap_err();
    let text = format!("{err:#}");
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(
        chain.contains("no defined symbol \"no_such_function_here\"")
            && chain.contains(&exe.display().to_string()),
        "{text} / {chain}"
    );
    assert!(e.state().unwrap().is_none(), "nothing installed");
}
