//! What `handover diff` says of the upgrade from dataplane v1 to v2
//! (programs/dataplane/v1.c and v2.c, built into programs/build/dataplane/v{1,2}.o):
//! the report is the insta snapshot snapshots/diff_dataplane_v1_v2.snap; the verdicts
//! the meshd upgrade depends on are also asserted one by one, so a change in them is
//! seen here first.

#![expect(clippy::indexing_slicing, reason = "tests index the report they read")]

use std::path::{Path, PathBuf};

use handover::{DiffReport, KernelEnv, Policy, diff_objects, load_side, render_text};

const ENV: KernelEnv = KernelEnv {
    page_size: 4096,
    possible_cpus: 4,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn object(version: &str) -> PathBuf {
    let p = root().join(format!("programs/build/dataplane/{version}.o"));
    assert!(
        p.is_file(),
        "{} missing: run programs/build.sh (it compiles programs/dataplane/{version}.c)",
        p.display()
    );
    p
}

fn diff(policy: Policy) -> DiffReport {
    let old = load_side(&object("v1")).unwrap();
    let new = load_side(&object("v2")).unwrap();
    diff_objects(&old, &new, policy, &ENV)
}

fn verdicts(report: &DiffReport) -> Vec<(String, String)> {
    let text = render_text(report);
    text.lines()
        .filter_map(|l| l.strip_prefix("map "))
        .map(|l| {
            let (name, rest) = l.split_once(": ").unwrap();
            let verdict = rest.split_whitespace().next().unwrap();
            (name.to_owned(), verdict.to_owned())
        })
        .collect()
}

#[test]
fn diff_of_dataplane_v1_to_v2() {
    let migrate = diff(Policy::Migrate);
    let strict = diff(Policy::Strict);
    let text = format!(
        "--- handover diff --policy strict\n{}\n--- handover diff --policy migrate\n{}",
        render_text(&strict),
        render_text(&migrate)
    );
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!("diff_dataplane_v1_v2", text));

    let v: std::collections::BTreeMap<String, String> = verdicts(&migrate).into_iter().collect();
    // Program arrays are always fresh; the grown endpoint map grows; the widened
    // per-connection key is re-keyed; maps that did not change are reused.
    assert_eq!(v["lb_policies"], "recreate");
    assert_eq!(v["endpoint"], "grow");
    assert_eq!(v["conns"], "rekey");
    assert_eq!(v["service"], "reuse");
    assert_eq!(v["backend_conns"], "reuse");
    assert_eq!(v["sock_meta"], "new");
    assert_eq!(v["service_stats"], "new");
    assert_eq!(v["sock_ctx"], "removed");
    // Not yet what the upgrade needs: the backend value (declared by size only) grew
    // by an appended field, which needs a layout hint to be migrated instead of
    // recreated; the renamed field of frontend (declared by a renamed_from tag) is
    // still dropped and zero-filled.
    assert_eq!(v["backend"], "recreate");
    assert_eq!(v["frontend"], "migrate");
    assert!(migrate.loses_entries());
}
