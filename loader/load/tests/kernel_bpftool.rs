//! Kernel cross-check (needs root): each fixture object is loaded by bpftool (libbpf) into
//! a private bpffs mount, and the maps the kernel created must equal this crate's specs
//! once the documented adjustments below are applied.
//!
//! `bpftool prog loadall OBJ DIR/progs pinmaps DIR/maps` pins every map. Maps declared
//! with `__uint(pinning, LIBBPF_PIN_BY_NAME)` are pinned by libbpf itself under
//! `/sys/fs/bpf`, and libbpf then refuses to pin them a second time under `pinmaps`; so
//! bpftool runs in a private mount namespace (`unshare -m`) where our bpffs instance is
//! bind-mounted on `/sys/fs/bpf`, objects with such maps are loaded without `pinmaps`,
//! and their maps are found through those pins and the map ids of the pinned programs.
//! Nothing outside the temporary directory is mounted in the test's own namespace.

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing returns Null, it does not panic"
)]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/testenv/mod.rs"]
mod testenv;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use handover_loader::{MapOrigin, MapSpec, Object, Pinning};
use handover_sys::map_flags;
use testenv::Bpffs;

/// Fixtures not loaded, and why.
const NOT_LOADED: &[(&str, &str)] = &[
    (
        "legacy_maps.o",
        "libbpf 1.x (bpftool's) refuses legacy `maps` section definitions",
    ),
    (
        "big_endian.bpfeb.o",
        "big-endian object; this kernel is little-endian (big_endian_le.o is its twin)",
    ),
    (
        "ksym_vars.o",
        "its typed __ksym variables need kallsyms addresses of per-CPU variables, which a kernel without CONFIG_KALLSYMS_ALL lacks; it has no maps, and kernel_ksyms.rs covers it",
    ),
    (
        "core_reloc.o",
        "its fentry program needs tracing privileges some kernels refuse (lockdown); the map types it uses are covered by the others",
    ),
    (
        "core_kinds.o",
        "defines no maps; its CO-RE relocations name fields and an enum the kernel lacks on purpose",
    ),
    (
        "bss_named.o",
        "libbpf 1.1 (bpftool's) predates .bss.NAME sections; newer libbpf maps them like .data.NAME",
    ),
    (
        "legacy_maps.g0.o",
        "legacy_maps.o built with -g0, same reason",
    ),
    (
        "legacy_maps.short.o",
        "legacy_maps.o with 20-byte records, same reason",
    ),
    (
        "map_types_edge.O0.o",
        "built with -O0, clang calls helpers through pointers kept in .data (callx, opcode \
         0x8d), which the verifier rejects; parsing it is the point",
    ),
    (
        "sections.o",
        "defines no maps; libbpf 1.1 (bpftool's) predates the tc/ingress, tc/egress and netfilter section names",
    ),
    (
        "struct_ops.o",
        "defines a struct_ops map, which this loader rejects, so there is no spec to compare",
    ),
    (
        "subprogs.g0.o",
        "BTF-defined maps without .BTF, which this loader and libbpf both reject",
    ),
    (
        "subprogs.fsections.o",
        "built with -ffunction-sections: libbpf takes the functions in .text.NAME sections for \
         programs and refuses the static ones, where this loader reads .text.NAME as .text; \
         subprogs.o is its twin",
    ),
    (
        "custom_sections.o",
        "its programs are in sections libbpf does not name, which bpftool refuses to load; \
         kernel_load.rs loads it with program types given",
    ),
    (
        "map_in_map_sized.o",
        "its map-in-map has no inner map definition, whose template the caller gives; \
         bpftool has none to give",
    ),
    (
        "core_missing.o",
        "reads a field no kernel has, on purpose: both loaders refuse it (kernel_load.rs \
         checks the error names the relocation); it has no maps",
    ),
    (
        "attach_targets.o",
        "its freplace and fentry programs name no target in their sections; the caller \
         gives them (kernel_load.rs), bpftool cannot",
    ),
    (
        "too_complex.o",
        "the verifier refuses it as too large to walk, on purpose (kernel_load.rs checks the \
         error); libbpf's retry logs a line per instruction walked, for a minute",
    ),
    (
        "subprogs.bpfeb.o",
        "big-endian object; this kernel is little-endian (subprogs.o is its twin)",
    ),
];

/// Adjustments between a spec and what the kernel reports, as applied by `expected`:
const ADJUSTMENTS: &[&str] = &[
    "object names keep the first 15 bytes (BPF_OBJ_NAME_LEN - 1)",
    "global data maps are named by libbpf: the leading 16 - 1 - max(7, len(section)) bytes of \
     the object file name (cut at its first '.') followed by the section name, or the section \
     name alone when it has a second '.' (.data.config)",
    "inner map definitions of map-in-maps are templates libbpf destroys after creating the outer map",
    "the kernel reports frozen = 1 for .rodata maps, which libbpf freezes after writing them",
    "libbpf 1.1 (bpftool's) makes every global data map BPF_F_MMAPABLE; newer libbpf, and \
     these specs, only those whose DATASEC has a non-static variable (.data.private, \
     .rodata.str1.1)",
];

fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}"))
}

/// The name libbpf gives a map and the kernel keeps.
fn expected_name(obj_file: &str, spec: &MapSpec) -> String {
    const OBJ_NAME_LEN: usize = 16;
    let name = match &spec.origin {
        MapOrigin::GlobalData { section } => {
            let obj_name = obj_file.split('.').next().unwrap_or_default();
            // libbpf reserves at least 7 bytes for the suffix (".rodata"), so ".data" and
            // ".bss" get the same 8-byte prefix as ".rodata".
            let sfx = &section[..section.len().min(OBJ_NAME_LEN - 1)];
            let reserved = sfx.len().max(7);
            let pfx_len = if section[1..].contains('.') {
                0
            } else {
                (OBJ_NAME_LEN - reserved - 1).min(obj_name.len())
            };
            format!("{}{sfx}", &obj_name[..pfx_len])
        }
        _ => spec.name.clone(),
    };
    name.chars().take(OBJ_NAME_LEN - 1).collect()
}

#[test]
fn kernel_maps_equal_specs() {
    if !testenv::privileged("kernel_maps_equal_specs") {
        return;
    }
    eprintln!("adjustments applied: {ADJUSTMENTS:#?}");
    let fs = Bpffs::mount();
    let bpf = handover_sys::Bpf::kernel();
    let auto = fs.path().join("by_name");
    std::fs::create_dir(&auto).unwrap();
    let mut compared = 0;
    for path in common::fixtures() {
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        if let Some((_, why)) = NOT_LOADED.iter().find(|(n, _)| *n == file) {
            eprintln!("not loading {file}: {why}");
            continue;
        }
        if let Some(why) = common::rejected(&path) {
            eprintln!("not loading {file}: the parser refuses it on purpose ({why})");
            continue;
        }
        let data = common::read(&path);
        let obj = Object::parse(&data).unwrap();
        let dir = fs.path().join(file.replace('.', "_"));
        std::fs::create_dir(&dir).unwrap();
        let by_name = obj.maps().iter().any(|m| m.pinning == Pinning::ByName);
        let (progs, maps) = (dir.join("progs"), dir.join("maps"));
        let mut args = vec![
            OsStr::new("prog"),
            OsStr::new("loadall"),
            path.as_os_str(),
            progs.as_os_str(),
        ];
        if !by_name {
            args.extend([OsStr::new("pinmaps"), maps.as_os_str()]);
        }
        let (ok, err) = testenv::bpftool_in(&auto, &args);
        if !ok {
            // Only where this kernel refuses the object whoever loads it (a program
            // the verifier rejects, a kfunc it lacks): there are no maps to compare.
            let ours = handover_load::load(&bpf, &obj, handover_load::LoadOptions::default());
            let ours = match ours {
                Ok(_) => panic!("{file}: bpftool loadall failed, we load it: {err}"),
                Err(e) => common::chain(&e),
            };
            let why = err
                .lines()
                .rfind(|l| l.starts_with("libbpf:"))
                .unwrap_or("");
            eprintln!(
                "{file}: refused by this kernel for both loaders\n  ours: {ours}\n  libbpf: {why}"
            );
            continue;
        }

        // Every map the kernel holds for this object, by kernel name.
        let mut kernel: HashMap<String, serde_json::Value> = HashMap::new();
        let mut add = |v: serde_json::Value| {
            kernel.insert(v["name"].as_str().unwrap_or_default().to_owned(), v);
        };
        for dir_name in ["maps"] {
            if let Ok(rd) = std::fs::read_dir(dir.join(dir_name)) {
                for e in rd.flatten() {
                    add(bpftool_json(&[
                        "map",
                        "show",
                        "pinned",
                        e.path().to_str().unwrap(),
                    ]));
                }
            }
        }
        for m in obj.maps().iter().filter(|m| m.pinning == Pinning::ByName) {
            let p = auto.join(&m.name);
            add(bpftool_json(&[
                "map",
                "show",
                "pinned",
                p.to_str().unwrap(),
            ]));
        }
        for e in std::fs::read_dir(dir.join("progs")).unwrap().flatten() {
            let prog = bpftool_json(&["prog", "show", "pinned", e.path().to_str().unwrap()]);
            for id in prog["map_ids"].as_array().into_iter().flatten() {
                add(bpftool_json(&["map", "show", "id", &id.to_string()]));
            }
        }

        for spec in obj.maps() {
            let name = expected_name(&file, spec);
            let k = kernel.get(&name).unwrap_or_else(|| {
                panic!(
                    "{file}: no kernel map named {name:?} for {}; kernel has {:?}",
                    spec.name,
                    kernel.keys()
                )
            });
            let ctx = format!("{file}: map {} (kernel {name})", spec.name);
            assert_eq!(k["type"], spec.type_name(), "{ctx}: type");
            assert_eq!(k["bytes_key"], spec.key_size, "{ctx}: key size");
            assert_eq!(k["bytes_value"], spec.value_size, "{ctx}: value size");
            assert_eq!(k["max_entries"], spec.max_entries, "{ctx}: max_entries");
            let flags = match spec.origin {
                MapOrigin::GlobalData { .. } => spec.flags | map_flags::MMAPABLE,
                _ => spec.flags,
            };
            assert_eq!(k["flags"], flags, "{ctx}: flags");
            assert_eq!(k["frozen"], u32::from(spec.frozen), "{ctx}: frozen");
            compared += 1;
        }
    }
    assert!(compared >= 20, "only {compared} maps compared");
    drop(fs);
}

#[test]
fn bpffs_guard_unmounts_on_panic() {
    if !testenv::privileged("bpffs_guard_unmounts_on_panic") {
        return;
    }
    let dir = std::panic::catch_unwind(|| {
        let fs = Bpffs::mount();
        let d = fs.path().to_path_buf();
        assert!(is_mounted(&d));
        std::panic::resume_unwind(Box::new(d));
    })
    .unwrap_err()
    .downcast::<PathBuf>()
    .unwrap();
    assert!(!is_mounted(&dir), "{} still mounted", dir.display());
    assert!(!dir.exists());
}

fn is_mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(dir.to_str().unwrap()))
}

#[test]
fn nested_subprograms_get_the_program_tags_libbpf_gives_them() {
    if !testenv::privileged("nested_subprograms_get_the_program_tags_libbpf_gives_them") {
        return;
    }
    let fs = Bpffs::mount();
    let bpf = handover_sys::Bpf::kernel();
    // programs/subprogs.c: xdp_first calls count_packet, which calls add_bytes, then
    // classify_len; appended breadth first, add_bytes would come last and the
    // instructions (so the tag) would differ from libbpf's depth-first order.
    let path = common::fixture("subprogs");
    let data = common::read(&path);
    let obj = Object::parse(&data).unwrap();
    let progs = fs.path().join("libbpf");
    if !handover_load::probe_func_addresses(&bpf) {
        // xdp_second and xdp_third hand callbacks to helpers: this kernel refuses them
        // from either loader, and ours says why.
        let options = handover_load::LoadOptions {
            keep_going: true,
            ..handover_load::LoadOptions::default()
        };
        let ours = handover_load::load(&bpf, &obj, options)
            .unwrap_or_else(|e| panic!("{}", common::chain(&e)));
        for (name, e) in &ours.failed {
            assert!(
                matches!(
                    e,
                    handover_load::LoadError::KernelLacks { lacks, .. }
                        if matches!(**lacks, handover_load::Lack::FuncAddress { .. })
                ),
                "{name}: {}",
                common::chain(e)
            );
            eprintln!("{}", common::chain(e));
        }
        assert!(ours.failed.contains_key("xdp_second"), "{:?}", ours.failed);
        assert!(ours.programs.contains_key("xdp_first"));
        let (ok, err) = testenv::bpftool_in(
            fs.path(),
            &[
                std::ffi::OsStr::new("prog"),
                std::ffi::OsStr::new("loadall"),
                path.as_os_str(),
                progs.as_os_str(),
            ],
        );
        assert!(!ok, "libbpf loads callbacks this kernel lacks: {err}");
        testenv::kernel_lacks(
            "nested_subprograms_get_the_program_tags_libbpf_gives_them",
            "function addresses (ld_imm64 with BPF_PSEUDO_FUNC, 5.13), which the callbacks \
             of subprogs.o need: libbpf's load is refused too, so there are no tags to compare",
        );
        return;
    }
    let ours = handover_load::load(&bpf, &obj, handover_load::LoadOptions::default())
        .unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    testenv::bpftool_loadall(fs.path(), &path, &progs, None);
    let mut compared = Vec::new();
    for (name, p) in &ours.programs {
        let pin = progs.join(name);
        let theirs = bpf
            .obj_get(&pin, handover_sys::OpenFlags::READ_ONLY)
            .unwrap_or_else(|e| panic!("libbpf's {name}: {e}"));
        let (mine, theirs) = (
            bpf.prog_info(&p.fd).unwrap().tag,
            bpf.prog_info(&theirs).unwrap().tag,
        );
        assert_eq!(mine, theirs, "{name}: tag");
        compared.push(name.as_str());
    }
    assert!(compared.contains(&"xdp_first"), "{compared:?}");
    eprintln!("equal tags: {compared:?}");
}

#[test]
fn global_data_maps_get_libbpfs_names_and_rodata_is_bound_to_every_program() {
    if !testenv::privileged(
        "global_data_maps_get_libbpfs_names_and_rodata_is_bound_to_every_program",
    ) {
        return;
    }
    let fs = Bpffs::mount();
    let bpf = handover_sys::Bpf::kernel();
    // programs/data_sections.c (.data, .rodata, .bss and custom .data.NAME/.rodata.NAME
    // sections) and programs/global_data.c.
    for fixture in ["data_sections", "global_data"] {
        let path = common::fixture(fixture);
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let data = common::read(&path);
        let obj = Object::parse(&data).unwrap();
        let ours = handover_load::load(&bpf, &obj, handover_load::LoadOptions::for_file(&file))
            .unwrap_or_else(|e| panic!("{file}: {}", common::chain(&e)));
        // The plan's kernel view of every map names it as it was created.
        let model = handover_plan::object_model(&file, &data).unwrap();
        let env = handover_plan::KernelEnv {
            page_size: handover_sys::page_size(),
            possible_cpus: u32::try_from(bpf.possible_cpus().unwrap()).unwrap(),
        };
        let object = handover_uapi::object_name(&file);
        for m in &model.maps {
            let viewed = handover_plan::kernel_view_of(Some(object), m, &env).name;
            let created = bpf.map_info(ours.map(&m.name).unwrap().fd()).unwrap().name;
            assert_eq!(viewed, created, "{file}: map {}", m.name);
        }
        let mut our_names: Vec<String> = ours
            .maps
            .values()
            .filter(|m| matches!(m.spec.origin, MapOrigin::GlobalData { .. }))
            .map(|m| bpf.map_info(m.fd()).unwrap().name)
            .collect();
        our_names.sort();

        let dir = fs.path().join(fixture);
        let (progs, maps) = (dir.join("progs"), dir.join("maps"));
        std::fs::create_dir(&dir).unwrap();
        testenv::bpftool_loadall(fs.path(), &path, &progs, Some(&maps));
        let mut their_names: Vec<String> = std::fs::read_dir(&maps)
            .unwrap()
            .flatten()
            .map(|e| {
                let fd = bpf
                    .obj_get(&e.path(), handover_sys::OpenFlags::READ_ONLY)
                    .unwrap();
                bpf.map_info(&fd).unwrap().name
            })
            .filter(|n| n.contains(".data") || n.contains(".rodata") || n.contains(".bss"))
            .collect();
        their_names.sort();
        assert_eq!(our_names, their_names, "{file}: global data map names");

        // Every program holds .rodata, as under libbpf.
        let rodata = ours.map(".rodata").expect("a .rodata map");
        let rodata_id = bpf.map_info(rodata.fd()).unwrap().id;
        for (name, p) in &ours.programs {
            assert!(p.rodata_bound, "{file}: {name}");
            let ids = bpf.prog_info(&p.fd).unwrap().map_ids;
            assert!(ids.contains(&rodata_id), "{file}: {name} holds {ids:?}");
            let pin = progs.join(name);
            let theirs = bpf
                .obj_get(&pin, handover_sys::OpenFlags::READ_ONLY)
                .unwrap();
            assert_eq!(
                ids.len(),
                bpf.prog_info(&theirs).unwrap().map_ids.len(),
                "{file}: {name}: as many maps as libbpf's"
            );
        }
        eprintln!("{file}: {our_names:?}");
    }
}
