//! Layouts built from the BTF of real objects: the fixtures in programs/ and the
//! third-party xdp-tools objects installed under /usr/lib/x86_64-linux-gnu/bpf/.

#![allow(
    clippy::indexing_slicing,
    reason = "test code: an out-of-range index is a failed test"
)]

use std::path::{Path, PathBuf};

use handover::{MapModel, Member, TypeLayout, load_side};

fn objects() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [
        root.join("programs/build"),
        root.join("programs/build/diff"),
        PathBuf::from("/usr/lib/x86_64-linux-gnu/bpf"),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!(
                "NOTE: {} is absent; its objects are not checked",
                dir.display()
            );
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "o") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every member lies inside its parent, recursively.
fn members_fit(t: &TypeLayout, what: &str) {
    match t.peel() {
        TypeLayout::Struct { size, members, .. } | TypeLayout::Union { size, members, .. } => {
            for Member {
                name,
                bit_offset,
                bitfield_size,
                ty,
            } in members
            {
                let bits = if *bitfield_size > 0 {
                    u64::from(*bitfield_size)
                } else {
                    ty.size().unwrap_or(0) * 8
                };
                assert!(
                    bit_offset + bits <= u64::from(*size) * 8,
                    "{what}: member {name:?} at bit {bit_offset} ({bits} bits) outside {size} bytes"
                );
                members_fit(ty, what);
            }
        }
        TypeLayout::Array { elem, .. } => members_fit(elem, what),
        _ => {}
    }
}

fn check_map(m: &MapModel, what: &str) {
    for (layout, size, side) in [
        (&m.key, m.key_size, "key"),
        (&m.value, m.value_size, "value"),
    ] {
        if let Some(l) = layout {
            // Map-in-map and fd arrays declare a value type the kernel does not use.
            if !matches!(
                m.map_type,
                handover::MapType::ArrayOfMaps | handover::MapType::HashOfMaps
            ) && size > 0
            {
                assert_eq!(l.size(), Some(u64::from(size)), "{what}: {} {side}", m.name);
            }
            members_fit(l, &format!("{what}: {} {side}", m.name));
        }
    }
    if let Some(inner) = &m.inner {
        check_map(inner, what);
    }
}

#[test]
fn layouts_match_declared_sizes() {
    let objects = objects();
    assert!(
        objects.len() > 10,
        "fixture objects missing: run programs/build.sh"
    );
    let mut checked = 0;
    for path in &objects {
        let Ok(models) = load_side(path) else {
            // Objects the loader refuses (e.g. unsupported externs) have their own tests.
            continue;
        };
        for o in &models {
            for m in &o.maps {
                check_map(m, &path.display().to_string());
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "only {checked} maps checked");
}

#[test]
fn flows_key_layout_from_btf() {
    // programs/maps_btf.c: struct flow_key { __u32 saddr, daddr; __u16 sport, dport;
    // __u8 proto; __u8 pad[3]; }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let models = load_side(&root.join("programs/build/maps_btf.o")).unwrap();
    let flows = models[0].maps.iter().find(|m| m.name == "flows").unwrap();
    let TypeLayout::Struct {
        name,
        size,
        members,
    } = flows.key.as_ref().unwrap()
    else {
        panic!("not a struct: {:?}", flows.key);
    };
    assert_eq!((name.as_deref(), *size), (Some("flow_key"), 16));
    let shape: Vec<(&str, u64, String)> = members
        .iter()
        .map(|m| (m.name.as_deref().unwrap(), m.bit_offset, m.ty.describe()))
        .collect();
    assert_eq!(
        shape,
        [
            ("saddr", 0, "__u32".to_owned()),
            ("daddr", 32, "__u32".to_owned()),
            ("sport", 64, "__u16".to_owned()),
            ("dport", 80, "__u16".to_owned()),
            ("proto", 96, "__u8".to_owned()),
            ("pad", 104, "__u8[3]".to_owned()),
        ]
    );
}

#[test]
fn global_data_variables_get_their_section_offsets() {
    // programs/diff/global_data.new.c: .bss holds packets_seen (u64), errors (u64),
    // drops (u32); the object's DATASEC leaves every offset 0.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let models = load_side(Path::new(
        &root.join("programs/build/diff/global_data.new.o"),
    ))
    .unwrap();
    let bss = models[0].maps.iter().find(|m| m.name == ".bss").unwrap();
    let Some(TypeLayout::Struct { size, members, .. }) = &bss.value else {
        panic!("{:?}", bss.value);
    };
    assert_eq!(*size, bss.value_size);
    let mut offs: Vec<(String, u64)> = members
        .iter()
        .map(|m| (m.name.clone().unwrap(), m.bit_offset / 8))
        .collect();
    offs.sort_by_key(|x| x.1);
    let names: Vec<&str> = offs.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(names.len(), 3);
    let distinct: std::collections::HashSet<u64> = offs.iter().map(|x| x.1).collect();
    assert_eq!(distinct.len(), 3, "{offs:?}");
}
