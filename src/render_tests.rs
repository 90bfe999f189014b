//! Snapshots of the binary's renderings: `handover diff` of every fixture pair in
//! programs/diff/ under both policies (text, and JSON for one pair), and
//! `handover inspect` of every fixture. Rendering is binary-only, so these are unit
//! tests of the binary; the snapshots are in snapshots/.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "test code: an out-of-range index is a failed test"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;

use common::corpus::{PAIRS, diff, fixtures, root};
use handover::Policy;
use handover::inspect::report;
use handover::loader::ObjectFile;

use crate::inspect_render::render;
use crate::report::{render_json, render_text};

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

fn stem(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .trim_end_matches(".o")
        .replace('.', "_")
}

#[test]
fn diff_of_each_pair() {
    for &(name, strict_loses, migrate_loses) in PAIRS {
        let doc = std::fs::read_to_string(root().join(format!("programs/diff/{name}.old.c")))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("// ")
            .to_owned();
        let strict = diff(name, Policy::Strict);
        let migrate = diff(name, Policy::Migrate);
        assert_eq!(strict.loses_entries(), strict_loses, "{name} strict");
        assert_eq!(migrate.loses_entries(), migrate_loses, "{name} migrate");
        let text = format!(
            "{doc}\n\n--- handover diff --policy strict\n{}\n--- handover diff --policy migrate\n{}",
            render_text(&strict),
            render_text(&migrate)
        );
        settings().bind(|| insta::assert_snapshot!(format!("diff_{name}"), text));
    }
}

#[test]
fn json_report_shape() {
    let report = diff("value_size", Policy::Migrate);
    let json = render_json(&report);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let m = &v["maps"][0];
    assert_eq!(m["name"], "counts");
    assert_eq!(m["verdict"], "migrate");
    assert!(m["changes"].is_array() && m["fields"].is_array());
    assert_eq!(m["fields"][0]["action"], "widen");
    settings().bind(|| insta::assert_snapshot!("diff_value_size_json", json));
}

#[test]
fn human_report_snapshots_of_every_fixture() {
    let all = fixtures();
    for path in &all {
        // NAME.VARIANT.o is NAME.c built another way (programs/build.sh): its specs are
        // compared with NAME.o's in loader/tests/objects.rs, so only NAME.o is shown here.
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some((base, _)) = file.trim_end_matches(".o").split_once('.')
            && all.iter().any(|p| p.ends_with(format!("{base}.o")))
        {
            continue;
        }
        let name = stem(path);
        let shown = format!(
            "programs/build/{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        );
        let file = ObjectFile::open(path).unwrap();
        let text = match file.parse() {
            Ok(obj) => render(&shown, &report(&obj)),
            Err(e) => format!("cannot inspect {shown}: {e}\n"),
        };
        settings().bind(|| insta::assert_snapshot!(format!("inspect_{name}"), text));
    }
}

/// `handover diff` of the mesh dataplane's upgrade, programs/dataplane/v1.c to v2.c
/// (built into programs/build/dataplane/v{1,2}.o); the verdicts the demo's upgrade
/// depends on are also asserted one by one, so a change in them is seen here first.
#[test]
fn diff_of_dataplane_v1_to_v2() {
    use handover::Verdict;
    let side = |version: &str| {
        let p = root().join(format!("programs/build/dataplane/{version}.o"));
        assert!(
            p.is_file(),
            "{} missing: run programs/build.sh (it compiles programs/dataplane/{version}.c)",
            p.display()
        );
        handover::load_side(&p).unwrap()
    };
    let (old, new) = (side("v1"), side("v2"));
    let diff = |policy| handover::diff_objects(&old, &new, policy, &common::ENV);
    let (strict, migrate) = (diff(Policy::Strict), diff(Policy::Migrate));
    let text = format!(
        "--- handover diff --policy strict\n{}\n--- handover diff --policy migrate\n{}",
        render_text(&strict),
        render_text(&migrate)
    );
    settings().bind(|| insta::assert_snapshot!("diff_dataplane_v1_v2", text));
    let verdict = |name: &str| {
        migrate
            .maps
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.verdict)
            .unwrap_or_else(|| panic!("no map {name} in the diff"))
    };
    // Program arrays are always fresh; the grown endpoint map grows; the widened
    // per-connection key is re-keyed; maps that did not change are reused.
    assert_eq!(verdict("lb_policies"), Verdict::Recreate);
    assert_eq!(verdict("endpoint"), Verdict::Grow);
    assert_eq!(verdict("conns"), Verdict::Rekey);
    assert_eq!(verdict("service"), Verdict::Reuse);
    assert_eq!(verdict("backend_conns"), Verdict::Reuse);
    assert_eq!(verdict("sock_meta"), Verdict::New);
    assert_eq!(verdict("service_stats"), Verdict::New);
    assert_eq!(verdict("conns_tombstones"), Verdict::New);
    assert_eq!(verdict("sock_ctx"), Verdict::Removed);
    // The size-only backend map is migrated by its handover:value tag (the appended
    // flags word zero-filled), frontend by its renamed_from tag: nothing is lost.
    assert_eq!(verdict("backend"), Verdict::Migrate);
    assert_eq!(verdict("frontend"), Verdict::Migrate);
    assert!(!migrate.loses_entries());
}
