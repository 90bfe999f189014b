//! The data path of an upgrade: carrying map entries from the old maps to the new.
//!
//! Everything here reads and writes maps through [`MapAccess`], implemented for the
//! kernel's [`sys::Map`] and by the in-memory [`FakeMap`] the pure tests use.

// The crates this module builds on, named once so that a move of the bpf(2) layer
// or of the conversion code is an edit of these lines only.
pub(crate) use handover_loader::sys;

mod access;
mod fake;
mod kernel;

pub use access::{Cursor, Geometry, MapAccess, Partial, batch_unsupported};
pub use fake::{FakeEntries, FakeMap, FakeStats, Writer};
