//! The pure upgrade pipeline: specs, diffs and plans, with no kernel layer.
//!
//! [`spec`](MapModel): [`MapModel`] is the serialisable spec of a map with its key and
//! value layout, [`Snapshot`] keeps those specs on disk, [`kernel_view`] is what the
//! kernel makes of a spec. Diff: [`diff_maps`] gives a [`Verdict`] per map with the
//! [`FieldMapping`] of its key and value, and [`convert`] turns old encoded entries
//! into new ones. Plan: [`Plan`] is the value an upgrade executes.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod diff;
mod plan;
mod spec;

pub use diff::convert::{
    ConvertError, convert, convert_percpu, percpu_stride, read_bits, reverse, write_bits,
};
pub use diff::field_map::{
    ConversionPlan, FieldAction, FieldLoc, FieldMapping, LayoutMapping, Op, Side, map_layout,
};
pub use diff::program::ConversionProgram;
pub use diff::verdict::{
    Attribute, Change, DiffReport, MapDiff, Policy, Verdict, diff_map, diff_maps, diff_objects,
};
pub use handover_uapi::{Endian, MapType, Pinning};
pub use plan::Plan;
pub use spec::digest::{sha256, sha256_hex};
pub use spec::from_object::{
    LayoutHint, ModelError, ModelOptions, is_elf, load_side, load_side_with, map_model,
    map_model_with, missing_objects, object_model, object_model_with, read_object_model,
};
pub use spec::kernel_view::{
    ADJUSTMENTS, Adjustment, BPF_F_NO_PREALLOC, BPF_F_RDONLY_PROG, KERNEL_NAME_LEN, KernelEnv,
    kernel_view, kernel_view_of,
};
pub use spec::layout::{LayoutError, TAG_PREFIX, layout_of};
pub use spec::leaves::{Leaf, LeavesError, MAX_LEAVES};
pub use spec::model::{EnumValue, MapModel, Member, MergeRule, TypeLayout, same_layout};
pub use spec::snapshot::{
    FORMAT_NAME, FORMAT_VERSION, FormatError, MAX_SNAPSHOT_SIZE, ObjectModel, Snapshot,
    SnapshotError, decode, encode, read_snapshot, write_snapshot,
};
pub use spec::validate::{InvalidLayout, MAX_ENCODING_SIZE, check_layouts};
