//! The inner maps of a hash of maps carried through an engine upgrade on the running
//! kernel (root): programs/engine_inner_v1.c installed in a private bpffs, inner
//! hashes created from user space with entries of their own and inserted into its
//! pinned `tenants`, then upgraded to programs/engine_inner_v2.c, whose outer map and
//! inner template both double their capacity. The kernel takes the live inner hashes
//! into the new outer map (its `bpf_map_meta_equal` does not compare a hash's
//! capacity): every tenant must be there with the same inner map and its entries, and
//! the old outer map gone. Upgraded to programs/engine_inner_v3.c instead, whose outer
//! key widens from 32 to 64 bits, every inner map is under its converted key.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::os::fd::AsRawFd;
use std::time::Duration;

use handover_engine::{
    ApplyOptions, Carry, Engine, LockWait, ObjRef, ObjectSource, Options, wait_gone,
};
use handover_sys::{Bpf, Map, MapCreate, MapType, ObjectKind, OpenFlags, UpdateFlags};

const TENANTS: u32 = 5;

fn object(version: u32) -> Vec<ObjectSource> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../programs/build/engine_inner_v{version}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    vec![ObjectSource::new("inner.o", bytes)]
}

/// The id of the inner map at tenant `t`, by a key of the outer map's key size.
fn id_at(outer: &dyn handover_engine::migrate::MapAccess, t: u32) -> Option<u32> {
    let mut v = [0u8; 4];
    let key = match outer.geometry().key_size {
        8 => u64::from(t).to_ne_bytes().to_vec(),
        _ => t.to_ne_bytes().to_vec(),
    };
    outer
        .lookup(&key, &mut v, UpdateFlags::ANY)
        .unwrap()
        .then(|| u32::from_ne_bytes(v))
}

#[test]
fn the_inner_maps_of_a_hash_of_maps_are_in_the_new_outer_map() {
    upgrade_to(
        2,
        "the_inner_maps_of_a_hash_of_maps_are_in_the_new_outer_map",
    );
}

#[test]
fn the_inner_maps_are_carried_under_a_widened_outer_key() {
    upgrade_to(3, "the_inner_maps_are_carried_under_a_widened_outer_key");
}

/// Installs version 1, fills it, upgrades to `version`; `test` names the test.
fn upgrade_to(version: u32, test: &str) {
    if !testenv::privileged(test) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let state = testenv::TempDir::new("handover-inner-state");
    let opts = Options::default();
    let bpf = Bpf::kernel();
    let mut e = Engine::open(fs.path(), state.path(), LockWait::Refuse).unwrap();
    let v1 = object(1);
    let plan = e.plan(&v1, &opts).unwrap();
    e.apply(&plan, &v1, ApplyOptions::default()).unwrap();
    let old_outer = e.state().unwrap().unwrap().maps["tenants"].id;

    // Each tenant's inner hash, made by the daemon: entries 0 and 1.
    let outer = e.map_access("tenants").unwrap();
    let mut ids = Vec::new();
    for t in 0..TENANTS {
        let mut spec = MapCreate::new(MapType::Hash, 4, 8, 16);
        spec.name = "ho_tenant";
        let inner = Map::create(&bpf, &spec).expect("create an inner map");
        for k in 0..2u32 {
            let v = u64::from(t * 100 + k);
            inner
                .update(&k.to_ne_bytes(), &v.to_ne_bytes(), UpdateFlags::ANY)
                .unwrap();
        }
        let fd = u32::try_from(inner.fd().as_raw_fd()).unwrap();
        outer
            .update(&t.to_ne_bytes(), &fd.to_ne_bytes(), UpdateFlags::ANY)
            .expect("insert an inner map");
        ids.push(id_at(outer.as_ref(), t).expect("the outer map answers the inner id"));
        // The outer map holds it from now on.
        drop(inner);
    }
    drop(outer);

    let v2 = object(version);
    let plan = e.plan(&v2, &opts).unwrap();
    let m = plan.map("tenants").unwrap();
    assert_eq!(m.carry, Carry::InnerMaps, "{plan}");
    assert_eq!(m.key_plan.is_some(), version == 3, "{plan}");
    assert!(plan.lost_maps().is_empty(), "{plan}");
    let report = e.apply(&plan, &v2, ApplyOptions::default()).unwrap();
    assert_eq!(report.maps["tenants"].copied, u64::from(TENANTS));

    let new_outer = e.state().unwrap().unwrap().maps["tenants"].id;
    assert_ne!(new_outer, old_outer, "the outer map was recreated");
    let outer = e.map_access("tenants").unwrap();
    assert_eq!(
        outer.geometry().max_entries,
        8 * version,
        "the new capacity"
    );
    let key_size = if version == 3 { 8 } else { 4 };
    assert_eq!(outer.geometry().key_size, key_size);
    for t in 0..TENANTS {
        let id = id_at(outer.as_ref(), t);
        assert_eq!(id, Some(ids[t as usize]), "tenant {t} keeps its inner map");
        let fd = bpf
            .fd_by_id(ObjectKind::Map, ids[t as usize], OpenFlags::READ_ONLY)
            .expect("the inner map is alive");
        let inner = Map::new(&bpf, fd).unwrap();
        for k in 0..2u32 {
            let mut v = [0u8; 8];
            assert!(
                inner
                    .lookup(&k.to_ne_bytes(), &mut v, UpdateFlags::ANY)
                    .unwrap()
            );
            assert_eq!(
                u64::from_ne_bytes(v),
                u64::from(t * 100 + k),
                "tenant {t} key {k}"
            );
        }
    }
    assert_eq!(outer.count_entries().unwrap(), TENANTS as usize);
    drop(outer);
    assert!(!state.path().join("tenants.sockets").exists());
    let alive = wait_gone(
        e.kernel(),
        &[ObjRef::map(old_outer)],
        Duration::from_secs(10),
    );
    assert!(alive.is_empty(), "the old outer map is still in the kernel");

    // The inner maps go with the last outer map that holds them.
    e.uninstall().unwrap();
    let inner: Vec<ObjRef> = ids.iter().map(|&id| ObjRef::map(id)).collect();
    let mut k = handover_engine::RealKernel::open(fs.path(), state.path()).unwrap();
    let alive = wait_gone(&mut k, &inner, Duration::from_secs(10));
    assert!(alive.is_empty(), "inner maps left: {alive:?}");
}
