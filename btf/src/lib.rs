//! Zero-copy parser for BPF Type Format (BTF) blobs.
