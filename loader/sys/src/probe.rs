//! Feature probes for what varies by kernel, each run once per [`Bpf`] handle.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use super::attr::{LinkCreatePerfEventAttr, MapBatchAttr};
use super::{
    AttachTarget, AttachType, Bpf, Command, Insn, LinkCreate, MapCreate, MapType, ProgLoad,
    ProgramType,
};
use zerocopy::FromZeros;

/// A kernel capability that handover adapts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// `BPF_MAP_*_BATCH` on hash maps (5.6).
    BatchOps,
    /// `ringbuf` maps (5.8).
    Ringbuf,
    /// tcx links, `BPF_TCX_INGRESS`/`BPF_TCX_EGRESS` (6.6).
    TcxLink,
    /// `BPF_F_PATH_FD` for `BPF_OBJ_PIN`/`BPF_OBJ_GET` relative to a directory fd (6.5).
    PathFd,
    /// Atomic operations that return the old value (`BPF_ATOMIC` with `BPF_FETCH`,
    /// clang's `-mcpu=v3` fetch-add; 5.12).
    AtomicFetch,
    /// Perf-event links, `BPF_LINK_CREATE` with `BPF_PERF_EVENT` (5.15): what keeps a
    /// kprobe or uprobe attachment alive without the descriptor of its perf event.
    PerfLink,
}

const FEATURES: usize = 6;

impl Feature {
    const fn index(self) -> usize {
        match self {
            Feature::BatchOps => 0,
            Feature::Ringbuf => 1,
            Feature::TcxLink => 2,
            Feature::PathFd => 3,
            Feature::AtomicFetch => 4,
            Feature::PerfLink => 5,
        }
    }
}

const UNKNOWN: u8 = 0;
const ABSENT: u8 = 1;
const PRESENT: u8 = 2;

/// Probe results of one handle.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    state: [AtomicU8; FEATURES],
    // Serialises probes so that each runs once even when threads race to ask.
    running: Mutex<()>,
}

impl Bpf {
    /// Whether the kernel has `feature`; probed on first use and cached.
    ///
    /// A probe that fails for an unexpected reason (e.g. missing privileges) counts as
    /// absent, so callers take their fallback path.
    #[must_use]
    pub fn has(&self, feature: Feature) -> bool {
        let cache = &self.inner.features;
        let Some(slot) = cache.state.get(feature.index()) else {
            return false;
        };
        match slot.load(Ordering::Acquire) {
            PRESENT => return true,
            ABSENT => return false,
            _ => {}
        }
        let _guard = cache
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = slot.load(Ordering::Acquire);
        if known != UNKNOWN {
            return known == PRESENT;
        }
        let present = self.probe(feature);
        slot.store(if present { PRESENT } else { ABSENT }, Ordering::Release);
        present
    }

    fn probe(&self, feature: Feature) -> bool {
        match feature {
            // The ring must be a power-of-two number of pages; one page is the
            // smallest, whatever the page size.
            Feature::Ringbuf => self
                .map_create(&MapCreate::new(MapType::Ringbuf, 0, 0, super::page_size()))
                .is_ok(),
            Feature::BatchOps => {
                let Ok(map) = self.map_create(&MapCreate::new(MapType::Hash, 4, 4, 1)) else {
                    return false;
                };
                let (mut keys, mut values, mut token) = ([0u8; 4], [0u8; 4], [0u8; 8]);
                let mut attr = MapBatchAttr::new_zeroed();
                attr.map_fd = super::map::raw_fd(&map);
                attr.count = 1;
                attr.keys = keys.as_mut_ptr() as u64;
                attr.values = values.as_mut_ptr() as u64;
                attr.out_batch = token.as_mut_ptr() as u64;
                // An empty map answers ENOENT when the command exists.
                matches!(
                    self.raw(Command::MapLookupBatch, &mut attr, None, String::new)
                        .map_err(|e| e.errno()),
                    Ok(_) | Err(Some(libc::ENOENT))
                )
            }
            Feature::TcxLink => {
                let insns = [
                    Insn::new(0xb7, 0, 0, 0, 0), // r0 = 0
                    Insn::new(0x95, 0, 0, 0, 0), // exit
                ];
                let Ok(prog) = self.prog_load(&ProgLoad::new(ProgramType::SchedCls, &insns, "GPL"))
                else {
                    return false;
                };
                // Device 0 never exists: a kernel with tcx answers ENODEV, one
                // without refuses the attach type with EINVAL. Nothing is attached.
                let spec = LinkCreate::new(
                    std::os::fd::AsFd::as_fd(&prog),
                    AttachTarget::Ifindex(0),
                    AttachType::TcxIngress,
                );
                matches!(
                    self.link_create(&spec).map_err(|e| e.errno()),
                    Err(Some(libc::ENODEV))
                )
            }
            Feature::PerfLink => {
                let insns = [
                    Insn::new(0xb7, 0, 0, 0, 0), // r0 = 0
                    Insn::new(0x95, 0, 0, 0, 0), // exit
                ];
                let Ok(prog) = self.prog_load(&ProgLoad::new(ProgramType::Kprobe, &insns, "GPL"))
                else {
                    return false;
                };
                // No perf event behind descriptor -1: a kernel with perf-event links
                // looks it up and answers EBADF, one without refuses the attach type
                // with EINVAL before. Nothing is attached.
                let mut attr = LinkCreatePerfEventAttr::new_zeroed();
                attr.prog_fd = super::map::raw_fd(&prog);
                attr.target_fd = u32::MAX;
                attr.attach_type = AttachType::PerfEvent.into();
                matches!(
                    self.raw_fd(Command::LinkCreate, &mut attr, String::new)
                        .map_err(|e| e.errno()),
                    Err(Some(libc::EBADF))
                )
            }
            Feature::PathFd => {
                // A bad path_fd fails with EBADF when the flag is known, EINVAL if not.
                matches!(self.probe_path_fd(), Some(libc::EBADF))
            }
            Feature::AtomicFetch => {
                // A fetch-add on a stack slot: an older verifier refuses the nonzero
                // immediate of its BPF_XADD.
                let insns = [
                    Insn::new(0xb7, 1, 0, 0, 0),   // r1 = 0
                    Insn::new(0x7b, 10, 1, -8, 0), // *(u64 *)(r10 - 8) = r1
                    Insn::new(0xb7, 1, 0, 0, 1),   // r1 = 1
                    Insn::new(0xdb, 10, 1, -8, 1), // r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
                    Insn::new(0xb7, 0, 0, 0, 0),   // r0 = 0
                    Insn::new(0x95, 0, 0, 0, 0),   // exit
                ];
                self.prog_load(&ProgLoad::new(ProgramType::SocketFilter, &insns, "GPL"))
                    .is_ok()
            }
        }
    }
}

/// The program type that runs at a cgroup hook (`None`: not a cgroup hook, or one
/// that needs a BTF target, as `lsm_cgroup` does).
#[must_use]
pub fn cgroup_program_type(attach_type: AttachType) -> Option<ProgramType> {
    use AttachType as A;
    Some(match attach_type {
        A::CgroupInetIngress | A::CgroupInetEgress => ProgramType::CgroupSkb,
        A::CgroupInetSockCreate
        | A::CgroupInetSockRelease
        | A::CgroupInet4PostBind
        | A::CgroupInet6PostBind => ProgramType::CgroupSock,
        A::CgroupSockOps => ProgramType::SockOps,
        A::CgroupDevice => ProgramType::CgroupDevice,
        A::CgroupSysctl => ProgramType::CgroupSysctl,
        A::CgroupGetsockopt | A::CgroupSetsockopt => ProgramType::CgroupSockopt,
        A::CgroupInet4Bind
        | A::CgroupInet6Bind
        | A::CgroupInet4Connect
        | A::CgroupInet6Connect
        | A::CgroupUdp4Sendmsg
        | A::CgroupUdp6Sendmsg
        | A::CgroupUdp4Recvmsg
        | A::CgroupUdp6Recvmsg
        | A::CgroupInet4Getpeername
        | A::CgroupInet6Getpeername
        | A::CgroupInet4Getsockname
        | A::CgroupInet6Getsockname
        | A::CgroupUnixConnect
        | A::CgroupUnixSendmsg
        | A::CgroupUnixRecvmsg
        | A::CgroupUnixGetpeername
        | A::CgroupUnixGetsockname => ProgramType::CgroupSockAddr,
        _ => return None,
    })
}

impl Bpf {
    /// Whether the kernel attaches programs to cgroup hook `attach_type` through
    /// links: loads a program that returns 1 (allow, at every cgroup hook) and links
    /// it to `cgroup`, a cgroup made for the probe (the link is closed, so detached,
    /// before this returns). `false` when the hook is not a cgroup hook or any step
    /// is refused.
    #[doc(alias = "BPF_LINK_CREATE")]
    #[must_use]
    pub fn cgroup_link_works(&self, cgroup: impl AsFd, attach_type: AttachType) -> bool {
        let Some(prog_type) = cgroup_program_type(attach_type) else {
            return false;
        };
        self.links_a_pass_program(prog_type, cgroup.as_fd(), attach_type)
    }

    /// Whether the kernel attaches programs to socket maps through links (6.10):
    /// links a program that passes everything (`SK_PASS`) to a throwaway sockhash at
    /// `attach_type` (`sk_msg_verdict` or an `sk_skb` type). Both are closed before
    /// this returns. `false` when it is not a socket map attach type or any step is
    /// refused.
    #[doc(alias = "BPF_LINK_CREATE")]
    #[must_use]
    pub fn sockmap_link_works(&self, attach_type: AttachType) -> bool {
        let prog_type = match attach_type {
            AttachType::SkMsgVerdict => ProgramType::SkMsg,
            AttachType::SkSkbStreamParser
            | AttachType::SkSkbStreamVerdict
            | AttachType::SkSkbVerdict => ProgramType::SkSkb,
            _ => return false,
        };
        let Ok(map) = self.map_create(&MapCreate::new(MapType::Sockhash, 4, 8, 1)) else {
            return false;
        };
        self.links_a_pass_program(prog_type, map.as_fd(), attach_type)
    }

    /// Whether a program of `prog_type` returning 1 (allow, `SK_PASS`) loads for
    /// `attach_type` and links to `target`; program and link are closed on return.
    fn links_a_pass_program(
        &self,
        prog_type: ProgramType,
        target: BorrowedFd<'_>,
        attach_type: AttachType,
    ) -> bool {
        let insns = [
            Insn::new(0xb7, 0, 0, 0, 1), // r0 = 1
            Insn::new(0x95, 0, 0, 0, 0), // exit
        ];
        let mut load = ProgLoad::new(prog_type, &insns, "GPL");
        load.expected_attach_type = Some(attach_type);
        load.log_level = super::LogLevel::Always(0);
        let Ok(prog) = self.prog_load(&load) else {
            return false;
        };
        let spec = LinkCreate::new(prog.as_fd(), AttachTarget::Fd(target), attach_type);
        self.link_create(&spec).is_ok()
    }
}
