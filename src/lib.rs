//! handover: restart and upgrade eBPF daemons without losing traffic or map state.
//!
//! This crate holds the upgrade engine. The pure part compares the maps of two
//! versions: [`MapModel`] is the serialisable spec of a map with its key and value
//! layout, [`Snapshot`] keeps those specs on disk, [`diff_maps`] gives a [`Verdict`]
//! per map with the [`FieldMapping`] of its key and value, and [`convert`] turns old
//! encoded entries into new ones.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod btf_file;
pub mod inspect;

mod convert;
mod field_map;
mod from_object;
mod kernel_adjust;
mod layout_builder;
mod report;
mod sha256;
mod snapshot;
mod spec_model;
mod verdict;

pub use convert::{ConvertError, convert, convert_percpu, percpu_stride, read_bits, write_bits};
pub use field_map::{
    ConversionPlan, FieldAction, FieldLoc, FieldMapping, LayoutMapping, Op, Side, map_layout,
};
pub use from_object::{ModelError, is_elf, load_side, map_model, object_model};
pub use kernel_adjust::{
    ADJUSTMENTS, Adjustment, BPF_F_NO_PREALLOC, BPF_F_RDONLY_PROG, KERNEL_NAME_LEN, KernelEnv,
    kernel_view,
};
pub use layout_builder::{LayoutError, layout_of};
pub use report::{render_json, render_text};
pub use sha256::{sha256, sha256_hex};
pub use snapshot::{
    ByteOrder, FORMAT_NAME, FORMAT_VERSION, FormatError, ObjectModel, Snapshot, SnapshotError,
    decode, encode, read_snapshot, write_snapshot,
};
pub use spec_model::{
    EnumValue, MapModel, Member, TypeLayout, is_percpu, map_type_name, map_type_number, same_layout,
};
pub use verdict::{
    Change, DiffReport, MapDiff, Policy, Verdict, diff_map, diff_maps, diff_objects,
};
