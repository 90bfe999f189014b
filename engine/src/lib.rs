//! The upgrade executor: the one part of the pipeline above the pure spec, diff and plan
//! stages that acts on the kernel. It executes a plan step by step under a write-ahead
//! journal, so that a crash at any step is followed by a roll-forward or a rollback to
//! exactly one consistent set of pins.

#![deny(unsafe_code)]

pub mod migrate;
