//! Parses arbitrary bytes as BTF (standalone, and split on top of a small base), walks
//! every type, follows every reference, computes every size, alignment and layout (the
//! plan's layout tree and its leaves), dumps,
//! and checks the laws that tie these together.

#![no_main]

use handover_btf::{Btf, Builder, Detail, Endian, ErrorKind, Kind, TypeId, write_raw_dump};
use handover_plan::{LayoutError, LeavesError, MAX_LEAVES, layout_of};
use libfuzzer_sys::fuzz_target;

/// One record of every kind (written by handover-btf's `fuzz_seeds_are_current` test).
const BASE: &[u8] = include_bytes!("../seeds/btf_parse/every_kind_le.btf");

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = Btf::parse(data) {
        check(&btf, true);
    }
    let base = Btf::parse(BASE).expect("the base seed parses");
    if let Ok(split) = Btf::parse_split(data, base) {
        check(&split, false);
    }
});

fn check(btf: &Btf<'_>, standalone: bool) {
    let first = btf.first_type_id().0;
    let end = first + u32::try_from(btf.type_count()).expect("count fits the id space");
    let mut count = 0;
    let mut names_ok = true;
    for (id, t) in btf.types() {
        // Ids are consecutive, in range, and lookup agrees with iteration.
        assert_eq!(id.0, first + count);
        count += 1;
        let again = btf.type_by_id(id).expect("an iterated id can be looked up");
        assert_eq!((again.kind(), again.offset()), (t.kind(), t.offset()));
        assert!(t.offset() < btf.raw().len());

        names_ok &= t.name().is_ok();
        match t.detail() {
            Detail::Struct(c) | Detail::Union(c) => {
                assert_eq!(c.members.len(), usize::from(t.vlen()));
                for m in c.members {
                    names_ok &= m.name().is_ok();
                    if t.kind_flag() {
                        assert!(m.bit_offset < 1 << 24 && m.bitfield_size < 256);
                    }
                }
            }
            Detail::Enum(e) | Detail::Enum64(e) => {
                for v in e.values {
                    names_ok &= v.name().is_ok();
                    if t.kind() == Kind::Enum {
                        assert!(v.raw() <= u64::from(u32::MAX));
                    }
                }
            }
            Detail::FuncProto(p) => {
                for p in p.params {
                    names_ok &= p.name().is_ok();
                }
            }
            Detail::Datasec(d) => {
                for v in d.vars {
                    if let Ok(vt) = btf.type_by_id(v.ty) {
                        names_ok &= vt.name().is_ok();
                    }
                }
            }
            _ => {}
        }

        // resolve stops on a non-modifier (or void).
        if let Ok(r) = btf.resolve(id) {
            if r.0 != 0 {
                assert!(
                    !btf.type_by_id(r)
                        .expect("resolved id exists")
                        .kind()
                        .is_modifier()
                );
            }
        }
        // Sized kinds report their own size.
        if let Ok(size) = btf.size_of(id) {
            if matches!(
                t.kind(),
                Kind::Int
                    | Kind::Enum
                    | Kind::Enum64
                    | Kind::Struct
                    | Kind::Union
                    | Kind::Float
                    | Kind::Datasec
            ) {
                assert_eq!(size, t.size_or_type());
            }
        }
        if let Ok(align) = btf.align_of(id) {
            assert!(align >= 1);
        }
        // The layout tree (the one walk over types) agrees with the parser on sizes,
        // and its flat view opens every aggregate down to leaves.
        match layout_of(btf, id) {
            Ok(layout) => {
                if let Ok(size) = btf.size_of(id) {
                    assert_eq!(layout.size(), Some(u64::from(size)));
                }
                match layout.leaves() {
                    Ok(leaves) => {
                        assert!(leaves.len() <= MAX_LEAVES);
                        // Only a layout that is itself a leaf has a leaf without a path.
                        if leaves.iter().any(|l| l.path.is_empty()) {
                            assert!(leaves.len() == 1 && std::ptr::eq(leaves[0].ty, &layout));
                        }
                    }
                    Err(e) => assert_eq!(e, LeavesError::TooLarge),
                }
            }
            // Only functions and tags have no data layout.
            Err(LayoutError::NotData { id: at, .. }) => {
                let kind = btf.type_by_id(TypeId(at)).expect("reported type exists").kind();
                assert!(matches!(kind, Kind::Func | Kind::FuncProto | Kind::DeclTag));
            }
            Err(_) => {}
        }
    }
    assert_eq!(count as usize, btf.type_count());
    assert!(matches!(
        btf.type_by_id(TypeId(end)).map_err(|e| e.kind()),
        Err(ErrorKind::TypeIdOutOfRange { .. })
    ));
    assert!(matches!(
        btf.type_by_id(TypeId(0)).map_err(|e| e.kind()),
        Err(ErrorKind::Void)
    ));

    // The dump succeeds exactly when every name it prints can be read, and then prints
    // one header line per type.
    let mut dump = Vec::new();
    let dumped = write_raw_dump(btf, &mut dump);
    assert_eq!(dumped.is_ok(), names_ok, "{dumped:?}");
    if dumped.is_err() {
        return;
    }
    let text = String::from_utf8(dump).expect("names are UTF-8");
    assert_eq!(
        text.lines().filter(|l| l.starts_with('[')).count(),
        btf.type_count()
    );

    // Copying every type into a blob of the other byte order reads back the same.
    if standalone {
        let other = match btf.endian() {
            Endian::Little => Endian::Big,
            Endian::Big => Endian::Little,
        };
        let mut b = Builder::new(other);
        for (_, t) in btf.types() {
            b.add_copy(&t, &|id| id).expect("names were readable");
        }
        let blob = b.finish();
        let copy = Btf::parse(&blob).expect("a copy of a valid blob parses");
        assert_eq!(copy.endian(), other);
        let mut again = Vec::new();
        write_raw_dump(&copy, &mut again).expect("the copy dumps");
        assert_eq!(String::from_utf8(again).expect("UTF-8"), text);
    }
}
