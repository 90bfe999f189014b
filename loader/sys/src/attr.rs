//! The variants of `union bpf_attr` and the `bpf_*_info` records, laid out as in
//! `include/uapi/linux/bpf.h`.
//!
//! Every struct is plain old data: explicit padding fields keep the layout free of
//! implicit holes so that `zerocopy` can view it as bytes, and `new_zeroed()` leaves
//! every byte the kernel does not know about at zero (the kernel refuses a non-zero
//! tail with `E2BIG`). Pointers travel as `u64`, as the kernel's `__aligned_u64`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub(crate) use handover_uapi::OBJ_NAME_LEN;

/// `BPF_MAP_CREATE`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
    pub numa_node: u32,
    pub map_name: [u8; OBJ_NAME_LEN],
    pub map_ifindex: u32,
    pub btf_fd: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    pub btf_vmlinux_value_type_id: u32,
    pub map_extra: u64,
    pub value_type_btf_obj_fd: i32,
    pub map_token_fd: i32,
}

/// `BPF_MAP_LOOKUP_ELEM`, `BPF_MAP_UPDATE_ELEM`, `BPF_MAP_DELETE_ELEM`,
/// `BPF_MAP_GET_NEXT_KEY` (where `value` is `next_key`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct MapElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

/// `BPF_MAP_*_BATCH`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct MapBatchAttr {
    pub in_batch: u64,
    pub out_batch: u64,
    pub keys: u64,
    pub values: u64,
    pub count: u32,
    pub map_fd: u32,
    pub elem_flags: u64,
    pub flags: u64,
}

/// `BPF_PROG_LOAD`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; OBJ_NAME_LEN],
    pub prog_ifindex: u32,
    pub expected_attach_type: u32,
    pub prog_btf_fd: u32,
    pub func_info_rec_size: u32,
    pub func_info: u64,
    pub func_info_cnt: u32,
    pub line_info_rec_size: u32,
    pub line_info: u64,
    pub line_info_cnt: u32,
    pub attach_btf_id: u32,
    /// `attach_prog_fd` or `attach_btf_obj_fd`.
    pub attach_fd: u32,
    pub core_relo_cnt: u32,
    pub fd_array: u64,
    pub core_relos: u64,
    pub core_relo_rec_size: u32,
    pub log_true_size: u32,
    pub prog_token_fd: i32,
    /// Entries of `fd_array` (6.14); 0: the kernel reads it as it needs.
    pub fd_array_cnt: u32,
}

/// `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct TestRunAttr {
    pub prog_fd: u32,
    pub retval: u32,
    pub data_size_in: u32,
    pub data_size_out: u32,
    pub data_in: u64,
    pub data_out: u64,
    pub repeat: u32,
    pub duration: u32,
    pub ctx_size_in: u32,
    pub ctx_size_out: u32,
    pub ctx_in: u64,
    pub ctx_out: u64,
    pub flags: u32,
    pub cpu: u32,
    pub batch_size: u32,
    pub _pad: u32,
}

/// `BPF_OBJ_PIN`, `BPF_OBJ_GET`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ObjAttr {
    pub pathname: u64,
    pub bpf_fd: u32,
    pub file_flags: u32,
    pub path_fd: i32,
    pub _pad: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct InfoAttr {
    pub bpf_fd: u32,
    pub info_len: u32,
    pub info: u64,
}

/// `BPF_*_GET_FD_BY_ID` and `BPF_*_GET_NEXT_ID`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct IdAttr {
    pub id: u32,
    pub next_id: u32,
    pub open_flags: u32,
    pub token_fd: i32,
}

/// `BPF_BTF_LOAD`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct BtfLoadAttr {
    pub btf: u64,
    pub btf_log_buf: u64,
    pub btf_size: u32,
    pub btf_log_size: u32,
    pub btf_log_level: u32,
    pub btf_log_true_size: u32,
    pub btf_flags: u32,
    pub btf_token_fd: i32,
}

/// `BPF_PROG_ATTACH`, `BPF_PROG_DETACH`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ProgAttachAttr {
    pub target_fd: u32,
    pub attach_bpf_fd: u32,
    pub attach_type: u32,
    pub attach_flags: u32,
    pub replace_bpf_fd: u32,
    pub relative_fd: u32,
    pub expected_revision: u64,
}

/// `BPF_PROG_QUERY`: the target and attach type in, the attached programs out
/// (`revision` only from kernels with the multi-program API on the hook: tcx, and
/// cgroup hooks on recent kernels; older kernels leave it at zero).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ProgQueryAttr {
    pub target: u32,
    pub attach_type: u32,
    pub query_flags: u32,
    pub attach_flags: u32,
    pub prog_ids: u64,
    pub count: u32,
    pub _pad: u32,
    pub prog_attach_flags: u64,
    pub link_ids: u64,
    pub link_attach_flags: u64,
    pub revision: u64,
}

/// `BPF_RAW_TRACEPOINT_OPEN`: the tracepoint's name (0 for a tracing or LSM program,
/// whose target was given at load), the program, and a cookie.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct RawTracepointAttr {
    pub name: u64,
    pub prog_fd: u32,
    pub _pad: u32,
    pub cookie: u64,
}

/// `BPF_LINK_CREATE`, with the `tcx`/`netkit` tail (`relative_fd`,
/// `expected_revision`) that cgroup and xdp links leave at zero.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct LinkCreateAttr {
    pub prog_fd: u32,
    pub target: u32,
    pub attach_type: u32,
    pub flags: u32,
    pub relative_fd: u32,
    pub _pad: u32,
    pub expected_revision: u64,
}

/// `BPF_LINK_CREATE` of an iterator link: the same head, then the `iter_info`
/// pointer and length where other links have their target's fields.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct LinkCreateIterAttr {
    pub prog_fd: u32,
    pub target: u32,
    pub attach_type: u32,
    pub flags: u32,
    pub iter_info: u64,
    pub iter_info_len: u32,
    pub _pad: u32,
}

/// `BPF_LINK_CREATE` of a perf-event link (`BPF_PERF_EVENT`): the perf event's
/// descriptor as the target, then `perf_event.bpf_cookie`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct LinkCreatePerfEventAttr {
    pub prog_fd: u32,
    pub target_fd: u32,
    pub attach_type: u32,
    pub flags: u32,
    pub bpf_cookie: u64,
}

/// `struct perf_event_attr` of `include/uapi/linux/perf_event.h` as far as
/// `sig_data` (`PERF_ATTR_SIZE_VER7`, 128 bytes; a kernel that knows less checks
/// that the tail it does not know is zero). A probe event uses `type`, `config` (the
/// return probe bit), `config1` (`kprobe_func`, `uprobe_path`) and `config2`
/// (`probe_offset`); `flags` holds the C bit fields (`disabled`, `inherit`, ...).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct PerfEventAttr {
    pub type_: u32,
    pub size: u32,
    pub config: u64,
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    pub flags: u64,
    pub wakeup_events: u32,
    pub bp_type: u32,
    pub config1: u64,
    pub config2: u64,
    pub branch_sample_type: u64,
    pub sample_regs_user: u64,
    pub sample_stack_user: u32,
    pub clockid: i32,
    pub sample_regs_intr: u64,
    pub aux_watermark: u32,
    pub sample_max_stack: u16,
    pub _reserved_2: u16,
    pub aux_sample_size: u32,
    pub _reserved_3: u32,
    pub sig_data: u64,
}

/// `union bpf_iter_link_info`: 16 bytes, of which a map iterator uses the first
/// four (`map.map_fd`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct IterLinkInfo {
    pub map_fd: u32,
    pub _rest: [u32; 3],
}

/// `BPF_ITER_CREATE`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct IterCreateAttr {
    pub link_fd: u32,
    pub flags: u32,
}

/// `BPF_LINK_UPDATE`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct LinkUpdateAttr {
    pub link_fd: u32,
    pub new_prog_fd: u32,
    pub flags: u32,
    pub old_prog_fd: u32,
}

/// `BPF_PROG_BIND_MAP`: the program, the map it keeps, flags (none defined).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ProgBindMapAttr {
    pub prog_fd: u32,
    pub map_fd: u32,
    pub flags: u32,
}

/// `BPF_MAP_FREEZE`, `BPF_LINK_DETACH`: a single fd.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct FdAttr {
    pub fd: u32,
    pub _pad: u32,
}

/// `struct bpf_map_info`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct RawMapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: [u8; OBJ_NAME_LEN],
    pub ifindex: u32,
    pub btf_vmlinux_value_type_id: u32,
    pub netns_dev: u64,
    pub netns_ino: u64,
    pub btf_id: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    pub btf_vmlinux_id: u32,
    pub map_extra: u64,
}

/// `struct bpf_prog_info`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct RawProgInfo {
    pub prog_type: u32,
    pub id: u32,
    pub tag: [u8; 8],
    pub jited_prog_len: u32,
    pub xlated_prog_len: u32,
    pub jited_prog_insns: u64,
    pub xlated_prog_insns: u64,
    pub load_time: u64,
    pub created_by_uid: u32,
    pub nr_map_ids: u32,
    pub map_ids: u64,
    pub name: [u8; OBJ_NAME_LEN],
    pub ifindex: u32,
    /// Bit 0: `gpl_compatible`.
    pub flags: u32,
    pub netns_dev: u64,
    pub netns_ino: u64,
    pub nr_jited_ksyms: u32,
    pub nr_jited_func_lens: u32,
    pub jited_ksyms: u64,
    pub jited_func_lens: u64,
    pub btf_id: u32,
    pub func_info_rec_size: u32,
    pub func_info: u64,
    pub nr_func_info: u32,
    pub nr_line_info: u32,
    pub line_info: u64,
    pub jited_line_info: u64,
    pub nr_jited_line_info: u32,
    pub line_info_rec_size: u32,
    pub jited_line_info_rec_size: u32,
    pub nr_prog_tags: u32,
    pub prog_tags: u64,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub recursion_misses: u64,
    pub verified_insns: u32,
    pub attach_btf_obj_id: u32,
    pub attach_btf_id: u32,
    pub _pad: u32,
}

/// `struct bpf_link_info`: the common head and the per-type union as raw words.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct RawLinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    pub _pad: u32,
    pub union: [u32; 16],
}

/// `struct bpf_btf_info`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct RawBtfInfo {
    pub btf: u64,
    pub btf_size: u32,
    pub id: u32,
    pub name: u64,
    pub name_len: u32,
    pub kernel_btf: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn offsets_match_the_uapi_header() {
        assert_eq!(offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(offset_of!(MapCreateAttr, btf_fd), 48);
        assert_eq!(offset_of!(MapCreateAttr, map_extra), 64);
        assert_eq!(size_of::<MapCreateAttr>(), 80);
        assert_eq!(size_of::<MapElemAttr>(), 32);
        assert_eq!(offset_of!(MapBatchAttr, count), 32);
        assert_eq!(offset_of!(MapBatchAttr, elem_flags), 40);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(ProgLoadAttr, func_info), 80);
        assert_eq!(offset_of!(ProgLoadAttr, line_info), 96);
        assert_eq!(offset_of!(ProgLoadAttr, fd_array), 120);
        assert_eq!(offset_of!(ProgLoadAttr, log_true_size), 140);
        assert_eq!(offset_of!(ProgLoadAttr, prog_token_fd), 144);
        assert_eq!(offset_of!(ObjAttr, path_fd), 16);
        assert_eq!(offset_of!(BtfLoadAttr, btf_log_true_size), 28);
        assert_eq!(offset_of!(LinkCreateAttr, expected_revision), 24);
        assert_eq!(offset_of!(LinkCreateIterAttr, iter_info), 16);
        assert_eq!(offset_of!(LinkCreateIterAttr, iter_info_len), 24);
        assert_eq!(size_of::<IterLinkInfo>(), 16);
        assert_eq!(size_of::<IterCreateAttr>(), 8);
        assert_eq!(offset_of!(ProgAttachAttr, expected_revision), 24);
        assert_eq!(offset_of!(ProgQueryAttr, prog_ids), 16);
        assert_eq!(offset_of!(ProgQueryAttr, count), 24);
        assert_eq!(offset_of!(ProgQueryAttr, prog_attach_flags), 32);
        assert_eq!(offset_of!(ProgQueryAttr, link_ids), 40);
        assert_eq!(offset_of!(ProgQueryAttr, revision), 56);
        assert_eq!(size_of::<ProgQueryAttr>(), 64);
        assert_eq!(offset_of!(RawTracepointAttr, prog_fd), 8);
        assert_eq!(offset_of!(RawTracepointAttr, cookie), 16);
        assert_eq!(offset_of!(RawMapInfo, name), 24);
        assert_eq!(offset_of!(RawMapInfo, btf_id), 64);
        assert_eq!(size_of::<RawMapInfo>(), 88);
        assert_eq!(offset_of!(RawProgInfo, name), 64);
        assert_eq!(offset_of!(RawProgInfo, btf_id), 128);
        assert_eq!(offset_of!(RawProgInfo, verified_insns), 216);
        assert_eq!(offset_of!(RawLinkInfo, union), 16);
        assert_eq!(size_of::<RawBtfInfo>(), 32);
    }

    #[test]
    fn perf_event_layouts_match_the_uapi_headers() {
        // union bpf_attr, link_create: perf_event.bpf_cookie after the common head.
        assert_eq!(offset_of!(LinkCreatePerfEventAttr, target_fd), 4);
        assert_eq!(offset_of!(LinkCreatePerfEventAttr, attach_type), 8);
        assert_eq!(offset_of!(LinkCreatePerfEventAttr, bpf_cookie), 16);
        assert_eq!(size_of::<LinkCreatePerfEventAttr>(), 24);
        // struct perf_event_attr; PERF_ATTR_SIZE_VER0 ends after config1, VER1 after
        // config2, VER5 after aux_watermark's word, VER7 after sig_data.
        assert_eq!(offset_of!(PerfEventAttr, size), 4);
        assert_eq!(offset_of!(PerfEventAttr, config), 8);
        assert_eq!(offset_of!(PerfEventAttr, sample_period), 16);
        assert_eq!(offset_of!(PerfEventAttr, flags), 40);
        assert_eq!(offset_of!(PerfEventAttr, wakeup_events), 48);
        assert_eq!(offset_of!(PerfEventAttr, bp_type), 52);
        assert_eq!(offset_of!(PerfEventAttr, config1), 56);
        assert_eq!(offset_of!(PerfEventAttr, config2), 64);
        assert_eq!(offset_of!(PerfEventAttr, branch_sample_type), 72);
        assert_eq!(offset_of!(PerfEventAttr, sample_regs_user), 80);
        assert_eq!(offset_of!(PerfEventAttr, clockid), 92);
        assert_eq!(offset_of!(PerfEventAttr, sample_regs_intr), 96);
        assert_eq!(offset_of!(PerfEventAttr, aux_watermark), 104);
        assert_eq!(offset_of!(PerfEventAttr, sample_max_stack), 108);
        assert_eq!(offset_of!(PerfEventAttr, aux_sample_size), 112);
        assert_eq!(offset_of!(PerfEventAttr, sig_data), 120);
        assert_eq!(size_of::<PerfEventAttr>(), 128);
    }

    #[test]
    fn the_remaining_fields_sit_where_the_uapi_header_puts_them() {
        assert_eq!(offset_of!(MapCreateAttr, numa_node), 24);
        assert_eq!(offset_of!(MapCreateAttr, map_ifindex), 44);
        assert_eq!(offset_of!(MapCreateAttr, btf_vmlinux_value_type_id), 60);
        assert_eq!(offset_of!(MapCreateAttr, value_type_btf_obj_fd), 72);
        assert_eq!(offset_of!(MapCreateAttr, map_token_fd), 76);
        assert_eq!(offset_of!(MapElemAttr, key), 8);
        assert_eq!(offset_of!(MapElemAttr, flags), 24);
        assert_eq!(offset_of!(MapBatchAttr, map_fd), 36);
        assert_eq!(offset_of!(MapBatchAttr, flags), 48);
        assert_eq!(offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(ProgLoadAttr, kern_version), 40);
        assert_eq!(offset_of!(ProgLoadAttr, attach_btf_id), 108);
        assert_eq!(offset_of!(ProgLoadAttr, attach_fd), 112);
        assert_eq!(offset_of!(ProgLoadAttr, core_relos), 128);
        assert_eq!(offset_of!(ProgLoadAttr, fd_array_cnt), 148);
        assert_eq!(offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(offset_of!(TestRunAttr, ctx_out), 56);
        assert_eq!(offset_of!(TestRunAttr, flags), 64);
        assert_eq!(offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(offset_of!(InfoAttr, info), 8);
        assert_eq!(offset_of!(IdAttr, open_flags), 8);
        assert_eq!(offset_of!(BtfLoadAttr, btf_flags), 32);
        assert_eq!(offset_of!(ProgAttachAttr, replace_bpf_fd), 16);
        assert_eq!(offset_of!(LinkCreateAttr, relative_fd), 16);
        assert_eq!(offset_of!(LinkUpdateAttr, old_prog_fd), 12);
        assert_eq!(offset_of!(RawMapInfo, btf_vmlinux_value_type_id), 44);
        assert_eq!(offset_of!(RawMapInfo, netns_dev), 48);
        assert_eq!(offset_of!(RawMapInfo, map_extra), 80);
        assert_eq!(offset_of!(RawProgInfo, load_time), 40);
        assert_eq!(offset_of!(RawProgInfo, nr_map_ids), 52);
        assert_eq!(offset_of!(RawProgInfo, map_ids), 56);
        assert_eq!(offset_of!(RawProgInfo, flags), 84);
        assert_eq!(offset_of!(RawProgInfo, run_time_ns), 192);
        assert_eq!(offset_of!(RawProgInfo, attach_btf_id), 224);
        assert_eq!(size_of::<RawProgInfo>(), 232);
        assert_eq!(offset_of!(RawBtfInfo, name), 16);
        assert_eq!(offset_of!(RawBtfInfo, kernel_btf), 28);
    }
}
