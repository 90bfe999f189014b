//! [`RealKernel`]: the [`Kernel`] trait over the bpf(2) layer, the loader and bpffs.
//!
//! Pins go through [`PinRoot`] (directory fds, atomic replacement, `RENAME_EXCHANGE`
//! with a rollback pin, a manifest of what is ours, kept in the state directory).
//! Objects this process holds are its descriptors, by id.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use handover_bpffs::{PinPath, PinRoot};
use handover_load::LoadOptions;
use handover_loader::{Object, ObjectOptions};
use handover_sys::{
    AttachTarget, Bpf, LinkCreate, LinkTarget, Map, MapCreate, MapType, ObjectKind, OpenFlags,
    UpdateFlags, map_flags,
};

use crate::kernel::{Kernel, KernelError, KernelFacts, Kind, LoadedSet, ObjRef, ObjectSource};
use crate::migrate::{
    KernelPatcher, MapAccess, Patcher, SocketPass, SocketReport, ValueFields, carry_sockets,
    carry_sockets_with,
};
use crate::options::{AttachPoint, Options};
use crate::plan::map_key;

/// The running kernel, with a pin root on bpffs.
#[derive(Debug)]
pub struct RealKernel {
    bpf: Bpf,
    root: PinRoot,
    fds: HashMap<ObjRef, OwnedFd>,
    /// The sockmap iterator probe's answer, once asked.
    sockmap_iter: Option<bool>,
    /// Probed: whether the kernel has cgroup links, by attach type.
    hook_links: HashMap<String, bool>,
}

fn failed(op: impl Into<String>) -> impl FnOnce(handover_sys::Error) -> KernelError {
    let op = op.into();
    move |e| KernelError::failed(op, e)
}

fn bpffs_failed(op: impl Into<String>) -> impl FnOnce(handover_bpffs::Error) -> KernelError {
    let op = op.into();
    move |e| KernelError::failed(op, e)
}

fn pin_path(path: &str) -> Result<PinPath, KernelError> {
    PinPath::new(path).map_err(bpffs_failed(format!("pin path {path}")))
}

const fn object_kind(kind: Kind) -> ObjectKind {
    match kind {
        Kind::Map => ObjectKind::Map,
        Kind::Prog => ObjectKind::Program,
        Kind::Link => ObjectKind::Link,
        Kind::Btf => ObjectKind::Btf,
    }
}

impl RealKernel {
    /// Opens the pin root `pin_root` (a directory on a bpffs), with the manifest of
    /// pins kept in `state_dir`.
    ///
    /// # Errors
    /// The pin root is not a bpffs directory; the manifest is unreadable.
    pub fn open(pin_root: &Path, state_dir: &Path) -> Result<Self, KernelError> {
        let bpf = Bpf::kernel();
        let root = PinRoot::open(&bpf, pin_root, &state_dir.join("bpffs-manifest.json")).map_err(
            bpffs_failed(format!("open pin root {}", pin_root.display())),
        )?;
        Ok(Self {
            bpf,
            root,
            fds: HashMap::new(),
            sockmap_iter: None,
            hook_links: HashMap::new(),
        })
    }

    /// The bpf(2) handle.
    #[must_use]
    pub fn bpf(&self) -> &Bpf {
        &self.bpf
    }

    /// The descriptor of an object this process holds.
    #[must_use]
    pub fn fd(&self, object: ObjRef) -> Option<BorrowedFd<'_>> {
        self.fds.get(&object).map(AsFd::as_fd)
    }

    fn fd_of(&mut self, object: ObjRef) -> Result<BorrowedFd<'_>, KernelError> {
        if !self.fds.contains_key(&object) {
            let fd = self
                .bpf
                .fd_by_id(object_kind(object.kind), object.id, OpenFlags::READ_WRITE)
                .map_err(failed(format!("open {object} by id")))?;
            self.fds.insert(object, fd);
        }
        self.fds
            .get(&object)
            .map(AsFd::as_fd)
            .ok_or_else(|| KernelError::Missing {
                what: object.to_string(),
            })
    }

    /// A descriptor of its own on `object`, for a call that takes one by value.
    fn dup(&mut self, object: ObjRef) -> Result<OwnedFd, KernelError> {
        self.fd_of(object)?
            .try_clone_to_owned()
            .map_err(|e| KernelError::failed("dup", e))
    }

    fn hold(&mut self, fd: OwnedFd) -> Result<ObjRef, KernelError> {
        let r = self.identify(fd.as_fd())?;
        self.fds.entry(r).or_insert(fd);
        Ok(r)
    }

    /// The kind and id of a descriptor. The kind is read from the descriptor's
    /// anonymous inode (`anon_inode:bpf-map`, `bpf-prog`, `bpf-link`, `btf`): the info
    /// command answers for any kind with the bytes of that kind's record.
    fn identify(&self, fd: BorrowedFd<'_>) -> Result<ObjRef, KernelError> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let target = std::fs::read_link(format!("/proc/self/fd/{raw}"))
            .map_err(|e| KernelError::failed("identify a pinned object", e))?;
        let target = target.to_string_lossy();
        let kind = match target.strip_prefix("anon_inode:") {
            Some("bpf-map") => Kind::Map,
            Some("bpf-prog") => Kind::Prog,
            Some("bpf_link" | "bpf-link") => Kind::Link,
            Some("btf") => Kind::Btf,
            _ => {
                return Err(KernelError::failed(
                    "identify a pinned object",
                    std::io::Error::other(format!("{target} is not a BPF object")),
                ));
            }
        };
        let id = match kind {
            Kind::Map => self.bpf.map_info(fd).map(|i| i.id),
            Kind::Prog => self.bpf.prog_info(fd).map(|i| i.id),
            Kind::Link => self.bpf.link_info(fd).map(|i| i.id),
            Kind::Btf => self.bpf.btf_info(fd).map(|i| i.id),
        }
        .map_err(failed(format!("info of a pinned {target}")))?;
        Ok(ObjRef { kind, id })
    }

    /// Whether the kernel runs the socket carry: its program loaded and attached
    /// over a throwaway sockmap, and one (empty) run read.
    fn probe_sockmap_iter(&self) -> bool {
        let create = || {
            let mut spec = MapCreate::new(MapType::Sockmap, 4, 8, 1);
            spec.name = "handover_probe";
            Map::create(&self.bpf, &spec)
        };
        match (create(), create()) {
            (Ok(a), Ok(b)) => match carry_sockets(&self.bpf, "probe", &a, &b) {
                Ok(_) => true,
                Err(e) => {
                    tracing::info!(reason = %e, "the kernel cannot carry sockets");
                    false
                }
            },
            _ => false,
        }
    }

    fn open_map(&mut self, r: ObjRef) -> Result<Map, KernelError> {
        let fd = self.dup(r)?;
        Map::new(&self.bpf, fd).map_err(failed(format!("open {r}")))
    }

    fn walk(&self, dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), KernelError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| KernelError::failed(format!("list {}", dir.display()), e))?;
        for e in entries {
            let e = e.map_err(|e| KernelError::failed(format!("list {}", dir.display()), e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let ft = e
                .file_type()
                .map_err(|e| KernelError::failed(format!("stat {rel}"), e))?;
            if ft.is_dir() {
                self.walk(&e.path(), &rel, out)?;
            } else {
                out.push(rel);
            }
        }
        Ok(())
    }
}

fn object_options(options: &Options) -> Result<ObjectOptions, KernelError> {
    let types = options
        .loader_program_types()
        .map_err(|e| KernelError::failed("program types", std::io::Error::other(e)))?;
    Ok(ObjectOptions::new().program_types(types))
}

/// The cgroup directory and attach type of a cgroup hook; `None` when the cgroup
/// does not exist (nothing is attached there).
fn existing_cgroup_hook(
    point: &AttachPoint,
) -> Result<Option<(std::fs::File, handover_sys::AttachType)>, KernelError> {
    match cgroup_hook(point) {
        Ok(hook) => Ok(Some(hook)),
        Err(KernelError::Failed { source, .. })
            if source
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The cgroup directory and attach type of a cgroup hook.
fn cgroup_hook(
    point: &AttachPoint,
) -> Result<(std::fs::File, handover_sys::AttachType), KernelError> {
    let AttachPoint::Cgroup {
        path, attach_type, ..
    } = point
    else {
        return Err(KernelError::failed(
            format!("attach without a link at {point}"),
            std::io::Error::other("only cgroup hooks hold programs without a link"),
        ));
    };
    let cgroup = std::fs::File::open(path)
        .map_err(|e| KernelError::failed(format!("open cgroup {}", path.display()), e))?;
    let attach_type = attach_type
        .parse()
        .map_err(|e| KernelError::failed(format!("attach type {attach_type}"), e))?;
    Ok((cgroup, attach_type))
}

/// A socket map hook: the map, open, its id and the attach type; `None` when the
/// map is gone (a hook on a freed map holds nothing).
fn sock_map_hook(
    bpf: &Bpf,
    point: &AttachPoint,
) -> Result<Option<(OwnedFd, handover_sys::AttachType, u32)>, KernelError> {
    let AttachPoint::SockMap {
        map,
        attach_type,
        target,
        ..
    } = point
    else {
        return Err(KernelError::failed(
            format!("socket map hook {point}"),
            std::io::Error::other("not a socket map hook"),
        ));
    };
    let Some(id) = *target else {
        return Err(KernelError::failed(
            format!("attach at {point}"),
            std::io::Error::other(format!("map {map} is not a map of the set")),
        ));
    };
    let attach_type = attach_type
        .parse()
        .map_err(|e| KernelError::failed(format!("attach type {attach_type}"), e))?;
    match bpf.fd_by_id(ObjectKind::Map, id, OpenFlags::READ_WRITE) {
        Ok(fd) => Ok(Some((fd, attach_type, id))),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(KernelError::failed(format!("open map {id} of {point}"), e)),
    }
}

/// The id of a cgroup: the inode number of its directory.
fn cgroup_id(cgroup: &std::fs::File, point: &AttachPoint) -> Result<u64, KernelError> {
    cgroup
        .metadata()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|e| KernelError::failed(format!("stat the cgroup of {point}"), e))
}

/// The index of a network device, from sysfs.
fn ifindex(iface: &str) -> Result<u32, KernelError> {
    let path = PathBuf::from("/sys/class/net").join(iface).join("ifindex");
    std::fs::read_to_string(&path)
        .map_err(|e| KernelError::failed(format!("read {}", path.display()), e))?
        .trim()
        .parse()
        .map_err(|e| KernelError::failed(format!("parse {}", path.display()), e))
}

impl RealKernel {
    /// A perf-event link of `program` to a new probe event at `point` (a kprobe or
    /// uprobe attachment); the link holds the event, whose descriptor is closed here.
    fn attach_probe(
        &mut self,
        program: ObjRef,
        point: &AttachPoint,
    ) -> Result<OwnedFd, KernelError> {
        use handover_sys::{ProbeKind, ProbePmu, ProbeTarget};
        let op = || format!("attach {program} at {point}");
        let (kind, target, retprobe) = match point {
            AttachPoint::Kprobe { function, retprobe } => (
                ProbeKind::Kprobe,
                ProbeTarget::Kernel {
                    function,
                    offset: 0,
                },
                *retprobe,
            ),
            AttachPoint::Uprobe {
                path,
                symbol,
                offset,
                retprobe,
            } => {
                let offset = match symbol {
                    None => *offset,
                    Some(symbol) => {
                        let bytes = std::fs::read(path).map_err(|e| {
                            KernelError::failed(format!("{}: read {}", op(), path.display()), e)
                        })?;
                        crate::probes::uprobe_file_offset(path, &bytes, symbol, *offset)
                            .map_err(|e| KernelError::failed(op(), std::io::Error::other(e)))?
                    }
                };
                (
                    ProbeKind::Uprobe,
                    ProbeTarget::User { path, offset },
                    *retprobe,
                )
            }
            _ => {
                return Err(KernelError::failed(
                    op(),
                    std::io::Error::other("not a probe attach point"),
                ));
            }
        };
        let pmu = ProbePmu::read(kind).map_err(failed(op()))?;
        let event = handover_sys::probe_open(&pmu, target, retprobe).map_err(failed(op()))?;
        let prog = self.dup(program)?;
        self.bpf
            .link_create_perf_event(&prog, &event, 0)
            .map_err(failed(op()))
    }
}

impl Kernel for RealKernel {
    fn facts(&mut self) -> KernelFacts {
        KernelFacts {
            page_size: handover_sys::page_size(),
            possible_cpus: self
                .bpf
                .possible_cpus()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            // bpffs renames through simple_rename, which exchanges since 5.x; the
            // pin root's exchange reports a kernel that refuses.
            rename_exchange: true,
            tcx_links: self.bpf.has(handover_sys::Feature::TcxLink),
            sockmap_iter: match self.sockmap_iter {
                Some(known) => known,
                None => *self.sockmap_iter.insert(self.probe_sockmap_iter()),
            },
            perf_links: self.bpf.has(handover_sys::Feature::PerfLink),
            kprobes: handover_sys::ProbePmu::read(handover_sys::ProbeKind::Kprobe).is_ok(),
            uprobes: handover_sys::ProbePmu::read(handover_sys::ProbeKind::Uprobe).is_ok(),
        }
    }

    fn load(
        &mut self,
        objects: &[ObjectSource],
        options: &Options,
        reuse: &BTreeMap<String, ObjRef>,
    ) -> Result<LoadedSet, KernelError> {
        let oo = object_options(options)?;
        let oo_types = options
            .loader_program_types()
            .map_err(|e| KernelError::failed("program types", std::io::Error::other(e)))?;
        let inner_maps = options
            .loader_inner_maps()
            .map_err(|e| KernelError::failed("inner map templates", std::io::Error::other(e)))?;
        let mut set = LoadedSet::default();
        let mut created: Vec<(ObjRef, OwnedFd)> = Vec::new();
        for o in objects {
            let mut object = Object::parse_with(&o.bytes, &oo)
                .map_err(|e| KernelError::failed(format!("parse {}", o.name), e))?;
            let mut reuse_maps = std::collections::HashMap::new();
            let mut kept_capacity = Vec::new();
            for spec in object.maps() {
                let key = map_key(&o.name, &spec.name);
                let shared = set.maps.get(&key).or_else(|| reuse.get(&key)).copied();
                if let Some(r) = shared {
                    let fd = match created.iter().find(|(c, _)| *c == r) {
                        Some((_, fd)) => fd.try_clone(),
                        None => self.fd_of(r)?.try_clone_to_owned(),
                    }
                    .map_err(|e| KernelError::failed(format!("dup {r}"), e))?;
                    // A reused map keeps its capacity (the plan says so where the
                    // object declares another): the programs load against it.
                    let live = self
                        .bpf
                        .map_info(fd.as_fd())
                        .map_err(failed(format!("info of reused map {key}")))?
                        .max_entries;
                    if live != spec.max_entries && spec.max_entries != 0 {
                        kept_capacity.push((spec.name.clone(), live));
                    }
                    reuse_maps.insert(spec.name.clone(), std::sync::Arc::new(fd));
                }
            }
            for (name, live) in kept_capacity {
                object.set_max_entries(&name, live);
            }
            let loaded = handover_load::load(
                &self.bpf,
                &object,
                LoadOptions {
                    reuse_maps,
                    program_types: oo_types.clone(),
                    inner_maps: inner_maps.clone(),
                    ..LoadOptions::for_file(&o.name)
                },
            )
            .map_err(|e| KernelError::failed(format!("load {}", o.name), e))?;
            if let Some(btf) = loaded.btf {
                let id = self
                    .bpf
                    .btf_info(btf.as_fd())
                    .map_err(failed("BTF info"))?
                    .id;
                let r = ObjRef {
                    kind: Kind::Btf,
                    id,
                };
                set.btf.push(r);
                created.push((r, btf));
            }
            for (name, m) in loaded.maps {
                let key = map_key(&o.name, &name);
                let id = self
                    .bpf
                    .map_info(m.fd())
                    .map_err(failed(format!("info of map {key}")))?
                    .id;
                let r = ObjRef::map(id);
                if !m.reused {
                    created.push((r, m.map.into_fd()));
                }
                set.maps.insert(key, r);
            }
            for (name, p) in loaded.programs {
                let id = self
                    .bpf
                    .prog_info(p.fd.as_fd())
                    .map_err(failed(format!("info of {name}")))?
                    .id;
                let r = ObjRef::prog(id);
                created.push((r, p.fd));
                set.programs.insert(name, r);
            }
        }
        for (r, fd) in created {
            self.fds.entry(r).or_insert(fd);
        }
        Ok(set)
    }

    fn get(&mut self, path: &str) -> Result<Option<ObjRef>, KernelError> {
        match self.root.get(&pin_path(path)?, OpenFlags::READ_WRITE) {
            Ok(fd) => self.hold(fd).map(Some),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(KernelError::failed(format!("open pin {path}"), e)),
        }
    }

    fn pin(&mut self, object: ObjRef, path: &str) -> Result<(), KernelError> {
        let p = pin_path(path)?;
        let fd = self.dup(object)?;
        match self.root.pin(&fd, &p) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::EEXIST) => Err(KernelError::Exists {
                path: path.to_owned(),
            }),
            Err(e) => Err(KernelError::failed(format!("pin {object} at {path}"), e)),
        }
    }

    fn exchange(&mut self, object: ObjRef, path: &str) -> Result<(), KernelError> {
        let p = pin_path(path)?;
        let fd = self.dup(object)?;
        self.root
            .exchange(&fd, &p)
            .map_err(bpffs_failed(format!("exchange {object} in at {path}")))
    }

    fn drop_rollback(&mut self, path: &str) -> Result<(), KernelError> {
        match self.root.commit(&pin_path(path)?) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(KernelError::failed(
                format!("drop rollback pin of {path}"),
                e,
            )),
        }
    }

    fn unpin(&mut self, path: &str) -> Result<bool, KernelError> {
        let p = pin_path(path)?;
        let had = match self.root.get(&p, OpenFlags::READ_ONLY) {
            Ok(_) => true,
            Err(e) if e.errno() == Some(libc::ENOENT) => false,
            Err(_) => true,
        };
        if !self.root.entries().iter().any(|e| e.path == path) {
            // Not pinned through this root: nothing of ours to remove.
            return Ok(false);
        }
        self.root
            .unpin(&p)
            .map_err(bpffs_failed(format!("unpin {path}")))?;
        Ok(had)
    }

    fn pins(&mut self) -> Result<Vec<String>, KernelError> {
        let mut out = Vec::new();
        let root = self.root.path().to_owned();
        self.walk(&root, "", &mut out)?;
        out.sort();
        Ok(out)
    }

    fn attach(&mut self, program: ObjRef, point: &AttachPoint) -> Result<ObjRef, KernelError> {
        let link = match point {
            AttachPoint::Cgroup {
                path, attach_type, ..
            } => {
                let cgroup = std::fs::File::open(path).map_err(|e| {
                    KernelError::failed(format!("open cgroup {}", path.display()), e)
                })?;
                let attach_type = attach_type
                    .parse()
                    .map_err(|e| KernelError::failed(format!("attach type {attach_type}"), e))?;
                let prog = self.dup(program)?;
                self.bpf
                    .link_create(&LinkCreate::new(
                        prog.as_fd(),
                        AttachTarget::Fd(cgroup.as_fd()),
                        attach_type,
                    ))
                    .map_err(failed(format!("attach {program} at {point}")))?
            }
            // Device hooks: an XDP or tcx link to the device's index.
            AttachPoint::Xdp { iface } | AttachPoint::Tcx { iface, .. } => {
                let attach_type = match point {
                    AttachPoint::Tcx { direction, .. } => direction.attach_type(),
                    _ => handover_sys::AttachType::Xdp,
                };
                let index = ifindex(iface)?;
                let prog = self.dup(program)?;
                self.bpf
                    .link_create(&LinkCreate::new(
                        prog.as_fd(),
                        AttachTarget::Ifindex(index),
                        attach_type,
                    ))
                    .map_err(failed(format!("attach {program} at {point}")))?
            }
            AttachPoint::Tracing | AttachPoint::RawTracepoint { .. } => {
                let name = match point {
                    AttachPoint::RawTracepoint { tracepoint } => Some(tracepoint.as_str()),
                    _ => None,
                };
                let prog = self.dup(program)?;
                self.bpf
                    .raw_tracepoint_open(&prog, name)
                    .map_err(failed(format!("attach {program} at {point}")))?
            }
            AttachPoint::SockMap { .. } => {
                let (map, attach_type, _) =
                    sock_map_hook(&self.bpf, point)?.ok_or_else(|| KernelError::Missing {
                        what: point.to_string(),
                    })?;
                let prog = self.dup(program)?;
                self.bpf
                    .link_create(&LinkCreate::new(
                        prog.as_fd(),
                        AttachTarget::Fd(map.as_fd()),
                        attach_type,
                    ))
                    .map_err(failed(format!("attach {program} at {point}")))?
            }
            AttachPoint::Kprobe { .. } | AttachPoint::Uprobe { .. } => {
                self.attach_probe(program, point)?
            }
        };
        self.hold(link)
    }

    fn link_program(&mut self, link: ObjRef) -> Result<Option<u32>, KernelError> {
        let fd = self.dup(link)?;
        let info = self
            .bpf
            .link_info(&fd)
            .map_err(failed(format!("info of {link}")))?;
        // A detached cgroup link reports no cgroup; its program is not running.
        let detached = matches!(info.target, LinkTarget::Cgroup { cgroup_id: 0, .. })
            || matches!(info.target, LinkTarget::Xdp { ifindex: 0 })
            || matches!(info.target, LinkTarget::Tcx { ifindex: 0, .. })
            || matches!(info.target, LinkTarget::SockMap { map_id: 0, .. });
        Ok((!detached && info.prog_id != 0).then_some(info.prog_id))
    }

    fn update_link(
        &mut self,
        link: ObjRef,
        new: ObjRef,
        expected: ObjRef,
    ) -> Result<(), KernelError> {
        let new_fd = self.dup(new)?;
        let old_fd = match self.fd_of(expected) {
            Ok(fd) => fd
                .try_clone_to_owned()
                .map_err(|e| KernelError::failed("dup", e))?,
            Err(_) => {
                // The expected program is gone: the link cannot be running it.
                let actual = self.link_program(link)?;
                return Err(KernelError::Mismatch {
                    what: link.to_string(),
                    expected: expected.id,
                    actual,
                });
            }
        };
        let link_fd = self.dup(link)?;
        match self.bpf.link_update(&link_fd, &new_fd, &old_fd) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::EPERM) => {
                let actual = self.link_program(link)?;
                Err(KernelError::Mismatch {
                    what: link.to_string(),
                    expected: expected.id,
                    actual,
                })
            }
            Err(e) => Err(KernelError::failed(format!("update {link}"), e)),
        }
    }

    fn detach(&mut self, link: ObjRef) -> Result<(), KernelError> {
        let fd = self.dup(link)?;
        match self.bpf.link_detach(&fd) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => Err(KernelError::Unsupported {
                what: format!("detach {link}"),
            }),
            Err(e) => Err(KernelError::failed(format!("detach {link}"), e)),
        }
    }

    fn hook_links(&mut self, point: &AttachPoint) -> bool {
        let (path, attach_type) = match point {
            AttachPoint::Cgroup {
                path, attach_type, ..
            } => (path, attach_type),
            AttachPoint::SockMap { attach_type, .. } => {
                let key = format!("sockmap {attach_type}");
                if let Some(&known) = self.hook_links.get(&key) {
                    return known;
                }
                let works = attach_type
                    .parse()
                    .is_ok_and(|at| self.bpf.sockmap_link_works(at));
                self.hook_links.insert(key, works);
                return works;
            }
            _ => return false,
        };
        if let Some(&known) = self.hook_links.get(attach_type) {
            return known;
        }
        let Ok(at) = attach_type.parse::<handover_sys::AttachType>() else {
            return false;
        };
        // A throwaway cgroup under the target: the probe's link runs nowhere else,
        // and closing it detaches it before the cgroup is removed.
        let probe = path.join(format!("handover-probe-{}", std::process::id()));
        let present = match std::fs::create_dir(&probe) {
            Ok(()) => {
                let works = std::fs::File::open(&probe)
                    .map(|dir| self.bpf.cgroup_link_works(&dir, at))
                    .unwrap_or(false);
                let _ = std::fs::remove_dir(&probe);
                works
            }
            Err(e) => {
                tracing::warn!(
                    cgroup = %path.display(),
                    error = %e,
                    "no throwaway cgroup for the cgroup link probe: attaching without a link"
                );
                false
            }
        };
        self.hook_links.insert(attach_type.clone(), present);
        present
    }

    fn prog_attach(&mut self, program: ObjRef, point: &AttachPoint) -> Result<u64, KernelError> {
        if let AttachPoint::SockMap { .. } = point {
            let (map, attach_type, id) =
                sock_map_hook(&self.bpf, point)?.ok_or_else(|| KernelError::Missing {
                    what: point.to_string(),
                })?;
            let prog = self.dup(program)?;
            // The map's program of this type is exchanged for `prog`.
            self.bpf
                .prog_attach(AttachTarget::Fd(map.as_fd()), &prog, attach_type, 0, None)
                .map_err(failed(format!("attach {program} at {point}")))?;
            return Ok(u64::from(id));
        }
        let (cgroup, attach_type) = cgroup_hook(point)?;
        let prog = self.dup(program)?;
        self.bpf
            .prog_attach(
                AttachTarget::Fd(cgroup.as_fd()),
                &prog,
                attach_type,
                handover_sys::ALLOW_MULTI,
                None,
            )
            .map_err(failed(format!("attach {program} at {point}")))?;
        cgroup_id(&cgroup, point)
    }

    fn prog_replace(
        &mut self,
        point: &AttachPoint,
        new: ObjRef,
        expected: ObjRef,
    ) -> Result<(), KernelError> {
        if let AttachPoint::SockMap { .. } = point {
            // No compare-and-swap at a socket map: the program there is checked first
            // where the kernel can say (5.19+), under the engine's exclusive lock.
            let ids = match self.prog_query(point) {
                Ok((_, ids)) => ids,
                Err(KernelError::Unsupported { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            if let Some(&actual) = ids.first()
                && actual != expected.id
            {
                return Err(KernelError::Mismatch {
                    what: point.to_string(),
                    expected: expected.id,
                    actual: Some(actual),
                });
            }
            return self.prog_attach(new, point).map(drop);
        }
        let (cgroup, attach_type) = cgroup_hook(point)?;
        let mismatch = || KernelError::Mismatch {
            what: point.to_string(),
            expected: expected.id,
            actual: None,
        };
        let new_fd = self.dup(new)?;
        // The expected program is gone: it cannot be attached.
        let Ok(old_fd) = self.dup(expected) else {
            return Err(mismatch());
        };
        match self.bpf.prog_attach(
            AttachTarget::Fd(cgroup.as_fd()),
            &new_fd,
            attach_type,
            handover_sys::ALLOW_MULTI,
            Some(old_fd.as_fd()),
        ) {
            Ok(()) => Ok(()),
            // BPF_F_REPLACE of a program not in the cgroup's list.
            Err(e) if e.errno() == Some(libc::ENOENT) => Err(mismatch()),
            Err(e) => Err(KernelError::failed(
                format!("replace {expected} by {new} at {point}"),
                e,
            )),
        }
    }

    fn prog_detach(&mut self, point: &AttachPoint, program: ObjRef) -> Result<bool, KernelError> {
        let (target, attach_type) = match point {
            AttachPoint::SockMap { .. } => match sock_map_hook(&self.bpf, point)? {
                Some((map, attach_type, _)) => (map, attach_type),
                None => return Ok(false),
            },
            _ => match existing_cgroup_hook(point)? {
                Some((cgroup, attach_type)) => (OwnedFd::from(cgroup), attach_type),
                None => return Ok(false),
            },
        };
        let fd = match self
            .bpf
            .fd_by_id(ObjectKind::Program, program.id, OpenFlags::READ_ONLY)
        {
            Ok(fd) => fd,
            // A program that no longer exists is attached nowhere.
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(false),
            Err(e) => return Err(KernelError::failed(format!("open {program} by id"), e)),
        };
        match self.bpf.prog_detach(
            AttachTarget::Fd(target.as_fd()),
            Some(fd.as_fd()),
            attach_type,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(KernelError::failed(
                format!("detach {program} from {point}"),
                e,
            )),
        }
    }

    fn prog_query(&mut self, point: &AttachPoint) -> Result<(u64, Vec<u32>), KernelError> {
        if let AttachPoint::SockMap { .. } = point {
            let Some((map, attach_type, id)) = sock_map_hook(&self.bpf, point)? else {
                return Ok((0, Vec::new()));
            };
            return match self
                .bpf
                .prog_query(AttachTarget::Fd(map.as_fd()), attach_type, 0)
            {
                Ok(q) => Ok((u64::from(id), q.prog_ids)),
                // Before 5.19 a socket map answers no query.
                Err(e) if e.errno() == Some(libc::EINVAL) => Err(KernelError::Unsupported {
                    what: format!("query {point} (socket maps answer queries from 5.19)"),
                }),
                Err(e) => Err(KernelError::failed(format!("query {point}"), e)),
            };
        }
        let Some((cgroup, attach_type)) = existing_cgroup_hook(point)? else {
            return Ok((0, Vec::new()));
        };
        let q = self
            .bpf
            .prog_query(AttachTarget::Fd(cgroup.as_fd()), attach_type, 0)
            .map_err(failed(format!("query {point}")))?;
        Ok((cgroup_id(&cgroup, point)?, q.prog_ids))
    }

    fn synchronize(&mut self) -> Result<(), KernelError> {
        // An update of a map-in-map from user space returns only after the programs
        // running at the time have finished (the kernel's maybe_wait_bpf_programs).
        let inner = self
            .bpf
            .map_create(&MapCreate::new(MapType::Array, 4, 4, 1))
            .map_err(failed("create the barrier's inner map"))?;
        let mut outer = MapCreate::new(MapType::ArrayOfMaps, 4, 4, 1);
        outer.inner_map_fd = Some(inner.as_fd());
        let outer = Map::create(&self.bpf, &outer).map_err(failed("create the barrier map"))?;
        let fd = u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&inner)).unwrap_or(0);
        outer
            .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), UpdateFlags::ANY)
            .map_err(failed("update the barrier map"))
    }

    fn map_access(&mut self, map: ObjRef) -> Result<Arc<dyn MapAccess>, KernelError> {
        let fd = self.dup(map)?;
        let m = Map::new(&self.bpf, fd).map_err(failed(format!("open {map}")))?;
        Ok(Arc::new(m))
    }

    fn create_map(
        &mut self,
        key_size: usize,
        value_size: usize,
        max_entries: u32,
    ) -> Result<ObjRef, KernelError> {
        let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut spec = MapCreate::new(
            MapType::Hash,
            size(key_size),
            size(value_size),
            max_entries.max(1),
        );
        spec.flags = map_flags::NO_PREALLOC;
        spec.name = "handover_marks";
        let fd = self
            .bpf
            .map_create(&spec)
            .map_err(failed("create a scratch map"))?;
        self.hold(fd)
    }

    fn patcher(
        &mut self,
        map: ObjRef,
        name: &str,
        fields: &ValueFields,
        marks: ObjRef,
    ) -> Result<Option<Box<dyn Patcher>>, KernelError> {
        let mut open = |r: ObjRef| -> Result<Map, KernelError> {
            let fd = self.dup(r)?;
            Map::new(&self.bpf, fd).map_err(failed(format!("open {r}")))
        };
        let (map, marks) = (open(map)?, open(marks)?);
        let p = KernelPatcher::new(&self.bpf, &map, name, fields, Some(&marks))
            .map_err(|e| KernelError::failed(format!("the patch program of {name}"), e))?;
        Ok(Some(Box::new(p)))
    }

    fn carry_sockets(
        &mut self,
        name: &str,
        old: ObjRef,
        new: ObjRef,
        only: Option<&[(Vec<u8>, Vec<u8>)]>,
        keep_existing: bool,
    ) -> Result<SocketReport, KernelError> {
        let (old, new) = (self.open_map(old)?, self.open_map(new)?);
        let only = match only {
            Some(keys) => {
                let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                let mut spec = MapCreate::new(
                    MapType::Hash,
                    size(old.key_size()),
                    size(new.key_size()),
                    size(keys.len()).max(1),
                );
                spec.flags = map_flags::NO_PREALLOC;
                spec.name = "handover_only";
                let m = Map::create(&self.bpf, &spec)
                    .map_err(failed(format!("create the keys to carry of {name}")))?;
                for (k, to) in keys {
                    m.update(k, to, UpdateFlags::ANY)
                        .map_err(failed(format!("list a key to carry of {name}")))?;
                }
                Some(m)
            }
            None => None,
        };
        let pass = SocketPass {
            only: only.as_ref(),
            flags: if keep_existing {
                UpdateFlags::NOEXIST
            } else {
                UpdateFlags::ANY
            },
        };
        carry_sockets_with(&self.bpf, name, &old, &new, pass)
            .map_err(|e| KernelError::failed(format!("carry the sockets of {name}"), e))
    }

    fn insert_inner_map(
        &mut self,
        outer: ObjRef,
        key: &[u8],
        inner: u32,
        keep_existing: bool,
    ) -> Result<bool, KernelError> {
        let what = || format!("insert map {inner} into {outer}");
        let outer = self.open_map(outer)?;
        let fd = self
            .bpf
            .fd_by_id(ObjectKind::Map, inner, OpenFlags::READ_WRITE)
            .map_err(failed(what()))?;
        let raw = u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap_or(u32::MAX);
        let flags = if keep_existing {
            UpdateFlags::NOEXIST
        } else {
            UpdateFlags::ANY
        };
        match outer.update(key, &raw.to_ne_bytes(), flags) {
            Ok(()) => Ok(true),
            Err(e) if keep_existing && e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(KernelError::failed(what(), e)),
        }
    }

    fn alive(&mut self, object: ObjRef) -> bool {
        match self
            .bpf
            .fd_by_id(object_kind(object.kind), object.id, OpenFlags::READ_ONLY)
        {
            Ok(_) => true,
            Err(e) => e.errno() != Some(libc::ENOENT),
        }
    }

    fn release(&mut self, object: ObjRef) {
        self.fds.remove(&object);
    }

    fn cleanup(&mut self) -> Result<(), KernelError> {
        // Every pin is gone; this removes the directories the manifest records as
        // ours (when empty) and empties the manifest.
        self.root
            .uninstall()
            .map_err(bpffs_failed("remove pin directories"))
    }
}
