//! `handover diff` of every fixture pair in programs/diff/: NAME.old.c and NAME.new.c,
//! built by programs/build.sh into programs/build/diff/NAME.{old,new}.o. The report of
//! each pair under both policies is an insta snapshot in snapshots/.

#![allow(
    clippy::indexing_slicing,
    reason = "test code: an out-of-range index is a failed test"
)]

mod common;

use std::path::Path;

use common::ENV;
use common::corpus::{PAIRS, diff, object, root};
use handover::{Policy, Verdict, diff_objects, load_side};

#[test]
fn every_pair_is_listed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("programs/diff"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".old.c").map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = PAIRS.iter().map(|p| p.0.to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn a_spec_against_itself_is_all_reuse() {
    for &(name, ..) in PAIRS {
        for side in ["old", "new"] {
            let o = load_side(&object(name, side)).unwrap();
            let r = diff_objects(&o, &o, Policy::Strict, &ENV);
            for m in &r.maps {
                let expected = if m.name == "jumps" || m.name == ".rodata" {
                    Verdict::Recreate // rebuilt every time, by rule
                } else {
                    Verdict::Reuse
                };
                assert_eq!(m.verdict, expected, "{name}.{side}: {}", m.name);
            }
        }
    }
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_exit_statuses() {
    let (old, new) = (object("grow", "old"), object("grow", "new"));
    assert_eq!(cli(&["diff", s(&old), s(&new)]).0, 0);
    let (old, new) = (object("shrink", "old"), object("shrink", "new"));
    assert_eq!(cli(&["diff", s(&old), s(&new)]).0, 3);
    let (old, new) = (object("value_size", "old"), object("value_size", "new"));
    assert_eq!(cli(&["diff", s(&old), s(&new), "--policy", "migrate"]).0, 0);
    let (code, out, _) = cli(&["diff", s(&old), s(&new), "--policy", "strict", "--json"]);
    assert_eq!(code, 3);
    assert!(out.contains("\"verdict\": \"recreate\""), "{out}");
    assert_eq!(cli(&["diff", s(&old)]).0, 2);
    assert_eq!(cli(&["diff", s(&old), s(&new), "--policy", "lenient"]).0, 2);
    let (code, _, err) = cli(&["diff", "/nonexistent/old.o", s(&new)]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/old.o"), "{err}");
}

#[test]
fn cli_snapshot_then_diff() {
    let dir = std::env::temp_dir().join(format!("handover-cli-snapshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("maps.json");
    let (old, new) = (object("rekey", "old"), object("rekey", "new"));
    assert_eq!(cli(&["snapshot", s(&old), "-o", s(&snap)]).0, 0);
    // The snapshot stands for the old object.
    let (code, out, _) = cli(&["diff", s(&snap), s(&new)]);
    let (code_obj, out_obj, _) = cli(&["diff", s(&old), s(&new)]);
    assert_eq!((code, &out), (code_obj, &out_obj));
    assert!(out.contains("map conns: rekey"), "{out}");
    // A damaged snapshot is a failure that says why.
    let mut bytes = std::fs::read(&snap).unwrap();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&snap, &bytes).unwrap();
    let (code, _, err) = cli(&["diff", s(&snap), s(&new)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("maps.json"), "{err}");
    assert_eq!(cli(&["snapshot", s(&old)]).0, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn widen_pair_converts_a_real_value() {
    // programs/diff/widen.{old,new}.c: struct v { u16 port; s32 delta; u32 hits; s32 balance; }
    // becomes { u32 port; s64 delta; s64 hits; u64 balance; }.
    let report = diff("widen", Policy::Migrate);
    let plan = report.maps[0].value_plan.as_ref().unwrap();
    let mut old = Vec::new();
    old.extend_from_slice(&8080u16.to_le_bytes());
    old.extend_from_slice(&[0xaa; 2]); // padding
    old.extend_from_slice(&(-5i32).to_le_bytes());
    old.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
    old.extend_from_slice(&(-1i32).to_le_bytes());
    let new = handover::convert(plan, &old).unwrap();
    assert_eq!(new.len(), 32);
    assert_eq!(u32::from_le_bytes(new[0..4].try_into().unwrap()), 8080);
    assert_eq!(i64::from_le_bytes(new[8..16].try_into().unwrap()), -5);
    assert_eq!(
        i64::from_le_bytes(new[16..24].try_into().unwrap()),
        0xffff_fff0
    );
    assert_eq!(
        u64::from_le_bytes(new[24..32].try_into().unwrap()),
        0,
        "balance is zero-filled"
    );
    // Per-CPU: the same plan, slot by slot.
    let two = [old.clone(), old].concat();
    let out = handover::convert_percpu(plan, &two, 2).unwrap();
    assert_eq!(&out[..32], &new[..]);
    assert_eq!(&out[32..], &new[..]);
}

/// The plan of every pair under `migrate`, as JSON with every field mapping and
/// conversion plan (what `handover diff --json` prints), is an insta snapshot, and
/// reads back equal to the plan written: a stored plan is executed exactly as
/// reviewed.
#[test]
fn plans_of_every_pair_are_values() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    for &(name, ..) in PAIRS {
        for policy in [Policy::Migrate, Policy::Strict] {
            let plan = handover::Plan::new(diff(name, policy));
            let json = serde_json::to_string_pretty(&plan).unwrap();
            let back: handover::Plan = serde_json::from_str(&json).unwrap();
            assert_eq!(back, plan, "{name}");
            // A map whose entries are copied carries both conversion plans, except a
            // map-in-map, whose inner maps are carried by id; no other map has one.
            for m in &plan.diff.maps {
                let copies = matches!(
                    m.verdict,
                    Verdict::Grow | Verdict::Shrink | Verdict::Migrate | Verdict::Rekey
                );
                let by_id = m
                    .notes
                    .iter()
                    .any(|n| n.starts_with("values are inner maps"));
                assert_eq!(
                    m.key_plan.is_some(),
                    m.value_plan.is_some(),
                    "{name}: {}",
                    m.name
                );
                assert_eq!(
                    copies && !by_id,
                    m.value_plan.is_some(),
                    "{name}: {}",
                    m.name
                );
            }
            if policy == Policy::Migrate {
                settings.bind(|| insta::assert_snapshot!(format!("plan_{name}"), json));
            }
        }
    }
}

/// Global data: a new field takes the new object's initial value, not zero, when the
/// plan converts a real value; a changed initial value of an unchanged variable is
/// named with the value the upgrade keeps.
#[test]
fn global_data_new_fields_start_with_the_new_initial_value() {
    let report = diff("global_initial", Policy::Migrate);
    let data = report.maps.iter().find(|m| m.name == ".data").unwrap();
    let plan = data.value_plan.as_ref().unwrap();
    // Running .data: limit = 33 (changed at run time).
    let new = handover::convert(plan, &33u32.to_le_bytes()).unwrap();
    assert_eq!(u32::from_le_bytes(new[0..4].try_into().unwrap()), 33);
    assert_eq!(
        u32::from_le_bytes(new[4..8].try_into().unwrap()),
        1,
        "enabled starts as the new object initialises it"
    );
    let enabled = data.fields.iter().find(|f| f.path == "enabled").unwrap();
    assert_eq!(enabled.action, handover::FieldAction::Initial);
    let cfg = report.maps.iter().find(|m| m.name == ".data.cfg").unwrap();
    assert_eq!(cfg.verdict, Verdict::Reuse);
    assert!(
        cfg.changes.iter().any(|c| c.attribute
            == handover::Attribute::InitialValue("threshold".into())
            && c.old == "5"
            && c.new == "7"),
        "{cfg:?}"
    );
    assert!(
        cfg.notes
            .iter()
            .any(|n| n.contains("keeps the running value"))
    );
}

/// Declared renames carry values; an undeclared one is flagged; merge rules reach
/// the plan.
#[test]
fn renamed_fields_are_carried_or_flagged() {
    let report = diff("renamed", Policy::Migrate);
    let m = &report.maps[0];
    let packets = m.fields.iter().find(|f| f.path == "packets").unwrap();
    assert_eq!(packets.action, handover::FieldAction::Copy);
    assert_eq!(packets.merge, Some(handover::MergeRule::Sum));
    let errors = m.fields.iter().find(|f| f.path == "errors").unwrap();
    assert_eq!(errors.action, handover::FieldAction::ZeroFill);
    assert!(
        errors
            .note
            .as_deref()
            .unwrap()
            .contains("likely renamed from `errs`")
    );
    let mut old = Vec::new();
    for v in [10u64, 20, 30] {
        old.extend_from_slice(&v.to_le_bytes());
    }
    let new = handover::convert(m.value_plan.as_ref().unwrap(), &old).unwrap();
    assert_eq!(u64::from_le_bytes(new[0..8].try_into().unwrap()), 10);
    assert_eq!(u64::from_le_bytes(new[16..24].try_into().unwrap()), 0);
    assert!(report.drops_values() && !report.loses_entries());
}

/// A size-only map tagged in the C source with its key and value types diffs like a
/// typed map; one named with a layout hint too.
#[test]
fn size_only_maps_with_a_layout_diff_like_typed_maps() {
    let report = diff("size_only", Policy::Migrate);
    let eps = report.maps.iter().find(|m| m.name == "endpoints").unwrap();
    assert_eq!(eps.verdict, Verdict::Migrate);
    let backends = report.maps.iter().find(|m| m.name == "backends").unwrap();
    assert_eq!(backends.verdict, Verdict::Recreate);
    let options = handover::ModelOptions {
        layouts: vec![handover::LayoutHint {
            map: "backends".into(),
            key: None,
            value: Some("be_val".into()),
        }],
    };
    let old = handover::load_side_with(&object("size_only", "old"), &options).unwrap();
    let new = handover::load_side_with(&object("size_only", "new"), &options).unwrap();
    let r = diff_objects(&old, &new, Policy::Migrate, &ENV);
    let backends = r.maps.iter().find(|m| m.name == "backends").unwrap();
    assert_eq!(backends.verdict, Verdict::Migrate);
    assert!(!r.loses_entries());
}
