//! Loading whole objects into the running kernel with [`handover_loader::load`]: every
//! fixture (programs/*.c and programs/diff/*.c, built by programs/build.sh) and every
//! xdp-tools object that libbpf (bpftool) can load, checked against what the kernel
//! reports; global data read by programs run with `BPF_PROG_TEST_RUN`; static slots of
//! prog arrays and map-in-maps; BTF sanitised for a kernel without the newer kinds;
//! reuse of existing maps.
//!
//! Needs root; each test mounts its own bpffs and skips loudly otherwise.
#![expect(clippy::indexing_slicing, reason = "tests index buffers they built")]

mod common;
#[path = "testenv/mod.rs"]
mod testenv;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use handover_loader::sys::{Bpf, Map, MapType, OpenFlags, UpdateFlags};
use handover_loader::{
    BtfFeatures, LoadError, LoadOptions, LoadedObject, MapOrigin, Object, RefTarget, kernel_name,
    load,
};

/// Why a fixture is refused before any program is loaded, by rule rather than by name:
/// objects the parser refuses (listed with their error in `common::REJECTED`), and
/// big-endian objects, which cannot run on this little-endian kernel.
fn refused_fixture(file: &str) -> Option<(&'static str, &'static str)> {
    if let Some((_, needle)) = common::REJECTED.iter().find(|r| r.0 == file) {
        return Some(("the parser refuses it (see common::REJECTED)", needle));
    }
    (file.contains("bpfeb")).then_some((
        "built with -target bpfeb: a big-endian object cannot run on this little-endian kernel",
        "-endian",
    ))
}

fn fixture_objects() -> Vec<PathBuf> {
    let mut v = common::fixtures();
    let diff = Path::new(env!("CARGO_MANIFEST_DIR")).join("../programs/build/diff");
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
        let info = bpf.map_info(&m.fd).unwrap();
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
        assert_eq!(info.name, kernel_name(name), "{ctx}: name");
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
                Ok(obj) => load(&bpf, &obj, LoadOptions::default())
                    .map(|_| ())
                    .expect_err(&format!("{file} loaded, but: {why}"))
                    .to_string(),
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
                Err(e @ LoadError::ProgramLoad { .. }) => {
                    let err = common::chain(&e);
                    let bpftool = libbpf.get_or_insert_with(|| bpftool_loads(&path, fs.path()));
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
                    let bpftool = libbpf.get_or_insert_with(|| bpftool_loads(&path, fs.path()));
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
                Err(LoadError::ProgramLoad {
                    program, source, ..
                }) => {
                    let bpftool = libbpf.get_or_insert_with(|| bpftool_loads(&path, fs.path()));
                    assert!(
                        bpftool.is_err(),
                        "{file}: {program} refused ({source}) but bpftool loads the object"
                    );
                    eprintln!(
                        "{file}: {program} refused by this kernel ({source}); bpftool: {bpftool:?}"
                    );
                    skip.push(program);
                }
                Err(e) => {
                    // The object as a whole is refused (e.g. its BTF): libbpf must be too.
                    let bpftool = libbpf.get_or_insert_with(|| bpftool_loads(&path, fs.path()));
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
        let loaded = load(&bpf, &obj, only(wanted.clone()))
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
    let probed = BtfFeatures::probe(bpf);
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
        bpf.obj_pin(&m.fd, &path).unwrap();
        let again = bpf.obj_get(&path, OpenFlags::READ_WRITE).unwrap();
        assert_eq!(
            bpf.map_info(&again).unwrap().id,
            bpf.map_info(&m.fd).unwrap().id,
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

/// Whether libbpf (through bpftool) loads `obj`: `bpftool prog loadall` in a private
/// mount namespace whose /sys/fs/bpf is the test's bpffs (for maps pinned by name).
fn bpftool_loads(obj: &Path, bpffs: &Path) -> Result<(), String> {
    let auto = bpffs.join(format!("auto{}", file_name(obj).replace(['.', '-'], "_")));
    let pins = bpffs.join(format!("pins{}", file_name(obj).replace(['.', '-'], "_")));
    std::fs::create_dir(&auto).unwrap();
    let (ok, err) = common::bpftool_in(
        &auto,
        &[
            OsStr::new("prog"),
            OsStr::new("loadall"),
            obj.as_os_str(),
            pins.as_os_str(),
        ],
    );
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_dir_all(&auto);
    if ok {
        Ok(())
    } else {
        // The reason is on libbpf's last line before bpftool's own summary.
        let reason = err
            .lines()
            .rfind(|l| l.starts_with("libbpf:"))
            .unwrap_or("bpftool failed");
        Err(reason.to_owned())
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
                load(&bpf, &obj, LoadOptions::default())
                    .map_err(|e| common::chain(&e))
                    .map(|l| {
                        check_info(&bpf, &file, &l, BtfFeatures::probe(&bpf));
                        l.programs.len()
                    })
            });
        let libbpf = bpftool_loads(&path, fs.path());
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
    Map::new(bpf, m.fd.try_clone().unwrap()).unwrap()
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
    let inner_b = bpf.map_info(&loaded.map("inner_b").unwrap().fd).unwrap();
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
            ..only(loadable)
        };
        let loaded = load(&bpf, &obj, options)
            .unwrap_or_else(|e| panic!("{file} with basic BTF: {}", common::chain(&e)));
        assert!(loaded.btf.is_some(), "{file}");
        check_info(&bpf, &file, &loaded, BtfFeatures::BASIC);
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} objects");
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
    reuse.insert(".data".to_owned(), first_data.fd.try_clone().unwrap());
    let second = load(
        &bpf,
        &obj,
        LoadOptions {
            reuse_maps: reuse,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let id = |l: &LoadedObject, n: &str| bpf.map_info(&l.map(n).unwrap().fd).unwrap().id;
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
        first.map(".bss").unwrap().fd.try_clone().unwrap(),
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
            handover_loader::sys::ProgramType::CgroupSysctl,
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
        .btf_load(raw, handover_loader::sys::LogLevel::OnFailure)
        .unwrap_err();
    eprintln!("raw .BTF refused as expected: {err}");

    // With FLOAT kept, a kernel that has FLOAT refuses `struct point` (packed: a
    // double at byte 4), whose float member is not aligned to its size; libbpf sends
    // it the same way.
    let kernel = probed_btf(&bpf);
    if kernel.float {
        let blob = handover_loader::prepare_btf_with(&btf, &layout, &kernel).unwrap();
        let err = bpf
            .btf_load(&blob, handover_loader::sys::LogLevel::OnFailure)
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
            .btf_load(&blob, handover_loader::sys::LogLevel::OnFailure)
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
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../programs/build/diff/kernel_adjusted.old.o");
    let data = common::read(&path);
    let obj = Object::parse(&data).unwrap();
    let first = load(&bpf, &obj, LoadOptions::default()).unwrap();
    let mut reuse = HashMap::new();
    for name in ["events", "perf"] {
        reuse.insert(
            name.to_owned(),
            first.map(name).unwrap().fd.try_clone().unwrap(),
        );
    }
    let second = load(
        &bpf,
        &obj,
        LoadOptions {
            reuse_maps: reuse,
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    for name in ["events", "perf"] {
        let id = |l: &LoadedObject| bpf.map_info(&l.map(name).unwrap().fd).unwrap().id;
        assert!(second.map(name).unwrap().reused, "{name}");
        assert_eq!(id(&first), id(&second), "{name}");
    }
}
