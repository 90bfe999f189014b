//! The fixture corpus: the objects built from programs/ and the diff pairs of
//! programs/diff/, shared by the integration tests and the binary's rendering tests.

use std::path::{Path, PathBuf};

use handover_plan::{DiffReport, Policy, diff_objects, load_side};

use super::ENV;

/// Pair name, then whether entries would be lost under strict and under migrate.
pub const PAIRS: &[(&str, bool, bool)] = &[
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
    ("size_only", true, true),
    ("renamed", true, false),
    ("global_initial", true, false),
];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn object(name: &str, side: &str) -> PathBuf {
    let p = root().join(format!("programs/build/diff/{name}.{side}.o"));
    assert!(
        p.exists(),
        "{} is missing: run programs/build.sh (it compiles programs/diff/{name}.{side}.c)",
        p.display()
    );
    p
}

pub fn diff(name: &str, policy: Policy) -> DiffReport {
    let old = load_side(&object(name, "old")).unwrap();
    let new = load_side(&object(name, "new")).unwrap();
    diff_objects(&old, &new, policy, &ENV)
}

/// Every object in `dir`, sorted; fails when there is none.
pub fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    v.sort();
    assert!(
        !v.is_empty(),
        "no objects in {}: run programs/build.sh (or install xdp-tools)",
        dir.display()
    );
    v
}

/// Every fixture object of programs/build.
pub fn fixtures() -> Vec<PathBuf> {
    objects(&root().join("programs/build"))
}
