//! How many entries a copy can put into a new map without the kernel dropping any:
//! the preflight refuses a copy whose live entry count exceeds it, with the counts,
//! before anything is created.
//!
//! A hash map takes `max_entries`. An LRU map evicts before it is full: its free
//! nodes are handed to each CPU in batches of [`LOCAL_FREE_TARGET`] (the kernel's
//! `bpf_lru_list.c`), and a CPU whose batch runs out while fewer than that many are
//! left globally evicts old entries to make up a batch. A copy writes LRU maps from
//! one thread, but the thread may move between CPUs, each leaving a partial batch
//! behind; so the copy is given the capacity less one batch per other CPU and less
//! the remainder that does not fill a batch. With `BPF_F_NO_COMMON_LRU` each CPU has
//! its own list of `max_entries / cpus` nodes, and the writing CPU's list is all the
//! copy can count on.

use crate::upstream::MapModel;
use handover_sys::{MapType, map_flags};

/// Free LRU nodes the kernel moves to a CPU's local list at a time.
pub(crate) const LOCAL_FREE_TARGET: u32 = 128;

/// Whether `t` is an LRU map type.
pub(crate) const fn is_lru(t: MapType) -> bool {
    matches!(t, MapType::LruHash | MapType::LruPercpuHash)
}

/// Entries a copy can write into a new map of `model` on `cpus` possible CPUs
/// without the kernel evicting any; `None` for arrays, whose slots always exist, and
/// sockmaps, whose keys are indexes too (a socket past the new capacity fails the
/// socket carry itself).
pub(crate) fn copy_capacity(model: &MapModel, cpus: u32) -> Option<u32> {
    let max = model.max_entries;
    match model.map_type {
        MapType::Array | MapType::PercpuArray | MapType::Sockmap | MapType::ArrayOfMaps => None,
        t if is_lru(t) && model.flags & map_flags::NO_COMMON_LRU != 0 => Some(max / cpus.max(1)),
        t if is_lru(t) => Some(
            max.saturating_sub(LOCAL_FREE_TARGET * cpus.saturating_sub(1))
                .saturating_sub(max % LOCAL_FREE_TARGET),
        ),
        _ => Some(max),
    }
}

/// Why [`copy_capacity`] is what it is, in words, for the refusal.
pub(crate) fn why(model: &MapModel, cpus: u32) -> String {
    if !is_lru(model.map_type) {
        return format!("max_entries {}", model.max_entries);
    }
    if model.flags & map_flags::NO_COMMON_LRU != 0 {
        format!(
            "an LRU map with BPF_F_NO_COMMON_LRU: max_entries {} over {cpus} CPUs, each CPU's \
             share is all a copy can count on",
            model.max_entries
        )
    } else {
        format!(
            "an LRU map of max_entries {} on {cpus} CPUs evicts before it is full: a free \
             batch of {LOCAL_FREE_TARGET} nodes may sit on each other CPU and a partial \
             batch evicts",
            model.max_entries
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(map_type: MapType, max_entries: u32, flags: u32) -> MapModel {
        MapModel {
            name: "m".into(),
            map_type,
            key_size: 4,
            value_size: 8,
            max_entries,
            flags,
            map_extra: 0,
            pinning: handover_plan::Pinning::None,
            key: None,
            value: None,
            inner: None,
            initial_data: None,
        }
    }

    #[test]
    fn an_lru_copy_keeps_one_batch_per_other_cpu_free() {
        assert_eq!(copy_capacity(&model(MapType::Hash, 1000, 0), 4), Some(1000));
        assert_eq!(copy_capacity(&model(MapType::Array, 8, 0), 4), None);
        // 1024 entries, 2 CPUs: one batch of 128 may sit on the other CPU.
        assert_eq!(
            copy_capacity(&model(MapType::LruHash, 1024, 0), 2),
            Some(896)
        );
        // 1000 = 7 batches and 104: the last partial batch evicts.
        assert_eq!(
            copy_capacity(&model(MapType::LruHash, 1000, 0), 1),
            Some(896)
        );
        assert_eq!(
            copy_capacity(&model(MapType::LruPercpuHash, 128, 0), 4),
            Some(0)
        );
        assert_eq!(
            copy_capacity(&model(MapType::LruHash, 1024, map_flags::NO_COMMON_LRU), 4),
            Some(256)
        );
    }
}
