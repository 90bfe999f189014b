//! Diffs: verdicts per map, field mappings between layouts, and entry conversion.

pub(crate) mod convert;
pub(crate) mod field_map;
pub(crate) mod program;
pub(crate) mod verdict;
