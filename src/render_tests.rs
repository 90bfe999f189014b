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

use std::path::{Path, PathBuf};

use common::ENV;
use handover::inspect::report;
use handover::loader::ObjectFile;
use handover::{DiffReport, Policy, diff_objects, load_side};

use crate::inspect_render::render;
use crate::report::{render_json, render_text};

/// Pair name, then whether entries would be lost under strict and under migrate.
const PAIRS: &[(&str, bool, bool)] = &[
    ("add_map", false, false),
    ("grow", false, false),
    ("shrink", true, true),
    ("key_type", true, true),
    ("key_size", true, true),
    ("value_size", true, false),
    ("nested_value", true, false),
    ("reorder", true, false),
    ("delete_field", true, false),
    ("rename_field", true, false),
    ("map_type", true, true),
    ("same_size_layout", true, false),
    ("widen", true, false),
    ("rekey", true, false),
    ("key_dropped", true, true),
    ("family", true, true),
    ("flags", true, false),
    ("type_names", false, false),
    ("nested_array_union", true, false),
    ("bitfields", true, false),
    ("prog_array", false, false),
    ("special_maps", true, true),
    ("no_btf", true, true),
    ("global_data", true, false),
    ("map_in_map", true, true),
    ("kernel_adjusted", false, false),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn object(name: &str, side: &str) -> PathBuf {
    let p = root().join(format!("programs/build/diff/{name}.{side}.o"));
    assert!(
        p.exists(),
        "{} is missing: run programs/build.sh (it compiles programs/diff/{name}.{side}.c)",
        p.display()
    );
    p
}

fn diff(name: &str, policy: Policy) -> DiffReport {
    let old = load_side(&object(name, "old")).unwrap();
    let new = load_side(&object(name, "new")).unwrap();
    diff_objects(&old, &new, policy, &ENV)
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

fn fixtures() -> Vec<PathBuf> {
    let dir = root().join("programs/build");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    v.sort();
    assert!(
        !v.is_empty(),
        "no objects in {}: run programs/build.sh",
        dir.display()
    );
    v
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
