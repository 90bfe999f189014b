//! How the entries of each map get into the new set: a [`Carry`] strategy per map,
//! decided by the plan before anything runs, from the map's type and value layout.
//!
//! The data path copies keys and values as bytes, converted. The sockets of a sockmap
//! or sockhash, which user space reads back as cookies and cannot insert again, are
//! carried by the kernel's sockmap iterator where the kernel has it ([`Carry::Sockets`]);
//! the inner maps of a map-in-map, read back as ids, are reopened and inserted by
//! descriptor where the new outer map takes them ([`Carry::InnerMaps`]).
//! What cannot be carried is said per type: sockets without that iterator, or of other
//! socket maps (`xskmap`, `reuseport_sockarray`), per-object local storage, inner maps
//! the new outer map's template refuses, queues and stacks
//! (reading pops), bloom filters (not readable); and, inside values it copies, the
//! fields the kernel manages itself and zeroes on every update from user space
//! (`bpf_timer`, `bpf_wq`, kptrs, `bpf_list_head`, `bpf_rb_root`). Where live state
//! would be lost the map's `loses_entries` is set, so that applying the plan needs
//! `allow_state_loss`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kernel::KernelFacts;
use crate::plan::{MapAction, MapPlan};
use crate::upstream::MapModel;
use handover_plan::{TypeLayout, same_layout};
use handover_sys::MapType;

/// What happens to the entries of one map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Carry {
    /// Nothing live to carry: a new map, a fresh install, a program array (always
    /// filled with the new programs), read-only data (the new object's).
    Fresh,
    /// The live map is kept with its entries.
    Keep,
    /// Every entry is copied by the data path, converted as planned.
    Copy,
    /// Every entry is copied, but these fields of the value are not: the kernel
    /// manages them and zeroes them on an update from user space, so the new
    /// programs start them again (a timer re-armed, a reference taken again).
    CopyWithout {
        /// The fields, by path and kind.
        fields: Vec<String>,
    },
    /// The sockets of a sockmap or sockhash, inserted into the new map under the same
    /// keys by a generated `iter/sockmap` program over the old map: at the copy, at
    /// each delta pass (sockets the old programs added since; those they removed are
    /// removed), and after the switch a last pass that adds and removes what the old
    /// programs changed, keeping what the new programs did.
    Sockets,
    /// The inner maps of a map-in-map, read back by id, reopened
    /// (`BPF_MAP_GET_FD_BY_ID`) and inserted into the new outer map under the same key,
    /// by the same passes as [`Carry::Sockets`]: the live inner maps, shared by both
    /// outer maps, keep their entries.
    InnerMaps,
    /// Ring buffer and perf event records: the old map stays readable until the
    /// release, so a reader drains what the old programs wrote; the new programs write
    /// to the new map from the switch on.
    Drain,
    /// The live entries are dropped: the new map starts empty.
    Lost {
        /// Why they cannot be carried.
        reason: String,
    },
}

impl fmt::Display for Carry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Carry::Fresh => f.write_str("nothing live to carry"),
            Carry::Keep => f.write_str("kept with its entries"),
            Carry::Copy => f.write_str("every entry copied"),
            Carry::CopyWithout { fields } => write!(
                f,
                "every entry copied except kernel-managed fields, which start empty: {}",
                fields.join(", ")
            ),
            Carry::Sockets => f.write_str(
                "sockets carried in the kernel by the sockmap iterator (copy, delta passes, \
                 and a last pass after the switch)",
            ),
            Carry::InnerMaps => f.write_str(
                "inner maps reopened by id and inserted into the new outer map (copy, delta \
                 passes, and a last pass after the switch)",
            ),
            Carry::Drain => f.write_str(
                "event records: the old map stays readable until the release, drain it; \
                 new records go to the new map",
            ),
            Carry::Lost { reason } => write!(f, "entries lost: {reason}"),
        }
    }
}

/// Why the data path cannot copy entries of `t`, if it cannot.
fn uncopyable(t: MapType) -> Option<&'static str> {
    Some(match t {
        MapType::Sockmap | MapType::Sockhash | MapType::Xskmap | MapType::ReuseportSockarray => {
            "entries are sockets, which the copy cannot insert again"
        }
        MapType::SkStorage
        | MapType::InodeStorage
        | MapType::TaskStorage
        | MapType::CgrpStorage
        | MapType::CgroupStorage
        | MapType::PercpuCgroupStorage => "local storage belongs to kernel objects",
        MapType::Queue | MapType::Stack => "reading a queue or stack pops its entries",
        MapType::BloomFilter => "a bloom filter cannot be read back",
        MapType::StructOps => "a struct_ops map is its programs, registered anew",
        MapType::Arena => "an arena is memory mapped by its programs, not entries",
        MapType::CgroupArray | MapType::Devmap | MapType::DevmapHash | MapType::Cpumap => {
            "entries are descriptors or program ids that a copy does not translate"
        }
        _ => return None,
    })
}

/// Whether a value layout holds a `struct bpf_spin_lock` (the kernel finds it by that
/// name in the map's BTF): its values are then read and written with `BPF_F_LOCK`,
/// each one whole under the lock the programs take.
fn has_spin_lock(layout: &TypeLayout) -> bool {
    fn walk(layout: &TypeLayout, depth: u32) -> bool {
        if depth > 32 {
            return false;
        }
        match layout {
            TypeLayout::Struct { name: Some(n), .. } if n == "bpf_spin_lock" => true,
            TypeLayout::Struct { members, .. } | TypeLayout::Union { members, .. } => {
                members.iter().any(|m| walk(&m.ty, depth + 1))
            }
            TypeLayout::Typedef { target, .. } => walk(target, depth + 1),
            _ => false,
        }
    }
    walk(layout, 0)
}

/// Whether the values of both versions of a map hold a `bpf_spin_lock`: the only
/// case where its entries are read and written with `BPF_F_LOCK`, which the kernel
/// refuses for a map without a lock.
pub(crate) fn values_locked(old: Option<&MapModel>, new: Option<&MapModel>) -> bool {
    let locked = |m: Option<&MapModel>| m.and_then(|m| m.value.as_ref()).is_some_and(has_spin_lock);
    locked(old) && locked(new)
}

/// Whether the values of either version of a map hold fields the kernel manages
/// (see [`managed_fields`]): its entries are then read and written by the kernel's
/// map commands only, which zero those fields, never by a generated program.
pub(crate) fn values_managed(old: Option<&MapModel>, new: Option<&MapModel>) -> bool {
    !managed_fields_of(old).is_empty() || !managed_fields_of(new).is_empty()
}

/// The kernel-managed fields of map `m`'s value, by path; none without a value layout.
fn managed_fields_of(m: Option<&MapModel>) -> Vec<String> {
    let mut fields = Vec::new();
    if let Some(v) = m.and_then(|m| m.value.as_ref()) {
        managed_fields(v, "", &mut fields, 0);
    }
    fields
}

/// Kernel-managed fields of a value layout, by path: structs the kernel knows by
/// name, and pointers (kptrs: a map value holds a pointer only as a kernel reference).
fn managed_fields(layout: &TypeLayout, path: &str, out: &mut Vec<String>, depth: u32) {
    if depth > 32 {
        return;
    }
    let at = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path} ({name})")
        }
    };
    match layout {
        TypeLayout::Struct { name: Some(n), .. }
            if matches!(
                n.as_str(),
                "bpf_timer" | "bpf_wq" | "bpf_list_head" | "bpf_rb_root" | "bpf_refcount"
            ) =>
        {
            out.push(at(n));
        }
        TypeLayout::Ptr { .. } => out.push(at("kptr")),
        TypeLayout::Struct { members, .. } | TypeLayout::Union { members, .. } => {
            for m in members {
                let name = m.name.as_deref().unwrap_or("");
                let p = match (path.is_empty(), name.is_empty()) {
                    (_, true) => path.to_owned(),
                    (true, false) => name.to_owned(),
                    (false, false) => format!("{path}.{name}"),
                };
                managed_fields(&m.ty, &p, out, depth + 1);
            }
        }
        TypeLayout::Array { elem, .. } => {
            managed_fields(elem, &format!("{path}[]"), out, depth + 1)
        }
        TypeLayout::Typedef { target, .. } => managed_fields(target, path, out, depth + 1),
        _ => {}
    }
}

fn is_socket_map(t: MapType) -> bool {
    matches!(t, MapType::Sockmap | MapType::Sockhash)
}

/// Whether the sockets of socket map `old` can be carried into `new` by the sockmap
/// iterator on a kernel with `facts`; why not if not. `rekeyed`: the plan converts
/// the keys (a mapping that carries every field), and each socket is inserted under
/// its converted key.
fn sockets_carried(
    old: &MapModel,
    new: Option<&MapModel>,
    facts: &KernelFacts,
    rekeyed: bool,
) -> Result<(), String> {
    let Some(new) = new else {
        return Err("the map is removed".to_owned());
    };
    if !facts.sockmap_iter {
        return Err(
            "entries are sockets, and this kernel has no sockmap iterator to carry them \
             (the probe attaching an iter/sockmap program failed; it needs Linux 5.10 with BTF)"
                .to_owned(),
        );
    }
    if old.map_type != new.map_type {
        return Err(format!(
            "entries are sockets, carried only between maps of one type, not from {} to {}",
            old.map_type, new.map_type
        ));
    }
    if rekeyed {
        return Ok(());
    }
    if old.key_size != new.key_size {
        return Err(format!(
            "entries are sockets, and the key size changes from {} to {} bytes with no key \
             mapping that carries every field (a sockmap's key is an index)",
            old.key_size, new.key_size
        ));
    }
    if let (Some(a), Some(b)) = (&old.key, &new.key)
        && !same_layout(a, b)
    {
        return Err(
            "entries are sockets, and the key layout changes with no key mapping that \
             carries every field (a sockmap's key is an index)"
                .to_owned(),
        );
    }
    Ok(())
}

/// Turns map `m`, a socket map whose sockets are carried, into a copy by the sockmap
/// iterator at the new capacity `max_entries`.
fn carry_sockets(m: &mut MapPlan, max_entries: u32, old_max: u32) -> Carry {
    m.action = MapAction::Copy;
    m.loses_entries = false;
    m.max_entries = max_entries;
    m.notes.retain(|n| {
        !n.starts_with("capacity grows: the live map is reused")
            && !n.contains("entries are sockets, which user space cannot insert again")
    });
    m.notes
        .push("sockets are carried into the new map by the kernel's sockmap iterator".to_owned());
    if m.key_plan.is_some() {
        m.notes
            .push("keys are converted: each socket is inserted under its converted key".to_owned());
    }
    if max_entries < old_max {
        m.notes.push(format!(
            "the capacity shrinks from {old_max} to {max_entries}: a socket that does not \
             fit fails the copy, and the upgrade is rolled back"
        ));
    }
    Carry::Sockets
}

fn is_map_in_map(t: MapType) -> bool {
    matches!(t, MapType::ArrayOfMaps | MapType::HashOfMaps)
}

/// Whether the live inner maps of map-in-map `old` fit the new outer map `new`, by
/// the rule the kernel applies when an inner map is inserted (`bpf_map_meta_equal`
/// and the map type's `map_meta_equal`): the same type, key size, value size, flags
/// and special fields of the value (compared as the value layouts), and for array
/// inner maps the same capacity unless the template has `BPF_F_INNER_MAP`; why not
/// if not. The outer keys keep their bytes unless `rekeyed` (the plan converts them,
/// by a mapping that carries every field).
fn inner_maps_carried(old: &MapModel, new: Option<&MapModel>, rekeyed: bool) -> Result<(), String> {
    let Some(new) = new else {
        return Err("the map is removed".to_owned());
    };
    if old.map_type != new.map_type {
        return Err(format!(
            "entries are inner maps, carried only between outer maps of one type, not from \
             {} to {}",
            old.map_type, new.map_type
        ));
    }
    if !rekeyed
        && (old.key_size != new.key_size
            || matches!((&old.key, &new.key), (Some(a), Some(b)) if !same_layout(a, b)))
    {
        return Err(
            "entries are inner maps, and the outer key changes with no key mapping that \
             carries every field (an array of maps' key is an index)"
                .to_owned(),
        );
    }
    let (Some(live), Some(template)) = (old.inner.as_deref(), new.inner.as_deref()) else {
        return Err(
            "entries are inner maps, and the inner map definition of either version is \
             unknown"
                .to_owned(),
        );
    };
    let mut differs = Vec::new();
    if live.map_type != template.map_type {
        differs.push(format!("type {} to {}", live.map_type, template.map_type));
    }
    if live.key_size != template.key_size {
        differs.push(format!(
            "key size {} to {}",
            live.key_size, template.key_size
        ));
    }
    if live.value_size != template.value_size {
        differs.push(format!(
            "value size {} to {}",
            live.value_size, template.value_size
        ));
    }
    if live.flags != template.flags {
        differs.push(format!("flags {:#x} to {:#x}", live.flags, template.flags));
    }
    if matches!((&live.value, &template.value), (Some(a), Some(b)) if !same_layout(a, b)) {
        differs.push("value layout".to_owned());
    }
    let array = matches!(
        template.map_type,
        MapType::Array | MapType::PercpuArray | MapType::ArrayOfMaps
    );
    if array
        && live.max_entries != template.max_entries
        && template.flags & handover_sys::map_flags::INNER_MAP == 0
    {
        differs.push(format!(
            "capacity {} to {} of an inner array without BPF_F_INNER_MAP",
            live.max_entries, template.max_entries
        ));
    }
    if differs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "entries are inner maps, and the kernel refuses the live ones in the new outer map \
             (bpf_map_meta_equal): the inner definition changes {}",
            differs.join(", ")
        ))
    }
}

/// Turns map `m`, a map-in-map whose inner maps are carried, into a copy by
/// descriptor at the new capacity `max_entries`.
fn carry_inner_maps(m: &mut MapPlan, max_entries: u32) -> Carry {
    m.action = MapAction::Copy;
    m.loses_entries = false;
    m.max_entries = max_entries;
    m.notes
        .retain(|n| !n.contains("the inner maps were made for the old inner definition"));
    m.notes.push(
        "the live inner maps fit the new outer map's template: each is reopened by id and \
         inserted"
            .to_owned(),
    );
    if m.key_plan.is_some() {
        m.notes.push(
            "keys are converted: each inner map is inserted under its converted key".to_owned(),
        );
    }
    Carry::InnerMaps
}

/// Decides the strategy of map `m` of an upgrade plan (the old map's model `old`,
/// the new one's `new`) on a kernel with `facts`, turning a copy the data path cannot
/// do into a stated loss.
pub(crate) fn decide(
    m: &mut MapPlan,
    old: Option<&MapModel>,
    new: Option<&MapModel>,
    facts: &KernelFacts,
) {
    let events = |t: MapType| {
        matches!(
            t,
            MapType::Ringbuf | MapType::UserRingbuf | MapType::PerfEventArray
        )
    };
    // The plan converts the keys of a sockhash or a hash of maps (a mapping that
    // carries every field): each entry is inserted under its converted key.
    let rekeyed = m.key_plan.is_some();
    m.carry = match (m.action, old) {
        (MapAction::Remove, _) => Carry::Fresh,
        // A socket map that grows is reused at its old capacity unless its sockets
        // can be carried into one of the new capacity.
        (MapAction::Reuse, Some(o))
            if is_socket_map(o.map_type)
                && new.is_some_and(|n| n.max_entries > o.max_entries)
                && sockets_carried(o, new, facts, rekeyed).is_ok() =>
        {
            let max = new.map_or(o.max_entries, |n| n.max_entries);
            carry_sockets(m, max, o.max_entries)
        }
        (MapAction::Reuse, _) => Carry::Keep,
        (MapAction::Create, Some(o)) if events(o.map_type) => Carry::Drain,
        (MapAction::Create, Some(o)) if m.loses_entries && is_socket_map(o.map_type) => {
            match sockets_carried(o, new, facts, rekeyed) {
                Ok(()) => {
                    let max = new.map_or(o.max_entries, |n| n.max_entries);
                    carry_sockets(m, max, o.max_entries)
                }
                Err(reason) => {
                    m.notes.push(format!("sockets are not carried: {reason}"));
                    Carry::Lost { reason }
                }
            }
        }
        (MapAction::Create, Some(o)) if m.loses_entries && is_map_in_map(o.map_type) => {
            match inner_maps_carried(o, new, rekeyed) {
                Ok(()) => carry_inner_maps(m, new.map_or(o.max_entries, |n| n.max_entries)),
                Err(reason) => {
                    m.notes
                        .push(format!("inner maps are not carried: {reason}"));
                    Carry::Lost { reason }
                }
            }
        }
        (MapAction::Create, Some(_)) if m.loses_entries => Carry::Lost {
            reason: m
                .notes
                .first()
                .cloned()
                .unwrap_or_else(|| "the map is recreated".to_owned()),
        },
        (MapAction::Create, _) => Carry::Fresh,
        (MapAction::Copy, Some(o)) => {
            if values_locked(Some(o), new) {
                m.notes.push(
                    "values hold a bpf_spin_lock: every copy, pass and reconcile reads and \
                     writes them whole under BPF_F_LOCK"
                        .to_owned(),
                );
            }
            if is_map_in_map(o.map_type) {
                match inner_maps_carried(o, new, rekeyed) {
                    Ok(()) => carry_inner_maps(m, m.max_entries),
                    Err(reason) => {
                        m.action = MapAction::Create;
                        m.loses_entries = true;
                        m.notes
                            .push(format!("inner maps are not carried: {reason}"));
                        Carry::Lost { reason }
                    }
                }
            } else if let Some(reason) = uncopyable(o.map_type) {
                m.action = MapAction::Create;
                m.loses_entries = true;
                m.notes.push(format!("entries cannot be carried: {reason}"));
                Carry::Lost {
                    reason: reason.to_owned(),
                }
            } else {
                let fields = managed_fields_of(new);
                if fields.is_empty() {
                    Carry::Copy
                } else {
                    // A timer or reference of the old programs is state they hold.
                    m.loses_entries = true;
                    m.notes.push(format!(
                        "kernel-managed fields are not copied and start empty: {}",
                        fields.join(", ")
                    ));
                    Carry::CopyWithout { fields }
                }
            }
        }
        (MapAction::Copy, None) => Carry::Copy,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(sockmap_iter: bool) -> KernelFacts {
        KernelFacts {
            page_size: 4096,
            possible_cpus: 2,
            rename_exchange: true,
            tcx_links: true,
            sockmap_iter,
            perf_links: true,
            kprobes: true,
            uprobes: true,
        }
    }

    fn model(map_type: &str, key_size: u32, max_entries: u32) -> MapModel {
        serde_json::from_value(serde_json::json!({
            "name": "socks", "map_type": map_type, "key_size": key_size, "value_size": 8,
            "max_entries": max_entries, "flags": 0, "map_extra": 0, "pinning": 0,
            "key": null, "value": null, "inner": null,
        }))
        .unwrap()
    }

    /// The plan of a socket map the diff recreates, losing its sockets.
    fn recreated(max_entries: u32) -> MapPlan {
        serde_json::from_value(serde_json::json!({
            "key": "socks", "source": null, "pin": "maps/socks", "action": "create",
            "verdict": "recreate", "loses_entries": true, "max_entries": max_entries,
            "notes": ["changed, and entries are sockets, which user space cannot insert again from what it reads back"],
            "carry": { "kind": "fresh" },
        }))
        .unwrap()
    }

    #[test]
    fn a_recreated_sockmap_is_carried_by_the_iterator_where_the_kernel_has_it() {
        let (old, new) = (model("sockmap", 4, 16), model("sockmap", 4, 8));
        let mut m = recreated(8);
        decide(&mut m, Some(&old), Some(&new), &facts(true));
        assert_eq!(m.carry, Carry::Sockets);
        assert_eq!(
            (m.action, m.loses_entries, m.max_entries),
            (MapAction::Copy, false, 8)
        );
        assert!(
            m.notes.iter().any(|n| n.contains("shrinks from 16 to 8")),
            "{:?}",
            m.notes
        );
        assert!(
            !m.notes.iter().any(|n| n.contains("cannot insert again")),
            "{:?}",
            m.notes
        );

        let mut m = recreated(8);
        decide(&mut m, Some(&old), Some(&new), &facts(false));
        let Carry::Lost { reason } = &m.carry else {
            panic!("{:?}", m.carry)
        };
        assert!(reason.contains("no sockmap iterator"), "{reason}");
        assert!(m.loses_entries);
        assert_eq!(m.action, MapAction::Create);
    }

    #[test]
    fn sockets_are_not_carried_across_a_type_or_key_size_change() {
        for (new, why) in [
            (model("sockhash", 4, 16), "not from sockmap to sockhash"),
            (model("sockmap", 8, 16), "key size changes from 4 to 8"),
        ] {
            let mut m = recreated(16);
            decide(
                &mut m,
                Some(&model("sockmap", 4, 16)),
                Some(&new),
                &facts(true),
            );
            let Carry::Lost { reason } = &m.carry else {
                panic!("{:?}", m.carry)
            };
            assert!(reason.contains(why), "{reason}");
        }
    }

    /// A hash map whose value is `{ u64 deadline; MEMBER }`, `member` a layout's JSON.
    fn valued(member: serde_json::Value) -> MapModel {
        let u64_ = serde_json::json!({
            "kind": "int", "name": "u64", "size": 8, "signed": false, "bits": 64,
        });
        serde_json::from_value(serde_json::json!({
            "name": "sessions", "map_type": "hash", "key_size": 4, "value_size": 24,
            "max_entries": 65536, "flags": 0, "map_extra": 0, "pinning": 0,
            "key": null, "inner": null,
            "value": {
                "kind": "struct", "name": "session", "size": 24, "members": [
                    { "name": "deadline", "ty": u64_, "bit_offset": 0, "bitfield_size": 0 },
                    { "name": "held", "ty": member, "bit_offset": 64, "bitfield_size": 0 },
                ],
            },
        }))
        .unwrap()
    }

    #[test]
    fn values_with_kernel_managed_fields_on_either_side_are_copied_by_map_commands_only() {
        let timer = valued(serde_json::json!({
            "kind": "struct", "name": "bpf_timer", "size": 16, "members": [],
        }));
        let kptr = valued(serde_json::json!({ "kind": "ptr", "size": 8, "target": "task_struct" }));
        let plain = valued(serde_json::json!({
            "kind": "array", "len": 2,
            "elem": { "kind": "int", "name": "u64", "size": 8, "signed": false, "bits": 64 },
        }));
        assert!(!values_managed(Some(&plain), Some(&plain)));
        assert!(!values_managed(None, None));
        for managed in [&timer, &kptr] {
            assert!(values_managed(Some(managed), Some(&plain)));
            assert!(values_managed(Some(&plain), Some(managed)));
            assert!(values_managed(None, Some(managed)));
        }
    }

    fn outer(inner_type: &str, inner_max: u32, inner_flags: u32) -> MapModel {
        serde_json::from_value(serde_json::json!({
            "name": "tenants", "map_type": "hash_of_maps", "key_size": 4, "value_size": 4,
            "max_entries": 8, "flags": 0, "map_extra": 0, "pinning": 0,
            "key": null, "value": null,
            "inner": {
                "name": "tenants.inner", "map_type": inner_type, "key_size": 4,
                "value_size": 8, "max_entries": inner_max, "flags": inner_flags,
                "map_extra": 0, "pinning": 0, "key": null, "value": null, "inner": null,
            },
        }))
        .unwrap()
    }

    #[test]
    fn inner_maps_are_carried_where_the_kernel_takes_them_in_the_new_outer_map() {
        let recreated = || {
            let mut m = recreated(8);
            m.key = "tenants".into();
            m
        };
        // A hash inner map may change capacity; an array only with BPF_F_INNER_MAP.
        for (old, new) in [
            (outer("hash", 4, 0), outer("hash", 16, 0)),
            (outer("array", 4, 0x1000), outer("array", 16, 0x1000)),
        ] {
            let mut m = recreated();
            decide(&mut m, Some(&old), Some(&new), &facts(true));
            assert_eq!(m.carry, Carry::InnerMaps, "{new:?}");
            assert!(!m.loses_entries);
        }
        for (new, why) in [
            (
                outer("array", 16, 0),
                "capacity 4 to 16 of an inner array without BPF_F_INNER_MAP",
            ),
            (outer("hash", 4, 1), "flags 0x0 to 0x1"),
            (outer("lru_hash", 4, 0), "type hash to lru_hash"),
        ] {
            let old = if why.contains("array") {
                outer("array", 4, 0)
            } else {
                outer("hash", 4, 0)
            };
            let mut m = recreated();
            decide(&mut m, Some(&old), Some(&new), &facts(true));
            let Carry::Lost { reason } = &m.carry else {
                panic!("{:?}", m.carry)
            };
            assert!(reason.contains(why), "{reason}");
            assert!(reason.contains("bpf_map_meta_equal"), "{reason}");
        }
    }
}
