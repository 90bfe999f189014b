//! `handover demo` against the real kernel: its JSON report checked phase by phase,
//! and its text report (rendered from the same run) an insta snapshot with every
//! number redacted (snapshots/demo_text.snap). Needs root; skips loudly otherwise.

#![expect(clippy::indexing_slicing, reason = "tests index the report they read")]

#[path = "../demo/tests/dataplane/mod.rs"]
mod dataplane;
#[path = "../loader/tests/testenv/mod.rs"]
mod testenv;

use dataplane::dataplane_loads;
use handover_demo::story::{DemoReport, all_good, render_text};

const TEST: &str = "demo_report_shows_no_failure_in_any_phase";

/// `text` with every run of digits replaced by `N`, and the list of processes
/// that answered the admin endpoint (how many answered depends on timing) by `PIDS`.
fn redact(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = match line.find("answered by ") {
            Some(at) => {
                let end = line[at..].find(", longest").map_or(line.len(), |e| at + e);
                format!("{}answered by PIDS{}", &line[..at], &line[end..])
            }
            None => line.to_owned(),
        };
        let mut digits = false;
        for c in line.chars() {
            if c.is_ascii_digit() {
                if !digits {
                    out.push('N');
                }
                digits = true;
            } else {
                out.push(c);
                digits = false;
            }
        }
        out.push('\n');
    }
    out
}

#[test]
fn demo_report_shows_no_failure_in_any_phase() {
    if !testenv::privileged(TEST) || !dataplane_loads(TEST) {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["demo", "--json", "--rate", "300", "--phase-ms", "1500"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: DemoReport = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not a report ({e}): {stdout}\n{stderr}"));
    let names: Vec<&str> = report.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "install",
            "restart",
            "sigkill",
            "upgrade",
            "upgrade-with-config-change",
            "sigkill-mid-upgrade",
            "uninstall"
        ]
    );
    for p in &report.phases {
        assert_eq!(p.failed, 0, "{}: failed connects {:?}", p.name, p.errors);
        assert_eq!(p.out_of_config, 0, "{}: {:?}", p.name, p.errors);
        if p.name != "uninstall" {
            assert!(p.connects > 0, "{} made no connects", p.name);
        }
        if p.install.as_ref().is_some_and(|i| i.took_over) {
            assert_eq!(
                p.admin.failed, 0,
                "{}: admin requests refused: {:?}",
                p.name, p.admin.errors
            );
            assert!(p.admin.requests > 0, "{}", p.name);
        }
    }
    let phase = |name: &str| report.phases.iter().find(|p| p.name == name).unwrap();
    let start = |name: &str| {
        serde_json::to_value(&phase(name).install.as_ref().unwrap().start).unwrap()["kind"].clone()
    };
    assert_eq!(start("install"), "fresh");
    assert_eq!(start("restart"), "restart");
    assert_eq!(start("sigkill"), "restart");
    assert_eq!(start("upgrade"), "upgrade");
    assert_eq!(start("upgrade-with-config-change"), "upgrade");
    assert_eq!(start("sigkill-mid-upgrade"), "recovered");
    assert!(phase("restart").install.as_ref().unwrap().took_over);
    assert!(!phase("sigkill").install.as_ref().unwrap().took_over);
    assert_eq!(phase("sigkill-mid-upgrade").killed_mid_upgrade, Some(true));
    // The upgrade carries the daemon-written maps' entries by the plan's verdicts.
    let maps = &phase("upgrade").install.as_ref().unwrap().maps;
    assert_eq!(maps["backend"].verdict.as_deref(), Some("migrate"));
    assert_eq!(maps["backend"].copied, 6);
    assert_eq!(maps["conns"].verdict.as_deref(), Some("rekey"));
    assert_eq!(maps["backend_conns"].action, "reuse");
    // Every connect was counted once by the programs, whichever version ran it.
    assert_eq!(
        report.counters_after_last_upgrade,
        report.connects_per_backend
    );
    assert!(report.conns.exact, "{:?}", report.conns);
    assert_eq!(report.conns.held, report.conns.in_table);
    assert!(report.pins_left.is_empty(), "{:?}", report.pins_left);
    assert!(all_good(&report));
    assert!(out.status.success(), "{stderr}");

    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!("demo_text", redact(&render_text(&report))));
}
