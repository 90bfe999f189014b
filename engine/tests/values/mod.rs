//! The value layouts the data-path tests migrate (engine/tests/migrate_fake.rs on the
//! fake map, engine/tests/kernel_migrate.rs on the kernel's), and their bytes.
#![allow(dead_code, reason = "each test file uses a different part")]

use crate::common::{cstruct, u32_, u64_};

/// Old value: `struct { u32 hits; u32 flags; u64 bytes; }` (16 bytes).
pub fn old_layout() -> handover_plan::TypeLayout {
    cstruct(
        Some("v"),
        vec![("hits", u32_()), ("flags", u32_()), ("bytes", u64_())],
    )
}

/// New value: reordered, `hits` widened, a field appended:
/// `struct { u64 bytes; u64 hits; u32 flags; u32 extra; }` (24 bytes).
pub fn new_layout() -> handover_plan::TypeLayout {
    cstruct(
        Some("v"),
        vec![
            ("bytes", u64_()),
            ("hits", u64_()),
            ("flags", u32_()),
            ("extra", u32_()),
        ],
    )
}

/// The bytes of an old value.
pub fn old_value(hits: u32, flags: u32, bytes: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&hits.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&bytes.to_le_bytes());
    v
}

/// `bytes`, `hits`, `flags` and `extra` of a new value.
pub fn new_fields(v: &[u8]) -> (u64, u64, u32, u32) {
    (
        u64::from_le_bytes(v[0..8].try_into().unwrap()),
        u64::from_le_bytes(v[8..16].try_into().unwrap()),
        u32::from_le_bytes(v[16..20].try_into().unwrap()),
        u32::from_le_bytes(v[20..24].try_into().unwrap()),
    )
}

/// The bytes of a new value.
pub fn new_value(bytes: u64, hits: u64, flags: u32, extra: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&bytes.to_le_bytes());
    v.extend_from_slice(&hits.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&extra.to_le_bytes());
    v
}
