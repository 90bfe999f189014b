//! The attributes the kernel (or the loader, on the kernel's behalf) changes when it
//! creates a map, gathered in one table.
//!
//! Both sides of a comparison are passed through [`kernel_view`] first, so that a
//! spec and the live map created from it (or two specs the kernel turns into the same
//! map) never look different. Each row of [`ADJUSTMENTS`] has its own test.

use handover_loader::ringbuf_size;
use handover_uapi::{MapType, created_map_name, map_flags};

use crate::spec::model::MapModel;

/// `BPF_F_RDONLY_PROG`: programs may only read the map.
pub const BPF_F_RDONLY_PROG: u32 = map_flags::RDONLY_PROG;
/// `BPF_F_NO_PREALLOC`: elements are allocated on update.
pub const BPF_F_NO_PREALLOC: u32 = map_flags::NO_PREALLOC;
/// Longest map name the kernel keeps (`BPF_OBJ_NAME_LEN` less the terminating NUL).
pub use handover_uapi::KERNEL_NAME_LEN;

/// Facts about the running machine that some adjustments depend on (read by
/// `handover::kernel_env`; given as a value here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelEnv {
    /// Page size in bytes (a power of two).
    pub page_size: u32,
    /// Number of possible CPUs.
    pub possible_cpus: u32,
}

/// One attribute the kernel adjusts.
#[derive(Debug, Clone, Copy)]
pub struct Adjustment {
    /// Which map types the row applies to (empty: all).
    pub map_types: &'static [MapType],
    /// Attribute changed.
    pub field: &'static str,
    /// What happens, in one sentence.
    pub rule: &'static str,
    apply: fn(&mut MapModel, &View<'_>),
}

/// What a row may depend on: the machine, and the name of the map's object.
struct View<'a> {
    page_size: u32,
    possible_cpus: u32,
    object: Option<&'a str>,
}

/// Every adjustment, in the order it is applied.
pub const ADJUSTMENTS: &[Adjustment] = &[
    Adjustment {
        map_types: &[],
        field: "name",
        rule: "the loader gives the kernel the first 15 bytes of a map name, every byte the kernel refuses as '_'; a global data map of a named object gets libbpf's name (the object name's start, then the section's)",
        apply: |m, view| m.name = created_map_name(view.object, &m.name),
    },
    Adjustment {
        map_types: &[MapType::Ringbuf, MapType::UserRingbuf],
        field: "max_entries",
        rule: "the ring size is rounded up to a power of two that is at least one page",
        apply: |m, env| m.max_entries = ringbuf_size(m.max_entries.max(1), env.page_size),
    },
    Adjustment {
        map_types: &[MapType::Ringbuf, MapType::UserRingbuf],
        field: "key_size/value_size",
        rule: "ring buffers have neither key nor value",
        apply: |m, _| {
            m.key_size = 0;
            m.value_size = 0;
            m.key = None;
            m.value = None;
        },
    },
    Adjustment {
        map_types: &[MapType::PerfEventArray],
        field: "max_entries",
        rule: "0 becomes the number of possible CPUs (the loader sizes it; the kernel keeps any other capacity)",
        apply: |m, env| {
            if m.max_entries == 0 {
                m.max_entries = env.possible_cpus;
            }
        },
    },
    Adjustment {
        map_types: &[
            MapType::PerfEventArray,
            MapType::ProgArray,
            MapType::CgroupArray,
            MapType::ArrayOfMaps,
            MapType::HashOfMaps,
        ],
        field: "value_size",
        rule: "a value is a 4-byte file descriptor, whatever type the source declared",
        apply: |m, _| {
            m.value_size = 4;
            m.value = None;
        },
    },
    Adjustment {
        map_types: &[MapType::Devmap, MapType::DevmapHash],
        field: "flags",
        rule: "the kernel sets BPF_F_RDONLY_PROG on device maps",
        apply: |m, _| m.flags |= BPF_F_RDONLY_PROG,
    },
    Adjustment {
        map_types: &[MapType::LpmTrie],
        field: "flags",
        rule: "an LPM trie is always created with BPF_F_NO_PREALLOC",
        apply: |m, _| m.flags |= BPF_F_NO_PREALLOC,
    },
    Adjustment {
        map_types: &[
            MapType::SkStorage,
            MapType::InodeStorage,
            MapType::TaskStorage,
            MapType::CgrpStorage,
            MapType::CgroupStorage,
            MapType::PercpuCgroupStorage,
        ],
        field: "max_entries",
        rule: "local storage has no capacity: max_entries is 0",
        apply: |m, _| m.max_entries = 0,
    },
    Adjustment {
        map_types: &[MapType::BloomFilter],
        field: "map_extra",
        rule: "the hash count is the low 4 bits of map_extra; 0 means 5",
        apply: |m, _| {
            m.map_extra &= 0xf;
            if m.map_extra == 0 {
                m.map_extra = 5;
            }
        },
    },
];

/// The map as the kernel will report it once created: every row of [`ADJUSTMENTS`]
/// applied, recursively to an inner map. Global data maps are named as the loader
/// names them without an object name; see [`kernel_view_of`].
#[must_use]
pub fn kernel_view(map: &MapModel, env: &KernelEnv) -> MapModel {
    kernel_view_of(None, map, env)
}

/// [`kernel_view`] of a map of the object named `object` (libbpf's object name, the
/// file name up to its first `.`), as the loader creates it when given that name
/// (`LoadOptions::object_name`): global data maps get libbpf's names.
#[must_use]
pub fn kernel_view_of(object: Option<&str>, map: &MapModel, env: &KernelEnv) -> MapModel {
    let view = View {
        page_size: env.page_size,
        possible_cpus: env.possible_cpus,
        object,
    };
    let mut m = map.clone();
    for row in ADJUSTMENTS {
        if row.map_types.is_empty() || row.map_types.contains(&m.map_type) {
            (row.apply)(&mut m, &view);
        }
    }
    if let Some(inner) = m.inner.take() {
        m.inner = Some(Box::new(kernel_view_of(object, &inner, env)));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use handover_uapi::Pinning;

    const ENV: KernelEnv = KernelEnv {
        page_size: 4096,
        possible_cpus: 4,
    };

    fn map(map_type: &str) -> MapModel {
        MapModel {
            name: "m".into(),
            map_type: map_type.parse().expect("a kernel map type name"),
            key_size: 4,
            value_size: 8,
            max_entries: 16,
            flags: 0,
            map_extra: 0,
            pinning: Pinning::None,
            key: None,
            value: None,
            inner: None,
            initial_data: None,
        }
    }

    fn row(field: &str, map_type: &str) -> &'static Adjustment {
        ADJUSTMENTS
            .iter()
            .find(|r| {
                r.field == field
                    && (r.map_types.is_empty() || r.map_types.iter().any(|t| t.name() == map_type))
            })
            .expect("row exists")
    }

    #[test]
    fn every_row_is_tested() {
        // One test below per row; this count fails when a row is added without one.
        assert_eq!(ADJUSTMENTS.len(), 9);
    }

    #[test]
    fn name_is_truncated_to_15_bytes() {
        let _ = row("name", "hash");
        let mut m = map("hash");
        m.name = "a_very_long_map_name".into();
        assert_eq!(kernel_view(&m, &ENV).name, "a_very_long_map");
        let mut other = m.clone();
        other.name = "a_very_long_map_name_too".into();
        assert_eq!(kernel_view(&m, &ENV), kernel_view(&other, &ENV));
        // The one object-name rule (handover-uapi), as the loader names the map: a byte
        // outside [A-Za-z0-9_.] becomes '_', a character cut at byte 15 too.
        m.name = "my-map.v2".into();
        assert_eq!(kernel_view(&m, &ENV).name, "my_map.v2");
        m.name = "abcdefghijklmné".into();
        assert_eq!(kernel_view(&m, &ENV).name, "abcdefghijklmn_");
        assert_eq!(
            kernel_view(&m, &ENV).name,
            handover_uapi::kernel_name(&m.name)
        );
    }

    #[test]
    fn global_data_of_a_named_object_gets_libbpfs_name() {
        let mut m = map("array");
        m.name = ".rodata".into();
        assert_eq!(kernel_view(&m, &ENV).name, ".rodata");
        assert_eq!(
            kernel_view_of(Some("global_data"), &m, &ENV).name,
            "global_d.rodata"
        );
        m.name = "counters".into();
        assert_eq!(
            kernel_view_of(Some("global_data"), &m, &ENV).name,
            "counters"
        );
    }

    #[test]
    fn ringbuf_size_rounds_to_page_power_of_two() {
        let _ = row("max_entries", "ringbuf");
        let mut m = map("ringbuf");
        for (given, kernel) in [(1, 4096), (4000, 4096), (4097, 8192), (262_144, 262_144)] {
            m.max_entries = given;
            assert_eq!(kernel_view(&m, &ENV).max_entries, kernel, "{given}");
        }
    }

    #[test]
    fn ringbuf_has_no_key_or_value() {
        let _ = row("key_size/value_size", "ringbuf");
        let v = kernel_view(&map("user_ringbuf"), &ENV);
        assert_eq!((v.key_size, v.value_size), (0, 0));
    }

    #[test]
    fn perf_event_array_without_capacity_gets_one_slot_per_cpu() {
        let _ = row("max_entries", "perf_event_array");
        let mut m = map("perf_event_array");
        for (given, kernel) in [(0, 4), (2, 2), (4, 4)] {
            m.max_entries = given;
            assert_eq!(kernel_view(&m, &ENV).max_entries, kernel, "{given}");
        }
    }

    #[test]
    fn perf_event_array_above_the_cpu_count_is_not_clamped() {
        // The kernel keeps it as given (loader/tests/kernel_maps.rs,
        // perf_event_arrays_keep_a_capacity_above_the_cpu_count), so a change from
        // 128 to 64 is a change.
        let mut m = map("perf_event_array");
        for (given, kernel) in [(128, 128), (5, 5)] {
            m.max_entries = given;
            assert_eq!(kernel_view(&m, &ENV).max_entries, kernel, "{given}");
        }
    }

    #[test]
    fn fd_maps_have_four_byte_values() {
        let _ = row("value_size", "hash_of_maps");
        for t in [
            "array_of_maps",
            "hash_of_maps",
            "prog_array",
            "cgroup_array",
        ] {
            let mut m = map(t);
            m.value_size = 0;
            assert_eq!(kernel_view(&m, &ENV).value_size, 4, "{t}");
        }
    }

    #[test]
    fn devmaps_are_read_only_for_programs() {
        let _ = row("flags", "devmap");
        for t in ["devmap", "devmap_hash"] {
            assert_eq!(kernel_view(&map(t), &ENV).flags, BPF_F_RDONLY_PROG);
        }
        assert_eq!(kernel_view(&map("cpumap"), &ENV).flags, 0);
    }

    #[test]
    fn lpm_trie_is_never_preallocated() {
        let _ = row("flags", "lpm_trie");
        assert_eq!(kernel_view(&map("lpm_trie"), &ENV).flags, BPF_F_NO_PREALLOC);
    }

    #[test]
    fn local_storage_has_no_capacity() {
        let _ = row("max_entries", "sk_storage");
        assert_eq!(kernel_view(&map("sk_storage"), &ENV).max_entries, 0);
    }

    #[test]
    fn bloom_filter_hash_count_defaults_to_five() {
        let _ = row("map_extra", "bloom_filter");
        let mut m = map("bloom_filter");
        assert_eq!(kernel_view(&m, &ENV).map_extra, 5);
        m.map_extra = 3;
        assert_eq!(kernel_view(&m, &ENV).map_extra, 3);
    }
}
