//! The `handover` binary embeds the mesh dataplane objects that `handover demo` runs
//! (programs/dataplane/vN.c, built into programs/build/dataplane/vN.o by
//! programs/build.sh). This checks they exist; when they do not and clang is
//! installed, it builds them; otherwise it stops with what to do.

use std::path::Path;
use std::process::Command;

const VERSIONS: [&str; 3] = ["v1", "v2", "v3"];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("cargo::rerun-if-changed=programs/dataplane");
    for v in VERSIONS {
        println!("cargo::rerun-if-changed=programs/build/dataplane/{v}.o");
    }
    let missing = || {
        VERSIONS
            .iter()
            .map(|v| root.join(format!("programs/build/dataplane/{v}.o")))
            .filter(|p| !p.is_file())
            .collect::<Vec<_>>()
    };
    if missing().is_empty() {
        return;
    }
    let clang = Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if clang {
        let status = Command::new("bash")
            .arg(root.join("programs/build.sh"))
            .arg("dataplane")
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            panic!(
                "programs/build.sh failed ({status:?}): it compiles the BPF objects `handover demo` embeds"
            );
        }
    }
    let still = missing();
    assert!(
        still.is_empty(),
        "missing {}: `handover demo` embeds the mesh dataplane objects. Build them first with \
         `bash programs/build.sh dataplane` (needs clang with the BPF target and the kernel headers: \
         apt-get install clang libbpf-dev)",
        still
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}
