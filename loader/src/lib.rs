//! BPF object loader: ELF objects into map and program specs, and the bpf(2) layer.

pub mod sys;
