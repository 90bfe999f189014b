//! Unit tests over hand-built blobs: every kind, both byte orders, the queries, and a
//! table of malformed inputs each with its own error.

#![expect(
    clippy::indexing_slicing,
    reason = "tests index their own fixtures; a panic there is a test failure"
)]

use proptest::prelude::*;

use crate::{
    Btf, Builder, Detail, Endian, ErrorKind, Kind, Linkage, StrOffset, TypeId, write_raw_dump,
};

/// Encodes `BTF_KIND_INT`'s trailing word.
fn int_word(encoding: u32, offset: u32, bits: u32) -> u32 {
    encoding << 24 | offset << 16 | bits
}

/// A blob with every kind, ids fixed by insertion order (see the comments).
fn every_kind(endian: Endian) -> Vec<u8> {
    let mut b = Builder::new(endian);
    let s = |b: &mut Builder, name: &str| b.string(name);
    let n = s(&mut b, "int");
    b.add(n, Kind::Int, false, 0, 4, &[int_word(1, 0, 32)]); // 1
    let n = s(&mut b, "char");
    b.add(n, Kind::Int, false, 0, 1, &[int_word(2, 0, 8)]); // 2
    let n = s(&mut b, "_Bool");
    b.add(n, Kind::Int, false, 0, 1, &[int_word(4, 0, 8)]); // 3
    b.add(StrOffset(0), Kind::Ptr, false, 0, 5, &[]); // 4: struct node *
    let (node, next, bits, flag) = (
        s(&mut b, "node"),
        s(&mut b, "next"),
        s(&mut b, "bits"),
        s(&mut b, "flag"),
    );
    // 5: struct node { struct node *next; int bits:3; _Bool flag:1; }, kind_flag set.
    b.add(
        node,
        Kind::Struct,
        true,
        3,
        16,
        &[
            next.0,
            4,
            0,
            bits.0,
            1,
            3 << 24 | 64,
            flag.0,
            3,
            1 << 24 | 67,
        ],
    );
    b.add(StrOffset(0), Kind::Array, false, 0, 0, &[2, 1, 4]); // 6: char[4]
    let (u, i, c) = (s(&mut b, "u"), s(&mut b, "i"), s(&mut b, "c"));
    b.add(u, Kind::Union, false, 2, 4, &[i.0, 1, 0, c.0, 6, 0]); // 7
    let (e, a, bb) = (s(&mut b, "e"), s(&mut b, "A"), s(&mut b, "B"));
    b.add(e, Kind::Enum, false, 2, 4, &[a.0, 0, bb.0, 0xffff_ffff]); // 8
    let (se, neg, pos) = (s(&mut b, "se"), s(&mut b, "NEG"), s(&mut b, "POS"));
    b.add(se, Kind::Enum, true, 2, 4, &[neg.0, 0xffff_ffff, pos.0, 5]); // 9
    let fu = s(&mut b, "fu");
    b.add(fu, Kind::Fwd, true, 0, 0, &[]); // 10: union fu;
    let t = s(&mut b, "t");
    b.add(t, Kind::Typedef, false, 0, 5, &[]); // 11: typedef struct node t;
    b.add(StrOffset(0), Kind::Volatile, false, 0, 1, &[]); // 12
    b.add(StrOffset(0), Kind::Const, false, 0, 12, &[]); // 13: const volatile int
    b.add(StrOffset(0), Kind::Restrict, false, 0, 4, &[]); // 14
    let pa = s(&mut b, "a");
    b.add(StrOffset(0), Kind::FuncProto, false, 2, 1, &[pa.0, 1, 0, 0]); // 15: int (int a, ...)
    let f = s(&mut b, "f");
    b.add(f, Kind::Func, false, 1, 15, &[]); // 16: global
    let v = s(&mut b, "v");
    b.add(v, Kind::Var, false, 0, 11, &[1]); // 17: global
    let data = s(&mut b, ".data");
    b.add(data, Kind::Datasec, false, 1, 16, &[17, 0, 16]); // 18
    let dbl = s(&mut b, "double");
    b.add(dbl, Kind::Float, false, 0, 8, &[]); // 19
    let tag = s(&mut b, "tag");
    b.add(tag, Kind::DeclTag, false, 0, 5, &[1]); // 20: on member 1 of node
    let user = s(&mut b, "user");
    b.add(user, Kind::TypeTag, false, 0, 1, &[]); // 21
    let (e64, big) = (s(&mut b, "e64"), s(&mut b, "BIG"));
    b.add(
        e64,
        Kind::Enum64,
        false,
        1,
        8,
        &[big.0, 0x9abc_def0, 0x1234_5678],
    ); // 22
    let (se64, m2) = (s(&mut b, "se64"), s(&mut b, "MINUS_TWO"));
    b.add(
        se64,
        Kind::Enum64,
        true,
        1,
        8,
        &[m2.0, 0xffff_fffe, 0xffff_ffff],
    ); // 23
    let fs = s(&mut b, "fs");
    b.add(fs, Kind::Fwd, false, 0, 0, &[]); // 24: struct fs;
    let st = s(&mut b, "st");
    b.add(st, Kind::Func, false, 0, 15, &[]); // 25: static
    let ex = s(&mut b, "ex");
    b.add(ex, Kind::Func, false, 2, 15, &[]); // 26: extern
    let ul = s(&mut b, "unsigned long");
    b.add(ul, Kind::Int, false, 0, 8, &[int_word(0, 0, 64)]); // 27
    let (outer, nn, x) = (s(&mut b, "outer"), s(&mut b, "n"), s(&mut b, "x"));
    // 28: struct outer { t n; union u; const volatile int x; }
    b.add(
        outer,
        Kind::Struct,
        false,
        3,
        24,
        &[nn.0, 11, 0, 0, 7, 128, x.0, 13, 160],
    );
    b.add(StrOffset(0), Kind::Array, false, 0, 0, &[5, 1, 2]); // 29: struct node[2]
    let (pair, nodes) = (s(&mut b, "pair"), s(&mut b, "nodes"));
    b.add(pair, Kind::Struct, false, 1, 32, &[nodes.0, 29, 0]); // 30
    b.finish()
}

/// Touches every type, member, name and query; returns the dump if it succeeds. Used by
/// the property tests on damaged blobs, so it must not panic whatever the blob holds.
fn walk(btf: &Btf<'_>) -> Option<String> {
    for (id, t) in btf.types() {
        assert_eq!(t.id(), id);
        let _ = t.name();
        match t.detail() {
            Detail::Struct(c) | Detail::Union(c) => c.members.for_each(|m| {
                let _ = (m.name(), btf.resolve(m.ty));
            }),
            Detail::Enum(e) | Detail::Enum64(e) => e.values.for_each(|v| {
                let _ = (v.name(), v.as_i64());
            }),
            Detail::FuncProto(p) => p.params.for_each(|p| {
                let _ = (p.name(), btf.type_by_id(p.ty));
            }),
            Detail::Datasec(d) => d.vars.for_each(|v| {
                let _ = btf.type_by_id(v.ty);
            }),
            _ => {}
        }
        let _ = (btf.resolve(id), btf.size_of(id), btf.align_of(id));
    }
    let mut out = Vec::new();
    write_raw_dump(btf, &mut out).ok()?;
    Some(String::from_utf8(out).expect("names are UTF-8, so is the dump"))
}

/// A successful dump prints one line per type, each complete.
fn dump_is_whole(btf: &Btf<'_>, dump: &str) -> bool {
    let headers = dump.lines().filter(|l| l.starts_with('[')).count();
    headers == btf.type_count() && (dump.is_empty() || dump.ends_with('\n'))
}

fn dump(btf: &Btf<'_>) -> String {
    let mut out = Vec::new();
    write_raw_dump(btf, &mut out).expect("dump");
    String::from_utf8(out).expect("UTF-8 dump")
}

const EVERY_KIND_DUMP: &str = "\
[1] INT 'int' size=4 bits_offset=0 nr_bits=32 encoding=SIGNED
[2] INT 'char' size=1 bits_offset=0 nr_bits=8 encoding=CHAR
[3] INT '_Bool' size=1 bits_offset=0 nr_bits=8 encoding=BOOL
[4] PTR '(anon)' type_id=5
[5] STRUCT 'node' size=16 vlen=3
\t'next' type_id=4 bits_offset=0
\t'bits' type_id=1 bits_offset=64 bitfield_size=3
\t'flag' type_id=3 bits_offset=67 bitfield_size=1
[6] ARRAY '(anon)' type_id=2 index_type_id=1 nr_elems=4
[7] UNION 'u' size=4 vlen=2
\t'i' type_id=1 bits_offset=0
\t'c' type_id=6 bits_offset=0
[8] ENUM 'e' encoding=UNSIGNED size=4 vlen=2
\t'A' val=0
\t'B' val=4294967295
[9] ENUM 'se' encoding=SIGNED size=4 vlen=2
\t'NEG' val=-1
\t'POS' val=5
[10] FWD 'fu' fwd_kind=union
[11] TYPEDEF 't' type_id=5
[12] VOLATILE '(anon)' type_id=1
[13] CONST '(anon)' type_id=12
[14] RESTRICT '(anon)' type_id=4
[15] FUNC_PROTO '(anon)' ret_type_id=1 vlen=2
\t'a' type_id=1
\t'(anon)' type_id=0
[16] FUNC 'f' type_id=15 linkage=global
[17] VAR 'v' type_id=11, linkage=global
[18] DATASEC '.data' size=16 vlen=1
\ttype_id=17 offset=0 size=16 (VAR 'v')
[19] FLOAT 'double' size=8
[20] DECL_TAG 'tag' type_id=5 component_idx=1
[21] TYPE_TAG 'user' type_id=1
[22] ENUM64 'e64' encoding=UNSIGNED size=8 vlen=1
\t'BIG' val=1311768467463790320ULL
[23] ENUM64 'se64' encoding=SIGNED size=8 vlen=1
\t'MINUS_TWO' val=-2LL
[24] FWD 'fs' fwd_kind=struct
[25] FUNC 'st' type_id=15 linkage=static
[26] FUNC 'ex' type_id=15 linkage=extern
[27] INT 'unsigned long' size=8 bits_offset=0 nr_bits=64 encoding=(none)
[28] STRUCT 'outer' size=24 vlen=3
\t'n' type_id=11 bits_offset=0
\t'(anon)' type_id=7 bits_offset=128
\t'x' type_id=13 bits_offset=160
[29] ARRAY '(anon)' type_id=5 index_type_id=1 nr_elems=2
[30] STRUCT 'pair' size=32 vlen=1
\t'nodes' type_id=29 bits_offset=0
";

#[test]
fn every_kind_dumps_like_bpftool() {
    let blob = every_kind(Endian::Little);
    let btf = Btf::parse(&blob).expect("parse");
    assert_eq!(btf.endian(), Endian::Little);
    assert_eq!(btf.type_count(), 30);
    assert_eq!(btf.first_type_id(), TypeId(1));
    assert_eq!(dump(&btf), EVERY_KIND_DUMP);
}

#[test]
fn big_endian_blob_reads_the_same() {
    let blob = every_kind(Endian::Big);
    assert_eq!(&blob[..2], &[0xeb, 0x9f]);
    assert_ne!(blob, every_kind(Endian::Little));
    let btf = Btf::parse(&blob).expect("parse big-endian");
    assert_eq!(btf.endian(), Endian::Big);
    assert_eq!(dump(&btf), EVERY_KIND_DUMP);
    assert_eq!(btf.size_of(TypeId(30)), Ok(32));
    assert_eq!(btf.id_by_name("outer", Kind::Struct), Some(TypeId(28)));
}

#[test]
fn kind_views_expose_each_record() {
    let blob = every_kind(Endian::Little);
    let btf = Btf::parse(&blob).expect("parse");
    let t = |id| btf.type_by_id(TypeId(id)).expect("type");
    let Detail::Int(int) = t(1).detail() else {
        panic!("INT")
    };
    assert!(int.encoding.is_signed() && int.bits == 32 && int.size == 4);
    assert!(matches!(t(2).detail(), Detail::Int(i) if i.encoding.is_char()));
    assert!(matches!(t(3).detail(), Detail::Int(i) if i.encoding.is_bool()));
    assert!(matches!(t(4).detail(), Detail::Ptr(TypeId(5))));
    let Detail::Struct(node) = t(5).detail() else {
        panic!("STRUCT")
    };
    let members: Vec<_> = node
        .members
        .map(|m| (m.name().expect("name"), m.ty, m.bit_offset, m.bitfield_size))
        .collect();
    assert_eq!(
        members,
        [
            ("next", TypeId(4), 0, 0),
            ("bits", TypeId(1), 64, 3),
            ("flag", TypeId(3), 67, 1)
        ]
    );
    assert!(t(5).kind_flag());
    assert!(matches!(t(6).detail(), Detail::Array(a) if a.elem == TypeId(2) && a.nelems == 4));
    assert!(matches!(t(7).detail(), Detail::Union(c) if c.size == 4 && c.members.len() == 2));
    let Detail::Enum(se) = t(9).detail() else {
        panic!("ENUM")
    };
    assert!(se.signed);
    let values: Vec<_> = se
        .values
        .map(|v| (v.name().expect("name"), v.as_i64()))
        .collect();
    assert_eq!(values, [("NEG", -1), ("POS", 5)]);
    assert!(matches!(t(10).detail(), Detail::Fwd { is_union: true }));
    assert!(matches!(t(24).detail(), Detail::Fwd { is_union: false }));
    assert!(matches!(t(11).detail(), Detail::Typedef(TypeId(5))));
    assert!(matches!(t(12).detail(), Detail::Volatile(TypeId(1))));
    assert!(matches!(t(13).detail(), Detail::Const(TypeId(12))));
    assert!(matches!(t(14).detail(), Detail::Restrict(TypeId(4))));
    let Detail::FuncProto(proto) = t(15).detail() else {
        panic!("FUNC_PROTO")
    };
    assert_eq!(proto.ret, TypeId(1));
    let params: Vec<_> = proto
        .params
        .map(|p| (p.name().expect("name"), p.ty))
        .collect();
    assert_eq!(params, [("a", TypeId(1)), ("", TypeId(0))]);
    assert!(
        matches!(t(16).detail(), Detail::Func(f) if f.proto == TypeId(15) && f.linkage == Linkage::GLOBAL)
    );
    assert!(matches!(t(17).detail(), Detail::Var(v) if v.linkage == Linkage::GLOBAL));
    let Detail::Datasec(sec) = t(18).detail() else {
        panic!("DATASEC")
    };
    assert_eq!(
        sec.vars
            .map(|v| (v.ty, v.offset, v.size))
            .collect::<Vec<_>>(),
        [(TypeId(17), 0, 16)]
    );
    assert!(matches!(t(19).detail(), Detail::Float { size: 8 }));
    assert!(
        matches!(t(20).detail(), Detail::DeclTag(d) if d.target == TypeId(5) && d.component_idx == 1)
    );
    assert!(matches!(t(21).detail(), Detail::TypeTag(TypeId(1))));
    let Detail::Enum64(e64) = t(22).detail() else {
        panic!("ENUM64")
    };
    assert_eq!(
        e64.values.map(|v| v.as_u64()).collect::<Vec<_>>(),
        [0x1234_5678_9abc_def0]
    );
    let Detail::Enum64(se64) = t(23).detail() else {
        panic!("ENUM64")
    };
    assert_eq!(se64.values.map(|v| v.as_i64()).collect::<Vec<_>>(), [-2]);
    assert_eq!(t(25).detail().clone_linkage(), Some(Linkage::STATIC));
    assert_eq!(t(26).detail().clone_linkage(), Some(Linkage::EXTERN));
    assert_eq!(t(5).name(), Ok("node"));
    assert_eq!(t(4).name(), Ok(""));
    assert_eq!(t(4).target(), Some(TypeId(5)));
}

impl Detail<'_> {
    fn clone_linkage(&self) -> Option<Linkage> {
        match self {
            Detail::Func(f) => Some(f.linkage),
            Detail::Var(v) => Some(v.linkage),
            _ => None,
        }
    }
}

#[test]
fn queries_resolve_size_align_and_name() {
    let blob = every_kind(Endian::Little);
    let btf = Btf::parse(&blob).expect("parse");
    assert_eq!(btf.resolve(TypeId(13)), Ok(TypeId(1)));
    assert_eq!(btf.resolve(TypeId(11)), Ok(TypeId(5)));
    assert_eq!(btf.resolve(TypeId(21)), Ok(TypeId(1)));
    assert_eq!(btf.resolve(TypeId(0)), Ok(TypeId(0)));
    assert_eq!(btf.pointer_size(), 8);
    for (id, size, align) in [
        (1, 4, 4),
        (2, 1, 1),
        (4, 8, 8),
        (5, 16, 8),
        (6, 4, 1),
        (7, 4, 4),
    ] {
        assert_eq!(btf.size_of(TypeId(id)), Ok(size), "size of {id}");
        assert_eq!(btf.align_of(TypeId(id)), Ok(align), "align of {id}");
    }
    assert_eq!(btf.size_of(TypeId(17)), Ok(16), "VAR has its type's size");
    assert_eq!(btf.size_of(TypeId(28)), Ok(24));
    assert_eq!(btf.size_of(TypeId(29)), Ok(32));
    for no_size in [0, 10, 15, 16] {
        assert!(
            matches!(
                btf.size_of(TypeId(no_size)).map_err(|e| e.kind()),
                Err(ErrorKind::NoSize { .. })
            ),
            "{no_size} has no size"
        );
    }
    assert_eq!(btf.id_by_name("node", Kind::Struct), Some(TypeId(5)));
    assert_eq!(btf.id_by_name("node", Kind::Union), None);
    assert_eq!(btf.id_by_name("nod", Kind::Struct), None);
    assert_eq!(btf.ids_by_name("t").collect::<Vec<_>>(), [TypeId(11)]);
    assert_eq!(btf.string_at(StrOffset(1)), Ok("int"));
}

#[test]
fn reference_cycles_end_in_an_error() {
    // struct a { struct a *next; } is fine; typedef b b; and struct c { struct c c; } are
    // cycles that must be reported, not followed forever.
    let mut b = Builder::new(Endian::Little);
    let (a, next, tb, c, cc) = (
        b.string("a"),
        b.string("next"),
        b.string("b"),
        b.string("c"),
        b.string("c"),
    );
    b.add(a, Kind::Struct, false, 1, 8, &[next.0, 2, 0]); // 1
    b.add(StrOffset(0), Kind::Ptr, false, 0, 1, &[]); // 2
    b.add(tb, Kind::Typedef, false, 0, 3, &[]); // 3: typedef b b;
    b.add(c, Kind::Struct, false, 1, 8, &[cc.0, 4, 0]); // 4: struct c { struct c c; }
    b.add(StrOffset(0), Kind::Const, false, 0, 6, &[]); // 5 -> 6 -> 5
    b.add(StrOffset(0), Kind::Volatile, false, 0, 5, &[]); // 6
    let blob = b.finish();
    let btf = Btf::parse(&blob).expect("parse");
    assert_eq!(btf.size_of(TypeId(1)), Ok(8));
    assert_eq!(btf.align_of(TypeId(1)), Ok(8));
    let depth = |r: Result<_, crate::Error>| {
        matches!(
            r.map_err(|e| e.kind()),
            Err(ErrorKind::ReferenceDepth { .. })
        )
    };
    assert!(depth(btf.resolve(TypeId(3)).map(|_| ())));
    assert!(depth(btf.size_of(TypeId(3)).map(|_| ())));
    assert!(depth(btf.align_of(TypeId(3)).map(|_| ())));
    assert!(depth(btf.resolve(TypeId(5)).map(|_| ())));
    assert!(depth(btf.align_of(TypeId(4)).map(|_| ())));
}

#[test]
fn split_blob_continues_ids_and_strings_of_its_base() {
    let base_blob = every_kind(Endian::Little);
    let base = Btf::parse(&base_blob).expect("base");
    let mut b = Builder::split(Endian::Little, &base);
    assert_eq!(b.next_id(), TypeId(31));
    let w = b.string("wrapper");
    assert_eq!(w.0 as usize, base.string_section().len());
    let inner = b.string("inner");
    b.add(w, Kind::Struct, false, 1, 24, &[inner.0, 28, 0]); // 31: struct wrapper { struct outer inner; }
    b.add(StrOffset(1), Kind::Typedef, false, 0, 31, &[]); // 32: named "int" from the base's strings
    let blob = b.finish();
    let split = Btf::parse_split(&blob, base).expect("split");
    assert_eq!(split.first_type_id(), TypeId(31));
    assert_eq!(split.type_count(), 2);
    assert_eq!(
        split.type_by_id(TypeId(5)).expect("base type").name(),
        Ok("node")
    );
    assert_eq!(split.type_by_id(TypeId(32)).expect("own").name(), Ok("int"));
    assert_eq!(split.id_by_name("wrapper", Kind::Struct), Some(TypeId(31)));
    assert_eq!(split.id_by_name("node", Kind::Struct), Some(TypeId(5)));
    assert_eq!(
        split.ids_by_name("int").collect::<Vec<_>>(),
        [TypeId(1), TypeId(32)]
    );
    assert_eq!(split.size_of(TypeId(32)), Ok(24));
    assert_eq!(
        dump(&split),
        "[31] STRUCT 'wrapper' size=24 vlen=1\n\t'inner' type_id=28 bits_offset=0\n[32] TYPEDEF 'int' type_id=31\n"
    );
    assert!(matches!(
        split.type_by_id(TypeId(33)).map_err(|e| e.kind()),
        Err(ErrorKind::TypeIdOutOfRange { id: TypeId(33) })
    ));
}

/// Overwrites the little-endian `u32` at `at`.
fn put(blob: &mut [u8], at: usize, value: u32) {
    blob[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn one_type(name_off: u32, info: u32, size_or_type: u32, tail: &[u32]) -> Vec<u8> {
    let mut b = Builder::new(Endian::Little);
    b.string("x");
    b.add_raw(name_off, info, size_or_type, tail);
    b.finish()
}

/// A malformed blob: what it is, its bytes, the error expected, at which offset.
type Case = (&'static str, Vec<u8>, fn(ErrorKind) -> bool, usize);

#[test]
fn malformed_blobs_give_their_specific_error() {
    let good = every_kind(Endian::Little);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut blob = good.clone();
        f(&mut blob);
        blob
    };
    let info = |kind: u32, vlen: u32| kind << 24 | vlen;
    let str_start = 24 + u32::from_le_bytes(good[16..20].try_into().expect("4 bytes")) as usize;
    let cases: Vec<Case> = vec![
        (
            "empty",
            vec![],
            |k| {
                matches!(
                    k,
                    ErrorKind::Truncated {
                        needed: 24,
                        available: 0,
                        ..
                    }
                )
            },
            0,
        ),
        (
            "truncated header",
            good[..10].to_vec(),
            |k| matches!(k, ErrorKind::Truncated { available: 10, .. }),
            0,
        ),
        (
            "bad magic",
            with(&|b| b[0] = 0x7f),
            |k| {
                matches!(
                    k,
                    ErrorKind::BadMagic {
                        found: [0x7f, 0xeb]
                    }
                )
            },
            0,
        ),
        (
            "bad version",
            with(&|b| b[2] = 2),
            |k| matches!(k, ErrorKind::BadVersion { found: 2 }),
            2,
        ),
        (
            "hdr_len too small",
            with(&|b| put(b, 4, 8)),
            |k| matches!(k, ErrorKind::BadHeaderLen { hdr_len: 8 }),
            4,
        ),
        (
            "hdr_len past the end",
            with(&|b| put(b, 4, 1 << 20)),
            |k| matches!(k, ErrorKind::BadHeaderLen { .. }),
            4,
        ),
        (
            "type section length overflows",
            with(&|b| put(b, 12, u32::MAX)),
            |k| {
                matches!(
                    k,
                    ErrorKind::SectionOutOfBounds {
                        section: "type",
                        ..
                    }
                )
            },
            8,
        ),
        (
            "string offset + length overflow u32",
            with(&|b| {
                put(b, 16, 0xffff_fff0);
                put(b, 20, 0x20);
            }),
            |k| {
                matches!(
                    k,
                    ErrorKind::SectionOutOfBounds {
                        section: "string",
                        ..
                    }
                )
            },
            16,
        ),
        (
            "misaligned type section",
            with(&|b| put(b, 8, 2)),
            |k| matches!(k, ErrorKind::Misaligned { off: 2, .. }),
            8,
        ),
        (
            "string section not starting with NUL",
            with(&|b| b[str_start] = b'x'),
            |k| matches!(k, ErrorKind::BadStringSection),
            str_start,
        ),
        (
            "unterminated last string",
            with(&|b| {
                let last = b.len() - 1;
                b[last] = b'x';
            }),
            |k| matches!(k, ErrorKind::BadStringSection),
            str_start,
        ),
        (
            "vlen past the end",
            one_type(0, info(4, 5), 8, &[]),
            |k| {
                matches!(
                    k,
                    ErrorKind::VlenPastEnd {
                        id: TypeId(1),
                        vlen: 5
                    }
                )
            },
            24,
        ),
        (
            "unknown kind 20",
            one_type(0, info(20, 0), 0, &[]),
            |k| matches!(k, ErrorKind::UnknownKind { kind: 20, .. }),
            24,
        ),
        (
            "unknown kind 0",
            one_type(0, 0, 0, &[]),
            |k| matches!(k, ErrorKind::UnknownKind { kind: 0, .. }),
            24,
        ),
        (
            "truncated type record",
            with(&|b| put(b, 12, 5)),
            |k| {
                matches!(
                    k,
                    ErrorKind::Truncated {
                        what: "type record",
                        needed: 12,
                        available: 5
                    }
                )
            },
            24,
        ),
    ];
    for (what, blob, expected, offset) in cases {
        let err = Btf::parse(&blob).expect_err(what);
        assert!(expected(err.kind()), "{what}: got {err}");
        assert_eq!(err.offset(), offset, "{what}: offset of {err}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn bad_references_and_names_fail_when_read() {
    let info = |kind: u32, vlen: u32| kind << 24 | vlen;
    // A pointer to type 99 and a typedef named at an offset past the strings.
    let mut b = Builder::new(Endian::Little);
    b.add_raw(0, info(2, 0), 99, &[]); // 1
    b.add_raw(1000, info(8, 0), 1, &[]); // 2
    let bad_utf8 = {
        let mut s = Builder::new(Endian::Little);
        let off = s.string("\u{e9}");
        s.add_raw(off.0, info(8, 0), 0, &[]);
        let mut blob = s.finish();
        let at = blob.len() - 3;
        blob[at] = 0xff; // not a UTF-8 lead byte
        blob
    };
    let blob = b.finish();
    let btf = Btf::parse(&blob).expect("parse: references are checked when followed");
    let kind = |r: Result<TypeId, crate::Error>| r.map_err(|e| e.kind());
    assert_eq!(
        kind(
            btf.resolve(TypeId(1))
                .and_then(|_| btf.type_by_id(TypeId(99)).map(|t| t.id()))
        ),
        Err(ErrorKind::TypeIdOutOfRange { id: TypeId(99) })
    );
    assert!(matches!(
        btf.size_of(TypeId(2)).map_err(|e| e.kind()),
        Ok(8)
    ));
    assert_eq!(
        btf.type_by_id(TypeId(2))
            .expect("typedef")
            .name()
            .map_err(|e| e.kind()),
        Err(ErrorKind::StringOffsetOutOfRange {
            off: StrOffset(1000)
        })
    );
    assert!(
        write_raw_dump(&btf, &mut Vec::new()).is_err(),
        "dump fails on a bad name"
    );
    let btf = Btf::parse(&bad_utf8).expect("parse");
    assert!(matches!(
        btf.type_by_id(TypeId(1))
            .expect("typedef")
            .name()
            .map_err(|e| e.kind()),
        Err(ErrorKind::InvalidUtf8 { .. })
    ));
    assert_eq!(
        btf.type_by_id(TypeId(0))
            .map(|t| t.id())
            .map_err(|e| e.kind()),
        Err(ErrorKind::Void)
    );
}

#[test]
fn huge_arrays_overflow() {
    let mut b = Builder::new(Endian::Little);
    let (int, s, f, g) = (b.string("int"), b.string("s"), b.string("f"), b.string("g"));
    b.add(int, Kind::Int, false, 0, 4, &[int_word(1, 0, 32)]); // 1
    b.add(StrOffset(0), Kind::Array, false, 0, 0, &[1, 1, u32::MAX]); // 2: int[u32::MAX]
    b.add(s, Kind::Struct, false, 1, 0, &[f.0, 2, 0]); // 3
    b.add(StrOffset(0), Kind::Array, false, 0, 0, &[1, 1, 1 << 20]); // 4: int[1 << 20]
    b.add(g, Kind::Struct, false, 1, 4 << 20, &[f.0, 4, 0]); // 5
    let blob = b.finish();
    let btf = Btf::parse(&blob).expect("parse");
    assert!(matches!(
        btf.size_of(TypeId(2)).map_err(|e| e.kind()),
        Err(ErrorKind::Overflow { .. })
    ));
    // A struct's size is its record's, whatever its members claim.
    assert_eq!(btf.size_of(TypeId(3)), Ok(0));
    assert_eq!(btf.size_of(TypeId(5)), Ok(4 << 20));
}

proptest! {
    #[test]
    fn truncated_blobs_never_panic(len in 0usize..2000, big in any::<bool>()) {
        let blob = every_kind(if big { Endian::Big } else { Endian::Little });
        let cut = &blob[..len.min(blob.len())];
        if let Ok(btf) = Btf::parse(cut)
            && let Some(dump) = walk(&btf)
        {
            prop_assert!(dump_is_whole(&btf, &dump));
        }
    }

    #[test]
    fn corrupted_blobs_never_panic(at in 0usize..2000, byte in any::<u8>(), big in any::<bool>()) {
        let mut blob = every_kind(if big { Endian::Big } else { Endian::Little });
        let at = at % blob.len();
        blob[at] = byte;
        if let Ok(btf) = Btf::parse(&blob)
            && let Some(dump) = walk(&btf)
        {
            prop_assert!(dump_is_whole(&btf, &dump));
        }
    }
}

#[test]
fn copying_every_type_swaps_byte_order_losslessly() {
    for (from, to) in [(Endian::Little, Endian::Big), (Endian::Big, Endian::Little)] {
        let blob = every_kind(from);
        let btf = Btf::parse(&blob).expect("parse");
        let mut b = Builder::new(to);
        for (_, t) in btf.types() {
            b.add_copy(&t, &|id| id).expect("copy");
        }
        assert_eq!(b.finish(), every_kind(to), "{from:?} -> {to:?}");
    }
}

/// The fuzz seed corpus (fuzz/seeds/btf_parse) holds these blobs, and the root tests
/// diff their dumps with bpftool's. `HANDOVER_BLESS=1` rewrites them.
#[test]
fn fuzz_seeds_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/btf_parse");
    for (name, blob) in [
        ("every_kind_le.btf", every_kind(Endian::Little)),
        ("every_kind_be.btf", every_kind(Endian::Big)),
    ] {
        let path = dir.join(name);
        if std::env::var_os("HANDOVER_BLESS").is_some() {
            std::fs::create_dir_all(&dir).expect("seed dir");
            std::fs::write(&path, &blob).expect("write seed");
        }
        let seed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            seed == blob,
            "{} is stale: rerun with HANDOVER_BLESS=1",
            path.display()
        );
    }
}

/// Every name the parser hands out is a slice of the input blob, not a copy: type,
/// member, enum value and parameter names, and `string_at`, in both byte orders.
#[test]
fn names_are_slices_of_the_input() {
    for endian in [Endian::Little, Endian::Big] {
        let blob = every_kind(endian);
        let range = blob.as_ptr_range();
        let inside = |s: &str| {
            let r = s.as_bytes().as_ptr_range();
            range.start <= r.start && r.end <= range.end
        };
        let btf = Btf::parse(&blob).expect("parse");
        let mut named = 0;
        let mut check = |s: &str| {
            assert!(inside(s), "{s:?} is not a slice of the input");
            named += usize::from(!s.is_empty());
        };
        for (_, t) in btf.types() {
            check(t.name().expect("name"));
            match t.detail() {
                Detail::Struct(c) | Detail::Union(c) => {
                    c.members.for_each(|m| check(m.name().expect("member")));
                }
                Detail::Enum(e) | Detail::Enum64(e) => {
                    e.values.for_each(|v| check(v.name().expect("value")));
                }
                Detail::FuncProto(p) => p.params.for_each(|p| check(p.name().expect("param"))),
                _ => {}
            }
        }
        check(btf.string_at(StrOffset(1)).expect("string"));
        assert!(named >= 39, "only {named} names checked");
        assert!(std::ptr::eq(btf.raw(), blob.as_slice()));
    }
}

/// Faults that parse but show when a reference is followed: each gives its specific error
/// at the byte offset of the record holding the bad reference (or, for a cycle, of the
/// record the walk started from).
#[test]
fn dangling_references_and_cycles_give_their_error_at_the_faulty_record() {
    let info = |kind: u32, vlen: u32| kind << 24 | vlen;
    let mut b = Builder::new(Endian::Little);
    let (int, lp, s, f) = (
        b.string("int"),
        b.string("loop"),
        b.string("s"),
        b.string("f"),
    );
    b.add(int, Kind::Int, false, 0, 4, &[int_word(1, 0, 32)]); // 1: at 24, 16 bytes
    b.add_raw(0, info(8, 0), 99, &[]); // 2: typedef -> 99, at 40
    b.add_raw(lp.0, info(8, 0), 3, &[]); // 3: typedef loop loop; at 52
    b.add_raw(s.0, info(4, 1), 4, &[f.0, 99, 0]); // 4: struct s { <99> f; }, at 64
    b.add_raw(0, info(3, 0), 0, &[99, 1, 2]); // 5: <99>[2], at 88
    b.add_raw(1000, info(8, 0), 1, &[]); // 6: typedef named at 1000, at 112
    b.add_raw(0, info(10, 0), 8, &[]); // 7: const -> 8, at 124
    b.add_raw(0, info(9, 0), 7, &[]); // 8: volatile -> 7, at 136
    let blob = b.finish();
    let btf = Btf::parse(&blob).expect("references are checked when followed");
    let at = |id: u32| btf.type_by_id(TypeId(id)).expect("record").offset();
    assert_eq!(
        (1..=8).map(at).collect::<Vec<_>>(),
        [24, 40, 52, 64, 88, 112, 124, 136]
    );
    let out = ErrorKind::TypeIdOutOfRange { id: TypeId(99) };
    let cycle = |id| ErrorKind::ReferenceDepth { id: TypeId(id) };
    let size = |id| btf.size_of(TypeId(id)).map(|_| ());
    let align = |id| btf.align_of(TypeId(id)).map(|_| ());
    let resolve = |id| btf.resolve(TypeId(id)).map(|_| ());
    let cases: Vec<(&str, Result<(), crate::Error>, ErrorKind, usize)> = vec![
        ("typedef to id 99: resolve", resolve(2), out, 40),
        ("typedef to id 99: size", size(2), out, 40),
        ("typedef to id 99: align", align(2), out, 40),
        ("member of type 99: align", align(4), out, 64),
        ("array of type 99: size", size(5), out, 88),
        ("array of type 99: align", align(5), out, 88),
        (
            "self-referencing typedef: resolve",
            resolve(3),
            cycle(3),
            52,
        ),
        ("self-referencing typedef: size", size(3), cycle(3), 52),
        ("self-referencing typedef: align", align(3), cycle(3), 52),
        ("const/volatile cycle: resolve", resolve(7), cycle(7), 124),
        ("const/volatile cycle: size", size(8), cycle(8), 136),
        (
            "name offset past the strings",
            btf.type_by_id(TypeId(6)).and_then(|t| t.name()).map(|_| ()),
            ErrorKind::StringOffsetOutOfRange {
                off: StrOffset(1000),
            },
            112,
        ),
        (
            "id 99 asked for directly: the type section",
            btf.type_by_id(TypeId(99)).map(|_| ()),
            out,
            24,
        ),
    ];
    for (what, result, kind, offset) in cases {
        let err = result.expect_err(what);
        assert_eq!((err.kind(), err.offset()), (kind, offset), "{what}: {err}");
    }
}
