//! `BPF_OBJ_GET_INFO_BY_FD` for maps, programs, links and BTF, as typed records.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::attr::{InfoAttr, RawBtfInfo, RawLinkInfo, RawMapInfo, RawProgInfo};
use super::map::raw_fd;
use super::{AttachType, Bpf, Command, Error, LinkType, MapType, ProgramType};

/// What the kernel reports about a map (`struct bpf_map_info`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MapInfo {
    /// The map type, if this build knows it.
    pub map_type: Option<MapType>,
    /// The map type as the kernel numbers it.
    pub map_type_raw: u32,
    /// The kernel-wide map id.
    pub id: u32,
    /// Bytes of a key.
    pub key_size: u32,
    /// Bytes of a value (one CPU's slot for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `map_flags` given at creation.
    pub flags: u32,
    /// Object name (at most 15 bytes).
    pub name: String,
    /// Offload device, 0 for none.
    pub ifindex: u32,
    /// BTF object id, 0 for none.
    pub btf_id: u32,
    /// Key type id in that BTF.
    pub btf_key_type_id: u32,
    /// Value type id in that BTF.
    pub btf_value_type_id: u32,
    /// Value type id in the kernel BTF (`struct_ops`).
    pub btf_vmlinux_value_type_id: u32,
    /// `map_extra` given at creation.
    pub map_extra: u64,
}

/// What the kernel reports about a program (`struct bpf_prog_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgInfo {
    /// The program type, if this build knows it.
    pub prog_type: Option<ProgramType>,
    /// The program type as the kernel numbers it.
    pub prog_type_raw: u32,
    /// The kernel-wide program id.
    pub id: u32,
    /// The kernel's hash of the instructions (`tag`).
    pub tag: [u8; 8],
    /// Object name (at most 15 bytes).
    pub name: String,
    /// Ids of the maps the program uses.
    pub map_ids: Vec<u32>,
    /// BTF object id, 0 for none.
    pub btf_id: u32,
    /// Whether the license is GPL-compatible.
    pub gpl_compatible: bool,
    /// Bytes of translated instructions.
    pub xlated_prog_len: u32,
    /// Bytes of JIT-compiled code.
    pub jited_prog_len: u32,
    /// Load time, nanoseconds since boot.
    pub load_time: u64,
    /// Uid of the loader.
    pub created_by_uid: u32,
    /// Instructions the verifier processed; `None` where the kernel does not report
    /// it (before 5.16).
    pub verified_insns: Option<u32>,
    /// Attach target type id (tracing, `ext`, `lsm`); `None` where the kernel does not
    /// report it (before 6.0).
    pub attach_btf_id: Option<u32>,
    /// BTF object holding that type; `None` as for `attach_btf_id`.
    pub attach_btf_obj_id: Option<u32>,
}

/// Where a link attaches its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkTarget {
    /// A cgroup hook.
    Cgroup {
        /// The cgroup's id (its inode number in cgroupfs).
        cgroup_id: u64,
        /// The hook.
        attach_type: Option<AttachType>,
    },
    /// XDP on a device.
    Xdp {
        /// The device.
        ifindex: u32,
    },
    /// tcx on a device.
    Tcx {
        /// The device.
        ifindex: u32,
        /// `tcx_ingress` or `tcx_egress`.
        attach_type: Option<AttachType>,
    },
    /// A network namespace hook (`sk_lookup`, `flow_dissector`).
    Netns {
        /// The namespace's inode number.
        netns_ino: u32,
        /// The hook.
        attach_type: Option<AttachType>,
    },
    /// A socket map (6.10).
    SockMap {
        /// The map's id (0 once the link is detached).
        map_id: u32,
        /// The hook.
        attach_type: Option<AttachType>,
    },
    /// A perf-event link (kprobe, uprobe, tracepoint or perf event program at a perf
    /// event, 5.15).
    PerfEvent {
        /// What the event is (`enum bpf_perf_event_type`): `None` where the kernel
        /// does not say (before 6.6, which has no per-type info for these links).
        event: Option<PerfEventType>,
    },
    /// A kprobe_multi link (5.18).
    KprobeMulti {
        /// Functions probed (0 where the kernel does not say, before 6.6).
        count: u32,
        /// `BPF_F_KPROBE_MULTI_RETURN` (bit 0) for return probes.
        flags: u32,
    },
    /// A link type whose details are not decoded here.
    Other,
}

/// What the perf event of a perf-event link is (`enum bpf_perf_event_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PerfEventType {
    /// `BPF_PERF_EVENT_UPROBE`.
    Uprobe,
    /// `BPF_PERF_EVENT_URETPROBE`.
    Uretprobe,
    /// `BPF_PERF_EVENT_KPROBE`.
    Kprobe,
    /// `BPF_PERF_EVENT_KRETPROBE`.
    Kretprobe,
    /// `BPF_PERF_EVENT_TRACEPOINT`.
    Tracepoint,
    /// `BPF_PERF_EVENT_EVENT`: a hardware or software event.
    Event,
}

impl PerfEventType {
    /// The type as `enum bpf_perf_event_type` numbers it (`None`: unspecified or
    /// unknown to this build).
    #[must_use]
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Uprobe,
            2 => Self::Uretprobe,
            3 => Self::Kprobe,
            4 => Self::Kretprobe,
            5 => Self::Tracepoint,
            6 => Self::Event,
            _ => return None,
        })
    }
}

/// What the kernel reports about a link (`struct bpf_link_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkInfo {
    /// The link type, if this build knows it.
    pub link_type: Option<LinkType>,
    /// The link type as the kernel numbers it.
    pub link_type_raw: u32,
    /// The kernel-wide link id.
    pub id: u32,
    /// Id of the program the link runs now.
    pub prog_id: u32,
    /// The attachment point.
    pub target: LinkTarget,
}

/// What the kernel reports about a BTF object (`struct bpf_btf_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BtfInfo {
    /// The kernel-wide BTF id.
    pub id: u32,
    /// Bytes of the raw BTF.
    pub size: u32,
    /// Name (`vmlinux` or a module name for kernel BTF, empty for loaded BTF).
    pub name: String,
    /// Whether this is kernel BTF.
    pub kernel_btf: bool,
}

fn c_name(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

/// The typed view of a `struct bpf_link_info` the kernel filled in.
///
/// The per-type union is read as native-endian bytes at the offsets of its C members
/// (`cgroup.cgroup_id` is a `__u64` at offset 0 of the union), not as pairs of `u32`
/// words, whose order within a `u64` depends on the host's byte order.
fn decode_link_info(raw: &RawLinkInfo) -> LinkInfo {
    let union = raw.union.as_bytes();
    let u32_at = |at: usize| {
        union
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_ne_bytes)
    };
    let u64_at = |at: usize| {
        union
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_ne_bytes)
    };
    let link_type = LinkType::try_from(raw.link_type).ok();
    let attach = |v: u32| AttachType::try_from(v).ok();
    let target = match link_type {
        // struct { __u64 cgroup_id; __u32 attach_type; }
        Some(LinkType::Cgroup) => LinkTarget::Cgroup {
            cgroup_id: u64_at(0),
            attach_type: attach(u32_at(8)),
        },
        // struct { __u32 ifindex; }
        Some(LinkType::Xdp) => LinkTarget::Xdp { ifindex: u32_at(0) },
        // struct { __u32 ifindex; __u32 attach_type; }
        Some(LinkType::Tcx) => LinkTarget::Tcx {
            ifindex: u32_at(0),
            attach_type: attach(u32_at(4)),
        },
        // struct { __u32 netns_ino; __u32 attach_type; }
        Some(LinkType::Netns) => LinkTarget::Netns {
            netns_ino: u32_at(0),
            attach_type: attach(u32_at(4)),
        },
        // struct { __u32 map_id; __u32 attach_type; }
        Some(LinkType::Sockmap) => LinkTarget::SockMap {
            map_id: u32_at(0),
            attach_type: attach(u32_at(4)),
        },
        // struct { __u32 type; __u32 :32; union { ... } }
        Some(LinkType::PerfEvent) => LinkTarget::PerfEvent {
            event: PerfEventType::from_raw(u32_at(0)),
        },
        // struct { __aligned_u64 addrs; __u32 count; __u32 flags; ... }
        Some(LinkType::KprobeMulti) => LinkTarget::KprobeMulti {
            count: u32_at(8),
            flags: u32_at(12),
        },
        _ => LinkTarget::Other,
    };
    LinkInfo {
        link_type,
        link_type_raw: raw.link_type,
        id: raw.id,
        prog_id: raw.prog_id,
        target,
    }
}

impl Bpf {
    /// Fills `info`; returns how many of its bytes the kernel wrote (`info_len` as it
    /// answers: less than the struct where the kernel's is older, the rest left zero).
    fn info<T: IntoBytes + FromBytes>(
        &self,
        fd: BorrowedFd<'_>,
        info: &mut T,
        what: &str,
    ) -> Result<usize, Error> {
        let mut attr = InfoAttr::new_zeroed();
        attr.bpf_fd = raw_fd(fd);
        attr.info_len = u32::try_from(size_of::<T>()).unwrap_or(u32::MAX);
        attr.info = info.as_mut_bytes().as_mut_ptr() as u64;
        self.raw(Command::ObjGetInfoByFd, &mut attr, None, || {
            format!("{what} fd {}", fd.as_raw_fd())
        })?;
        Ok((attr.info_len as usize).min(size_of::<T>()))
    }

    /// Describes a map.
    ///
    /// # Errors
    /// `map` is not a map descriptor.
    #[doc(alias = "BPF_OBJ_GET_INFO_BY_FD")]
    pub fn map_info(&self, map: impl AsFd) -> Result<MapInfo, Error> {
        let mut raw = RawMapInfo::new_zeroed();
        self.info(map.as_fd(), &mut raw, "map")?;
        Ok(MapInfo {
            map_type: MapType::try_from(raw.map_type).ok(),
            map_type_raw: raw.map_type,
            id: raw.id,
            key_size: raw.key_size,
            value_size: raw.value_size,
            max_entries: raw.max_entries,
            flags: raw.map_flags,
            name: c_name(&raw.name),
            ifindex: raw.ifindex,
            btf_id: raw.btf_id,
            btf_key_type_id: raw.btf_key_type_id,
            btf_value_type_id: raw.btf_value_type_id,
            btf_vmlinux_value_type_id: raw.btf_vmlinux_value_type_id,
            map_extra: raw.map_extra,
        })
    }

    /// Describes a program, including the ids of the maps it uses.
    ///
    /// # Errors
    /// `prog` is not a program descriptor.
    #[doc(alias = "BPF_OBJ_GET_INFO_BY_FD")]
    pub fn prog_info(&self, prog: impl AsFd) -> Result<ProgInfo, Error> {
        let fd = prog.as_fd();
        let mut raw = RawProgInfo::new_zeroed();
        let filled = self.info(fd, &mut raw, "program")?;
        // A field the kernel's struct does not reach is not reported, not zero.
        let reported = |offset: usize, value: u32| (offset + 4 <= filled).then_some(value);
        let mut map_ids = vec![0u32; raw.nr_map_ids as usize];
        if !map_ids.is_empty() {
            let mut again = RawProgInfo::new_zeroed();
            again.nr_map_ids = raw.nr_map_ids;
            again.map_ids = map_ids.as_mut_ptr() as u64;
            self.info(fd, &mut again, "program")?;
            // Maps cannot be added to a loaded program, only listed.
            map_ids.truncate(again.nr_map_ids.min(raw.nr_map_ids) as usize);
        }
        Ok(ProgInfo {
            prog_type: ProgramType::try_from(raw.prog_type).ok(),
            prog_type_raw: raw.prog_type,
            id: raw.id,
            tag: raw.tag,
            name: c_name(&raw.name),
            map_ids,
            btf_id: raw.btf_id,
            gpl_compatible: raw.flags & 1 != 0,
            xlated_prog_len: raw.xlated_prog_len,
            jited_prog_len: raw.jited_prog_len,
            load_time: raw.load_time,
            created_by_uid: raw.created_by_uid,
            verified_insns: reported(
                std::mem::offset_of!(RawProgInfo, verified_insns),
                raw.verified_insns,
            ),
            attach_btf_id: reported(
                std::mem::offset_of!(RawProgInfo, attach_btf_id),
                raw.attach_btf_id,
            ),
            attach_btf_obj_id: reported(
                std::mem::offset_of!(RawProgInfo, attach_btf_obj_id),
                raw.attach_btf_obj_id,
            ),
        })
    }

    /// The program's instructions as the kernel keeps them after verification
    /// (`xlated_prog_insns`), in host byte order; map descriptors in `ld_imm64` appear
    /// as map ids.
    ///
    /// # Errors
    /// `prog` is not a program descriptor, or the kernel withholds the instructions.
    #[doc(alias = "BPF_OBJ_GET_INFO_BY_FD")]
    pub fn prog_xlated(&self, prog: impl AsFd) -> Result<Vec<u8>, Error> {
        let fd = prog.as_fd();
        let mut raw = RawProgInfo::new_zeroed();
        self.info(fd, &mut raw, "program")?;
        let mut insns = vec![0u8; raw.xlated_prog_len as usize];
        if !insns.is_empty() {
            let mut again = RawProgInfo::new_zeroed();
            again.xlated_prog_len = raw.xlated_prog_len;
            again.xlated_prog_insns = insns.as_mut_ptr() as u64;
            self.info(fd, &mut again, "program")?;
            insns.truncate(again.xlated_prog_len.min(raw.xlated_prog_len) as usize);
        }
        Ok(insns)
    }

    /// Describes a link.
    ///
    /// # Errors
    /// `link` is not a link descriptor.
    #[doc(alias = "BPF_OBJ_GET_INFO_BY_FD")]
    pub fn link_info(&self, link: impl AsFd) -> Result<LinkInfo, Error> {
        let mut raw = RawLinkInfo::new_zeroed();
        self.info(link.as_fd(), &mut raw, "link")?;
        Ok(decode_link_info(&raw))
    }

    /// Describes a BTF object.
    ///
    /// # Errors
    /// `btf` is not a BTF descriptor.
    #[doc(alias = "BPF_OBJ_GET_INFO_BY_FD")]
    pub fn btf_info(&self, btf: impl AsFd) -> Result<BtfInfo, Error> {
        let mut raw = RawBtfInfo::new_zeroed();
        let mut name = [0u8; 64];
        raw.name = name.as_mut_ptr() as u64;
        raw.name_len = u32::try_from(name.len()).unwrap_or(0);
        match self.info(btf.as_fd(), &mut raw, "BTF") {
            // Before 5.11 the kernel's struct ends after `id` and refuses a non-zero
            // tail: ask again without a name (the tail left zero).
            Err(e) if e.errno() == Some(libc::E2BIG) => {
                raw = RawBtfInfo::new_zeroed();
                self.info(btf.as_fd(), &mut raw, "BTF")?;
            }
            other => {
                other?;
            }
        }
        Ok(BtfInfo {
            id: raw.id,
            size: raw.btf_size,
            name: c_name(&name),
            kernel_btf: raw.kernel_btf != 0,
        })
    }

    /// The raw BTF (header, types, strings) of a BTF object, as the kernel holds it:
    /// a loaded program's BTF, to find a function of it by name.
    ///
    /// # Errors
    /// `btf` is not a BTF object, or the kernel refuses the info command.
    #[doc(alias = "BPF_OBJ_GET_INFO_BY_FD")]
    pub fn btf_data(&self, btf: impl AsFd) -> Result<Vec<u8>, Error> {
        let btf = btf.as_fd();
        let size = self.btf_info(btf)?.size;
        let mut data = vec![0u8; size as usize];
        let mut raw = RawBtfInfo::new_zeroed();
        raw.btf = data.as_mut_ptr() as u64;
        raw.btf_size = size;
        self.info(btf, &mut raw, "BTF")?;
        data.truncate(raw.btf_size.min(size) as usize);
        Ok(data)
    }

    /// Bytes of one value of a map as user space reads and writes it: `value_size`,
    /// or for per-CPU maps `value_size` rounded up to 8, times the possible CPUs.
    ///
    /// # Errors
    /// The number of possible CPUs cannot be read.
    pub fn value_len(&self, map_type: Option<MapType>, value_size: u32) -> Result<usize, Error> {
        let size = value_size as usize;
        if map_type.is_some_and(MapType::is_per_cpu) {
            Ok(size.next_multiple_of(8) * self.possible_cpus()?)
        } else {
            Ok(size)
        }
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests fill fixed buffers")]
mod tests {
    use super::*;

    #[test]
    fn cgroup_link_ids_are_read_as_native_u64_not_as_little_endian_word_pairs() {
        let mut raw = RawLinkInfo::new_zeroed();
        raw.link_type = u32::from(LinkType::Cgroup);
        raw.id = 7;
        raw.prog_id = 9;
        // The kernel writes `cgroup_id` as one native-endian u64 at union offset 0,
        // then `attach_type` at offset 8.
        let id: u64 = 0x0000_0001_0000_1234;
        let bytes = raw.union.as_mut_bytes();
        bytes[..8].copy_from_slice(&id.to_ne_bytes());
        bytes[8..12].copy_from_slice(&u32::from(AttachType::CgroupInet4Connect).to_ne_bytes());
        let info = decode_link_info(&raw);
        assert_eq!(
            info.target,
            LinkTarget::Cgroup {
                cgroup_id: id,
                attach_type: Some(AttachType::CgroupInet4Connect),
            }
        );
        assert_eq!((info.id, info.prog_id), (7, 9));
    }

    #[test]
    fn perf_event_and_kprobe_multi_links_decode_their_type_and_count() {
        let mut raw = RawLinkInfo::new_zeroed();
        raw.link_type = u32::from(LinkType::PerfEvent);
        raw.union.as_mut_bytes()[..4].copy_from_slice(&4u32.to_ne_bytes());
        assert_eq!(
            decode_link_info(&raw).target,
            LinkTarget::PerfEvent {
                event: Some(PerfEventType::Kretprobe)
            }
        );
        // Before 6.6 the kernel leaves the union as it was sent: zero.
        raw.union = [0; 16];
        assert_eq!(
            decode_link_info(&raw).target,
            LinkTarget::PerfEvent { event: None }
        );
        raw.link_type = u32::from(LinkType::KprobeMulti);
        let bytes = raw.union.as_mut_bytes();
        bytes[8..12].copy_from_slice(&3u32.to_ne_bytes());
        bytes[12..16].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(
            decode_link_info(&raw).target,
            LinkTarget::KprobeMulti { count: 3, flags: 1 }
        );
    }

    #[test]
    fn tcx_and_netns_links_decode_their_two_words() {
        let mut raw = RawLinkInfo::new_zeroed();
        raw.link_type = u32::from(LinkType::Tcx);
        raw.union[0] = 3;
        raw.union[1] = u32::from(AttachType::TcxEgress);
        assert_eq!(
            decode_link_info(&raw).target,
            LinkTarget::Tcx {
                ifindex: 3,
                attach_type: Some(AttachType::TcxEgress),
            }
        );
        raw.link_type = 999;
        let info = decode_link_info(&raw);
        assert_eq!((info.link_type, info.target), (None, LinkTarget::Other));
    }
}
