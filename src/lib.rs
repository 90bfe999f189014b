//! handover: restart and upgrade eBPF daemons without losing traffic or map state.

#![deny(unsafe_code)]

pub mod btf_file;
pub mod inspect;
