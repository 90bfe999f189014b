//! Flag constants of bpf(2) commands.

/// Flags of `BPF_MAP_CREATE` (`map_flags`).
pub mod map_flags {
    /// `BPF_F_NO_PREALLOC`: allocate elements on demand (required by `lpm_trie`).
    pub const NO_PREALLOC: u32 = 1 << 0;
    /// `BPF_F_NO_COMMON_LRU`.
    pub const NO_COMMON_LRU: u32 = 1 << 1;
    /// `BPF_F_NUMA_NODE`.
    pub const NUMA_NODE: u32 = 1 << 2;
    /// `BPF_F_RDONLY`: read-only for user space.
    pub const RDONLY: u32 = 1 << 3;
    /// `BPF_F_WRONLY`: write-only for user space.
    pub const WRONLY: u32 = 1 << 4;
    /// `BPF_F_ZERO_SEED`.
    pub const ZERO_SEED: u32 = 1 << 6;
    /// `BPF_F_RDONLY_PROG`: read-only for programs.
    pub const RDONLY_PROG: u32 = 1 << 7;
    /// `BPF_F_WRONLY_PROG`: write-only for programs.
    pub const WRONLY_PROG: u32 = 1 << 8;
    /// `BPF_F_MMAPABLE`.
    pub const MMAPABLE: u32 = 1 << 10;
    /// `BPF_F_INNER_MAP`.
    pub const INNER_MAP: u32 = 1 << 12;
}

/// Flags of `BPF_PROG_LOAD` (`prog_flags`).
pub mod prog_flags {
    /// `BPF_F_STRICT_ALIGNMENT`: the verifier checks alignment as on strict CPUs.
    pub const STRICT_ALIGNMENT: u32 = 1 << 0;
    /// `BPF_F_ANY_ALIGNMENT`: the verifier accepts any alignment.
    pub const ANY_ALIGNMENT: u32 = 1 << 1;
    /// `BPF_F_SLEEPABLE`: the program may sleep (`fentry.s`, `lsm.s`, ...).
    pub const SLEEPABLE: u32 = 1 << 4;
    /// `BPF_F_XDP_HAS_FRAGS`: the XDP program handles multi-buffer packets.
    pub const XDP_HAS_FRAGS: u32 = 1 << 5;
    /// `BPF_F_XDP_DEV_BOUND_ONLY`: the XDP program is bound to its offload device.
    pub const XDP_DEV_BOUND_ONLY: u32 = 1 << 6;
}

/// Flags of `BPF_PROG_ATTACH` and `BPF_LINK_CREATE` on cgroups.
pub mod attach_flags {
    /// `BPF_F_ALLOW_OVERRIDE`.
    pub const ALLOW_OVERRIDE: u32 = 1 << 0;
    /// `BPF_F_ALLOW_MULTI`.
    pub const ALLOW_MULTI: u32 = 1 << 1;
    /// `BPF_F_REPLACE`: replace the given program and fail if it is not the current one.
    pub const REPLACE: u32 = 1 << 2;
}
