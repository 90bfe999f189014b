//! Verdict rules on hand-built map models, one row per rule of seed 000 and of the
//! `migrate` policy, and per map type.

#![allow(
    clippy::indexing_slicing,
    reason = "test code: an out-of-range index is a failed test"
)]

mod common;

use common::*;
use handover::{FieldAction, MapModel, Policy, Verdict, diff_map};

fn flow() -> TypeLayout {
    cstruct(
        Some("flow"),
        vec![("saddr", u32_()), ("daddr", u32_()), ("port", u16_())],
    )
}
fn stats() -> TypeLayout {
    cstruct(Some("stats"), vec![("packets", u64_()), ("bytes", u32_())])
}
fn base() -> MapModel {
    map("conns", "hash", flow(), stats(), 1024)
}

use handover::TypeLayout;

fn with(f: impl FnOnce(&mut MapModel)) -> MapModel {
    let mut m = base();
    f(&mut m);
    m
}

fn set_value(m: &mut MapModel, v: TypeLayout) {
    m.value_size = u32::try_from(v.size().unwrap()).unwrap();
    m.value = Some(v);
}
fn set_key(m: &mut MapModel, k: TypeLayout) {
    m.key_size = u32::try_from(k.size().unwrap()).unwrap();
    m.key = Some(k);
}

struct Case {
    rule: &'static str,
    new: MapModel,
    strict: (Verdict, bool),
    migrate: (Verdict, bool),
}

fn cases() -> Vec<Case> {
    use Verdict::*;
    vec![
        Case {
            rule: "unchanged",
            new: base(),
            strict: (Reuse, false),
            migrate: (Reuse, false),
        },
        Case {
            rule: "capacity increase",
            new: with(|m| m.max_entries = 4096),
            strict: (Reuse, false),
            migrate: (Grow, false),
        },
        Case {
            rule: "capacity decrease",
            new: with(|m| m.max_entries = 16),
            strict: (Recreate, true),
            migrate: (Shrink, true),
        },
        Case {
            rule: "typedef-only rename of the value",
            new: with(|m| m.value = Some(typedef("stats_t", stats()))),
            strict: (Reuse, false),
            migrate: (Reuse, false),
        },
        Case {
            rule: "anonymous value struct with the same layout",
            new: with(|m| {
                m.value = Some(cstruct(None, vec![("packets", u64_()), ("bytes", u32_())]));
            }),
            strict: (Reuse, false),
            migrate: (Reuse, false),
        },
        Case {
            rule: "value field widened (value size change)",
            new: with(|m| {
                set_value(
                    m,
                    cstruct(Some("stats"), vec![("packets", u64_()), ("bytes", u64_())]),
                )
            }),
            strict: (Recreate, true),
            migrate: (Migrate, false),
        },
        Case {
            rule: "value field added",
            new: with(|m| {
                set_value(
                    m,
                    cstruct(
                        Some("stats"),
                        vec![("packets", u64_()), ("bytes", u32_()), ("drops", u32_())],
                    ),
                );
            }),
            strict: (Recreate, true),
            migrate: (Migrate, false),
        },
        Case {
            rule: "value fields reordered (same size)",
            new: with(|m| {
                set_value(
                    m,
                    cstruct(Some("stats"), vec![("bytes", u32_()), ("packets", u64_())]),
                )
            }),
            strict: (Recreate, true),
            migrate: (Migrate, false),
        },
        Case {
            rule: "value field renamed (same size)",
            new: with(|m| {
                set_value(
                    m,
                    cstruct(Some("stats"), vec![("packets", u64_()), ("octets", u32_())]),
                )
            }),
            strict: (Recreate, true),
            migrate: (Migrate, false),
        },
        Case {
            rule: "nested struct changed",
            new: with(|m| {
                let inner = cstruct(Some("inner"), vec![("a", u32_()), ("b", u32_())]);
                set_value(
                    m,
                    cstruct(
                        Some("stats"),
                        vec![("packets", u64_()), ("bytes", u32_()), ("in", inner)],
                    ),
                );
            }),
            strict: (Recreate, true),
            migrate: (Migrate, false),
        },
        Case {
            rule: "key field widened",
            new: with(|m| {
                set_key(
                    m,
                    cstruct(
                        Some("flow"),
                        vec![("saddr", u32_()), ("daddr", u32_()), ("port", u32_())],
                    ),
                );
            }),
            strict: (Recreate, true),
            migrate: (Rekey, false),
        },
        Case {
            rule: "key field added (cannot be derived)",
            new: with(|m| {
                set_key(
                    m,
                    cstruct(
                        Some("flow"),
                        vec![
                            ("saddr", u32_()),
                            ("daddr", u32_()),
                            ("port", u16_()),
                            ("proto", u8_()),
                        ],
                    ),
                );
            }),
            strict: (Recreate, true),
            migrate: (Recreate, true),
        },
        Case {
            rule: "key field dropped (keys would collide)",
            new: with(|m| {
                set_key(
                    m,
                    cstruct(Some("flow"), vec![("saddr", u32_()), ("daddr", u32_())]),
                )
            }),
            strict: (Recreate, true),
            migrate: (Recreate, true),
        },
        Case {
            rule: "key field narrowed",
            new: with(|m| {
                set_key(
                    m,
                    cstruct(
                        Some("flow"),
                        vec![("saddr", u32_()), ("daddr", u32_()), ("port", u8_())],
                    ),
                );
            }),
            strict: (Recreate, true),
            migrate: (Recreate, true),
        },
        Case {
            rule: "hash to lru_hash (one family)",
            new: with(|m| m.map_type = handover::MapType::LruHash),
            strict: (Recreate, true),
            migrate: (Migrate, false),
        },
        Case {
            rule: "hash to array (map type change)",
            new: with(|m| {
                m.map_type = handover::MapType::Array;
                set_key(m, u32_());
            }),
            strict: (Recreate, true),
            migrate: (Recreate, true),
        },
        Case {
            rule: "flags change",
            new: with(|m| m.flags = 1),
            strict: (Recreate, true),
            migrate: (Migrate, false),
        },
        Case {
            rule: "pinning change only",
            new: with(|m| m.pinning = handover::Pinning::None),
            strict: (Reuse, false),
            migrate: (Reuse, false),
        },
        Case {
            rule: "value without BTF, same size",
            new: with(|m| m.value = None),
            strict: (Reuse, false),
            migrate: (Reuse, false),
        },
        Case {
            rule: "value without BTF, size change",
            new: with(|m| {
                m.value = None;
                m.value_size = 24;
            }),
            strict: (Recreate, true),
            migrate: (Recreate, true),
        },
        Case {
            rule: "grow and migrate at once",
            new: with(|m| {
                m.max_entries = 2048;
                set_value(
                    m,
                    cstruct(Some("stats"), vec![("packets", u64_()), ("bytes", u64_())]),
                );
            }),
            strict: (Recreate, true),
            migrate: (Migrate, false),
        },
    ]
}

#[test]
fn every_rule_under_both_policies() {
    let old = base();
    for c in cases() {
        for (policy, (verdict, loses)) in [(Policy::Strict, c.strict), (Policy::Migrate, c.migrate)]
        {
            let d = diff_map(Some(&old), Some(&c.new), policy, &ENV);
            assert_eq!(
                (d.verdict, d.loses_entries),
                (verdict, loses),
                "{}: {policy:?}: {d:#?}",
                c.rule
            );
        }
    }
}

#[test]
fn new_and_removed_maps_lose_nothing() {
    let d = diff_map(None, Some(&base()), Policy::Migrate, &ENV);
    assert_eq!((d.verdict, d.loses_entries), (Verdict::New, false));
    let d = diff_map(Some(&base()), None, Policy::Strict, &ENV);
    assert_eq!((d.verdict, d.loses_entries), (Verdict::Removed, false));
}

#[test]
fn migrate_reports_every_field_action() {
    let new = with(|m| {
        set_value(
            m,
            cstruct(
                Some("stats"),
                vec![("packets", u64_()), ("bytes", u64_()), ("drops", u32_())],
            ),
        );
    });
    let old = with(|m| {
        set_value(
            m,
            cstruct(
                Some("stats"),
                vec![("packets", u64_()), ("bytes", u32_()), ("legacy", u32_())],
            ),
        );
    });
    let d = diff_map(Some(&old), Some(&new), Policy::Migrate, &ENV);
    let actions: Vec<(&str, FieldAction)> = d
        .fields
        .iter()
        .map(|f| (f.path.as_str(), f.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("packets", FieldAction::Copy),
            ("bytes", FieldAction::Widen),
            ("drops", FieldAction::ZeroFill),
            ("legacy", FieldAction::Drop),
        ]
    );
    assert!(d.value_plan.is_some() && d.key_plan.is_some());
}

#[test]
fn signedness_rules_for_widening() {
    // unsigned -> wider signed carries; signed -> unsigned does not.
    let v = |t: TypeLayout| with(|m| set_value(m, cstruct(Some("stats"), vec![("x", t)])));
    let widen = diff_map(Some(&v(u32_())), Some(&v(i64_())), Policy::Migrate, &ENV);
    assert_eq!(widen.fields[0].action, FieldAction::Widen);
    let signed_to_unsigned = diff_map(Some(&v(i32_())), Some(&v(u64_())), Policy::Migrate, &ENV);
    let acts: Vec<_> = signed_to_unsigned.fields.iter().map(|f| f.action).collect();
    assert_eq!(acts, [FieldAction::ZeroFill, FieldAction::Drop]);
    let same_size_sign_flip = diff_map(Some(&v(u32_())), Some(&v(i32_())), Policy::Migrate, &ENV);
    assert_eq!(same_size_sign_flip.verdict, Verdict::Migrate);
    assert_eq!(same_size_sign_flip.fields[0].action, FieldAction::ZeroFill);
}

#[test]
fn enum_rules() {
    let v = |t: TypeLayout| with(|m| set_value(m, cstruct(Some("stats"), vec![("state", t)])));
    let old = v(enum_("state", &[("IDLE", 0), ("BUSY", 1)]));
    let added = v(enum_("state", &[("IDLE", 0), ("BUSY", 1), ("DEAD", 2)]));
    assert_eq!(
        diff_map(Some(&old), Some(&added), Policy::Strict, &ENV).verdict,
        Verdict::Reuse
    );
    let renumbered = v(enum_("state", &[("IDLE", 1), ("BUSY", 0)]));
    let d = diff_map(Some(&old), Some(&renumbered), Policy::Migrate, &ENV);
    assert_eq!(d.verdict, Verdict::Migrate);
    assert_eq!(d.fields[0].action, FieldAction::ZeroFill);
}

#[test]
fn per_map_type_rules() {
    use Verdict::*;
    let fd_map = |t: &str| {
        let mut m = map("m", t, u32_(), u32_(), 8);
        m.key = None;
        m.value = None;
        m
    };
    // (map type, change, migrate verdict, loses entries)
    let rows: Vec<(&str, MapModel, MapModel, Verdict, bool)> = vec![
        (
            "prog_array unchanged",
            fd_map("prog_array"),
            fd_map("prog_array"),
            Recreate,
            false,
        ),
        (
            "sockmap unchanged",
            fd_map("sockmap"),
            fd_map("sockmap"),
            Reuse,
            false,
        ),
        (
            "sockmap grows",
            fd_map("sockhash"),
            {
                let mut m = fd_map("sockhash");
                m.max_entries = 64;
                m
            },
            Reuse,
            false,
        ),
        (
            "sockmap shrinks",
            fd_map("sockmap"),
            {
                let mut m = fd_map("sockmap");
                m.max_entries = 4;
                m
            },
            Recreate,
            true,
        ),
        (
            "ringbuf resized",
            {
                let mut m = fd_map("ringbuf");
                m.max_entries = 4096;
                m
            },
            {
                let mut m = fd_map("ringbuf");
                m.max_entries = 8192;
                m
            },
            Recreate,
            false,
        ),
        (
            "ringbuf same after rounding",
            {
                let mut m = fd_map("ringbuf");
                m.max_entries = 4000;
                m
            },
            {
                let mut m = fd_map("ringbuf");
                m.max_entries = 4096;
                m
            },
            Reuse,
            false,
        ),
        (
            "perf_event_array 0 vs nr cpus",
            {
                let mut m = fd_map("perf_event_array");
                m.max_entries = 0;
                m
            },
            {
                let mut m = fd_map("perf_event_array");
                m.max_entries = 4;
                m
            },
            Reuse,
            false,
        ),
        (
            "sk_storage value changed",
            {
                let mut m = map("s", "sk_storage", i32_(), u32_(), 0);
                m.flags = 1;
                m
            },
            {
                let mut m = map("s", "sk_storage", i32_(), u64_(), 0);
                m.flags = 1;
                m
            },
            Recreate,
            true,
        ),
        (
            "array to percpu_array",
            map("a", "array", u32_(), u64_(), 4),
            map("a", "percpu_array", u32_(), u64_(), 4),
            Recreate,
            true,
        ),
        (
            "percpu_hash to lru_percpu_hash",
            map("a", "percpu_hash", u32_(), u64_(), 4),
            map("a", "lru_percpu_hash", u32_(), u64_(), 4),
            Migrate,
            false,
        ),
        (
            "array key changed",
            map("a", "array", u32_(), u64_(), 4),
            map("a", "array", u64_(), u64_(), 4),
            Recreate,
            true,
        ),
        (
            ".rodata always new",
            map(".rodata", "array", u32_(), u64_(), 1),
            map(".rodata", "array", u32_(), u64_(), 1),
            Recreate,
            false,
        ),
        (
            "devmap flag set by the kernel",
            fd_map("devmap"),
            {
                let mut m = fd_map("devmap");
                m.flags = handover::BPF_F_RDONLY_PROG;
                m
            },
            Reuse,
            false,
        ),
        (
            "bloom filter changed",
            fd_map("bloom_filter"),
            {
                let mut m = fd_map("bloom_filter");
                m.value_size = 8;
                m
            },
            Recreate,
            true,
        ),
    ];
    for (rule, old, new, verdict, loses) in rows {
        let d = diff_map(Some(&old), Some(&new), Policy::Migrate, &ENV);
        assert_eq!(
            (d.verdict, d.loses_entries),
            (verdict, loses),
            "{rule}: {d:#?}"
        );
    }
}

#[test]
fn big_endian_objects_are_not_converted() {
    use handover::{Endian, ObjectModel, diff_objects};
    let object = |endian, m: MapModel| ObjectModel {
        name: "o".into(),
        sha256: String::new(),
        endian,
        maps: vec![m],
    };
    let widened = with(|m| {
        set_value(
            m,
            cstruct(Some("stats"), vec![("packets", u64_()), ("bytes", u64_())]),
        );
    });
    let grown = with(|m| m.max_entries = 4096);
    for (endian, new, verdict) in [
        (Endian::Little, widened.clone(), Verdict::Migrate),
        (Endian::Big, widened, Verdict::Recreate),
        // Whole bytes move unchanged: fine in either byte order.
        (Endian::Big, grown, Verdict::Grow),
    ] {
        let r = diff_objects(
            &[object(endian, base())],
            &[object(endian, new)],
            Policy::Migrate,
            &ENV,
        );
        assert_eq!(r.maps[0].verdict, verdict, "{endian:?}");
    }
}

#[test]
fn socket_and_outer_map_keys_are_mapped_only_where_every_field_carries() {
    let reordered = || {
        cstruct(
            Some("flow"),
            vec![("port", u32_()), ("daddr", u32_()), ("saddr", u32_())],
        )
    };
    let with_zone = || {
        cstruct(
            Some("flow"),
            vec![
                ("saddr", u32_()),
                ("daddr", u32_()),
                ("port", u16_()),
                ("zone", u16_()),
            ],
        )
    };
    // (map type, new key, a key mapping kept)
    let rows = [
        ("sockhash", reordered(), true),
        ("hash_of_maps", reordered(), true),
        // A field the old key lacks cannot be derived: keys would not be found.
        ("sockhash", with_zone(), false),
        // A sockmap's key is an index.
        ("sockmap", u64_(), false),
    ];
    for (t, new_key, mapped) in rows {
        let old = map("m", t, flow(), u64_(), 64);
        let mut new = old.clone();
        set_key(&mut new, new_key);
        if t == "sockmap" {
            set_key(&mut new, u32_());
            new.key_size = 4;
        }
        let d = diff_map(Some(&old), Some(&new), Policy::Migrate, &ENV);
        // The diff alone cannot carry references: the engine decides (engine/src/carry.rs).
        assert_eq!(d.verdict, Verdict::Recreate, "{t}");
        assert!(d.loses_entries, "{t}");
        assert_eq!(d.key_plan.is_some(), mapped, "{t}: {:?}", d.notes);
        if let Some(plan) = &d.key_plan {
            let old_key: Vec<u8> = (1..=12).collect();
            let new_key = handover::convert(plan, &old_key).unwrap();
            assert_eq!(new_key.len(), 12, "{t}");
            // The 16-bit port widened (the old key's padding is not carried), the
            // addresses moved.
            assert_eq!(&new_key[0..4], &[9, 10, 0, 0], "{t}: port");
            assert_eq!(&new_key[4..8], &old_key[4..8], "{t}: daddr");
            assert_eq!(&new_key[8..12], &old_key[0..4], "{t}: saddr");
        }
    }
    // Strict carries nothing.
    let old = map("m", "sockhash", flow(), u64_(), 64);
    let mut new = old.clone();
    set_key(&mut new, reordered());
    assert!(
        diff_map(Some(&old), Some(&new), Policy::Strict, &ENV)
            .key_plan
            .is_none()
    );
}
