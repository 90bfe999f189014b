//! Attaching programs: `BPF_LINK_CREATE`, `BPF_LINK_UPDATE`, `BPF_LINK_DETACH`, and the
//! older `BPF_PROG_ATTACH`/`BPF_PROG_DETACH` for hooks that have no links.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use zerocopy::FromZeros;

use super::attr::{
    FdAttr, IterCreateAttr, IterLinkInfo, LinkCreateAttr, LinkCreateIterAttr, LinkUpdateAttr,
    ProgAttachAttr, ProgQueryAttr, RawTracepointAttr,
};
use super::map::raw_fd;
use super::{AttachType, Bpf, Command, Error, REPLACE};

/// What a program attaches to.
#[derive(Debug, Clone, Copy)]
pub enum AttachTarget<'a> {
    /// A descriptor: a cgroup directory, a map (`sockmap`, `sockhash`), a network
    /// namespace.
    Fd(BorrowedFd<'a>),
    /// A network device (`xdp`, `tcx_ingress`, `tcx_egress`).
    Ifindex(u32),
}

impl AttachTarget<'_> {
    fn raw(self) -> u32 {
        match self {
            AttachTarget::Fd(fd) => raw_fd(fd),
            AttachTarget::Ifindex(i) => i,
        }
    }

    fn describe(self) -> String {
        match self {
            AttachTarget::Fd(fd) => format!("target fd {}", fd.as_raw_fd()),
            AttachTarget::Ifindex(i) => format!("ifindex {i}"),
        }
    }
}

/// `BPF_F_QUERY_EFFECTIVE`: a cgroup query lists the programs that run for the
/// cgroup, inherited from its ancestors included, rather than those attached to it.
pub const QUERY_EFFECTIVE: u32 = 1;

/// What `BPF_PROG_QUERY` answered for one hook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgQuery {
    /// The hook's attach flags (`BPF_F_ALLOW_OVERRIDE`, `BPF_F_ALLOW_MULTI`; 0 for a
    /// hook without programs or one that has no flags).
    pub attach_flags: u32,
    /// Ids of the programs attached, in the order they run.
    pub prog_ids: Vec<u32>,
    /// Per program, the flags it was attached with (cgroup hooks, not asked for in an
    /// effective query; empty otherwise).
    pub prog_attach_flags: Vec<u32>,
    /// The hook's revision, where the kernel keeps one (tcx; cgroup hooks of recent
    /// kernels): it changes with every attach and detach. `None` when the kernel did
    /// not write it (it has no revision for the hook, or does not know the field).
    pub revision: Option<u64>,
}

/// `sizeof(union bpf_iter_link_info)`.
const ITER_LINK_INFO_LEN: u32 = 16;

/// What an iterator program (`BPF_TRACE_ITER`) walks, given in the link's
/// `iter_info`.
#[derive(Debug, Clone, Copy)]
pub enum IterTarget<'a> {
    /// Every element of this map, for map-element targets (`bpf_map_elem`,
    /// `sockmap`, `bpf_sk_storage_map`).
    Map(BorrowedFd<'a>),
}

/// The arguments of `BPF_LINK_CREATE`.
#[derive(Debug, Clone, Copy)]
pub struct LinkCreate<'a> {
    /// The program to attach.
    pub prog: BorrowedFd<'a>,
    /// Where.
    pub target: AttachTarget<'a>,
    /// Which hook.
    pub attach_type: AttachType,
    /// Link flags (`XDP_FLAGS_*` for xdp, `BPF_F_BEFORE`/`BPF_F_AFTER` for tcx).
    pub flags: u32,
    /// tcx: the program or link that `BPF_F_BEFORE`/`BPF_F_AFTER` is relative to.
    pub relative_fd: Option<BorrowedFd<'a>>,
    /// tcx: fail unless the hook's revision is this one (0: any).
    pub expected_revision: u64,
}

impl<'a> LinkCreate<'a> {
    /// A link of `prog` to `target` at `attach_type`, without flags.
    #[must_use]
    pub fn new(prog: BorrowedFd<'a>, target: AttachTarget<'a>, attach_type: AttachType) -> Self {
        Self {
            prog,
            target,
            attach_type,
            flags: 0,
            relative_fd: None,
            expected_revision: 0,
        }
    }
}

impl Bpf {
    /// Attaches a program through a new link; the attachment lasts as long as the
    /// link (its descriptor or a pin).
    ///
    /// # Errors
    /// The kernel refuses (wrong program type for the hook, `EEXIST` for xdp when a
    /// program is attached already, `EINVAL` for an attach type it does not know).
    #[doc(alias = "BPF_LINK_CREATE")]
    pub fn link_create(&self, spec: &LinkCreate<'_>) -> Result<OwnedFd, Error> {
        let mut attr = LinkCreateAttr::new_zeroed();
        attr.prog_fd = raw_fd(spec.prog);
        attr.target = spec.target.raw();
        attr.attach_type = spec.attach_type.into();
        attr.flags = spec.flags;
        attr.relative_fd = spec.relative_fd.map_or(0, raw_fd);
        attr.expected_revision = spec.expected_revision;
        self.raw_fd(Command::LinkCreate, &mut attr, || {
            format!("{} link to {}", spec.attach_type, spec.target.describe())
        })
    }

    /// Attaches iterator program `prog` (loaded as tracing with expected attach type
    /// `BPF_TRACE_ITER`) to `target`; each [`Bpf::iter_create`] of the link then
    /// runs it once over the target.
    ///
    /// # Errors
    /// The kernel refuses (`EINVAL` when the program's iterator target takes no such
    /// target, `EACCES`/`EINVAL` when the program cannot read the map's elements).
    #[doc(alias = "BPF_LINK_CREATE")]
    pub fn link_create_iter(
        &self,
        prog: impl AsFd,
        target: IterTarget<'_>,
    ) -> Result<OwnedFd, Error> {
        let IterTarget::Map(map) = target;
        let mut info = IterLinkInfo::new_zeroed();
        info.map_fd = raw_fd(map);
        let mut attr = LinkCreateIterAttr::new_zeroed();
        attr.prog_fd = raw_fd(prog.as_fd());
        attr.attach_type = AttachType::TraceIter.into();
        // The kernel reads `info` during the call, while it lives here.
        attr.iter_info = std::ptr::from_ref(&info) as u64;
        attr.iter_info_len = ITER_LINK_INFO_LEN;
        self.raw_fd(Command::LinkCreate, &mut attr, || {
            format!("iterator link over map fd {}", map.as_raw_fd())
        })
    }

    /// Opens a new run of iterator `link`: reading the returned descriptor to its end
    /// runs the program over every object of the link's target, and gives what it
    /// wrote with `bpf_seq_write`/`bpf_seq_printf`.
    ///
    /// # Errors
    /// The kernel refuses (`link` is not an iterator link).
    #[doc(alias = "BPF_ITER_CREATE")]
    pub fn iter_create(&self, link: impl AsFd) -> Result<OwnedFd, Error> {
        let link = link.as_fd();
        let mut attr = IterCreateAttr::new_zeroed();
        attr.link_fd = raw_fd(link);
        self.raw_fd(Command::IterCreate, &mut attr, || {
            format!("iterator link fd {}", link.as_raw_fd())
        })
    }

    /// Attaches a raw tracepoint program to the tracepoint `name`, or a tracing or LSM
    /// program (`fentry`, `fexit`, `fmod_ret`, `tp_btf`, `lsm`; `name` `None`) to the
    /// target it was loaded for, through a new link. The kernel has no update and no
    /// detach for these links: the attachment lasts until the link is freed.
    ///
    /// # Errors
    /// `ENOENT` for a tracepoint the kernel does not have; `EINVAL` for a program of
    /// another type; any other refusal.
    #[doc(alias = "BPF_RAW_TRACEPOINT_OPEN")]
    pub fn raw_tracepoint_open(
        &self,
        prog: impl AsFd,
        name: Option<&str>,
    ) -> Result<OwnedFd, Error> {
        let name_c = name
            .map(|n| {
                std::ffi::CString::new(n).map_err(|_| Error::Argument {
                    command: Command::RawTracepointOpen.name(),
                    object: format!("tracepoint {n:?}"),
                    reason: "a tracepoint name holds no NUL byte".to_owned(),
                })
            })
            .transpose()?;
        let prog = prog.as_fd();
        let mut attr = RawTracepointAttr::new_zeroed();
        // The kernel reads the name during the call, while `name_c` lives here.
        attr.name = name_c.as_ref().map_or(0, |c| c.as_ptr() as u64);
        attr.prog_fd = raw_fd(prog);
        self.raw_fd(Command::RawTracepointOpen, &mut attr, || match name {
            Some(n) => format!("raw tracepoint {n}"),
            None => format!("tracing program fd {}", prog.as_raw_fd()),
        })
    }

    /// Replaces the program of `link` with `new_prog` if, and only if, it runs
    /// `expected_old` now (`BPF_F_REPLACE`); otherwise nothing changes.
    ///
    /// # Errors
    /// `EPERM` when the link runs another program than `expected_old`, and any other
    /// refusal of the kernel.
    #[doc(alias = "BPF_LINK_UPDATE")]
    pub fn link_update(
        &self,
        link: impl AsFd,
        new_prog: impl AsFd,
        expected_old: impl AsFd,
    ) -> Result<(), Error> {
        self.link_update_impl(link.as_fd(), new_prog.as_fd(), Some(expected_old.as_fd()))
    }

    /// Replaces the program of `link` with `new_prog`, whatever it runs now.
    ///
    /// # Errors
    /// The kernel refuses (a program of another type).
    #[doc(alias = "BPF_LINK_UPDATE")]
    pub fn link_update_unconditional(
        &self,
        link: impl AsFd,
        new_prog: impl AsFd,
    ) -> Result<(), Error> {
        self.link_update_impl(link.as_fd(), new_prog.as_fd(), None)
    }

    fn link_update_impl(
        &self,
        link: BorrowedFd<'_>,
        new_prog: BorrowedFd<'_>,
        old: Option<BorrowedFd<'_>>,
    ) -> Result<(), Error> {
        let mut attr = LinkUpdateAttr::new_zeroed();
        attr.link_fd = raw_fd(link);
        attr.new_prog_fd = raw_fd(new_prog);
        if let Some(old) = old {
            attr.flags = REPLACE;
            attr.old_prog_fd = raw_fd(old);
        }
        self.raw(Command::LinkUpdate, &mut attr, None, || {
            format!("link fd {}", link.as_raw_fd())
        })
        .map(drop)
    }

    /// Detaches a link's program while the link object itself stays alive (defunct).
    ///
    /// # Errors
    /// The kernel refuses (`EOPNOTSUPP` for link types that cannot detach).
    #[doc(alias = "BPF_LINK_DETACH")]
    pub fn link_detach(&self, link: impl AsFd) -> Result<(), Error> {
        let link = link.as_fd();
        let mut attr = FdAttr::new_zeroed();
        attr.fd = raw_fd(link);
        self.raw(Command::LinkDetach, &mut attr, None, || {
            format!("link fd {}", link.as_raw_fd())
        })
        .map(drop)
    }

    /// Attaches `prog` to `target` without a link (`sk_msg`/`sk_skb` on a sockmap, or
    /// a cgroup hook in the legacy way). With `replace`, the attachment of that
    /// program is replaced (`BPF_F_REPLACE`, cgroup hooks with [`ALLOW_MULTI`]): the
    /// call fails with `ENOENT` and changes nothing if it is not attached.
    ///
    /// A sockmap hook holds one program per attach type and a new attach replaces
    /// it whatever it is; the kernel has no compare-and-swap there, so detach with the
    /// expected program ([`Bpf::prog_detach`] fails with `ENOENT` on another one).
    ///
    /// # Errors
    /// The kernel refuses.
    #[doc(alias = "BPF_PROG_ATTACH")]
    pub fn prog_attach(
        &self,
        target: AttachTarget<'_>,
        prog: impl AsFd,
        attach_type: AttachType,
        flags: u32,
        replace: Option<BorrowedFd<'_>>,
    ) -> Result<(), Error> {
        let mut attr = ProgAttachAttr::new_zeroed();
        attr.target_fd = target.raw();
        attr.attach_bpf_fd = raw_fd(prog);
        attr.attach_type = attach_type.into();
        attr.attach_flags = flags;
        if let Some(old) = replace {
            attr.attach_flags |= REPLACE;
            attr.replace_bpf_fd = raw_fd(old);
        }
        self.raw(Command::ProgAttach, &mut attr, None, || {
            format!("{attach_type} attachment to {}", target.describe())
        })
        .map(drop)
    }

    /// Detaches `prog` (or, for hooks that hold one program, whatever is attached when
    /// `prog` is `None`) from `target`.
    ///
    /// # Errors
    /// `ENOENT` when that program is not attached there.
    #[doc(alias = "BPF_PROG_DETACH")]
    pub fn prog_detach(
        &self,
        target: AttachTarget<'_>,
        prog: Option<BorrowedFd<'_>>,
        attach_type: AttachType,
    ) -> Result<(), Error> {
        let mut attr = ProgAttachAttr::new_zeroed();
        attr.target_fd = target.raw();
        attr.attach_bpf_fd = prog.map_or(0, raw_fd);
        attr.attach_type = attach_type.into();
        self.raw(Command::ProgDetach, &mut attr, None, || {
            format!("{attach_type} attachment to {}", target.describe())
        })
        .map(drop)
    }

    /// Lists the programs attached to `target` at `attach_type`, with their flags
    /// and the hook's revision where the kernel has one. `query_flags` is 0 or
    /// [`QUERY_EFFECTIVE`].
    ///
    /// The list is read in two calls (count, then ids) and read again if programs
    /// were attached in between (`ENOSPC`). Kernels before 6.0 know no per-program
    /// flags and refuse the query that asks for them (`EINVAL`): it is asked again
    /// without, and [`ProgQuery::prog_attach_flags`] is empty then.
    ///
    /// # Errors
    /// The kernel refuses (`EINVAL` for an attach type it cannot query at that
    /// target, `EBADF` for a target that is not one).
    #[doc(alias = "BPF_PROG_QUERY")]
    pub fn prog_query(
        &self,
        target: AttachTarget<'_>,
        attach_type: AttachType,
        query_flags: u32,
    ) -> Result<ProgQuery, Error> {
        let describe = || format!("{attach_type} programs at {}", target.describe());
        let mut per_prog_flags = query_flags & QUERY_EFFECTIVE == 0;
        let mut capacity = 0u32;
        // Bounded: each retry follows an attach that happened between two calls.
        for _ in 0..16 {
            let len = capacity as usize;
            let mut ids = vec![0u32; len];
            let mut flags = vec![0u32; len];
            let mut attr = ProgQueryAttr::new_zeroed();
            attr.target = target.raw();
            attr.attach_type = attach_type.into();
            attr.query_flags = query_flags;
            attr.count = capacity;
            if capacity > 0 {
                // The kernel writes at most `count` entries into each buffer, which
                // live here for the whole call.
                attr.prog_ids = ids.as_mut_ptr() as u64;
                if per_prog_flags {
                    attr.prog_attach_flags = flags.as_mut_ptr() as u64;
                }
            }
            match self.raw(Command::ProgQuery, &mut attr, None, describe) {
                Ok(_) => {}
                Err(e) if e.errno() == Some(libc::ENOSPC) => {
                    capacity = attr.count.max(capacity.saturating_add(1));
                    continue;
                }
                Err(e) if e.errno() == Some(libc::EINVAL) && per_prog_flags && capacity > 0 => {
                    per_prog_flags = false;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let n = attr.count as usize;
            if n > len {
                // Only the count was asked for (or programs came since): ask again
                // with room for them all.
                capacity = attr.count;
                continue;
            }
            ids.truncate(n);
            flags.truncate(if per_prog_flags { n } else { 0 });
            return Ok(ProgQuery {
                attach_flags: attr.attach_flags,
                prog_ids: ids,
                prog_attach_flags: flags,
                revision: (attr.revision != 0).then_some(attr.revision),
            });
        }
        Err(Error::Argument {
            command: Command::ProgQuery.name(),
            object: describe(),
            reason: "the list of programs kept growing while it was read".to_owned(),
        })
    }
}
