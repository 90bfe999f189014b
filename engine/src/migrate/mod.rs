//! The data path of an upgrade: carrying map entries from the old maps to the new.
//!
//! - [`copy_map`] (step 2): every entry, converted, by overlapped batches; it writes
//!   the [`MergeBase`] into the state directory as it goes.
//! - [`delta_pass`] / [`delta_passes`] (step 3): what the old programs changed since,
//!   while they still run.
//! - [`carry_sockets`]: the sockets of a sockmap or sockhash, carried in the kernel
//!   by a generated `iter/sockmap` program (user space cannot re-insert them).
//! - [`reconcile`] (step 5): the three-way merge of base, old map and new map after
//!   the switch, per field with [`MergeRule`]s, with `sum` applied in the kernel.
//!
//! Everything reads and writes maps through [`MapAccess`], implemented for the
//! kernel's [`sys::Map`] and by the in-memory [`FakeMap`] of the pure tests.

// The crates this module builds on, named once so that a move of the bpf(2) layer
// or of the conversion code is an edit of these lines only.
pub(crate) use handover_plan as plan;
pub(crate) use handover_sys as sys;

mod access;
mod base;
mod conversion;
mod copy;
mod delta;
mod digest;
mod error;
mod fake;
mod fields;
mod kernel;
mod patch_prog;
mod read_prog;
mod reconcile;
mod sockets;
mod walk;
mod write;
mod write_prog;

pub use access::{Cursor, Geometry, MapAccess, Partial, batch_unsupported};
pub use base::{BaseChange, BaseEntry, BaseShape, BaseWriter, MergeBase, base_path};
pub use conversion::Conversion;
pub use copy::{CopyOptions, CopyReport, MAX_WRITERS, StageTimes, copy_map};
pub use delta::{DeltaLimits, DeltaReport, delta_pass, delta_passes};
pub use error::MigrateError;
pub use fake::{FakeEntries, FakeMap, FakeStats, WriterHook};
pub use fields::{Leaf, MAX_ARRAY_LEAVES, ValueFields};
pub use patch_prog::KernelPatcher;
pub use plan::MergeRule;
pub use reconcile::{
    Conflicts, LeafWrite, MARK_DONE, MARK_VALUE_SIZE, Outcome, Patch, Patcher, ReconcileOptions,
    ReconcileReport, UserPatcher, merge_value, reconcile,
};
pub use sockets::{SocketPass, SocketReport, carry_sockets, carry_sockets_with};
pub use walk::{Chunk, DEFAULT_CHUNK, read_map};
