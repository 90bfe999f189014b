//! Putting the dataplane into the kernel, reopening it after a restart, and removing it:
//! the [`Installer`] trait, and [`LoaderInstaller`], which does it with handover's
//! loader and pin root (a stand-in until the upgrade engine takes this over: it
//! installs and restarts, and refuses an object whose maps differ from the pinned ones).
//!
//! Layout under the pin root: every map pinned by name (`ROOT/NAME`, as
//! `LIBBPF_PIN_BY_NAME` does), every attachment's link at `ROOT/links/PROGRAM`. The
//! state directory (outside bpffs) holds the manifest of what was pinned
//! (`pins.json`) and the lock (`meshd.lock`) that keeps two daemons from working on the
//! same installation at once.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use handover_bpffs::{PinPath, PinRoot};
use handover_sys::{AttachTarget, AttachType, Bpf, LinkCreate, LinkTarget, OpenFlags};
use handover_load::{LoadOptions, load};
use handover_loader::{Object, Pinning};
use tracing::{info, info_span, warn};

use crate::dataplane::{Dataplane, DataplaneError};
use crate::layout::{Layout, LayoutError};

/// The programs the dataplane attaches, each to the cgroup at its hook. The lb policy
/// programs are reached by tail call and attach nowhere.
pub const ATTACHMENTS: &[(&str, AttachType)] = &[
    ("mesh_connect4", AttachType::CgroupInet4Connect),
    ("mesh_sockops", AttachType::CgroupSockOps),
];

/// Directory of the link pins under the pin root.
const LINKS_DIR: &str = "links";
/// The manifest of pins, in the state directory.
const MANIFEST: &str = "pins.json";
/// The lock file, in the state directory.
const LOCK: &str = "meshd.lock";

/// How the installation was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Nothing was installed: everything was created.
    Fresh,
    /// Everything was pinned and attached: reopened, nothing loaded.
    Restart,
    /// Part was installed (an earlier start was interrupted): the rest was created.
    Repaired {
        /// Maps created and pinned.
        created_maps: Vec<String>,
        /// Programs attached.
        attached: Vec<String>,
    },
}

/// The installed dataplane.
#[derive(Debug)]
pub struct Installed {
    /// How it was found.
    pub start: Start,
    /// Its maps.
    pub dataplane: Dataplane,
    /// Kernel ids of the attachments' links, by program name.
    pub links: BTreeMap<String, u32>,
}

/// What to install: the object's bytes and where to attach it.
#[derive(Clone, Copy, Debug)]
pub struct InstallRequest<'a> {
    /// The dataplane object (an ELF BPF object, programs/dataplane/vN.c).
    pub object: &'a [u8],
    /// The cgroup (v2) directory the programs attach to.
    pub cgroup: &'a Path,
}

/// Puts a dataplane into the kernel or reopens it, and removes it.
///
/// `open` leaves everything pinned and attached; a daemon that exits after it (a
/// restart, a crash) leaves the dataplane steering traffic, and the next `open` finds
/// it again.
pub trait Installer {
    /// Installs the dataplane of `request`, or reopens it when it is installed. `ready`
    /// runs once the maps exist and before any program is attached (so a fresh
    /// installation is configured before it steers a connect); on a restart, with
    /// everything attached.
    ///
    /// # Errors
    /// The object cannot be loaded or attached, the pins are not this object's, or
    /// `ready` failed (what was created stays pinned, for the next `open`).
    fn open(
        &mut self,
        request: &InstallRequest<'_>,
        ready: &mut dyn FnMut(&Dataplane) -> Result<(), DataplaneError>,
    ) -> Result<Installed, InstallError>;

    /// Detaches the programs and removes every pin and state file made by `open`.
    ///
    /// # Errors
    /// A pin or state file cannot be removed (what is left is kept in the manifest).
    fn uninstall(&mut self) -> Result<(), InstallError>;
}

/// Why the dataplane could not be installed, reopened or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A state file or directory.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The pin root or a pin.
    #[error(transparent)]
    Pins(#[from] handover_bpffs::Error),
    /// The object cannot be parsed.
    #[error("parsing the dataplane object: {0}")]
    Object(#[from] handover_loader::ObjectError),
    /// The object is not a dataplane this daemon knows.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The object cannot be loaded, or does not fit the pinned maps.
    #[error(
        "loading the dataplane object (a pinned map that does not match it is an upgrade, which this installer does not do: uninstall first, or upgrade with handover)"
    )]
    Load(#[source] Box<handover_load::LoadError>),
    /// The object lacks a program to attach.
    #[error("the dataplane object has no program {program} to attach")]
    MissingProgram {
        /// The program.
        program: String,
    },
    /// A program cannot be attached.
    #[error("attaching {program} to cgroup {cgroup}")]
    Attach {
        /// The program.
        program: String,
        /// The cgroup.
        cgroup: String,
        /// The kernel's error.
        #[source]
        source: handover_sys::Error,
    },
    /// A pinned link is not the attachment asked for.
    #[error("pinned link {path} {reason}: uninstall first to move the dataplane")]
    ForeignLink {
        /// The link's pin.
        path: String,
        /// How it differs.
        reason: String,
    },
    /// The maps cannot be opened or configured.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

impl From<handover_load::LoadError> for InstallError {
    fn from(e: handover_load::LoadError) -> Self {
        InstallError::Load(Box::new(e))
    }
}

/// [`Installer`] with handover's loader ([`load`]) and pin root ([`PinRoot`]).
#[derive(Debug)]
pub struct LoaderInstaller {
    bpf: Bpf,
    root: PathBuf,
    state: PathBuf,
}

impl LoaderInstaller {
    /// An installer pinning under `root` (a directory on a bpffs) and keeping its
    /// manifest and lock in `state` (created when missing; not on bpffs).
    #[must_use]
    pub fn new(bpf: &Bpf, root: &Path, state: &Path) -> Self {
        Self {
            bpf: bpf.clone(),
            root: root.to_owned(),
            state: state.to_owned(),
        }
    }

    /// Takes the installation's lock, waiting while another daemon holds it.
    fn lock(&self) -> Result<File, InstallError> {
        std::fs::create_dir_all(&self.state).map_err(|source| InstallError::Io {
            what: "creating state directory",
            path: self.state.display().to_string(),
            source,
        })?;
        let path = self.state.join(LOCK);
        let io = |what| {
            let path = path.display().to_string();
            move |source| InstallError::Io { what, path, source }
        };
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("opening lock"))?;
        if file.try_lock().is_err() {
            warn!(lock = %path.display(), "another daemon holds the lock; waiting");
            file.lock().map_err(io("locking"))?;
        }
        Ok(file)
    }

    fn pin_root(&self) -> Result<PinRoot, InstallError> {
        Ok(PinRoot::open(
            &self.bpf,
            &self.root,
            &self.state.join(MANIFEST),
        )?)
    }
}

fn pin_path(path: &str) -> Result<PinPath, InstallError> {
    Ok(PinPath::new(path)?)
}

/// The pinned object at `path`, `None` when nothing is pinned there.
fn pinned(root: &PinRoot, path: &PinPath) -> Result<Option<OwnedFd>, InstallError> {
    match root.get(path, OpenFlags::READ_WRITE) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Installer for LoaderInstaller {
    fn open(
        &mut self,
        request: &InstallRequest<'_>,
        ready: &mut dyn FnMut(&Dataplane) -> Result<(), DataplaneError>,
    ) -> Result<Installed, InstallError> {
        let _span = info_span!("install", root = %self.root.display()).entered();
        let _lock = self.lock()?;
        let root = self.pin_root()?;
        let object = Object::parse(request.object)?;
        let layout = Layout::of(&object)?;
        let cgroup = File::open(request.cgroup).map_err(|source| InstallError::Io {
            what: "opening cgroup",
            path: request.cgroup.display().to_string(),
            source,
        })?;
        let cgroup_id = cgroup
            .metadata()
            .map_err(|source| InstallError::Io {
                what: "reading cgroup",
                path: request.cgroup.display().to_string(),
                source,
            })?
            .ino();

        // What is pinned already.
        let mut existing: BTreeMap<String, OwnedFd> = BTreeMap::new();
        let mut missing_maps = Vec::new();
        for spec in object
            .maps()
            .iter()
            .filter(|m| m.pinning == Pinning::ByName)
        {
            match pinned(&root, &pin_path(&spec.name)?)? {
                Some(fd) => {
                    existing.insert(spec.name.clone(), fd);
                }
                None => missing_maps.push(spec.name.clone()),
            }
        }
        let mut links = BTreeMap::new();
        let mut missing_links = Vec::new();
        for &(program, attach_type) in ATTACHMENTS {
            let path = pin_path(&format!("{LINKS_DIR}/{program}"))?;
            match pinned(&root, &path)? {
                Some(fd) => {
                    let info = self
                        .bpf
                        .link_info(&fd)
                        .map_err(|source| InstallError::Attach {
                            program: program.into(),
                            cgroup: request.cgroup.display().to_string(),
                            source,
                        })?;
                    let want = LinkTarget::Cgroup {
                        cgroup_id,
                        attach_type: Some(attach_type),
                    };
                    if info.target != want {
                        return Err(InstallError::ForeignLink {
                            path: path.to_string(),
                            reason: format!("is attached at {:?}, not at {want:?}", info.target),
                        });
                    }
                    links.insert(program.to_owned(), info.id);
                }
                None => missing_links.push((program, attach_type)),
            }
        }

        if missing_maps.is_empty() && missing_links.is_empty() {
            info!(
                maps = existing.len(),
                links = links.len(),
                "restart: reopened every pin"
            );
            let dataplane = Dataplane::new(&self.bpf, existing, layout)?;
            ready(&dataplane)?;
            return Ok(Installed {
                start: Start::Restart,
                dataplane,
                links,
            });
        }

        let fresh = existing.is_empty() && links.is_empty();
        let loaded = load(
            &self.bpf,
            &object,
            LoadOptions {
                reuse_maps: existing.into_iter().collect(),
                ..LoadOptions::default()
            },
        )?;
        let mut maps = BTreeMap::new();
        let mut programs = loaded.programs;
        for (name, map) in loaded.maps {
            if !map.reused && map.spec.pinning == Pinning::ByName {
                root.pin(map.fd(), &pin_path(&name)?)?;
                info!(map = %name, "created and pinned");
            }
            maps.insert(name, map.map);
        }
        let dataplane = Dataplane::from_maps(maps, layout);
        ready(&dataplane)?;
        let mut attached = Vec::new();
        for (program, attach_type) in missing_links {
            let prog = programs
                .remove(program)
                .ok_or_else(|| InstallError::MissingProgram {
                    program: program.into(),
                })?;
            let link = self
                .bpf
                .link_create(&LinkCreate::new(
                    prog.fd.as_fd(),
                    AttachTarget::Fd(cgroup.as_fd()),
                    attach_type,
                ))
                .map_err(|source| InstallError::Attach {
                    program: program.into(),
                    cgroup: request.cgroup.display().to_string(),
                    source,
                })?;
            root.pin(&link, &pin_path(&format!("{LINKS_DIR}/{program}"))?)?;
            let id = self
                .bpf
                .link_info(&link)
                .map_err(|source| InstallError::Attach {
                    program: program.into(),
                    cgroup: request.cgroup.display().to_string(),
                    source,
                })?
                .id;
            info!(program, link = id, cgroup = %request.cgroup.display(), "attached and pinned");
            links.insert(program.to_owned(), id);
            attached.push(program.to_owned());
        }
        let start = if fresh {
            Start::Fresh
        } else {
            Start::Repaired {
                created_maps: missing_maps,
                attached,
            }
        };
        Ok(Installed {
            start,
            dataplane,
            links,
        })
    }

    fn uninstall(&mut self) -> Result<(), InstallError> {
        let _span = info_span!("uninstall", root = %self.root.display()).entered();
        let lock = self.lock()?;
        let root = self.pin_root()?;
        let pins = root.entries().len();
        // Unpinning a link releases it, which detaches its program.
        root.uninstall()?;
        info!(pins, "removed every pin");
        let manifest = self.state.join(MANIFEST);
        match std::fs::remove_file(&manifest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(InstallError::Io {
                    what: "removing manifest",
                    path: manifest.display().to_string(),
                    source: e,
                });
            }
            _ => {}
        }
        drop(lock);
        let _ = std::fs::remove_file(self.state.join(LOCK));
        Ok(())
    }
}
