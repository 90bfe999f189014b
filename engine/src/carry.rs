//! How the entries of each map get into the new set: a [`Carry`] strategy per map,
//! decided by the plan before anything runs, from the map's type and value layout.
//!
//! The data path copies keys and values as bytes, converted. What it cannot copy is
//! said per type: sockets (a sockmap's entries), per-object local storage, inner maps
//! of a map-in-map (ids, which an update does not take back), queues and stacks
//! (reading pops), bloom filters (not readable); and, inside values it copies, the
//! fields the kernel manages itself and zeroes on every update from user space
//! (`bpf_timer`, `bpf_wq`, kptrs, `bpf_list_head`, `bpf_rb_root`). Where live state
//! would be lost the map's `loses_entries` is set, so that applying the plan needs
//! `allow_state_loss`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::{MapAction, MapPlan};
use crate::upstream::MapModel;
use handover_plan::TypeLayout;
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
        MapType::ArrayOfMaps | MapType::HashOfMaps => {
            "entries are inner maps, which this engine's copy does not yet reopen by id and insert again"
        }
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

/// Decides the strategy of map `m` of an upgrade plan (the old map's model `old`,
/// the new one's `new`), turning a copy the data path cannot do into a stated loss.
pub(crate) fn decide(m: &mut MapPlan, old: Option<&MapModel>, new: Option<&MapModel>) {
    let events = |t: MapType| {
        matches!(
            t,
            MapType::Ringbuf | MapType::UserRingbuf | MapType::PerfEventArray
        )
    };
    m.carry = match (m.action, old) {
        (MapAction::Remove, _) => Carry::Fresh,
        (MapAction::Reuse, _) => Carry::Keep,
        (MapAction::Create, Some(o)) if events(o.map_type) => Carry::Drain,
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
            if let Some(reason) = uncopyable(o.map_type) {
                m.action = MapAction::Create;
                m.loses_entries = true;
                m.notes.push(format!("entries cannot be carried: {reason}"));
                Carry::Lost {
                    reason: reason.to_owned(),
                }
            } else {
                let mut fields = Vec::new();
                if let Some(v) = new.and_then(|n| n.value.as_ref()) {
                    managed_fields(v, "", &mut fields, 0);
                }
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
