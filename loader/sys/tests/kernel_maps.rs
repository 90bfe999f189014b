//! Maps in the running kernel: every common map type with BTF, batch round trips,
//! per-CPU values, map-in-map, and the per-element fallback.
//!
//! Needs root; each test mounts its own bpffs (where it pins) and skips loudly
//! otherwise.
#![expect(clippy::indexing_slicing, reason = "tests index buffers they built")]

#[path = "../../tests/testenv/mod.rs"]
mod testenv;

use std::os::fd::AsFd;

use handover_sys::BatchSupport;
use handover_sys::{
    Bpf, LogLevel, Map, MapBtf, MapCreate, MapEntries, MapType, ObjectKind, OpenFlags, UpdateFlags,
    map_flags,
};

struct Types {
    u32_: u32,
    u64_: u32,
    pair: u32,
    lpm_key: u32,
}

fn btf() -> (Vec<u8>, Types) {
    let mut b = testenv::BtfBuilder::new();
    let u32_ = b.int("u32", 4);
    let u64_ = b.int("u64", 8);
    let pair = b.structure("pair", 8, &[("a", u32_, 0), ("b", u32_, 32)]);
    let lpm_key = b.structure("lpm_key", 8, &[("prefixlen", u32_, 0), ("addr", u32_, 32)]);
    (
        b.build(),
        Types {
            u32_,
            u64_,
            pair,
            lpm_key,
        },
    )
}

#[test]
fn every_common_map_type_is_created_with_its_btf() {
    if !testenv::privileged("every_common_map_type_is_created_with_its_btf") {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let (blob, t) = btf();
    let btf_fd = bpf.btf_load(&blob, LogLevel::OnFailure).expect("load BTF");
    let btf_info = bpf.btf_info(&btf_fd).unwrap();
    assert!(btf_info.id > 0 && !btf_info.kernel_btf);
    assert_eq!(btf_info.size as usize, blob.len());

    let with_btf = |ty, key, value, ks, vs, flags| {
        let mut spec = MapCreate::new(ty, ks, vs, 64);
        spec.name = "btf_map";
        spec.flags = flags;
        spec.btf = Some(MapBtf {
            fd: btf_fd.as_fd(),
            key_type_id: key,
            value_type_id: value,
            vmlinux_value_type_id: 0,
        });
        let map = Map::create(&bpf, &spec).unwrap_or_else(|e| panic!("{ty}: {e}"));
        let info = map.info();
        assert_eq!(info.map_type, Some(ty));
        assert_eq!(info.btf_id, btf_info.id, "{ty}");
        assert_eq!(
            (info.btf_key_type_id, info.btf_value_type_id),
            (key, value),
            "{ty}"
        );
        assert_eq!(info.name, "btf_map");
        map
    };
    with_btf(MapType::Hash, t.u32_, t.u64_, 4, 8, 0);
    with_btf(MapType::Array, t.u32_, t.pair, 4, 8, 0);
    with_btf(MapType::LruHash, t.u32_, t.pair, 4, 8, 0);
    with_btf(MapType::PercpuHash, t.u32_, t.u64_, 4, 8, 0);
    with_btf(MapType::PercpuArray, t.u32_, t.u64_, 4, 8, 0);
    with_btf(
        MapType::LpmTrie,
        t.lpm_key,
        t.u64_,
        8,
        8,
        map_flags::NO_PREALLOC,
    );

    // Types whose keys and values have no BTF of their own.
    let plain = |ty, ks, vs, max| {
        let mut spec = MapCreate::new(ty, ks, vs, max);
        spec.name = ty.name();
        let map = Map::create(&bpf, &spec).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert_eq!(map.info().map_type, Some(ty));
        map
    };
    plain(MapType::ProgArray, 4, 4, 8);
    plain(MapType::Sockhash, 4, 4, 8);
    plain(MapType::Sockmap, 4, 4, 8);
    let ring = plain(MapType::Ringbuf, 0, 0, 4096);
    assert_eq!(ring.info().max_entries, 4096);

    let inner = plain(MapType::Array, 4, 8, 1);
    for ty in [MapType::HashOfMaps, MapType::ArrayOfMaps] {
        let mut spec = MapCreate::new(ty, 4, 4, 4);
        spec.inner_map_fd = Some(inner.fd());
        let outer = Map::create(&bpf, &spec).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert_eq!(outer.info().map_type, Some(ty));
    }

    // A map survives in the test's bpffs by its pin.
    let pinned = plain(MapType::Hash, 4, 4, 4);
    let path = fs.path().join("pinned");
    bpf.obj_pin(pinned.fd(), &path).unwrap();
    let again = bpf.obj_get(&path, OpenFlags::READ_ONLY).unwrap();
    assert_eq!(bpf.map_info(&again).unwrap().id, pinned.info().id);
    // A read-only descriptor refuses writes.
    let read_only = Map::new(&bpf, again).unwrap();
    let err = read_only
        .update(&[0; 4], &[0; 4], UpdateFlags::ANY)
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EPERM), "{err}");
    let mut v = [0u8; 4];
    assert!(!read_only.lookup(&[0; 4], &mut v, UpdateFlags::ANY).unwrap());
}

#[test]
fn batch_round_trip_of_100000_entries() {
    if !testenv::privileged("batch_round_trip_of_100000_entries") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    const N: u32 = 100_000;
    let map = Map::create(&bpf, &MapCreate::new(MapType::Hash, 4, 8, N)).unwrap();
    let mut entries = MapEntries::new(4, 8);
    for i in 0..N {
        entries.push(&i.to_ne_bytes(), &(u64::from(i) * 3 + 1).to_ne_bytes());
    }
    map.update_all(&entries, UpdateFlags::ANY).unwrap();
    assert_eq!(map.batch_support(), BatchSupport::Batch);

    let dumped = map.dump().unwrap();
    assert_eq!(dumped.len(), N as usize);
    let mut seen = vec![false; N as usize];
    for (k, v) in dumped.iter() {
        let k = u32::from_ne_bytes(k.try_into().unwrap());
        let v = u64::from_ne_bytes(v.try_into().unwrap());
        assert_eq!(v, u64::from(k) * 3 + 1);
        assert!(
            !std::mem::replace(&mut seen[k as usize], true),
            "key {k} twice"
        );
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(map.batch_support(), BatchSupport::Batch);

    // Batch delete of half the keys, then drain the rest.
    let half: Vec<u8> = (0..N / 2).flat_map(u32::to_ne_bytes).collect();
    map.delete_all(&half).unwrap();
    assert_eq!(map.batch_support(), BatchSupport::Batch);
    assert_eq!(map.keys().unwrap().len() / 4, (N / 2) as usize);
    let drained = map.drain().unwrap();
    assert_eq!(drained.len(), (N / 2) as usize);
    assert_eq!(map.batch_support(), BatchSupport::Batch);
    assert!(map.keys().unwrap().is_empty());
    // Flags the batch command lacks go element by element, with their meaning.
    map.update_all(&entries, UpdateFlags::NOEXIST).unwrap();
    assert_eq!(map.batch_support(), BatchSupport::PerElement);
    assert_eq!(map.keys().unwrap().len() / 4, N as usize);
    let err = map.update_all(&entries, UpdateFlags::NOEXIST).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EEXIST));
    map.drain().unwrap();
    // NOEXIST refuses an existing key.
    map.update(&1u32.to_ne_bytes(), &[0; 8], UpdateFlags::NOEXIST)
        .unwrap();
    let err = map
        .update(&1u32.to_ne_bytes(), &[0; 8], UpdateFlags::NOEXIST)
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EEXIST));
}

#[test]
fn map_types_without_batches_fall_back_to_elements() {
    if !testenv::privileged("map_types_without_batches_fall_back_to_elements") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let mut spec = MapCreate::new(MapType::LpmTrie, 8, 8, 256);
    spec.flags = map_flags::NO_PREALLOC;
    let map = Map::create(&bpf, &spec).unwrap();
    let mut entries = MapEntries::new(8, 8);
    for i in 0..200u32 {
        let mut key = 24u32.to_ne_bytes().to_vec();
        key.extend_from_slice(&(i << 8).to_be_bytes());
        entries.push(&key, &u64::from(i).to_ne_bytes());
    }
    map.update_all(&entries, UpdateFlags::ANY).unwrap();
    let mut dumped = map.dump().unwrap();
    assert_eq!(dumped.len(), 200);
    let mut want: Vec<_> = entries.iter().collect();
    let mut got: Vec<_> = dumped.iter().collect();
    want.sort();
    got.sort();
    assert_eq!(want, got);
    // lpm_trie has no BPF_MAP_LOOKUP_AND_DELETE_BATCH (ENOTSUPP): key by key.
    dumped = map.drain().unwrap();
    assert_eq!(map.batch_support(), BatchSupport::PerElement);
    assert_eq!(dumped.len(), 200);
    assert!(map.keys().unwrap().is_empty());
}

#[test]
fn per_cpu_values_hold_one_slot_per_possible_cpu() {
    if !testenv::privileged("per_cpu_values_hold_one_slot_per_possible_cpu") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let cpus = bpf.possible_cpus().unwrap();
    // 12-byte values: each CPU's slot is rounded up to 16.
    for ty in [
        MapType::PercpuHash,
        MapType::PercpuArray,
        MapType::LruPercpuHash,
    ] {
        let map = Map::create(&bpf, &MapCreate::new(ty, 4, 12, 16)).unwrap();
        assert_eq!(map.value_len(), 16 * cpus, "{ty}");
        let mut value = vec![0u8; map.value_len()];
        for (cpu, slot) in value.chunks_exact_mut(16).enumerate() {
            slot[..12].fill(u8::try_from(cpu + 1).unwrap());
        }
        map.update(&3u32.to_ne_bytes(), &value, UpdateFlags::ANY)
            .unwrap();
        let mut back = vec![0xffu8; map.value_len()];
        assert!(
            map.lookup(&3u32.to_ne_bytes(), &mut back, UpdateFlags::ANY)
                .unwrap()
        );
        for (cpu, slot) in back.chunks_exact(16).enumerate() {
            assert!(
                slot[..12].iter().all(|&b| usize::from(b) == cpu + 1),
                "{ty} cpu {cpu}"
            );
        }
        let dumped = map.dump().unwrap();
        let (_, v) = dumped
            .iter()
            .find(|(k, _)| *k == 3u32.to_ne_bytes())
            .unwrap();
        assert_eq!(v, &value[..], "{ty}");
        // A buffer of one CPU's size is refused before the kernel could overrun it.
        let err = map
            .lookup(&3u32.to_ne_bytes(), &mut [0u8; 12], UpdateFlags::ANY)
            .unwrap_err();
        assert!(err.to_string().contains("value is 12 bytes"), "{err}");
    }
}

#[test]
fn map_in_map_holds_inner_maps_by_fd_and_reads_back_ids() {
    if !testenv::privileged("map_in_map_holds_inner_maps_by_fd_and_reads_back_ids") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let inner_a = Map::create(&bpf, &MapCreate::new(MapType::Array, 4, 8, 1)).unwrap();
    let inner_b = Map::create(&bpf, &MapCreate::new(MapType::Array, 4, 8, 1)).unwrap();
    inner_b
        .update(&0u32.to_ne_bytes(), &77u64.to_ne_bytes(), UpdateFlags::ANY)
        .unwrap();
    let mut spec = MapCreate::new(MapType::HashOfMaps, 4, 4, 8);
    spec.inner_map_fd = Some(inner_a.fd());
    spec.name = "outer";
    let outer = Map::create(&bpf, &spec).unwrap();
    let fd_bytes = |m: &Map| {
        u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&m.fd()))
            .unwrap()
            .to_ne_bytes()
    };
    outer
        .update(&1u32.to_ne_bytes(), &fd_bytes(&inner_a), UpdateFlags::ANY)
        .unwrap();
    outer
        .update(&2u32.to_ne_bytes(), &fd_bytes(&inner_b), UpdateFlags::ANY)
        .unwrap();
    let mut id = [0u8; 4];
    assert!(
        outer
            .lookup(&2u32.to_ne_bytes(), &mut id, UpdateFlags::ANY)
            .unwrap()
    );
    let id = u32::from_ne_bytes(id);
    assert_eq!(id, inner_b.info().id);
    let reopened = Map::new(
        &bpf,
        bpf.fd_by_id(ObjectKind::Map, id, OpenFlags::READ_WRITE)
            .unwrap(),
    )
    .unwrap();
    let mut v = [0u8; 8];
    assert!(
        reopened
            .lookup(&0u32.to_ne_bytes(), &mut v, UpdateFlags::ANY)
            .unwrap()
    );
    assert_eq!(u64::from_ne_bytes(v), 77);
    // An inner map of another geometry is refused.
    let odd = Map::create(&bpf, &MapCreate::new(MapType::Array, 4, 16, 1)).unwrap();
    let err = outer
        .update(&3u32.to_ne_bytes(), &fd_bytes(&odd), UpdateFlags::ANY)
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
}

#[test]
fn frozen_maps_refuse_writes_from_user_space() {
    if !testenv::privileged("frozen_maps_refuse_writes_from_user_space") {
        return;
    }
    let _fs = testenv::Bpffs::mount();
    let bpf = Bpf::kernel();
    let map = Map::create(&bpf, &MapCreate::new(MapType::Array, 4, 8, 1)).unwrap();
    map.update(&0u32.to_ne_bytes(), &5u64.to_ne_bytes(), UpdateFlags::ANY)
        .unwrap();
    map.freeze().unwrap();
    let err = map
        .update(&0u32.to_ne_bytes(), &6u64.to_ne_bytes(), UpdateFlags::ANY)
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EPERM));
    assert!(
        err.to_string().contains("BPF_MAP_UPDATE_ELEM on array map"),
        "{err}"
    );
}

#[test]
fn bad_btf_is_rejected_with_the_kernel_log() {
    if !testenv::privileged("bad_btf_is_rejected_with_the_kernel_log") {
        return;
    }
    let bpf = Bpf::kernel();
    let (mut blob, _) = btf();
    // Point the first type's name past the string section.
    blob[24..28].copy_from_slice(&0xffffu32.to_ne_bytes());
    let err = bpf.btf_load(&blob, LogLevel::OnFailure).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert!(!err.log().unwrap_or_default().is_empty(), "{err}");
}

#[test]
fn map_info_clears_the_descriptor_access_flags() {
    // The loader compares a reused map's flags without BPF_F_RDONLY/BPF_F_WRONLY
    // because the kernel keeps them on the creating descriptor, not in map_flags.
    if !testenv::privileged("map_info_clears_the_descriptor_access_flags") {
        return;
    }
    let bpf = Bpf::kernel();
    for access in [map_flags::RDONLY, map_flags::WRONLY] {
        let mut spec = MapCreate::new(MapType::Hash, 4, 4, 8);
        spec.flags = access | map_flags::NO_PREALLOC;
        let map = Map::create(&bpf, &spec).expect("create map");
        assert_eq!(
            map.info().flags,
            map_flags::NO_PREALLOC,
            "access {access:#x}"
        );
    }
}

#[test]
fn perf_event_arrays_keep_a_capacity_above_the_cpu_count() {
    // Only a perf event array defined without max_entries is sized by the loader
    // (one slot per possible CPU); the kernel keeps any other capacity as given.
    if !testenv::privileged("perf_event_arrays_keep_a_capacity_above_the_cpu_count") {
        return;
    }
    let bpf = Bpf::kernel();
    let cpus = u32::try_from(bpf.possible_cpus().unwrap()).unwrap();
    let spec = MapCreate::new(MapType::PerfEventArray, 4, 4, cpus + 8);
    let map = Map::create(&bpf, &spec).expect("create perf event array");
    assert_eq!(map.info().max_entries, cpus + 8);
}
