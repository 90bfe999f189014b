//! Loading whole objects into the running kernel with [`handover_load::load`]: every
//! fixture (programs/*.c and programs/diff/*.c, built by programs/build.sh) and every
//! xdp-tools object that libbpf (bpftool) can load, checked against what the kernel
//! reports; global data read by programs run with `BPF_PROG_TEST_RUN`; static slots of
//! prog arrays and map-in-maps; BTF sanitised for a kernel without the newer kinds;
//! reuse of existing maps.
//!
//! Needs root; each test mounts its own bpffs and skips loudly otherwise.
#![expect(clippy::indexing_slicing, reason = "tests index buffers they built")]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/testenv/mod.rs"]
mod testenv;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use handover_load::{LoadError, LoadOptions, LoadedObject, load, probe_btf_features};
use handover_loader::{BtfFeatures, MapOrigin, Object, ProgramTypes, RefTarget, kernel_name};
use handover_sys::{Bpf, Map, MapType, OpenFlags, ProgramType, UpdateFlags};

/// Why a fixture is refused before any program is loaded, by rule rather than by name:
/// objects the parser refuses (listed with their error in `common::REJECTED`), and
/// big-endian objects, which cannot run on this little-endian kernel.
fn refused_fixture(file: &str) -> Option<(&'static str, &'static str)> {
    if let Some((_, needle)) = common::REJECTED.iter().find(|r| r.0 == file) {
        return Some(("the parser refuses it (see common::REJECTED)", needle));
    }
    if let Some((_, needle)) = common::KERNEL_REFUSED.iter().find(|r| r.0 == file) {
        return Some(("the kernel refuses it (see common::KERNEL_REFUSED)", needle));
    }
    (file.contains("bpfeb")).then_some((
        "built with -target bpfeb: a big-endian object cannot run on this little-endian kernel",
        "-endian",
    ))
}

fn fixture_objects() -> Vec<PathBuf> {
    let mut v = common::fixtures();
    let diff = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../programs/build/diff");
    let mut d: Vec<PathBuf> = std::fs::read_dir(&diff)
        .unwrap_or_else(|e| panic!("{}: {e}: run programs/build.sh", diff.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    d.sort();
    assert!(!d.is_empty(), "no objects in {}", diff.display());
    v.extend(d);
    v
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Options that load only `names`.
fn only(names: impl IntoIterator<Item = String>) -> LoadOptions {
    LoadOptions {
        programs: Some(names.into_iter().collect()),
        ..LoadOptions::default()
    }
}

/// [`only`] for the object read from `file`, whose name its global data maps carry
/// (as under libbpf).
fn only_in(file: &str, names: impl IntoIterator<Item = String>) -> LoadOptions {
    LoadOptions {
        programs: Some(names.into_iter().collect()),
        ..LoadOptions::for_file(file)
    }
}

/// Map types the kernel refuses BTF key/value types for (libbpf creates them without).
const NO_BTF_TYPES: &[MapType] = &[
    MapType::ProgArray,
    MapType::PerfEventArray,
    MapType::ArrayOfMaps,
    MapType::HashOfMaps,
    MapType::Devmap,
    MapType::DevmapHash,
    MapType::Cpumap,
    MapType::Xskmap,
    MapType::Sockmap,
    MapType::Sockhash,
    MapType::Ringbuf,
    MapType::Queue,
    MapType::Stack,
];

/// Checks every map and program of `loaded` against the kernel's info about it.
/// `features` are the BTF features the object was loaded for: global data maps are
/// typed only with `DATASEC` (the kernel takes a map without key type only with a
/// `DATASEC` value), programs carry BTF only with `FUNC`.
fn check_info(
    bpf: &Bpf,
    file: &str,
    loaded: &LoadedObject,
    features: BtfFeatures,
) -> (usize, usize) {
    for (name, m) in &loaded.maps {
        let info = bpf.map_info(m.fd()).unwrap();
        let s = &m.spec;
        let ctx = format!("{file}: map {name}");
        assert_eq!(info.map_type, Some(s.map_type), "{ctx}: type");
        assert_eq!(info.key_size, s.key_size, "{ctx}: key size");
        assert_eq!(info.value_size, s.value_size, "{ctx}: value size");
        // libbpf's adjustments, which the loader applies too.
        let max_entries = match s.map_type {
            MapType::Ringbuf if s.max_entries == 4000 => 4096,
            MapType::PerfEventArray if s.max_entries == 0 => {
                u32::try_from(bpf.possible_cpus().unwrap()).unwrap()
            }
            _ => s.max_entries,
        };
        assert_eq!(info.max_entries, max_entries, "{ctx}: max_entries");
        assert_eq!(info.flags, s.flags, "{ctx}: flags");
        assert_eq!(info.map_extra, s.map_extra, "{ctx}: map_extra");
        // Loaded with the file's object name: global data maps have libbpf's names.
        let object = handover_uapi::object_name(file);
        assert_eq!(
            info.name,
            handover_uapi::created_map_name(Some(object), name),
            "{ctx}: name"
        );
        let global_data = matches!(s.origin, MapOrigin::GlobalData { .. });
        if !features.btf {
            assert_eq!(info.btf_id, 0, "{ctx}: BTF id without BTF");
        } else if NO_BTF_TYPES.contains(&s.map_type) || global_data && !features.datasec {
            assert_eq!(info.btf_value_type_id, 0, "{ctx}: value type id");
        } else {
            if s.key_type.is_some() {
                assert_ne!(info.btf_key_type_id, 0, "{ctx}: key type id");
                assert_ne!(info.btf_id, 0, "{ctx}: BTF id");
            }
            if s.value_type.is_some() {
                assert_ne!(info.btf_value_type_id, 0, "{ctx}: value type id");
            }
        }
    }
    for (name, p) in &loaded.programs {
        let info = bpf.prog_info(&p.fd).unwrap();
        let ctx = format!("{file}: program {name}");
        assert_eq!(info.prog_type, Some(p.spec.prog_type), "{ctx}: type");
        assert_eq!(info.name, kernel_name(name), "{ctx}: name");
        assert!(
            info.xlated_prog_len > 0,
            "{ctx}: no translated instructions"
        );
        if loaded.btf.is_some() && features.func && !p.spec.func_info.is_empty() {
            assert_ne!(info.btf_id, 0, "{ctx}: program BTF");
        }
    }
    (loaded.maps.len(), loaded.programs.len())
}

#[test]
fn every_fixture_loads_and_matches_the_kernel_info() {
    if !testenv::privileged("every_fixture_loads_and_matches_the_kernel_info") {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let kernel = probed_btf(&bpf);
    let (mut maps, mut progs, mut objects) = (0, 0, 0);
    for path in fixture_objects() {
        let file = file_name(&path);
        let data = common::read(&path);
        if let Some((why, needle)) = refused_fixture(&file) {
            let err = match Object::parse(&data) {
                Err(e) => e.to_string(),
                Ok(obj) => common::chain(
                    &load(&bpf, &obj, LoadOptions::default())
                        .map(|_| ())
                        .expect_err(&format!("{file} loaded, but: {why}")),
                ),
            };
            assert!(err.contains(needle), "{file}: unexpected error {err}");
            eprintln!("{file}: refused as expected ({why}): {err}");
            continue;
        }
        let obj = Object::parse(&data).unwrap_or_else(|e| panic!("{file}: {}", common::chain(&e)));
        let mut skip: Vec<String> = Vec::new();
        let mut refused_whole = false;
        // Programs this kernel refuses are acceptable only where libbpf is refused too.
        let mut libbpf: Option<Result<(), String>> = None;
        // CO-RE programs load with their relocations applied (one the kernel cannot
        // satisfy poisons its instruction, as libbpf does), or the kernel refuses them
        // as it refuses libbpf's load.
        for spec in obj.programs().iter().filter(|p| p.needs_core()) {
            let prog = spec.name.clone();
            match load(&bpf, &obj, only(vec![prog.clone()])) {
                Ok(loaded) => {
                    let p = loaded.program(&prog).expect("loaded");
                    assert_eq!(p.core.len(), spec.core_relocations.len(), "{file}: {prog}");
                    eprintln!(
                        "{file}: {prog} loaded with {} CO-RE relocations applied, {} poisoned",
                        p.core.len(),
                        p.core.iter().filter(|o| o.target.is_none()).count()
                    );
                }
                Err(e @ (LoadError::ProgramLoad { .. } | LoadError::PoisonedCore { .. })) => {
                    let err = common::chain(&e);
                    let bpftool =
                        libbpf.get_or_insert_with(|| testenv::bpftool_loads(&path, fs.path()));
                    assert!(
                        bpftool.is_err(),
                        "{file}: {prog} refused ({err}) but bpftool loads the object"
                    );
                    eprintln!(
                        "{file}: {prog} refused by the kernel after CO-RE, as libbpf's is: {bpftool:?}"
                    );
                    skip.push(prog);
                }
                Err(e) => {
                    // Refused before any program reached the kernel (e.g. an extern
                    // this kernel does not have): libbpf must refuse the object too.
                    let err = common::chain(&e);
                    let bpftool =
                        libbpf.get_or_insert_with(|| testenv::bpftool_loads(&path, fs.path()));
                    assert!(
                        bpftool.is_err(),
                        "{file}: {prog}: {err}, but bpftool loads the object"
                    );
                    eprintln!("{file}: refused on this kernel ({err}); bpftool: {bpftool:?}");
                    refused_whole = true;
                    break;
                }
            }
        }
        loop {
            if refused_whole {
                break;
            }
            let wanted = obj
                .programs()
                .iter()
                .map(|p| p.name.clone())
                .filter(|n| !skip.contains(n));
            match load(&bpf, &obj, only(wanted.collect::<Vec<_>>())) {
                Err(e @ (LoadError::ProgramLoad { .. } | LoadError::KernelLacks { .. })) => {
                    let (LoadError::ProgramLoad { program, .. }
                    | LoadError::KernelLacks { program, .. }) = &e
                    else {
                        unreachable!()
                    };
                    // What the kernel lacks, where a probe says, then the kernel's error.
                    let why = common::chain(&e);
                    let bpftool =
                        libbpf.get_or_insert_with(|| testenv::bpftool_loads(&path, fs.path()));
                    assert!(
                        bpftool.is_err(),
                        "{file}: {program} refused ({why}) but bpftool loads the object"
                    );
                    eprintln!(
                        "{file}: {program} refused by this kernel ({why}); bpftool: {bpftool:?}"
                    );
                    skip.push(program.clone());
                }
                Err(e) => {
                    // The object as a whole is refused (e.g. its BTF): libbpf must be too.
                    let bpftool =
                        libbpf.get_or_insert_with(|| testenv::bpftool_loads(&path, fs.path()));
                    assert!(
                        bpftool.is_err(),
                        "{file}: refused ({}) but bpftool loads it",
                        common::chain(&e)
                    );
                    eprintln!(
                        "{file}: refused by this kernel ({}); bpftool: {bpftool:?}",
                        common::chain(&e)
                    );
                    refused_whole = true;
                    break;
                }
                Ok(_) => break,
            }
        }
        if refused_whole {
            continue;
        }
        let wanted: Vec<String> = obj
            .programs()
            .iter()
            .map(|p| p.name.clone())
            .filter(|n| !skip.contains(n))
            .collect();
        let loaded = load(&bpf, &obj, only_in(&file, wanted.clone()))
            .unwrap_or_else(|e| panic!("{file}: {}", common::chain(&e)));
        assert_eq!(loaded.programs.len(), wanted.len(), "{file}");
        assert_eq!(loaded.maps.len(), obj.maps().len(), "{file}");
        // programs/btf_kinds.c has a packed struct with a double at byte 4, which a
        // kernel with FLOAT refuses (see btf_of_every_kind_is_accepted_for_every_feature_set):
        // like libbpf, the loader then loads the object without BTF and says why.
        if file == "btf_kinds.o" && kernel.float {
            let refusal = loaded.btf_error.as_ref().map(ToString::to_string);
            assert!(
                refusal.as_deref().is_some_and(|e| e.contains("BTF_LOAD")),
                "{file}: the kernel's refusal of its BTF is not reported: {refusal:?}"
            );
        }
        let features = if loaded.btf_error.is_some() {
            assert!(loaded.btf.is_none(), "{file}: BTF fd after a refusal");
            BtfFeatures {
                btf: false,
                ..kernel
            }
        } else {
            kernel
        };
        let (m, p) = check_info(&bpf, &file, &loaded, features);
        pin_and_reopen(&bpf, fs.path(), &file, &loaded);
        maps += m;
        progs += p;
        objects += 1;
    }
    eprintln!("{objects} objects, {maps} maps, {progs} programs loaded and checked");
    // The programs/diff objects define maps only.
    assert!(
        objects >= 55 && maps >= 100 && progs >= 10,
        "too few loaded: {objects} objects, {maps} maps, {progs} programs"
    );
}

/// The BTF kinds this kernel takes, with those it lacks printed: the loader sanitises
/// those away, and the checks expect what the kernel was sent.
fn probed_btf(bpf: &Bpf) -> BtfFeatures {
    let probed = probe_btf_features(bpf);
    if probed != BtfFeatures::ALL {
        eprintln!("this kernel's BTF lacks some kinds (sanitised at load): {probed:?}");
    }
    probed
}

/// Pins every map and program of `loaded` in the test's bpffs and checks that the pins
/// open the same kernel objects.
fn pin_and_reopen(bpf: &Bpf, bpffs: &Path, file: &str, loaded: &LoadedObject) {
    let dir = bpffs.join(file.replace(['.', '-'], "_"));
    std::fs::create_dir(&dir).unwrap();
    for (name, m) in &loaded.maps {
        let path = dir.join(format!("map_{}", name.replace('.', "_")));
        bpf.obj_pin(m.fd(), &path).unwrap();
        let again = bpf.obj_get(&path, OpenFlags::READ_WRITE).unwrap();
        assert_eq!(
            bpf.map_info(&again).unwrap().id,
            bpf.map_info(m.fd()).unwrap().id,
            "{file}: pinned map {name}"
        );
    }
    for (name, p) in &loaded.programs {
        let path = dir.join(format!("prog_{name}"));
        bpf.obj_pin(&p.fd, &path).unwrap();
        let again = bpf.obj_get(&path, OpenFlags::READ_WRITE).unwrap();
        assert_eq!(
            bpf.prog_info(&again).unwrap().id,
            bpf.prog_info(&p.fd).unwrap().id,
            "{file}: pinned program {name}"
        );
    }
}

#[test]
fn xdp_tools_objects_load_where_libbpf_loads_them() {
    if !testenv::privileged("xdp_tools_objects_load_where_libbpf_loads_them") {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let mut ours_loaded = 0;
    let mut failures = Vec::new();
    for path in common::xdp_tools() {
        let file = file_name(&path);
        let data = common::read(&path);
        let ours = Object::parse(&data)
            .map_err(|e| common::chain(&e))
            .and_then(|obj| {
                load(&bpf, &obj, LoadOptions::for_file(&file))
                    .map_err(|e| common::chain(&e))
                    .map(|l| {
                        check_info(&bpf, &file, &l, probe_btf_features(&bpf));
                        l.programs.len()
                    })
            });
        let libbpf = testenv::bpftool_loads(&path, fs.path());
        match (&ours, &libbpf) {
            (Ok(n), _) => {
                ours_loaded += 1;
                eprintln!("{file}: loaded ({n} programs); bpftool: {libbpf:?}");
            }
            (Err(e), Err(b)) => {
                let first = e.lines().next().unwrap_or_default();
                eprintln!("{file}: not loaded: {first}; bpftool refuses it too: {b}");
            }
            (Err(e), Ok(())) => failures.push(format!("{file}: bpftool loads it, we fail: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        ours_loaded >= 10,
        "only {ours_loaded} xdp-tools objects loaded"
    );
}

fn map_of(bpf: &Bpf, loaded: &LoadedObject, name: &str) -> Map {
    let m = loaded.map(name).unwrap_or_else(|| panic!("no map {name}"));
    Map::new(bpf, m.fd().try_clone_to_owned().unwrap()).unwrap()
}

/// Loads `obj` again, reusing the maps `names` of `first`.
fn reload_reusing(
    bpf: &Bpf,
    obj: &Object<'_>,
    first: &LoadedObject,
    names: &[&str],
) -> LoadedObject {
    let reuse = names
        .iter()
        .map(|&name| {
            let fd = first.map(name).unwrap().fd().try_clone_to_owned().unwrap();
            (name.to_owned(), std::sync::Arc::new(fd))
        })
        .collect();
    let options = LoadOptions {
        reuse_maps: reuse,
        ..LoadOptions::default()
    };
    load(bpf, obj, options).unwrap_or_else(|e| panic!("{}", common::chain(&e)))
}

fn value(map: &Map, key: u32) -> Vec<u8> {
    let mut v = vec![0; map.value_len()];
    assert!(
        map.lookup(&key.to_ne_bytes(), &mut v, UpdateFlags::ANY)
            .unwrap()
    );
    v
}

#[test]
fn programs_read_global_data_written_at_load() {
    if !testenv::privileged("programs_read_global_data_written_at_load") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/global_data.c
    let data = common::read(&common::fixture("global_data"));
    let obj = Object::parse(&data).unwrap();
    let loaded = load(&bpf, &obj, LoadOptions::default()).unwrap();

    // Every global data map holds its section's bytes after load.
    for name in [".data", ".rodata", ".bss", ".data.config"] {
        let spec = obj.map(name).unwrap();
        let map = map_of(&bpf, &loaded, name);
        assert_eq!(
            Some(&value(&map, 0)),
            spec.initial_data.as_ref(),
            "map {name} contents"
        );
    }
    // .rodata is frozen: user space can no longer write it.
    let rodata = map_of(&bpf, &loaded, ".rodata");
    let err = rodata
        .update(&0u32.to_ne_bytes(), &value(&rodata, 0), UpdateFlags::ANY)
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EPERM), "{err}");

    // tc_second: a packet shorter than tunables.burst (64, .data.config) passes (0); a
    // longer one is shot (2) because len + tunables.port (8080) exceeds tunables.rate
    // (1000). With the section left zeroed, the short packet would be shot as well.
    let second = &loaded.program("tc_second").unwrap().fd;
    let run = |prog, len: usize| bpf.prog_test_run(prog, &vec![0u8; len], None, 1).unwrap();
    assert_eq!(run(second.as_fd(), 20).retval, 0, "short packet");
    assert_eq!(run(second.as_fd(), 100).retval, 2, "long packet");

    // tc_account: packets_seen (.data, initially 7) goes up, zero_counter (.bss) gets
    // greeting[0] ('h', from .rodata), bytes_seen (.bss) the packet length.
    let account = &loaded.program("tc_account").unwrap().fd;
    assert_eq!(run(account.as_fd(), 60).retval, 0);
    let d = value(&map_of(&bpf, &loaded, ".data"), 0);
    assert_eq!(u64::from_ne_bytes(d[..8].try_into().unwrap()), 8, ".data");
    let bss = value(&map_of(&bpf, &loaded, ".bss"), 0);
    let zero_counter =
        usize::try_from(obj.variable(".bss", "zero_counter").unwrap().offset).unwrap();
    let bytes_seen = usize::try_from(obj.variable(".bss", "bytes_seen").unwrap().offset).unwrap();
    assert_eq!(
        u32::from_ne_bytes(bss[zero_counter..zero_counter + 4].try_into().unwrap()),
        u32::from(b'h'),
        "greeting[0] from .rodata"
    );
    assert_eq!(
        u64::from_ne_bytes(bss[bytes_seen..bytes_seen + 8].try_into().unwrap()),
        60,
        "bytes_seen"
    );
}

#[test]
fn static_slots_of_prog_arrays_and_map_in_maps_are_filled() {
    if !testenv::privileged("static_slots_of_prog_arrays_and_map_in_maps_are_filled") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/map_in_map.c: jump_table[2] = tail_target, outer_static[1] = inner_b.
    let data = common::read(&common::fixture("map_in_map"));
    let obj = Object::parse(&data).unwrap();
    let loaded = load(&bpf, &obj, LoadOptions::default()).unwrap();

    let jump = map_of(&bpf, &loaded, "jump_table");
    let target = bpf
        .prog_info(&loaded.program("tail_target").unwrap().fd)
        .unwrap();
    assert_eq!(value(&jump, 2), target.id.to_ne_bytes(), "jump_table[2]");
    for empty in [0, 1, 3] {
        let mut v = [0u8; 4];
        assert!(
            !jump
                .lookup(&u32::to_ne_bytes(empty), &mut v, UpdateFlags::ANY)
                .unwrap(),
            "jump_table[{empty}] is set"
        );
    }
    let outer = map_of(&bpf, &loaded, "outer_static");
    let inner_b = bpf.map_info(loaded.map("inner_b").unwrap().fd()).unwrap();
    assert_eq!(
        value(&outer, 1),
        inner_b.id.to_ne_bytes(),
        "outer_static[1]"
    );
    // The inner map templates are not part of the result.
    assert!(loaded.maps.keys().all(|k| !k.ends_with(".inner")));

    // A slot whose program is left out of the load is an error naming both.
    let err = load(&bpf, &obj, only(["xdp_dispatch".to_owned()])).unwrap_err();
    assert!(
        matches!(&err, LoadError::SlotTarget { map, index: 2, target }
            if map == "jump_table" && target == "tail_target"),
        "{err}"
    );
}

#[test]
fn btf_sanitised_for_an_old_kernel_is_accepted() {
    if !testenv::privileged("btf_sanitised_for_an_old_kernel_is_accepted") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    probed_btf(&bpf);
    // Every fixture with BTF, with every optional kind rewritten (no FUNC, DATASEC,
    // FLOAT, DECL_TAG, TYPE_TAG, ENUM64), loads with its maps still typed.
    let mut checked = 0;
    for path in fixture_objects() {
        let file = file_name(&path);
        if refused_fixture(&file).is_some() {
            continue;
        }
        let data = common::read(&path);
        let obj = Object::parse(&data).unwrap();
        if obj.btf().is_none() {
            continue;
        }
        // Programs that load with full BTF (the test above covers the others).
        // Without BTF FUNC there is no func_info, and the kernel accepts a callback
        // passed by address (bpf_loop, for_each_map_elem) only with func_info: such
        // programs cannot exist on a kernel that lacks FUNC.
        let mut loadable: Vec<String> = obj
            .programs()
            .iter()
            .filter(|p| {
                !p.references
                    .iter()
                    .any(|r| matches!(r.target, RefTarget::FuncAddr { .. }))
            })
            .map(|p| p.name.clone())
            .collect();
        let whole = loop {
            match load(&bpf, &obj, only(loadable.clone())) {
                Err(LoadError::ProgramLoad { program, .. }) => loadable.retain(|p| *p != program),
                other => break other,
            }
        };
        if whole.is_err() {
            // Refused as a whole with full BTF too (checked against libbpf above).
            continue;
        }
        let options = LoadOptions {
            btf_features: Some(BtfFeatures::BASIC),
            ..only_in(&file, loadable)
        };
        let loaded = load(&bpf, &obj, options)
            .unwrap_or_else(|e| panic!("{file} with basic BTF: {}", common::chain(&e)));
        assert!(loaded.btf.is_some(), "{file}");
        check_info(&bpf, &file, &loaded, BtfFeatures::BASIC);
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} objects");
}

/// A prog array given for reuse is live: the load leaves its slots alone, returns them
/// as unwritten for the caller to switch, and hands out typed map handles.
#[test]
fn a_reused_prog_array_is_never_written() {
    if !testenv::privileged("a_reused_prog_array_is_never_written") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/map_in_map.c: jump_table[2] = tail_target, outer_static[1] = inner_b.
    let data = common::read(&common::fixture("map_in_map"));
    let obj = Object::parse(&data).unwrap();
    let first = load(&bpf, &obj, LoadOptions::default()).unwrap();
    let jump = &first.map("jump_table").unwrap().map;
    assert_eq!(jump.info().map_type, Some(MapType::ProgArray));
    assert_eq!((jump.key_size(), jump.value_len()), (4, 4));
    let old_target = bpf
        .prog_info(&first.program("tail_target").unwrap().fd)
        .unwrap()
        .id;
    assert_eq!(value(jump, 2), old_target.to_ne_bytes());

    let second = reload_reusing(&bpf, &obj, &first, &["jump_table", "outer_static"]);
    // The live array still points at the first load's program, not the second's.
    let new_target = bpf
        .prog_info(&second.program("tail_target").unwrap().fd)
        .unwrap()
        .id;
    assert_ne!(new_target, old_target);
    assert_eq!(
        value(jump, 2),
        old_target.to_ne_bytes(),
        "jump_table[2] was rewritten"
    );
    let slots: Vec<(&str, u32, &handover_loader::SlotTarget)> = second
        .unwritten_slots
        .iter()
        .map(|s| (s.map.as_str(), s.index, &s.target))
        .collect();
    assert_eq!(
        slots,
        [
            (
                "jump_table",
                2,
                &handover_loader::SlotTarget::Program("tail_target".into())
            ),
            (
                "outer_static",
                1,
                &handover_loader::SlotTarget::Map("inner_b".into())
            ),
        ]
    );
    // A fresh load writes its own arrays and leaves nothing to the caller.
    assert!(first.unwritten_slots.is_empty());
}

#[test]
fn reused_maps_are_shared_and_checked() {
    if !testenv::privileged("reused_maps_are_shared_and_checked") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/global_data.c
    let data = common::read(&common::fixture("global_data"));
    let obj = Object::parse(&data).unwrap();
    let first = load(&bpf, &obj, LoadOptions::default()).unwrap();
    let first_data = first.map(".data").unwrap();
    // State the second load must keep: the reused map is neither reset nor frozen.
    let map = map_of(&bpf, &first, ".data");
    let mut v = value(&map, 0);
    v[..8].copy_from_slice(&1000u64.to_ne_bytes());
    map.update(&0u32.to_ne_bytes(), &v, UpdateFlags::ANY)
        .unwrap();

    let mut reuse = HashMap::new();
    reuse.insert(
        ".data".to_owned(),
        std::sync::Arc::new(first_data.fd().try_clone_to_owned().unwrap()),
    );
    let second = load(
        &bpf,
        &obj,
        LoadOptions {
            reuse_maps: reuse,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let id = |l: &LoadedObject, n: &str| bpf.map_info(l.map(n).unwrap().fd()).unwrap().id;
    assert!(second.map(".data").unwrap().reused);
    assert_eq!(id(&first, ".data"), id(&second, ".data"));
    assert_ne!(id(&first, ".bss"), id(&second, ".bss"));
    assert_eq!(value(&map, 0), v, "reused map was rewritten");
    // The new programs use the shared map: a run counts into it.
    let prog = &second.program("tc_account").unwrap().fd;
    bpf.prog_test_run(prog, &[0u8; 60], None, 1).unwrap();
    let after = value(&map, 0);
    assert_eq!(u64::from_ne_bytes(after[..8].try_into().unwrap()), 1001);
    let prog_maps = bpf.prog_info(prog).unwrap().map_ids;
    assert!(prog_maps.contains(&id(&first, ".data")));

    // A map of another geometry is refused, naming the difference.
    let mut reuse = HashMap::new();
    reuse.insert(
        ".data".to_owned(),
        std::sync::Arc::new(
            first
                .map(".bss")
                .unwrap()
                .fd()
                .try_clone_to_owned()
                .unwrap(),
        ),
    );
    let err = load(
        &bpf,
        &obj,
        LoadOptions {
            reuse_maps: reuse,
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::ReusedMap { ref map, .. } if map == ".data"));
    assert!(err.to_string().contains("value size"), "{err}");
}

#[test]
fn verifier_log_is_in_the_error() {
    if !testenv::privileged("verifier_log_is_in_the_error") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/global_data.c's tc_account loaded as a cgroup/sysctl program: the verifier
    // refuses its reads of __sk_buff fields from a sysctl context, and the error must
    // carry its log.
    let data = common::read(&common::fixture("global_data"));
    let obj = Object::parse_with(
        &data,
        &handover_loader::ObjectOptions::new().program_type(
            "tc",
            handover_sys::ProgramType::CgroupSysctl,
            None,
        ),
    )
    .unwrap();
    let err = load(&bpf, &obj, LoadOptions::default()).unwrap_err();
    let LoadError::ProgramLoad {
        program, source, ..
    } = &err
    else {
        panic!("{}", common::chain(&err));
    };
    assert_eq!(program, "tc_account");
    let log = source.log().expect("verifier log");
    assert!(!log.is_empty(), "empty verifier log");
    assert!(
        common::chain(&err).contains("verifier log"),
        "{}",
        common::chain(&err)
    );
}

/// Section sizes and variable offsets read straight from an ELF file, for an object
/// that [`Object::parse`] refuses.
struct ElfLayout {
    sizes: HashMap<String, u64>,
    vars: HashMap<(String, String), u64>,
}

impl handover_loader::SectionLayout for ElfLayout {
    fn section_size(&self, section: &str) -> Option<u64> {
        self.sizes.get(section).copied()
    }

    fn variable(&self, section: &str, name: &str) -> Option<(u64, bool)> {
        self.vars
            .get(&(section.to_owned(), name.to_owned()))
            .map(|&o| (o, false))
    }
}

#[test]
fn btf_of_every_kind_is_accepted_for_every_feature_set() {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    if !testenv::privileged("btf_of_every_kind_is_accepted_for_every_feature_set") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/btf_kinds.c: every kind clang emits, a __ksym extern, hidden and static
    // variables.
    let data = common::read(&common::fixture("btf_kinds"));
    let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data).unwrap();
    let mut layout = ElfLayout {
        sizes: HashMap::new(),
        vars: HashMap::new(),
    };
    for s in elf.sections() {
        layout.sizes.insert(s.name().unwrap().to_owned(), s.size());
    }
    for sym in elf.symbols() {
        if let Some(index) = sym.section_index() {
            let sec = elf
                .section_by_index(index)
                .unwrap()
                .name()
                .unwrap()
                .to_owned();
            layout
                .vars
                .insert((sec, sym.name().unwrap().to_owned()), sym.address());
        }
    }
    let raw = elf.section_by_name(".BTF").unwrap().data().unwrap();
    let btf = handover_btf::Btf::parse(raw).unwrap();
    // The unprepared blob is refused (DATASEC sizes 0, extern VARs).
    let err = bpf
        .btf_load(raw, handover_sys::LogLevel::OnFailure)
        .unwrap_err();
    eprintln!("raw .BTF refused as expected: {err}");

    // With FLOAT kept, a kernel that has FLOAT refuses `struct point` (packed: a
    // double at byte 4), whose float member is not aligned to its size; libbpf sends
    // it the same way.
    let kernel = probed_btf(&bpf);
    if kernel.float {
        let blob = handover_loader::prepare_btf_with(&btf, &layout, &kernel).unwrap();
        let err = bpf
            .btf_load(&blob, handover_sys::LogLevel::OnFailure)
            .unwrap_err();
        assert!(
            err.log()
                .unwrap_or_default()
                .contains("not properly aligned"),
            "{err}"
        );
    }
    // Every other feature set this kernel can take, starting from "all it has but
    // FLOAT", is accepted.
    let all = BtfFeatures {
        float: false,
        ..kernel
    };
    let mut sets = vec![("float", all), ("basic", BtfFeatures::BASIC)];
    type Flag = fn(&mut BtfFeatures) -> &mut bool;
    let flags: [(&str, Flag); 6] = [
        ("func", |f| &mut f.func),
        ("func_global", |f| &mut f.func_global),
        ("datasec", |f| &mut f.datasec),
        ("decl_tag", |f| &mut f.decl_tag),
        ("type_tag", |f| &mut f.type_tag),
        ("enum64", |f| &mut f.enum64),
    ];
    for (name, flag) in flags {
        let mut f = all;
        *flag(&mut f) = false;
        sets.push((name, f));
    }
    for (name, features) in sets {
        let blob = handover_loader::prepare_btf_with(&btf, &layout, &features).unwrap();
        let fd = bpf
            .btf_load(&blob, handover_sys::LogLevel::OnFailure)
            .unwrap_or_else(|e| panic!("BTF prepared without float and {name}: {e}"));
        let info = bpf.btf_info(&fd).unwrap();
        assert_eq!(info.size as usize, blob.len(), "{name}");
    }
}

#[test]
fn maps_sized_at_creation_are_reused_as_created() {
    if !testenv::privileged("maps_sized_at_creation_are_reused_as_created") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/diff/kernel_adjusted.old.c: a ring buffer of 4000 bytes (created as
    // one page) and a perf event array without max_entries (one slot per CPU).
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../programs/build/diff/kernel_adjusted.old.o");
    let data = common::read(&path);
    let obj = Object::parse(&data).unwrap();
    let first = load(&bpf, &obj, LoadOptions::default()).unwrap();
    let second = reload_reusing(&bpf, &obj, &first, &["events", "perf"]);
    for name in ["events", "perf"] {
        let id = |l: &LoadedObject| bpf.map_info(l.map(name).unwrap().fd()).unwrap().id;
        assert!(second.map(name).unwrap().reused, "{name}");
        assert_eq!(id(&first), id(&second), "{name}");
    }
}

#[test]
fn a_program_too_large_to_verify_is_explained_by_the_verifier_log() {
    if !testenv::privileged("a_program_too_large_to_verify_is_explained_by_the_verifier_log") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/too_complex.c: a loop the verifier walks past its million instructions.
    let data = common::read(&common::fixture("too_complex"));
    let obj = Object::parse(&data).unwrap();
    let err = load(&bpf, &obj, LoadOptions::default()).unwrap_err();
    let LoadError::ProgramLoad {
        program, source, ..
    } = &err
    else {
        panic!("{}", common::chain(&err));
    };
    assert_eq!(program, "xdp_walk_too_far");
    assert_eq!(source.errno(), Some(libc::E2BIG), "{source}");
    let log = source
        .log()
        .expect("a verifier log, not an oversized-request refusal");
    assert!(log.contains("BPF program is too large"), "{log}");
    let text = common::chain(&err);
    assert!(text.contains("processed 1000001 insns"), "{text}");
    assert_eq!(text.matches("Argument list too long").count(), 1, "{text}");
}

#[test]
fn programs_in_sections_libbpf_does_not_name_load_with_the_types_given() {
    if !testenv::privileged("programs_in_sections_libbpf_does_not_name_load_with_the_types_given") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/custom_sections.c: tail calls in cgroup/connect4/ROUTE_TAIL_CALL_n, and
    // programs in xdp_custom and tc_custom.
    let data = common::read(&common::fixture("custom_sections"));
    let obj = Object::parse(&data).unwrap();
    let untyped: Vec<&str> = obj
        .program_sections()
        .iter()
        .filter(|s| s.prog_type.is_none())
        .map(|s| s.section)
        .collect();
    assert_eq!(untyped.len(), 4, "{untyped:?}");
    let types = ProgramTypes::new()
        .rule("cgroup/connect4/*=cgroup_sock_addr:cgroup_inet4_connect")
        .unwrap()
        .rule("xdp_custom=xdp")
        .unwrap()
        .rule("tc_custom=sched_cls")
        .unwrap();
    let loaded = load(
        &bpf,
        &obj,
        LoadOptions {
            program_types: types,
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    let kernel_type = |name: &str| {
        bpf.prog_info(&loaded.program(name).unwrap().fd)
            .unwrap()
            .prog_type
    };
    for name in ["connect_entry", "connect_route", "connect_finish"] {
        assert_eq!(
            kernel_type(name),
            Some(ProgramType::CgroupSockAddr),
            "{name}"
        );
    }
    assert_eq!(kernel_type("xdp_custom_prog"), Some(ProgramType::Xdp));
    assert_eq!(kernel_type("tc_custom_prog"), Some(ProgramType::SchedCls));
    assert!(loaded.failed.is_empty());

    // One type for every program, as bpftool's `type`: the cgroup programs are then
    // refused by the verifier (an XDP context), each with its own result, and the rest
    // load.
    let loaded = load(
        &bpf,
        &obj,
        LoadOptions {
            program_types: ProgramTypes::new().every(ProgramType::Xdp, None),
            keep_going: true,
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    assert_eq!(
        loaded.programs.keys().collect::<Vec<_>>(),
        ["tc_custom_prog", "xdp_custom_prog"]
    );
    assert_eq!(
        loaded.failed.keys().collect::<Vec<_>>(),
        ["connect_entry", "connect_finish", "connect_route"]
    );
    for e in loaded.failed.values() {
        assert!(
            matches!(e, LoadError::ProgramLoad { source, .. } if source.log().is_some()),
            "{}",
            common::chain(e)
        );
    }
}

#[test]
fn a_map_in_map_without_an_inner_definition_loads_with_the_template_given() {
    if !testenv::privileged(
        "a_map_in_map_without_an_inner_definition_loads_with_the_template_given",
    ) {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/map_in_map_sized.c: backends_by_service, a hash of maps with sizes only;
    // its program looks up service 7, then slot 0 of the inner array, and returns
    // XDP_TX when that holds a non-zero backend.
    let data = common::read(&common::fixture("map_in_map_sized"));
    let obj = Object::parse(&data).unwrap();
    let err = load(&bpf, &obj, LoadOptions::default()).unwrap_err();
    assert!(
        matches!(&err, LoadError::InnerMapTemplate { map } if map == "backends_by_service"),
        "{}",
        common::chain(&err)
    );
    let template = handover_loader::MapSpec::new("backends", MapType::Array, 4, 8, 4);
    let loaded = load(
        &bpf,
        &obj,
        LoadOptions {
            inner_maps: HashMap::from([("backends_by_service".to_owned(), template.clone())]),
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    // An inner map of the template's shape goes in; one of another shape does not.
    let mut create = handover_sys::MapCreate::new(MapType::Array, 4, 8, 4);
    create.name = "backends_7";
    let inner = Map::create(&bpf, &create).unwrap();
    inner
        .update(&0u32.to_ne_bytes(), &42u64.to_ne_bytes(), UpdateFlags::ANY)
        .unwrap();
    let outer = map_of(&bpf, &loaded, "backends_by_service");
    let fd = u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&inner.fd())).unwrap();
    outer
        .update(&7u32.to_ne_bytes(), &fd.to_ne_bytes(), UpdateFlags::ANY)
        .unwrap();
    let prog = &loaded.program("xdp_pick_backend").unwrap().fd;
    let run = bpf.prog_test_run(prog, &[0u8; 64], None, 1).unwrap();
    assert_eq!(run.retval, 3, "XDP_TX: the program found backend 42");
    let other = Map::create(&bpf, &handover_sys::MapCreate::new(MapType::Hash, 4, 8, 4)).unwrap();
    let fd = u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&other.fd())).unwrap();
    assert!(
        outer
            .update(&8u32.to_ne_bytes(), &fd.to_ne_bytes(), UpdateFlags::ANY)
            .is_err()
    );
}

/// The one value of the single-entry array pinned at `path`.
fn pinned_value(bpf: &Bpf, path: &Path) -> Vec<u8> {
    let fd = bpf.obj_get(path, OpenFlags::READ_ONLY).unwrap();
    value(&Map::new(bpf, fd).unwrap(), 0)
}

#[test]
fn kconfig_externs_get_the_running_kernels_values_as_libbpf_gives_them() {
    if !testenv::privileged("kconfig_externs_get_the_running_kernels_values_as_libbpf_gives_them") {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/kconfig_extern.c: LINUX_KERNEL_VERSION, CONFIG_HZ (int), CONFIG_BPF_SYSCALL
    // (bool), CONFIG_NF_TABLES (tristate), CONFIG_LOCALVERSION (char[16]) and the weak
    // CONFIG_HANDOVER_NEVER_SET; the program copies each into .bss `seen`.
    let path = common::fixture("kconfig_extern");
    let data = common::read(&path);
    let obj = Object::parse(&data).unwrap();
    let loaded = load(&bpf, &obj, LoadOptions::default())
        .unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    let ours = value(&map_of(&bpf, &loaded, ".kconfig"), 0);

    // libbpf's .kconfig map for the same object, on the same kernel.
    let pins = fs.path().join("libbpf_maps");
    let progs = fs.path().join("libbpf_progs");
    testenv::bpftool_loadall(fs.path(), &path, &progs, Some(&pins));
    let kconfig_pin = std::fs::read_dir(&pins)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_kconfig"))
        .expect("libbpf's .kconfig map");
    assert_eq!(
        ours,
        pinned_value(&bpf, &kconfig_pin),
        "same bytes as libbpf's"
    );

    // What the program read.
    let prog = &loaded.program("kconfig_socket").unwrap().fd;
    bpf.prog_test_run(prog, &[0u8; 64], None, 1).unwrap();
    let seen = value(&map_of(&bpf, &loaded, ".bss"), 0);
    let word = |i: usize| u64::from_ne_bytes(seen[i * 8..i * 8 + 8].try_into().unwrap());
    let release = handover_sys::kernel_release().unwrap();
    let version = handover_loader::kernel_version_code(&release).unwrap();
    assert_eq!(
        word(0),
        u64::from(version),
        "LINUX_KERNEL_VERSION of {release}"
    );
    let (config, from) = handover_sys::kernel_config()
        .unwrap()
        .expect("a kernel config");
    let setting = |name: &str| {
        config
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    let hz: u64 = setting("CONFIG_HZ").map_or(0, |v| v.parse().unwrap());
    assert_eq!(word(1), hz, "CONFIG_HZ from {from}");
    assert_eq!(word(2), 1, "CONFIG_BPF_SYSCALL=y");
    let tristate = match setting("CONFIG_NF_TABLES").as_deref() {
        Some("y") => 1,
        Some("m") => 2,
        _ => 0,
    };
    assert_eq!(word(3), tristate, "CONFIG_NF_TABLES");
    let first = setting("CONFIG_LOCALVERSION")
        .and_then(|v| v.trim_matches('"').bytes().next())
        .unwrap_or(0);
    assert_eq!(word(4), u64::from(first), "CONFIG_LOCALVERSION");
    assert_eq!(word(5), 0, "a weak extern no kernel sets reads 0");

    // A configuration given instead of the kernel's, and one lacking a strong extern.
    let given = "CONFIG_HZ=1000\nCONFIG_BPF_SYSCALL=y\nCONFIG_NF_TABLES=m\n";
    let loaded = load(
        &bpf,
        &obj,
        LoadOptions {
            kconfig: Some(given.to_owned()),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    bpf.prog_test_run(
        &loaded.program("kconfig_socket").unwrap().fd,
        &[0u8; 64],
        None,
        1,
    )
    .unwrap();
    let seen = value(&map_of(&bpf, &loaded, ".bss"), 0);
    let word = |i: usize| u64::from_ne_bytes(seen[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!((word(1), word(2), word(3), word(4)), (1000, 1, 2, 0));
    let err = load(
        &bpf,
        &obj,
        LoadOptions {
            kconfig: Some("CONFIG_HZ=100\n".to_owned()),
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    let text = common::chain(&err);
    assert!(
        text.contains("CONFIG_BPF_SYSCALL") && text.contains("does not set it"),
        "{text}"
    );
}

#[test]
fn a_poisoned_core_instruction_the_verifier_reaches_names_its_relocation() {
    if !testenv::privileged("a_poisoned_core_instruction_the_verifier_reaches_names_its_relocation")
    {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/core_missing.c: an unguarded CO-RE read of
    // task_struct.handover_no_such_field.
    let data = common::read(&common::fixture("core_missing"));
    let obj = Object::parse(&data).unwrap();
    let err = load(&bpf, &obj, LoadOptions::default()).unwrap_err();
    let LoadError::PoisonedCore {
        program,
        poisoned,
        source,
    } = &err
    else {
        panic!("{}", common::chain(&err));
    };
    assert_eq!(program, "read_missing_field");
    let relocation = &poisoned.relocation;
    assert!(
        relocation.contains("struct task_struct.handover_no_such_field"),
        "{relocation}"
    );
    assert!(
        source
            .log()
            .is_some_and(|l| l.contains("invalid func unknown#195896080"))
    );
    let text = common::chain(&err);
    assert!(text.contains("field_byte_offset of struct task_struct.handover_no_such_field: the field does not exist in the target"), "{text}");
}

#[test]
fn tracing_and_freplace_programs_load_with_the_attach_targets_given() {
    if !testenv::privileged("tracing_and_freplace_programs_load_with_the_attach_targets_given") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/attach_targets.c: xdp_with_decision calls the global function decide;
    // replace_decide (freplace), trace_decide and trace_kernel (fentry) name no target.
    let data = common::read(&common::fixture("attach_targets"));
    let obj = Object::parse(&data).unwrap();
    let target = load(&bpf, &obj, only(["xdp_with_decision".to_owned()]))
        .unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    let xdp = std::sync::Arc::new(
        target
            .program("xdp_with_decision")
            .unwrap()
            .fd
            .try_clone()
            .unwrap(),
    );

    // Without targets each is refused, saying what to give.
    let mut options = only(["replace_decide".to_owned(), "trace_kernel".to_owned()]);
    options.keep_going = true;
    let refused = load(&bpf, &obj, options).unwrap();
    for name in ["replace_decide", "trace_kernel"] {
        let why = common::chain(&refused.failed[name]);
        assert!(why.contains("attach target"), "{name}: {why}");
    }

    let on_decide = handover_load::AttachTo::Program {
        prog: xdp.clone(),
        function: "decide".to_owned(),
    };
    let mut options = only(
        ["replace_decide", "trace_decide", "trace_kernel"]
            .map(str::to_owned)
            .to_vec(),
    );
    options.attach_to = HashMap::from([
        ("replace_decide".to_owned(), on_decide.clone()),
        ("trace_decide".to_owned(), on_decide),
        (
            "trace_kernel".to_owned(),
            handover_load::AttachTo::Kernel("do_nanosleep".to_owned()),
        ),
    ]);
    options.keep_going = true;
    let loaded = load(&bpf, &obj, options).unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    if let Some(e) = loaded.failed.values().next() {
        // Some kernels (no BPF trampoline) refuse every fentry and freplace program
        // with EPERM, libbpf's too: then only the checks before the kernel can run.
        let eperm = matches!(e, LoadError::ProgramLoad { source, .. }
            if source.errno() == Some(libc::EPERM));
        let libbpf = testenv::bpftool_loads(&common::fixture("core_reloc"), _fs.path());
        assert!(
            eperm && libbpf.is_err(),
            "{} (libbpf on an fentry program: {libbpf:?})",
            common::chain(e)
        );
        eprintln!(
            "SKIPPED: loading with attach targets: this kernel refuses fentry and freplace \
             programs to every loader ({}; libbpf: {libbpf:?})",
            common::chain(e)
        );
    } else {
        let info = |name: &str| bpf.prog_info(&loaded.program(name).unwrap().fd).unwrap();
        assert_eq!(info("replace_decide").prog_type, Some(ProgramType::Ext));
        assert_eq!(info("trace_decide").prog_type, Some(ProgramType::Tracing));
        assert_eq!(info("trace_kernel").prog_type, Some(ProgramType::Tracing));
        if let Some(replaced) = info("replace_decide").attach_btf_id {
            assert_ne!(replaced, 0);
            assert_eq!(
                Some(replaced),
                info("trace_decide").attach_btf_id,
                "both name decide in the XDP program's BTF"
            );
            let kernel = handover_sys::vmlinux_btf().unwrap();
            let kernel = handover_btf::Btf::parse(&kernel).unwrap();
            let nanosleep = kernel
                .id_by_name("do_nanosleep", handover_btf::Kind::Func)
                .unwrap();
            assert_eq!(info("trace_kernel").attach_btf_id, Some(nanosleep.0));
        } else {
            // The kernel took each target (it verifies a tracing program against it),
            // but its bpf_prog_info ends before attach_btf_id.
            eprintln!(
                "attach targets taken; this kernel's program info does not report \
                 attach_btf_id, so which target each named is not checked"
            );
        }
    }

    // A function the target program lacks is named in the error.
    let mut options = only(["replace_decide".to_owned()]);
    options.attach_to = HashMap::from([(
        "replace_decide".to_owned(),
        handover_load::AttachTo::Program {
            prog: xdp,
            function: "no_such_function".to_owned(),
        },
    )]);
    let err = common::chain(&load(&bpf, &obj, options).unwrap_err());
    assert!(err.contains("no function no_such_function"), "{err}");
}

#[test]
fn maps_pinned_by_name_are_pinned_and_reused_when_compatible() {
    if !testenv::privileged("maps_pinned_by_name_are_pinned_and_reused_when_compatible") {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    // programs/maps_btf.c: flows, a hash map declared __uint(pinning, LIBBPF_PIN_BY_NAME).
    let data = common::read(&common::fixture("maps_btf"));
    let obj = Object::parse(&data).unwrap();
    let state = testenv::TempDir::new("pin-by-name");
    // A pin root of handover-bpffs, whose manifest (outside bpffs) records the pins.
    let pin_root = |name: &str| {
        let root = fs.path().join(name);
        std::fs::create_dir(&root).unwrap();
        let manifest = state.path().join(format!("{name}.json"));
        (
            root.clone(),
            std::sync::Arc::new(handover_bpffs::PinRoot::open(&bpf, &root, &manifest).unwrap()),
        )
    };
    let pinned = |dir: &std::sync::Arc<handover_bpffs::PinRoot>| LoadOptions {
        pin_root: Some(dir.clone()),
        ..LoadOptions::default()
    };
    let (root, dir) = pin_root("pins");
    let first = load(&bpf, &obj, pinned(&dir)).unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    let flows = first.map("flows").unwrap();
    assert!(!flows.reused);
    let id = bpf.map_info(flows.fd()).unwrap().id;
    let pin = bpf
        .obj_get(&root.join("flows"), OpenFlags::READ_ONLY)
        .unwrap();
    assert_eq!(bpf.map_info(&pin).unwrap().id, id, "pinned under its name");
    // Only the maps declared so are pinned.
    let pins: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let by_name: Vec<&str> = obj
        .maps()
        .iter()
        .filter(|m| m.pinning == handover_loader::Pinning::ByName)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(pins, by_name);
    let recorded: Vec<String> = dir.entries().iter().map(|e| e.path.clone()).collect();
    assert_eq!(recorded, by_name, "the pins are in the root's manifest");

    // A second load shares the pinned map, state and all.
    let key = vec![7u8; flows.spec.key_size as usize];
    let val = vec![9u8; flows.spec.value_size as usize];
    flows.map.update(&key, &val, UpdateFlags::ANY).unwrap();
    let second = load(&bpf, &obj, pinned(&dir)).unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    let shared = second.map("flows").unwrap();
    assert!(shared.reused);
    assert_eq!(bpf.map_info(shared.fd()).unwrap().id, id);
    let mut got = vec![0u8; val.len()];
    assert!(shared.map.lookup(&key, &mut got, UpdateFlags::ANY).unwrap());
    assert_eq!(got, val);

    // A map of another shape pinned under that name is refused, with the differences.
    let (other_root, other) = pin_root("other");
    let mut create = handover_sys::MapCreate::new(MapType::Array, 4, 8, 16);
    create.name = "flows";
    let wrong = Map::create(&bpf, &create).unwrap();
    bpf.obj_pin(wrong.fd(), &other_root.join("flows")).unwrap();
    let err = load(&bpf, &obj, pinned(&other)).unwrap_err();
    let text = common::chain(&err);
    assert!(
        matches!(&err, LoadError::ReusedMap { map, .. } if map == "flows"),
        "{text}"
    );
    assert!(
        text.contains("pinned under its name") && text.contains("type array (object: hash)"),
        "{text}"
    );

    // A map of the same shape whose BTF gives the value another layout is refused too,
    // naming the layout and the fields that differ; an equal key layout is no
    // difference (its struct is spelt without the object's typedefs).
    let mut b = testenv::BtfBuilder::new();
    let (u8_, u16_, u32_, u64_) = (
        b.int("__u8", 1),
        b.int("__u16", 2),
        b.int("__u32", 4),
        b.int("__u64", 8),
    );
    let pad = b.array(u8_, u32_, 3);
    let key = b.structure(
        "flow_key",
        16,
        &[
            ("saddr", u32_, 0),
            ("daddr", u32_, 32),
            ("sport", u16_, 64),
            ("dport", u16_, 80),
            ("proto", u8_, 96),
            ("pad", pad, 104),
        ],
    );
    let value = b.structure(
        "flow_stats",
        24,
        &[
            ("packets", u64_, 0),
            ("bytes", u64_, 64),
            ("last_seen", u32_, 128),
            ("mode", u32_, 160),
        ],
    );
    let btf = bpf
        .btf_load(&b.build(), handover_sys::LogLevel::OnFailure)
        .unwrap();
    let flows_spec = obj.maps().iter().find(|m| m.name == "flows").unwrap();
    let mut create = handover_sys::MapCreate::new(
        MapType::Hash,
        flows_spec.key_size,
        flows_spec.value_size,
        flows_spec.max_entries,
    );
    create.name = "flows";
    create.flags = flows_spec.flags;
    create.btf = Some(handover_sys::MapBtf {
        fd: btf.as_fd(),
        key_type_id: key,
        value_type_id: value,
        vmlinux_value_type_id: 0,
    });
    let (layout_root, layout_dir) = pin_root("layout");
    let renamed = Map::create(&bpf, &create).unwrap();
    bpf.obj_pin(renamed.fd(), &layout_root.join("flows"))
        .unwrap();
    let err = load(&bpf, &obj, pinned(&layout_dir)).unwrap_err();
    let text = common::chain(&err);
    assert!(
        matches!(&err, LoadError::ReusedMap { map, .. } if map == "flows"),
        "{text}"
    );
    assert!(
        text.contains("value layout struct flow_stats (object: struct flow_stats)")
            && text.contains("flags zero-fill")
            && text.contains("mode drop")
            && !text.contains("key layout"),
        "{text}"
    );
}
