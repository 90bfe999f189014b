//! The engine's commands as a user runs them (root): `handover plan`, `upgrade`,
//! `status`, `dump`, `recover` and `uninstall` of programs/engine_v1.c and
//! programs/engine_v2.c (and programs/build/engine_v1.small.o, version 1 with 1,024
//! backends), and programs/dump_types.c for the decoded dump, each test in its own
//! bpffs, cgroup and state directory. Entries are written and read back through the
//! engine library between commands (the commands hold the lock only while they run).
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

#[path = "../loader/tests/testenv/mod.rs"]
mod testenv;

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use handover_engine::{ApplyOptions, Engine, LockWait, ObjectSource};
use handover_sys::UpdateFlags;

fn fixture(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("programs/build")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run programs/build.sh",
        p.display()
    );
    p
}

/// One installed set's world: a bpffs, a cgroup and a state directory of its own.
struct World {
    fs: testenv::Bpffs,
    cgroup: testenv::Cgroup,
    state: testenv::TempDir,
}

impl World {
    fn new() -> Self {
        Self {
            fs: testenv::Bpffs::mount(),
            cgroup: testenv::Cgroup::new(),
            state: testenv::TempDir::new("handover-cli-state"),
        }
    }

    /// The pin root as the command records it (absolute, canonical).
    fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.fs.path()).unwrap()
    }

    fn run(&self, command: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
        let mut all: Vec<OsString> = vec![
            command.into(),
            "--root".into(),
            self.root().into(),
            "--state".into(),
            self.state.path().into(),
        ];
        all.extend(args.iter().map(|a| a.as_ref().to_owned()));
        Command::new(env!("CARGO_BIN_EXE_handover"))
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a command that must exit with `code`; returns its stdout.
    fn expect(&self, code: i32, command: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
        let out = self.run(command, args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "handover {command} {:?}\nstdout:\n{}\nstderr:\n{}",
            args.iter()
                .map(|a| a.as_ref().to_owned())
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn cgroup_arg(&self) -> [OsString; 2] {
        ["--cgroup".into(), self.cgroup.path().into()]
    }

    fn engine(&self) -> Engine<handover_engine::RealKernel> {
        Engine::open(&self.root(), self.state.path(), LockWait::Refuse).unwrap()
    }

    /// The engine's handles to the installed set, reopened by a restart.
    fn opened(&self, object: &Path) -> Engine<handover_engine::RealKernel> {
        let mut e = self.engine();
        let objects = vec![ObjectSource::new(
            object.file_name().unwrap().to_string_lossy(),
            std::fs::read(object).unwrap(),
        )];
        let state = e.state().unwrap().unwrap();
        let plan = e.plan(&objects, &state.options).unwrap();
        assert_eq!(plan.start, handover_engine::Start::Restart, "{plan}");
        e.apply(&plan, &objects, ApplyOptions::default()).unwrap();
        e
    }

    fn pins(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.fs.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Version 1's `struct backend { u64 connects; u32 last_port; }` (16 bytes).
fn backend_v1(connects: u64, port: u32) -> Vec<u8> {
    let mut v = connects.to_ne_bytes().to_vec();
    v.extend_from_slice(&port.to_ne_bytes());
    v.extend_from_slice(&[0; 4]);
    v
}

fn fill_backends(w: &World, object: &Path, range: std::ops::Range<u32>) {
    let mut e = w.opened(object);
    let m = e.map_access("backends").unwrap();
    for i in range {
        m.update(
            &i.to_ne_bytes(),
            &backend_v1(u64::from(i) * 3, 1000 + i),
            UpdateFlags::ANY,
        )
        .unwrap();
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn dump(w: &World, map: &str) -> serde_json::Value {
    json(&w.expect(0, "dump", &[&map, &"--json"]))
}

#[test]
fn a_stored_plan_runs_exactly_a_stale_one_is_refused_and_uninstall_leaves_nothing() {
    const TEST: &str =
        "a_stored_plan_runs_exactly_a_stale_one_is_refused_and_uninstall_leaves_nothing";
    if !testenv::privileged(TEST) {
        return;
    }
    let w = World::new();
    let before = w.pins();
    let (v1, v2) = (fixture("engine_v1.o"), fixture("engine_v2.o"));
    let [cg, cgroup] = w.cgroup_arg();
    let fresh = w.expect(0, "plan", &[&v1, &cg, &cgroup]);
    assert!(fresh.starts_with("fresh install of "), "{fresh}");
    let installed = w.expect(0, "upgrade", &[&v1, &cg, &cgroup]);
    assert!(installed.starts_with("installed "), "{installed}");
    fill_backends(&w, &v1, 0..1000);

    // Two plans of the same upgrade against the same live state.
    let first = w.state.path().join("first.plan");
    let second = w.state.path().join("second.plan");
    let text = w.expect(0, "plan", &[&v2, &cg, &cgroup, &"-o", &first]);
    assert!(
        text.contains("backends                 copy (migrate)"),
        "{text}"
    );
    assert!(text.contains("value last_port            widen"), "{text}");
    w.expect(0, "plan", &[&v2, &cg, &cgroup, &"-o", &second]);
    let stored: serde_json::Value = json(&std::fs::read_to_string(&first).unwrap());

    // The first runs: exactly its identity, every entry carried and converted.
    let report = json(&w.expect(0, "upgrade", &[&"--plan", &first, &"--json"]));
    let r = &report["reports"][0];
    assert_eq!(r["identity"], stored["plan"]["identity"]);
    assert_eq!(r["maps"]["backends"]["copied"], 1000);
    let entries = dump(&w, "backends");
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 1000);
    for e in entries {
        let k = e["key"].as_u64().unwrap();
        assert_eq!(e["value"]["connects"], k * 3, "{e}");
        assert_eq!(e["value"]["last_port"], 1000 + k, "{e}");
        assert_eq!(e["value"]["flags"], 0, "{e}");
    }

    // The second was made against the state the first replaced.
    let stale = w.run("upgrade", &[&"--plan", &second]);
    assert_eq!(stale.status.code(), Some(5), "{stale:?}");
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(err.contains("no longer applies"), "{err}");
    // Options cannot be mixed with a stored plan.
    let mixed = w.run("upgrade", &[&"--plan", &second, &"--policy", &"strict"]);
    assert_eq!(mixed.status.code(), Some(2), "{mixed:?}");

    // A restart of the same load.
    let restart = w.expect(0, "upgrade", &[&v2, &cg, &cgroup]);
    assert!(restart.starts_with("restarted "), "{restart}");

    let status = json(&w.expect(0, "status", &[&"--json"]))["status"].clone();
    assert_eq!(status["identity"], stored["plan"]["identity"]);
    assert_eq!(status["links"][0]["state"]["kind"], "live", "{status}");
    assert!(status["journal"].is_null(), "{status}");

    let gone = json(&w.expect(0, "uninstall", &[&"--json"]));
    assert!(!gone["objects"].as_array().unwrap().is_empty());
    assert_eq!(w.pins(), before);
    let status = json(&w.expect(0, "status", &[&"--json"]))["status"].clone();
    assert!(status["identity"].is_null(), "{status}");
}

#[test]
fn a_held_lock_is_refused_with_exit_6_or_waited_for_with_wait() {
    const TEST: &str = "a_held_lock_is_refused_with_exit_6_or_waited_for_with_wait";
    if !testenv::privileged(TEST) {
        return;
    }
    let w = World::new();
    let v1 = fixture("engine_v1.o");
    let [cg, cgroup] = w.cgroup_arg();
    w.expect(0, "upgrade", &[&v1, &cg, &cgroup]);

    // A daemon holds the set: every command that takes the lock refuses at once.
    let daemon = w.engine();
    for command in ["upgrade", "recover", "uninstall"] {
        let args: Vec<&dyn AsRef<std::ffi::OsStr>> = if command == "upgrade" {
            vec![&v1, &cg, &cgroup]
        } else {
            Vec::new()
        };
        let out = w.run(command, &args);
        assert_eq!(out.status.code(), Some(6), "{command}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("locked by another process"), "{err}");
    }
    // Too short a wait ends as a refusal too, after waiting.
    let short = w.run("upgrade", &[&v1, &cg, &cgroup, &"--wait", &"1"]);
    assert_eq!(short.status.code(), Some(6), "{short:?}");

    // With --wait the upgrade waits while the lock is held and runs once it is not.
    let mut waiting = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("upgrade")
        .arg("--root")
        .arg(w.root())
        .arg("--state")
        .arg(w.state.path())
        .args([v1.as_os_str(), cg.as_os_str(), cgroup.as_os_str()])
        .args(["--wait", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "the upgrade did not wait for the lock"
    );
    drop(daemon);
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("restarted "), "{text}");
    w.expect(0, "uninstall", &[]);
}

#[test]
fn lost_entries_need_allow_state_loss() {
    const TEST: &str = "lost_entries_need_allow_state_loss";
    if !testenv::privileged(TEST) {
        return;
    }
    let w = World::new();
    let (v1, v2, small) = (
        fixture("engine_v1.o"),
        fixture("engine_v2.o"),
        fixture("engine_v1.small.o"),
    );
    let [cg, cgroup] = w.cgroup_arg();
    w.expect(0, "upgrade", &[&v1, &cg, &cgroup]);
    fill_backends(&w, &v1, 0..2000);
    let identity =
        |w: &World| json(&w.expect(0, "status", &[&"--json"]))["status"]["identity"].clone();
    let installed = identity(&w);

    // A shrink below the live entry count.
    let plan = w.expect(3, "plan", &[&small, &cg, &cgroup]);
    assert!(plan.contains("ENTRIES LOST"), "{plan}");
    let refused = w.run("upgrade", &[&small, &cg, &cgroup]);
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-state-loss"));
    // Even with the flag the copy does not pick entries to drop: nothing changes.
    let too_many = w.run("upgrade", &[&small, &cg, &cgroup, &"--allow-state-loss"]);
    assert_eq!(too_many.status.code(), Some(1), "{too_many:?}");
    assert!(
        String::from_utf8_lossy(&too_many.stderr).contains("more than the new capacity 1024"),
        "{too_many:?}"
    );
    assert_eq!(identity(&w), installed);
    assert_eq!(dump(&w, "backends").as_array().unwrap().len(), 2000);

    // A recreate (strict policy) of a map holding entries.
    let plan = w.expect(3, "plan", &[&v2, &cg, &cgroup, &"--policy", &"strict"]);
    assert!(
        plan.contains("backends                 create (recreate)"),
        "{plan}"
    );
    w.expect(3, "upgrade", &[&v2, &cg, &cgroup, &"--policy", &"strict"]);
    assert_eq!(identity(&w), installed);
    w.expect(
        0,
        "upgrade",
        &[
            &v2,
            &cg,
            &cgroup,
            &"--policy",
            &"strict",
            &"--allow-state-loss",
        ],
    );
    assert_ne!(identity(&w), installed);
    assert_eq!(dump(&w, "backends"), serde_json::json!([]));

    // Back to version 1 (recreated under strict), filled below the small capacity:
    // the shrink fits, and needs no flag.
    w.expect(
        0,
        "upgrade",
        &[
            &v1,
            &cg,
            &cgroup,
            &"--policy",
            &"strict",
            &"--allow-state-loss",
        ],
    );
    fill_backends(&w, &v1, 0..500);
    let plan = w.expect(0, "plan", &[&small, &cg, &cgroup]);
    assert!(plan.contains("fit the new capacity"), "{plan}");
    w.expect(0, "upgrade", &[&small, &cg, &cgroup]);
    assert_eq!(dump(&w, "backends").as_array().unwrap().len(), 500);
}

#[test]
fn status_shows_an_interrupted_upgrade_and_recover_finishes_it() {
    const TEST: &str = "status_shows_an_interrupted_upgrade_and_recover_finishes_it";
    if !testenv::privileged(TEST) {
        return;
    }
    let w = World::new();
    let (v1, v2) = (fixture("engine_v1.o"), fixture("engine_v2.o"));
    let [cg, cgroup] = w.cgroup_arg();
    w.expect(0, "upgrade", &[&v1, &cg, &cgroup]);
    fill_backends(&w, &v1, 0..100);

    // The upgrade to version 2 dies after its switch, before its commit.
    let plan_json = json(&w.expect(0, "plan", &[&v2, &cg, &cgroup, &"--json"]));
    let options: handover_engine::Options =
        serde_json::from_value(plan_json["options"].clone()).unwrap();
    {
        let mut e = w.engine();
        let objects = vec![ObjectSource::new(
            "engine_v2.o",
            std::fs::read(&v2).unwrap(),
        )];
        let plan = e.plan(&objects, &options).unwrap();
        fail::cfg("commit:start", "return").unwrap();
        let crashed = e.apply(&plan, &objects, ApplyOptions::default());
        fail::remove("commit:start");
        assert!(
            matches!(crashed, Err(handover_engine::Error::Crashed { .. })),
            "{crashed:?}"
        );
    }
    let text = w.expect(0, "status", &[]);
    assert!(text.contains("journal: INTERRUPTED upgrade"), "{text}");
    assert!(text.contains("stopped in commit"), "{text}");
    assert!(text.contains("run `handover recover`"), "{text}");
    let status = json(&w.expect(0, "status", &[&"--json"]))["status"].clone();
    assert_eq!(status["journal"]["interrupted"], true);
    assert_eq!(status["journal"]["recovery"], "forward");
    assert!(
        status["other_pins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("stage")),
        "{status}"
    );
    // A plan file is not written while an upgrade is interrupted.
    let refused = w.run(
        "plan",
        &[&v2, &cg, &cgroup, &"-o", &w.state.path().join("p")],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");

    let recovered = w.expect(0, "recover", &[]);
    assert!(recovered.contains("finished forward"), "{recovered}");
    let status = json(&w.expect(0, "status", &[&"--json"]))["status"].clone();
    assert!(status["journal"].is_null(), "{status}");
    assert_eq!(status["identity"], plan_json["identity"]);
    assert!(
        !status["other_pins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("stage")),
        "{status}"
    );
    assert_eq!(dump(&w, "backends").as_array().unwrap().len(), 100);
    let nothing = w.expect(0, "recover", &[]);
    assert!(nothing.starts_with("nothing to recover"), "{nothing}");
}

/// `struct flow` of programs/dump_types.c.
fn flow(addr: u32, port: u16, proto: u8) -> Vec<u8> {
    let mut k = addr.to_ne_bytes().to_vec();
    k.extend_from_slice(&port.to_ne_bytes());
    k.extend_from_slice(&[proto, 0]);
    k
}

/// `struct flow_state` of programs/dump_types.c (56 bytes).
fn flow_state(
    packets: u64,
    delta: i32,
    proto: u32,
    name: &[u8],
    open: bool,
    retries: u8,
) -> Vec<u8> {
    let mut v = packets.to_ne_bytes().to_vec();
    v.extend_from_slice(&delta.to_ne_bytes());
    v.extend_from_slice(&proto.to_ne_bytes());
    let mut n = [0u8; 8];
    n[..name.len()].copy_from_slice(name);
    v.extend_from_slice(&n);
    for p in [80u16, 443, 8080] {
        v.extend_from_slice(&p.to_ne_bytes());
    }
    // open:1 and retries:3 share one byte, from its lowest bit on little-endian.
    v.push(u8::from(open) | (retries << 1));
    v.push(0);
    v.extend_from_slice(&1_000u64.to_ne_bytes());
    v.extend_from_slice(&2_000u64.to_ne_bytes());
    v.extend_from_slice(&0xdead_beefu32.to_ne_bytes());
    v.extend_from_slice(&[0; 4]);
    assert_eq!(v.len(), 56);
    v
}

#[test]
fn dump_decodes_every_field_and_a_closed_pipe_ends_it_quietly() {
    const TEST: &str = "dump_decodes_every_field_and_a_closed_pipe_ends_it_quietly";
    if !testenv::privileged(TEST) || !cfg!(target_endian = "little") {
        return;
    }
    let w = World::new();
    let obj = fixture("dump_types.o");
    w.expect(0, "upgrade", &[&obj]);
    let cpus;
    {
        let mut e = w.opened(&obj);
        let flows = e.map_access("flows").unwrap();
        flows
            .update(
                &flow(0x0100_007f, 80, 6),
                &flow_state(12, -3, 6, b"web", true, 5),
                UpdateFlags::ANY,
            )
            .unwrap();
        flows
            .update(
                &flow(0x0200_007f, 53, 17),
                &flow_state(7, 40, 99, &[0xff, 1], false, 0),
                UpdateFlags::ANY,
            )
            .unwrap();
        let counters = e.map_access("counters").unwrap();
        let g = counters.geometry();
        cpus = g.cpus;
        let mut v = Vec::new();
        for c in 0..g.cpus as u64 {
            v.extend_from_slice(&(c * 10 + 1).to_ne_bytes());
        }
        counters
            .update(&1u32.to_ne_bytes(), &v, UpdateFlags::ANY)
            .unwrap();
    }
    // Hash order is the kernel's: sorted by line for the snapshot.
    let sorted = |text: String| {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::assert_snapshot!("dump_flows_text", sorted(w.expect(0, "dump", &[&"flows"])));
        let mut entries = dump(&w, "flows").as_array().unwrap().clone();
        entries.sort_by_key(|e| e["key"].to_string());
        insta::assert_snapshot!(
            "dump_flows_json",
            serde_json::to_string_pretty(&entries).unwrap()
        );
    });
    let counters = dump(&w, "counters");
    let values = counters[1]["values"].as_array().unwrap();
    assert_eq!(values.len(), cpus);
    for (c, v) in values.iter().enumerate() {
        assert_eq!(v["cpu"], c);
        assert_eq!(v["value"], c as u64 * 10 + 1);
    }
    assert_eq!(counters[0]["values"][0]["value"], 0);
    let text = w.expect(0, "dump", &[&"counters"]);
    assert!(text.contains("key: 1  values: cpu0: 1 cpu1: 11"), "{text}");

    let missing = w.run("dump", &[&"nosuch"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("no map named nosuch") && err.contains("flows"),
        "{err}"
    );

    // A reader that stops early: the dump ends quietly with its exit code.
    let big = fixture("engine_v1.o");
    let w = World::new();
    let [cg, cgroup] = w.cgroup_arg();
    w.expect(0, "upgrade", &[&big, &cg, &cgroup]);
    fill_backends(&w, &big, 0..100_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args([OsString::from("dump"), "--root".into(), w.root().into()])
        .args([OsString::from("--state"), w.state.path().into()])
        .args(["backends", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(head.starts_with(b"[\n{\"key\":"));
}

#[test]
fn cgroup_via_prog_attach_is_planned_replaced_shown_and_detached() {
    const TEST: &str = "cgroup_via_prog_attach_is_planned_replaced_shown_and_detached";
    if !testenv::privileged(TEST) {
        return;
    }
    let w = World::new();
    let (v1, v2) = (fixture("engine_v1.o"), fixture("engine_v2.o"));
    let [cg, cgroup] = w.cgroup_arg();
    let (via, how) = ("--cgroup-via", "prog-attach");
    let query = || {
        handover_sys::Bpf::kernel()
            .prog_query(
                handover_sys::AttachTarget::Fd(w.cgroup.fd()),
                handover_sys::AttachType::CgroupInet4Connect,
                0,
            )
            .unwrap()
            .prog_ids
    };
    let fresh = w.expect(0, "plan", &[&v1, &cg, &cgroup, &via, &how]);
    assert!(
        fresh.contains("attach without a link (prog attach, allow multi)"),
        "{fresh}"
    );
    w.expect(0, "upgrade", &[&v1, &cg, &cgroup, &via, &how]);
    let v1_prog = json(&w.expect(0, "status", &[&"--json"]))["status"]["links"][0]["id"]
        .as_u64()
        .unwrap();
    assert_eq!(query(), [u32::try_from(v1_prog).unwrap()]);
    let plan = w.expect(0, "plan", &[&v2, &cg, &cgroup, &via, &how]);
    assert!(
        plan.contains("switch: prog attach replace (compare-and-swap)"),
        "{plan}"
    );
    w.expect(0, "upgrade", &[&v2, &cg, &cgroup, &via, &how]);
    let status = json(&w.expect(0, "status", &[&"--json"]))["status"].clone();
    let link = &status["links"][0];
    assert_eq!(link["hold"], "prog_attach", "{status}");
    assert_eq!(link["state"]["kind"], "live", "{status}");
    assert_ne!(link["id"].as_u64().unwrap(), v1_prog);
    assert_eq!(
        query(),
        [u32::try_from(link["id"].as_u64().unwrap()).unwrap()]
    );
    let text = w.expect(0, "status", &[]);
    assert!(text.contains("held without a link"), "{text}");
    // A bad value names what is accepted.
    let bad = w.run("plan", &[&v2, &cg, &cgroup, &via, &"sideways"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("link, prog-attach or auto"),
        "{bad:?}"
    );
    w.expect(0, "uninstall", &[]);
    assert!(query().is_empty());
}

#[test]
fn tombstones_name_maps_of_the_set_and_become_part_of_its_identity() {
    const TEST: &str = "tombstones_name_maps_of_the_set_and_become_part_of_its_identity";
    if !testenv::privileged(TEST) {
        return;
    }
    let w = World::new();
    let v2 = fixture("engine_load_v2.o");
    let [cg, cgroup] = w.cgroup_arg();
    for (arg, why) in [
        ("conns=nope", "no object of the set has map nope"),
        ("nope=conns_tombstones", "no object of the set has map nope"),
        ("conns=conns", "cannot be its own tombstone map"),
    ] {
        let out = w.run("plan", &[&v2, &cg, &cgroup, &"--tombstones", &arg]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{arg}: {err}");
        assert!(err.contains(why), "{arg}: {err}");
    }
    let out = w.run("plan", &[&v2, &cg, &cgroup, &"--tombstones", &"conns"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let tombstones: [&dyn AsRef<std::ffi::OsStr>; 2] = [&"--tombstones", &"conns=conns_tombstones"];
    let plan = w.expect(
        0,
        "plan",
        &[&v2, &cg, &cgroup, tombstones[0], tombstones[1], &"--json"],
    );
    assert_eq!(
        json(&plan)["options"]["tombstones"]["conns"],
        "conns_tombstones",
        "{plan}"
    );
    w.expect(
        0,
        "upgrade",
        &[&v2, &cg, &cgroup, tombstones[0], tombstones[1]],
    );
    // The same objects without the option are another load: an upgrade, not a restart.
    let plan = json(&w.expect(0, "plan", &[&v2, &cg, &cgroup, &"--json"]));
    assert_eq!(plan["start"]["kind"], "upgrade", "{plan}");
    w.expect(0, "uninstall", &[]);
}

#[test]
fn attach_map_puts_a_program_on_a_socket_map_and_says_what_is_refused() {
    const TEST: &str = "attach_map_puts_a_program_on_a_socket_map_and_says_what_is_refused";
    if !testenv::privileged(TEST) {
        return;
    }
    let w = World::new();
    let (v1, v2) = (
        fixture("engine_sockmsg_v1.o"),
        fixture("engine_sockmsg_v2.o"),
    );
    for (arg, code, why) in [
        (
            "count=sent",
            1,
            "a array map: programs attach to sockmaps and sockhashes only",
        ),
        ("count=nope", 1, "which no object of the set has"),
        (
            "nope=socks",
            1,
            "names program `nope`, which no object of the set has",
        ),
        (
            "count=socks:cgroup_inet4_connect",
            1,
            "is not an attach type of a socket map",
        ),
        ("count", 2, "expected PROGRAM=MAP[:ATTACH_TYPE]"),
        ("count=socks:", 2, "expected PROGRAM=MAP[:ATTACH_TYPE]"),
    ] {
        let out = w.run("plan", &[&v1, &"--attach-map", &arg]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{arg}: {err}");
        assert!(err.contains(why), "{arg}: {err}");
    }
    // auto: a socket map link where the kernel has them (6.10+).
    let auto = w.expect(0, "plan", &[&v1, &"--attach-map", &"count=socks"]);
    let links =
        handover_sys::Bpf::kernel().sockmap_link_works(handover_sys::AttachType::SkMsgVerdict);
    let held = if links {
        "attach a new link"
    } else {
        "attach to the map (prog attach"
    };
    assert!(auto.contains(held), "{auto}");
    let no_map = w.run("plan", &[&v1, &"--map-via", &"link"]);
    assert_eq!(
        no_map.status.code(),
        Some(2),
        "--map-via needs --attach-map"
    );
    let attach: [&dyn AsRef<std::ffi::OsStr>; 4] = [
        &"--attach-map",
        &"count=socks",
        &"--map-via",
        &"prog-attach",
    ];
    let fresh = w.expect(
        0,
        "plan",
        &[&v1, attach[0], attach[1], attach[2], attach[3]],
    );
    assert!(
        fresh.contains("socket map socks (sk_msg_verdict)"),
        "{fresh}"
    );
    assert!(fresh.contains("attach to the map (prog attach"), "{fresh}");
    w.expect(
        0,
        "upgrade",
        &[&v1, attach[0], attach[1], attach[2], attach[3]],
    );
    // Socket maps answer BPF_PROG_QUERY from 5.19; before, status cannot know.
    let live = if sockmap_query() { "live" } else { "unknown" };
    let status = json(&w.expect(0, "status", &[&"--json"]))["status"].clone();
    let link = &status["links"][0];
    assert_eq!(link["hold"], "prog_attach", "{status}");
    assert_eq!(link["state"]["kind"], live, "{status}");
    let plan = w.expect(
        0,
        "plan",
        &[&v2, attach[0], attach[1], attach[2], attach[3]],
    );
    assert!(
        plan.contains("switch: prog attach over the map's program"),
        "{plan}"
    );
    w.expect(
        0,
        "upgrade",
        &[&v2, attach[0], attach[1], attach[2], attach[3]],
    );
    let status = json(&w.expect(0, "status", &[&"--json"]))["status"].clone();
    assert_eq!(status["links"][0]["state"]["kind"], live, "{status}");
    assert_ne!(status["links"][0]["id"], link["id"], "{status}");
    w.expect(0, "uninstall", &[]);
}

/// Whether the kernel answers `BPF_PROG_QUERY` on a socket map (5.19+), asked of a
/// throwaway sockhash.
fn sockmap_query() -> bool {
    use handover_sys::{AttachTarget, AttachType, Bpf, MapCreate, MapType};
    use std::os::fd::AsFd;
    let bpf = Bpf::kernel();
    let map = bpf
        .map_create(&MapCreate::new(MapType::Sockhash, 4, 8, 1))
        .expect("create a sockhash");
    match bpf.prog_query(AttachTarget::Fd(map.as_fd()), AttachType::SkMsgVerdict, 0) {
        Ok(_) => true,
        Err(e) if e.errno() == Some(libc::EINVAL) => false,
        Err(e) => panic!("query a sockhash: {e}"),
    }
}
