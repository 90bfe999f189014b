//! `handover inspect`: snapshots of the human report for every fixture (programs/NAME.c ->
//! programs/build/NAME.o), and the binary run on every fixture and xdp-tools object in
//! both output forms.

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing returns Null, it does not panic"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::corpus::{fixtures, objects};

use handover::inspect::report;
use handover_loader::ObjectFile;

fn xdp_tools() -> Vec<PathBuf> {
    objects(Path::new("/usr/lib/x86_64-linux-gnu/bpf"))
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(args)
        .output()
        .expect("run handover")
}

#[test]
fn binary_inspects_every_fixture_and_xdp_tools_object() {
    for path in fixtures().into_iter().chain(xdp_tools()) {
        let p = path.to_str().unwrap();
        let file = ObjectFile::open(&path).unwrap();
        let parsed = file.parse();
        let text = run(&["inspect", p]);
        let json = run(&["inspect", p, "--json"]);
        let obj = match parsed {
            Err(e) => {
                // The object is refused: exit 1 and the loader's message on stderr.
                for out in [&text, &json] {
                    assert_eq!(out.status.code(), Some(1), "{p}");
                    assert!(
                        String::from_utf8_lossy(&out.stderr).contains(&e.to_string()),
                        "{p}"
                    );
                }
                continue;
            }
            Ok(obj) => obj,
        };
        assert!(
            text.status.success(),
            "{p}: {}",
            String::from_utf8_lossy(&text.stderr)
        );
        assert!(
            json.status.success(),
            "{p}: {}",
            String::from_utf8_lossy(&json.stderr)
        );
        // The text itself is snapshot-tested in the binary (src/render_tests.rs); here
        // it names the object and every map and program.
        let text = String::from_utf8(text.stdout).unwrap();
        assert!(text.contains(p), "{p}");
        for name in obj
            .maps()
            .iter()
            .map(|m| m.name.as_str())
            .chain(obj.programs().iter().map(|pr| pr.name.as_str()))
        {
            assert!(text.contains(name), "{p}: {name} not in the text");
        }

        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let maps = v["maps"].as_array().expect("maps array");
        assert_eq!(maps.len(), obj.maps().len(), "{p}");
        for (j, m) in maps.iter().zip(obj.maps()) {
            assert_eq!(j["name"], m.name.as_str());
            assert_eq!(j["type"], m.map_type.name());
            assert_eq!(j["key_size"], m.key_size);
            assert_eq!(j["value_size"], m.value_size);
            assert_eq!(j["max_entries"], m.max_entries);
            assert_eq!(j["flags"], m.flags);
            assert_eq!(j["pinning"], m.pinning.name());
        }
        let progs = v["programs"].as_array().expect("programs array");
        assert_eq!(progs.len(), obj.programs().len(), "{p}");
        for (j, pr) in progs.iter().zip(obj.programs()) {
            assert_eq!(j["name"], pr.name.as_str());
            assert_eq!(j["section"], pr.section.as_str());
            assert_eq!(j["type"], pr.type_name());
            assert_eq!(j["insn_count"], pr.insns.len());
            assert_eq!(
                j["relocations"].as_array().map(Vec::len),
                Some(pr.references.len())
            );
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["inspect"]).status.code(), Some(2));
    assert_eq!(run(&["inspect", "a.o", "--yaml"]).status.code(), Some(2));
    let missing = run(&["inspect", "/nonexistent/x.o"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/x.o"));
}

/// The JSON form of programs/build/maps_btf.o (from programs/maps_btf.c), checked against
/// the values written in the source: the shape `{"maps":[{"name","type","key_size",
/// "value_size","max_entries","flags",...}],"programs":[{"name","section","type",...}]}`
/// with map and program types spelled as the kernel's enum, lower case, without prefix.
#[test]
fn json_shape_and_kernel_enum_names_of_maps_btf() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/build/maps_btf.o");
    let out = run(&["inspect", path.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut maps: Vec<(String, String, u64, u64, u64, u64)> = v["maps"]
        .as_array()
        .expect("maps array")
        .iter()
        .map(|m| {
            let m_keys = m.as_object().unwrap();
            for k in [
                "name",
                "type",
                "key_size",
                "value_size",
                "max_entries",
                "flags",
            ] {
                assert!(m_keys.contains_key(k), "map lacks {k}: {m}");
            }
            (
                m["name"].as_str().unwrap().to_owned(),
                m["type"].as_str().unwrap().to_owned(),
                m["key_size"].as_u64().unwrap(),
                m["value_size"].as_u64().unwrap(),
                m["max_entries"].as_u64().unwrap(),
                m["flags"].as_u64().unwrap(),
            )
        })
        .collect();
    maps.sort();
    let s = |x: &str| x.to_owned();
    // BPF_F_NO_PREALLOC is 1; struct flow_key is 16 bytes, struct flow_stats 24.
    assert_eq!(
        maps,
        [
            (s("counters"), s("array"), 4, 8, 16, 0),
            (s("events"), s("ringbuf"), 0, 0, 256 * 1024, 0),
            (s("flows"), s("hash"), 16, 24, 1024, 1),
            (s("lru_sizes_only"), s("lru_hash"), 8, 16, 4096, 0),
            (s("percpu_counters"), s("percpu_array"), 4, 8, 4, 0),
            (s("percpu_stats"), s("percpu_hash"), 4, 24, 128, 0),
            (s("prefixes"), s("lpm_trie"), 8, 4, 256, 1),
        ]
    );
    let progs = v["programs"].as_array().expect("programs array");
    assert_eq!(progs.len(), 1);
    assert_eq!(
        v.as_object()
            .unwrap()
            .keys()
            .filter(|k| *k == "maps" || *k == "programs")
            .count(),
        2
    );
    assert_eq!(
        (&progs[0]["name"], &progs[0]["section"], &progs[0]["type"]),
        (
            &serde_json::json!("xdp_count"),
            &serde_json::json!("xdp"),
            &serde_json::json!("xdp")
        )
    );
    assert_eq!(progs[0]["attach_type"], "xdp");
}

/// Every map and program type name over all fixtures and xdp-tools objects is a kernel
/// enum name as the JSON report spells it: lower case, no `bpf_map_type_`/`bpf_prog_type_`
/// prefix, never `unspec`.
#[test]
fn json_type_names_are_lower_case_kernel_enum_names() {
    let ok = |s: &str| {
        !s.is_empty()
            && s != "unspec"
            && !s.starts_with("bpf_")
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    for path in fixtures().into_iter().chain(xdp_tools()) {
        let Ok(obj) = ObjectFile::open(&path).unwrap().parse().map(|o| report(&o)) else {
            continue;
        };
        for m in &obj.maps {
            assert!(
                ok(m.map_type),
                "{}: map {} type {}",
                path.display(),
                m.name,
                m.map_type
            );
        }
        for p in &obj.programs {
            assert!(
                ok(p.prog_type),
                "{}: program {} type {}",
                path.display(),
                p.name,
                p.prog_type
            );
            if let Some(a) = p.attach_type {
                assert!(
                    ok(a),
                    "{}: program {} attach type {a}",
                    path.display(),
                    p.name
                );
            }
        }
    }
}

/// programs/build/sockops.o with its `sockops` section renamed to `sockopz` (in .strtab,
/// where `.relsockops` shares the name and is renamed with it): the refusal names the
/// section and the option that gives the type, and that option works.
#[test]
fn a_section_without_a_type_is_shown_as_unknown_and_a_type_can_be_given() {
    let mut data =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/build/sockops.o"))
            .unwrap();
    // The section name string table: ELF64 header e_shoff at 0x28, e_shstrndx at 0x3e;
    // a section header's sh_offset at 0x18 and sh_size at 0x20 (64-byte headers).
    let u64_at = |d: &[u8], at: usize| u64::from_le_bytes(d[at..at + 8].try_into().unwrap());
    let shoff = usize::try_from(u64_at(&data, 0x28)).unwrap();
    let shstrndx = usize::from(u16::from_le_bytes([data[0x3e], data[0x3f]]));
    let hdr = shoff + 64 * shstrndx;
    let start = usize::try_from(u64_at(&data, hdr + 0x18)).unwrap();
    let len = usize::try_from(u64_at(&data, hdr + 0x20)).unwrap();
    let at = start
        + data[start..start + len]
            .windows(8)
            .position(|w| w == b"sockops\0")
            .expect("section name in the string table");
    data[at + 6] = b'z';
    let path =
        std::env::temp_dir().join(format!("handover-inspect-sockopz-{}.o", std::process::id()));
    std::fs::write(&path, &data).unwrap();
    let p = path.to_str().unwrap();

    // Without a type the object is shown all the same, its program of type unknown.
    let shown = run(&["inspect", p, "--json"]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let prog = v["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["section"] == "sockopz")
        .expect("the program of the renamed section");
    assert_eq!(prog["type"], "unknown");

    let given = run(&[
        "inspect",
        p,
        "--program-type",
        "sockopz=sock_ops:cgroup_sock_ops",
        "--json",
    ]);
    let _ = std::fs::remove_file(&path);
    assert!(
        given.status.success(),
        "{}",
        String::from_utf8_lossy(&given.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&given.stdout).unwrap();
    let prog = v["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["section"] == "sockopz")
        .expect("the program of the renamed section");
    assert_eq!(
        (&prog["type"], &prog["attach_type"]),
        (
            &serde_json::json!("sock_ops"),
            &serde_json::json!("cgroup_sock_ops")
        )
    );

    for bad in [
        "sockopz",
        "sockopz=no_such_type",
        "sockopz=sock_ops:no_such_attach",
    ] {
        let out = run(&["inspect", "x.o", "--program-type", bad]);
        assert_eq!(out.status.code(), Some(2), "--program-type {bad}");
    }
    assert_eq!(
        run(&["inspect", "x.o", "--program-type"]).status.code(),
        Some(2)
    );
}
