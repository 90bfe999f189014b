//! The verdict engine: for every map, what an upgrade from the old spec to the new
//! one does with the live map and its entries.
//!
//! Both specs are first passed through [`kernel_view`], so attributes the kernel
//! rewrites never count as changes.
//!
//! # Policies
//! - [`Policy::Strict`]: reuse the live map when its type, key and value layout are
//!   unchanged and its capacity is unchanged or larger; anything else is `recreate`
//!   (a fresh, empty map).
//! - [`Policy::Migrate`] (default): carry every entry whenever nothing is lost, see
//!   [`Verdict`].
//!
//! # Per map type
//! - Data maps (`hash`, `lru_hash`, `percpu_hash`, `lru_percpu_hash`, `array`,
//!   `percpu_array`, `lpm_trie`, and the writable global data maps `.data`/`.bss`):
//!   every `migrate` rule applies. A type change is carried only within one family:
//!   `hash`/`lru_hash`, and `percpu_hash`/`lru_percpu_hash`. `array` to
//!   `percpu_array` is not a family: a value copied to every CPU would be counted
//!   once per CPU by whoever sums it. Array keys are indexes, and LPM trie keys are
//!   prefixes whose meaning depends on their layout: a change of either key is
//!   `recreate`.
//! - `prog_array`: never reused nor changed in place across versions: always a new
//!   array (`recreate`), which the new version fills with its own programs before the
//!   switch; not a loss, the old entries point at old programs.
//! - Read-only global data (`.rodata`, `.kconfig`): frozen at load with contents
//!   from the new object: always new (`recreate`), not a loss.
//! - `ringbuf`, `user_ringbuf`, `perf_event_array`, `stack_trace`: hold records in
//!   flight, not state: reused when unchanged, otherwise `recreate`, not a loss.
//! - `sockmap`, `sockhash`, `xskmap`, `reuseport_sockarray`: entries are sockets,
//!   which user space reads back as cookies and cannot insert again from them; local
//!   storage (`sk_storage`, `inode_storage`, `task_storage`, `cgrp_storage`,
//!   `cgroup_storage`, `percpu_cgroup_storage`) is attached to kernel objects and
//!   cannot be enumerated; `devmap`, `devmap_hash` and `cpumap` values carry an
//!   optional program that a lookup returns as an id, not as the descriptor an update
//!   needs, and `cgroup_array` entries (cgroup descriptors) cannot be read back from
//!   user space; `queue`,
//!   `stack` reads are destructive and `bloom_filter` cannot be read at all. For all
//!   of these: reused when unchanged; a capacity grow keeps the live map (its old
//!   capacity, stated in a note); any other change is `recreate`, a loss.
//! - `array_of_maps`, `hash_of_maps`: a lookup returns the inner map's id, which
//!   reopens it (`BPF_MAP_GET_FD_BY_ID`), so a capacity change alone is `grow` or
//!   `shrink` with every inner map carried into the new outer map. A change of the key,
//!   of the inner definition or of flags is `recreate`, a loss: the live inner maps
//!   were made for the old inner definition.
//! - Maps without BTF for the key or value: only sizes are known; equal sizes are
//!   taken as the same encoding (stated in a note), a size change cannot be mapped
//!   and is `recreate`.

use handover_uapi::MapType;
use serde::{Deserialize, Serialize};

use crate::diff::field_map::{
    ConversionPlan, FieldAction, FieldMapping, LayoutMapping, Op, Side, map_layout,
};
use crate::spec::kernel_view::{KernelEnv, kernel_view};
use crate::spec::model::{MapModel, TypeLayout, same_layout};
use crate::spec::snapshot::ObjectModel;
use handover_uapi::Endian;

/// How far an upgrade goes to keep entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Reuse only unchanged maps (capacity may grow); recreate everything else.
    Strict,
    /// Carry entries whenever no entry is lost.
    #[default]
    Migrate,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "strict" => Ok(Policy::Strict),
            "migrate" => Ok(Policy::Migrate),
            other => Err(format!(
                "unknown policy `{other}`: expected `strict` or `migrate`"
            )),
        }
    }
}

/// What the upgrade does with one map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The live map is kept as it is.
    Reuse,
    /// The map exists only in the new version: created empty.
    New,
    /// The map exists only in the old version: unpinned after the switch.
    Removed,
    /// A larger map is created and every entry copied.
    Grow,
    /// A smaller map is created and every entry copied; fails when the live map holds
    /// more entries than the new capacity (checked when executed).
    Shrink,
    /// A new map is created and every entry copied, values converted field by field
    /// (also for a type change within a family and for flag changes).
    Migrate,
    /// As `migrate`, and every key converted too.
    Rekey,
    /// A new, empty map: the old entries are not carried.
    Recreate,
}

impl Verdict {
    /// The name shown in reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Reuse => "reuse",
            Verdict::New => "new",
            Verdict::Removed => "removed",
            Verdict::Grow => "grow",
            Verdict::Shrink => "shrink",
            Verdict::Migrate => "migrate",
            Verdict::Rekey => "rekey",
            Verdict::Recreate => "recreate",
        }
    }
}

/// Which attribute of a map spec a [`Change`] is about. Serialised and shown as its
/// label (`max_entries`, `value layout`, `inner key_size`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Attribute {
    /// `map_type`.
    MapType,
    /// `key_size`.
    KeySize,
    /// `value_size`.
    ValueSize,
    /// `max_entries`.
    MaxEntries,
    /// `flags`.
    Flags,
    /// `map_extra`.
    MapExtra,
    /// `pinning`.
    Pinning,
    /// `inner`: one side has an inner map definition, the other none.
    Inner,
    /// `key type`, `value type`: one side has BTF for it, the other none.
    LayoutPresence(Side),
    /// `key type name`, `value type name`: the same bytes under another type name.
    LayoutName(Side),
    /// `key layout`, `value layout`: the layout differs.
    Layout(Side),
    /// `inner ATTRIBUTE`: an attribute of the inner map definition.
    OfInner(Box<Attribute>),
    /// `initial value of VARIABLE`: a global data variable whose initial value in the
    /// object changed while its layout did not.
    InitialValue(String),
}

impl Attribute {
    const fn side(side: Side) -> &'static str {
        match side {
            Side::Key => "key",
            Side::Value => "value",
        }
    }
}

impl std::fmt::Display for Attribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attribute::MapType => f.write_str("map_type"),
            Attribute::KeySize => f.write_str("key_size"),
            Attribute::ValueSize => f.write_str("value_size"),
            Attribute::MaxEntries => f.write_str("max_entries"),
            Attribute::Flags => f.write_str("flags"),
            Attribute::MapExtra => f.write_str("map_extra"),
            Attribute::Pinning => f.write_str("pinning"),
            Attribute::Inner => f.write_str("inner"),
            Attribute::LayoutPresence(s) => write!(f, "{} type", Attribute::side(*s)),
            Attribute::LayoutName(s) => write!(f, "{} type name", Attribute::side(*s)),
            Attribute::Layout(s) => write!(f, "{} layout", Attribute::side(*s)),
            Attribute::OfInner(a) => write!(f, "inner {a}"),
            Attribute::InitialValue(v) => write!(f, "initial value of {v}"),
        }
    }
}

impl std::str::FromStr for Attribute {
    type Err = String;
    fn from_str(label: &str) -> Result<Self, String> {
        if let Some(var) = label.strip_prefix("initial value of ") {
            return Ok(Attribute::InitialValue(var.to_owned()));
        }
        if let Some(rest) = label.strip_prefix("inner ") {
            return rest.parse().map(|a| Attribute::OfInner(Box::new(a)));
        }
        let side = |word: &str| match word {
            "key" => Some(Side::Key),
            "value" => Some(Side::Value),
            _ => None,
        };
        let plain = match label {
            "map_type" => Some(Attribute::MapType),
            "key_size" => Some(Attribute::KeySize),
            "value_size" => Some(Attribute::ValueSize),
            "max_entries" => Some(Attribute::MaxEntries),
            "flags" => Some(Attribute::Flags),
            "map_extra" => Some(Attribute::MapExtra),
            "pinning" => Some(Attribute::Pinning),
            "inner" => Some(Attribute::Inner),
            _ => None,
        };
        let layout = || {
            let (word, rest) = label.split_once(' ')?;
            let s = side(word)?;
            match rest {
                "type" => Some(Attribute::LayoutPresence(s)),
                "type name" => Some(Attribute::LayoutName(s)),
                "layout" => Some(Attribute::Layout(s)),
                _ => None,
            }
        };
        plain
            .or_else(layout)
            .ok_or_else(|| format!("{label:?} is not a map attribute"))
    }
}

impl Serialize for Attribute {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Attribute {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let label = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        label.parse().map_err(serde::de::Error::custom)
    }
}

/// One attribute that differs between the old and new spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Which attribute.
    pub attribute: Attribute,
    /// Old value, for display.
    pub old: String,
    /// New value, for display.
    pub new: String,
    /// True when the change leaves every byte meaning the same (a rename of a type).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cosmetic: bool,
}

/// The verdict for one map and what it is based on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapDiff {
    /// Map name (`object:map` when several objects are compared).
    pub name: String,
    /// What happens to the map.
    pub verdict: Verdict,
    /// Whether entries held by the live map would be lost (a `recreate` of a map whose
    /// entries are state, or a `shrink` that may not fit).
    pub loses_entries: bool,
    /// Attributes that differ.
    pub changes: Vec<Change>,
    /// Per-field mapping of the key and value, when their layouts differ.
    pub fields: Vec<FieldMapping>,
    /// The rules that decided the verdict, in words.
    pub notes: Vec<String>,
    /// Conversion of each old key, when keys are converted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_plan: Option<ConversionPlan>,
    /// Conversion of each old value, when values are converted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_plan: Option<ConversionPlan>,
}

/// Verdicts for every map of an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffReport {
    /// Policy the verdicts follow.
    pub policy: Policy,
    /// One entry per map, new maps in new order, then removed ones.
    pub maps: Vec<MapDiff>,
}

impl DiffReport {
    /// Whether any map would lose entries.
    #[must_use]
    pub fn loses_entries(&self) -> bool {
        self.maps.iter().any(|m| m.loses_entries)
    }

    /// Whether some map carries every entry but drops field values of them.
    #[must_use]
    pub fn drops_values(&self) -> bool {
        self.maps.iter().any(MapDiff::drops_values)
    }
}

impl MapDiff {
    /// Every entry is carried, but a field of the old values has no place in the new
    /// ones (`drop`): its values are discarded.
    #[must_use]
    pub fn drops_values(&self) -> bool {
        !self.loses_entries
            && self.value_plan.is_some()
            && self
                .fields
                .iter()
                .any(|f| f.side == Side::Value && f.action == FieldAction::Drop)
    }
}

/// What user space can do with the entries of a map type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Entries are plain bytes: read, convert, write.
    Data,
    /// Program array: always rebuilt from the new programs.
    ProgArray,
    /// Frozen global data whose contents come from the new object.
    ReadOnlyData,
    /// Records in flight, not state.
    Events,
    /// Map-in-map: values are inner maps, which user space reads back as ids and
    /// reopens by id (`BPF_MAP_GET_FD_BY_ID`) to insert them into a new outer map.
    MapRefs,
    /// Entries cannot be copied by user space.
    NoCopy,
}

fn class_of(m: &MapModel) -> Class {
    match m.map_type {
        MapType::Array if is_readonly_global(&m.name) => Class::ReadOnlyData,
        MapType::Hash
        | MapType::LruHash
        | MapType::PercpuHash
        | MapType::LruPercpuHash
        | MapType::Array
        | MapType::PercpuArray
        | MapType::LpmTrie => Class::Data,
        MapType::ProgArray => Class::ProgArray,
        MapType::Ringbuf | MapType::UserRingbuf | MapType::PerfEventArray | MapType::StackTrace => {
            Class::Events
        }
        MapType::ArrayOfMaps | MapType::HashOfMaps => Class::MapRefs,
        _ => Class::NoCopy,
    }
}

/// `.rodata`, `.rodata.str1.1`, `obj.rodata`, `.kconfig`: the loader freezes these.
fn is_readonly_global(name: &str) -> bool {
    let section = name
        .find('.')
        .map_or(name, |i| name.get(i..).unwrap_or(name));
    section.starts_with(".rodata") || section.starts_with(".kconfig")
}

fn same_family(a: MapType, b: MapType) -> bool {
    let family = |t| match t {
        MapType::Hash | MapType::LruHash => Some(0),
        MapType::PercpuHash | MapType::LruPercpuHash => Some(1),
        _ => None,
    };
    a == b || family(a).is_some_and(|f| family(b) == Some(f))
}

fn no_copy_reason(map_type: MapType) -> &'static str {
    match map_type {
        MapType::Sockmap | MapType::Sockhash | MapType::Xskmap | MapType::ReuseportSockarray => {
            "entries are sockets, which user space cannot insert again from what it reads back"
        }
        MapType::SkStorage
        | MapType::InodeStorage
        | MapType::TaskStorage
        | MapType::CgrpStorage
        | MapType::CgroupStorage
        | MapType::PercpuCgroupStorage => {
            "local storage is attached to kernel objects and cannot be copied"
        }
        MapType::Devmap | MapType::DevmapHash | MapType::Cpumap => {
            "values name their program by id, which is not translated back to a descriptor on copy"
        }
        MapType::CgroupArray => "entries are cgroup descriptors, which user space cannot read back",
        MapType::ArrayOfMaps | MapType::HashOfMaps => {
            "the inner maps were made for the old inner definition and cannot be converted in place"
        }
        MapType::Queue | MapType::Stack => "reading a queue or stack removes its entries",
        MapType::BloomFilter => "a bloom filter cannot be read back",
        _ => "entries of this map type cannot be copied by user space",
    }
}

/// Compares two lists of maps, matched by name.
#[must_use]
pub fn diff_maps(
    old: &[MapModel],
    new: &[MapModel],
    policy: Policy,
    env: &KernelEnv,
) -> DiffReport {
    let mut maps = Vec::new();
    for n in new {
        let o = old.iter().find(|o| o.name == n.name);
        maps.push(diff_map(o, Some(n), policy, env));
    }
    for o in old {
        if !new.iter().any(|n| n.name == o.name) {
            maps.push(diff_map(Some(o), None, policy, env));
        }
    }
    DiffReport { policy, maps }
}

/// Compares the objects of two versions. When each side holds exactly one object
/// they are compared whatever their names (an object file is usually renamed between
/// builds); otherwise objects are matched by name and maps are reported as
/// `object:map`. When either side is big-endian, a map whose entries would need
/// integer conversion is `recreate` (the converter handles little-endian only).
#[must_use]
pub fn diff_objects(
    old: &[ObjectModel],
    new: &[ObjectModel],
    policy: Policy,
    env: &KernelEnv,
) -> DiffReport {
    let mut report = diff_paired_objects(old, new, policy, env);
    if old.iter().chain(new).any(|o| o.endian != Endian::Little) {
        for d in &mut report.maps {
            refuse_big_endian_conversion(d);
        }
    }
    report
}

/// The converter reads and writes little-endian encodings only: a conversion that
/// does more than move whole bytes cannot be carried out for big-endian objects.
fn refuse_big_endian_conversion(d: &mut MapDiff) {
    let converts_integers = [&d.key_plan, &d.value_plan]
        .into_iter()
        .flatten()
        .any(|p| p.ops.iter().any(|op| matches!(op, Op::Int { .. })));
    if converts_integers {
        d.verdict = Verdict::Recreate;
        d.loses_entries = true;
        d.key_plan = None;
        d.value_plan = None;
        d.notes.push(
            "integer conversion of big-endian keys and values is not supported: entries cannot be carried".into(),
        );
    }
}

fn diff_paired_objects(
    old: &[ObjectModel],
    new: &[ObjectModel],
    policy: Policy,
    env: &KernelEnv,
) -> DiffReport {
    if let ([o], [n]) = (old, new) {
        return diff_maps(&o.maps, &n.maps, policy, env);
    }
    let mut maps = Vec::new();
    let prefixed = |obj: &ObjectModel, mut d: MapDiff| {
        d.name = format!("{}:{}", obj.name, d.name);
        d
    };
    for n in new {
        let o = old.iter().find(|o| o.name == n.name);
        let report = diff_maps(o.map_or(&[], |o| &o.maps), &n.maps, policy, env);
        maps.extend(report.maps.into_iter().map(|d| prefixed(n, d)));
    }
    for o in old {
        if !new.iter().any(|n| n.name == o.name) {
            let report = diff_maps(&o.maps, &[], policy, env);
            maps.extend(report.maps.into_iter().map(|d| prefixed(o, d)));
        }
    }
    DiffReport { policy, maps }
}

/// Mapping of one side (key or value): identity, a field mapping, or none possible.
enum SideMap {
    Same,
    Mapped(LayoutMapping),
    Impossible(String),
}

fn map_side(
    old_ty: Option<&TypeLayout>,
    new_ty: Option<&TypeLayout>,
    old_size: u32,
    new_size: u32,
    side: Side,
    notes: &mut Vec<String>,
) -> SideMap {
    let what = match side {
        Side::Key => "key",
        Side::Value => "value",
    };
    match (old_ty, new_ty) {
        (Some(o), Some(n))
            if o.size() == Some(u64::from(old_size)) && n.size() == Some(u64::from(new_size)) =>
        {
            if same_layout(o, n) {
                SideMap::Same
            } else {
                SideMap::Mapped(map_layout(o, n, old_size, new_size, side))
            }
        }
        _ if old_size == new_size => {
            if old_size > 0 {
                notes.push(format!(
                    "{what} has no BTF on one side or both: only its size ({old_size} bytes) is compared"
                ));
            }
            SideMap::Same
        }
        _ => SideMap::Impossible(format!(
            "{what} size changed ({old_size} -> {new_size} bytes) without a BTF layout on both sides to map fields"
        )),
    }
}

fn layout_changes(
    side: Side,
    old: Option<&TypeLayout>,
    new: Option<&TypeLayout>,
    out: &mut Vec<Change>,
) {
    let (Some(o), Some(n)) = (old, new) else {
        if old.is_some() != new.is_some() {
            let show =
                |t: Option<&TypeLayout>| t.map_or("(no BTF)".to_owned(), TypeLayout::describe);
            out.push(Change {
                attribute: Attribute::LayoutPresence(side),
                old: show(old),
                new: show(new),
                // Without BTF on one side only the size can be compared, and the size
                // is an attribute of its own.
                cosmetic: true,
            });
        }
        return;
    };
    if same_layout(o, n) {
        if o.describe() != n.describe() {
            out.push(Change {
                attribute: Attribute::LayoutName(side),
                old: o.describe(),
                new: n.describe(),
                cosmetic: true,
            });
        }
    } else {
        let show = |t: &TypeLayout| match t.size() {
            Some(size) => format!("{} ({size} bytes)", t.describe()),
            None => t.describe(),
        };
        out.push(Change {
            attribute: Attribute::Layout(side),
            old: show(o),
            new: show(n),
            cosmetic: false,
        });
    }
}

fn attribute_changes(o: &MapModel, n: &MapModel) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |attribute: Attribute, old: String, new: String| {
        if old != new {
            out.push(Change {
                attribute,
                old,
                new,
                cosmetic: false,
            });
        }
    };
    push(
        Attribute::MapType,
        o.map_type.to_string(),
        n.map_type.to_string(),
    );
    push(
        Attribute::KeySize,
        o.key_size.to_string(),
        n.key_size.to_string(),
    );
    push(
        Attribute::ValueSize,
        o.value_size.to_string(),
        n.value_size.to_string(),
    );
    push(
        Attribute::MaxEntries,
        o.max_entries.to_string(),
        n.max_entries.to_string(),
    );
    push(
        Attribute::Flags,
        format!("{:#x}", o.flags),
        format!("{:#x}", n.flags),
    );
    push(
        Attribute::MapExtra,
        format!("{:#x}", o.map_extra),
        format!("{:#x}", n.map_extra),
    );
    layout_changes(Side::Key, o.key.as_ref(), n.key.as_ref(), &mut out);
    layout_changes(Side::Value, o.value.as_ref(), n.value.as_ref(), &mut out);
    match (&o.inner, &n.inner) {
        (Some(a), Some(b)) if a != b => {
            for c in attribute_changes(a, b) {
                out.push(Change {
                    attribute: Attribute::OfInner(Box::new(c.attribute)),
                    ..c
                });
            }
        }
        (None, Some(_)) | (Some(_), None) => out.push(Change {
            attribute: Attribute::Inner,
            old: o
                .inner
                .as_ref()
                .map_or("none".into(), |i| i.map_type.to_string()),
            new: n
                .inner
                .as_ref()
                .map_or("none".into(), |i| i.map_type.to_string()),
            cosmetic: false,
        }),
        _ => {}
    }
    if o.pinning != n.pinning {
        // Where the map is pinned is the executor's business, not the entries'.
        out.push(Change {
            attribute: Attribute::Pinning,
            old: u32::from(o.pinning).to_string(),
            new: u32::from(n.pinning).to_string(),
            cosmetic: true,
        });
    }
    if o.is_writable_global_data() && n.is_writable_global_data() {
        out.extend(initial_value_changes(o, n));
    }
    out
}

/// The initial bytes of a global data map (zeroes when the object stores none).
fn initial_bytes(m: &MapModel, bit_offset: u64, len: u64) -> Option<Vec<u8>> {
    let start = usize::try_from(bit_offset / 8).ok()?;
    let len = usize::try_from(len).ok()?;
    match &m.initial_data {
        Some(data) => data.get(start..start.checked_add(len)?).map(<[u8]>::to_vec),
        None => Some(vec![0; len]),
    }
}

/// Initial bytes for display: a little-endian integer when they fit one, else hex.
fn show_bytes(bytes: &[u8]) -> String {
    if bytes.len() <= 8 {
        let mut v = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        v.to_string()
    } else {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Global data variables present on both sides with the same layout whose initial
/// value changed: the upgrade keeps the running value, a fresh install would start
/// with the new one.
fn initial_value_changes(o: &MapModel, n: &MapModel) -> Vec<Change> {
    let (
        Some(TypeLayout::Struct { members: om, .. }),
        Some(TypeLayout::Struct { members: nm, .. }),
    ) = (
        o.value.as_ref().map(TypeLayout::peel),
        n.value.as_ref().map(TypeLayout::peel),
    )
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for nv in nm {
        let Some(name) = nv.name.as_deref() else {
            continue;
        };
        let old_name = nv.renamed_from.as_deref().unwrap_or(name);
        let Some(ov) = om.iter().find(|m| m.name.as_deref() == Some(old_name)) else {
            continue;
        };
        let Some(size) = nv.ty.size() else { continue };
        if !same_layout(&ov.ty, &nv.ty) {
            continue;
        }
        if let (Some(a), Some(b)) = (
            initial_bytes(o, ov.bit_offset, size),
            initial_bytes(n, nv.bit_offset, size),
        ) && a != b
        {
            out.push(Change {
                attribute: Attribute::InitialValue(name.to_owned()),
                old: show_bytes(&a),
                new: show_bytes(&b),
                // The running value is kept: the bytes of the map do not change.
                cosmetic: true,
            });
        }
    }
    out
}

/// Gives a global data value conversion the new object's initial bytes, so a field
/// the old version did not have starts as a fresh load starts it, not as zero.
fn start_from_initial_data(d: &mut MapDiff, n: &MapModel) {
    let (Some(initial), Some(plan)) = (&n.initial_data, d.value_plan.as_mut()) else {
        return;
    };
    if initial.len() as u64 != u64::from(n.value_size) {
        return;
    }
    plan.initial = Some(initial.clone());
    for f in &mut d.fields {
        let Some(loc) = f.new.as_ref() else { continue };
        if f.side != Side::Value || f.action != FieldAction::ZeroFill {
            continue;
        }
        let nonzero = initial_bytes(n, loc.bit_offset, loc.bits.div_ceil(8))
            .is_some_and(|b| b.iter().any(|x| *x != 0));
        if nonzero {
            f.action = FieldAction::Initial;
            f.note.get_or_insert_with(|| {
                "starts with the new object's initial value, as a fresh load would".to_owned()
            });
        }
    }
}

/// The verdict for one map; `None` on one side means the map exists only on the other.
#[must_use]
pub fn diff_map(
    old: Option<&MapModel>,
    new: Option<&MapModel>,
    policy: Policy,
    env: &KernelEnv,
) -> MapDiff {
    let (o, n) = match (old, new) {
        (Some(o), Some(n)) => (kernel_view(o, env), kernel_view(n, env)),
        (None, Some(n)) => return simple(&n.name, Verdict::New, false, "only in the new version"),
        (Some(o), None) => {
            return simple(
                &o.name,
                Verdict::Removed,
                false,
                "only in the old version: no longer used, unpinned after the switch",
            );
        }
        (None, None) => return simple("", Verdict::Removed, false, "absent on both sides"),
    };
    let name = new.map_or_else(String::new, |m| m.name.clone());
    let changes = attribute_changes(&o, &n);
    let mut d = MapDiff {
        name,
        verdict: Verdict::Reuse,
        loses_entries: false,
        changes,
        fields: Vec::new(),
        notes: Vec::new(),
        key_plan: None,
        value_plan: None,
    };
    let old_class = class_of(&o);
    let new_class = class_of(&n);

    // Rules that hold whatever changed.
    if new_class == Class::ProgArray {
        d.verdict = Verdict::Recreate;
        d.notes.push(
            "program arrays are never reused across versions: a new array is filled with the new programs before the switch".into(),
        );
        return d;
    }
    if new_class == Class::ReadOnlyData {
        d.verdict = Verdict::Recreate;
        d.notes
            .push("read-only global data is frozen with contents from the new object".into());
        return d;
    }

    for c in &d.changes {
        if let Attribute::InitialValue(var) = &c.attribute {
            d.notes.push(format!(
                "initial value of `{var}` changed from {} to {}: the upgrade keeps the running value (a fresh install starts with {})",
                c.old, c.new, c.new
            ));
        }
    }
    if d.changes.iter().all(|c| c.cosmetic) {
        return d;
    }

    // Notes about missing BTF matter only where entries are converted; an array key
    // is an index whatever its BTF says.
    let mut btf_notes = Vec::new();
    let key = map_side(
        o.key.as_ref(),
        n.key.as_ref(),
        o.key_size,
        n.key_size,
        Side::Key,
        &mut btf_notes,
    );
    if matches!(o.map_type, MapType::Array | MapType::PercpuArray) {
        btf_notes.clear();
    }
    let value = map_side(
        o.value.as_ref(),
        n.value.as_ref(),
        o.value_size,
        n.value_size,
        Side::Value,
        &mut btf_notes,
    );
    if old_class == Class::Data && new_class == Class::Data {
        d.notes.append(&mut btf_notes);
    }
    for s in [&key, &value] {
        if let SideMap::Mapped(m) = s {
            d.fields.extend(m.fields.iter().cloned());
        }
    }

    let type_changed = o.map_type != n.map_type;
    let grows = n.max_entries > o.max_entries;
    let shrinks = n.max_entries < o.max_entries;
    let only_grows = d
        .changes
        .iter()
        .all(|c| c.cosmetic || c.attribute == Attribute::MaxEntries)
        && !shrinks;
    let entries_are_state = !matches!(old_class, Class::Events);

    let recreate = |d: &mut MapDiff, why: String| {
        d.verdict = Verdict::Recreate;
        d.loses_entries = entries_are_state;
        d.notes.push(why);
        if !entries_are_state {
            d.notes
                .push("not a loss: the map holds records in flight, not state".into());
        }
    };

    if only_grows
        && (policy == Policy::Strict
            || !matches!(old_class, Class::Data | Class::Events | Class::MapRefs))
    {
        d.notes.push(format!(
            "capacity grows: the live map is reused and keeps its {} entries of capacity",
            o.max_entries
        ));
        return d;
    }

    if policy == Policy::Strict {
        let changed: Vec<String> = d
            .changes
            .iter()
            .filter(|c| !c.cosmetic)
            .map(|c| c.attribute.to_string())
            .collect();
        // Strict carries nothing, so there is no field mapping to show.
        d.fields.clear();
        recreate(
            &mut d,
            format!(
                "strict policy: {} changed, so a fresh map is created",
                changed.join(", ")
            ),
        );
        return d;
    }

    let only_capacity = d
        .changes
        .iter()
        .all(|c| c.cosmetic || c.attribute == Attribute::MaxEntries);
    if old_class == Class::MapRefs && new_class == Class::MapRefs && !type_changed && only_capacity
    {
        d.notes.push(
            "values are inner maps: each is reopened by the id a lookup returns and inserted into the new outer map".into(),
        );
        d.verdict = if shrinks {
            shrink(&mut d, &o, &n)
        } else {
            Verdict::Grow
        };
        return d;
    }
    if old_class != Class::Data || new_class != Class::Data {
        // The entries of a sockhash or a hash of maps are references that only the
        // kernel can insert again (by the sockmap iterator, by descriptor), but under a
        // key user space chooses: a key mapping that carries every field is kept, for
        // the engine to insert each under its converted key. A sockmap's or array of
        // maps' key is an index.
        let rekeyable = matches!(
            (o.map_type, n.map_type),
            (MapType::Sockhash, MapType::Sockhash) | (MapType::HashOfMaps, MapType::HashOfMaps)
        );
        if let SideMap::Mapped(m) = &key
            && rekeyable
            && m.carries_everything()
        {
            d.key_plan = Some(m.plan.clone());
        }
        let why = if old_class == Class::Events {
            "changed; records in flight are not carried".to_owned()
        } else if type_changed {
            format!("map type changed from {} to {}", o.map_type, n.map_type)
        } else {
            format!("changed, and {}", no_copy_reason(o.map_type))
        };
        recreate(&mut d, why);
        return d;
    }
    if type_changed && !same_family(o.map_type, n.map_type) {
        recreate(
            &mut d,
            format!(
                "map type changed from {} to {}: not the same family, entries cannot be carried",
                o.map_type, n.map_type
            ),
        );
        return d;
    }
    if type_changed {
        d.notes.push(format!(
            "{} and {} are one family: entries are copied",
            o.map_type, n.map_type
        ));
    }

    let key_fixed = matches!(
        o.map_type,
        MapType::Array | MapType::PercpuArray | MapType::LpmTrie
    );
    match &key {
        SideMap::Same => {}
        SideMap::Impossible(why) => {
            recreate(&mut d, why.clone());
            return d;
        }
        SideMap::Mapped(_) if key_fixed => {
            recreate(
                &mut d,
                format!("the key of {} cannot be converted", o.map_type),
            );
            return d;
        }
        SideMap::Mapped(m) if !m.carries_everything() => {
            recreate(
                &mut d,
                "a key field cannot be derived from the old key, or an old key field would be lost (keys would collide)".into(),
            );
            return d;
        }
        SideMap::Mapped(m) => d.key_plan = Some(m.plan.clone()),
    }
    match &value {
        SideMap::Same => {}
        SideMap::Impossible(why) => {
            recreate(&mut d, why.clone());
            return d;
        }
        SideMap::Mapped(m) => d.value_plan = Some(m.plan.clone()),
    }
    if n.is_writable_global_data() {
        start_from_initial_data(&mut d, &n);
    }

    let copies =
        type_changed || o.flags != n.flags || o.map_extra != n.map_extra || d.value_plan.is_some();
    d.verdict = if shrinks {
        shrink(&mut d, &o, &n)
    } else if d.key_plan.is_some() {
        Verdict::Rekey
    } else if copies {
        Verdict::Migrate
    } else if grows {
        Verdict::Grow
    } else {
        Verdict::Reuse
    };
    if matches!(
        d.verdict,
        Verdict::Shrink | Verdict::Rekey | Verdict::Migrate | Verdict::Grow
    ) {
        // Copying needs both plans; an unchanged side is copied as is.
        d.key_plan
            .get_or_insert_with(|| ConversionPlan::identity(n.key_size));
        d.value_plan
            .get_or_insert_with(|| ConversionPlan::identity(n.value_size));
    }
    d
}

/// Marks `d` as a shrink from `o`'s capacity to `n`'s, which may not fit.
fn shrink(d: &mut MapDiff, o: &MapModel, n: &MapModel) -> Verdict {
    d.loses_entries = true;
    d.notes.push(format!(
        "capacity shrinks from {} to {}: entries are copied when the live map holds at most {} (checked when executed)",
        o.max_entries, n.max_entries, n.max_entries
    ));
    Verdict::Shrink
}

fn simple(name: &str, verdict: Verdict, loses_entries: bool, note: &str) -> MapDiff {
    MapDiff {
        name: name.to_owned(),
        verdict,
        loses_entries,
        changes: Vec::new(),
        fields: Vec::new(),
        notes: vec![note.to_owned()],
        key_plan: None,
        value_plan: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{Attribute, Side};

    #[test]
    fn attribute_labels_round_trip() {
        let all = [
            Attribute::MapType,
            Attribute::KeySize,
            Attribute::ValueSize,
            Attribute::MaxEntries,
            Attribute::Flags,
            Attribute::MapExtra,
            Attribute::Pinning,
            Attribute::Inner,
            Attribute::LayoutPresence(Side::Key),
            Attribute::LayoutName(Side::Value),
            Attribute::Layout(Side::Value),
            Attribute::OfInner(Box::new(Attribute::Layout(Side::Key))),
        ];
        for a in all {
            let label = a.to_string();
            assert_eq!(label.parse::<Attribute>(), Ok(a.clone()), "{label}");
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("{label:?}"));
            assert_eq!(serde_json::from_str::<Attribute>(&json).unwrap(), a);
        }
        assert_eq!(Attribute::Layout(Side::Value).to_string(), "value layout");
        assert_eq!(
            Attribute::OfInner(Box::new(Attribute::KeySize)).to_string(),
            "inner key_size"
        );
        assert!("value size".parse::<Attribute>().is_err());
    }
}
