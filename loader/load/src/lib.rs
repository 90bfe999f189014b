//! Putting a parsed object into the kernel: its BTF, its maps and its programs.
//!
//! The planning steps are the pure functions of `handover-loader` ([`prepare_btf`],
//! [`relocate`], [`resolve_ksyms`]); [`load`] runs them and is the only part that talks
//! to the kernel, through [`Bpf`]. Kernel files (`/sys/kernel/btf/vmlinux`,
//! `/proc/kallsyms`) are read through `handover-sys`.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod pinned;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use handover_bpffs::PinRoot;
use handover_btf::{Btf, Builder, Endian, Kind, Linkage, StrOffset, TypeId};
use handover_loader::{
    BtfFeatures, CoreOutcome, CoreTarget, KCONFIG_SECTION, KconfigSource, MapSpec, Object, Pinning,
    PrepareError, ProgramSpec, ProgramTypes, RefTarget, SlotTarget, apply_core, attach_btf_name,
    created_max_entries, func_info_bytes, kallsyms_address, kconfig_data, kernel_name,
    kernel_version_code, line_info_bytes, map_btf_ids, needs_config, prepare_btf, relocate,
    resolve_ksyms,
};
use handover_sys::{
    self as sys, Bpf, LogLevel, Map, MapBtf, MapCreate, MapType, ProgLoad, ProgramType, UpdateFlags,
};

/// Asks the kernel which BTF kinds it accepts, by loading a minimal BTF blob that
/// uses each.
#[must_use]
pub fn probe_btf_features(bpf: &Bpf) -> BtfFeatures {
    let accepts = |blob: Vec<u8>| bpf.btf_load(&blob, LogLevel::Always(0)).is_ok();
    BtfFeatures {
        btf: accepts(probe_blob(|_, _| {})),
        func: accepts(probe_blob(|b, int| {
            let proto = b.add(StrOffset(0), Kind::FuncProto, false, 0, int.0, &[]);
            let name = b.string("f");
            b.add(name, Kind::Func, false, 0, proto.0, &[]);
        })),
        func_global: accepts(probe_blob(|b, int| {
            let proto = b.add(StrOffset(0), Kind::FuncProto, false, 0, int.0, &[]);
            let name = b.string("f");
            b.add(name, Kind::Func, false, 1, proto.0, &[]);
        })),
        datasec: accepts(probe_blob(|b, int| {
            let name = b.string("x");
            let var = b.add(name, Kind::Var, false, 0, int.0, &[Linkage::GLOBAL.0]);
            let sec = b.string(".data");
            b.add(sec, Kind::Datasec, false, 1, 4, &[var.0, 0, 4]);
        })),
        float: accepts(probe_blob(|b, _| {
            let name = b.string("float");
            b.add(name, Kind::Float, false, 0, 4, &[]);
        })),
        decl_tag: accepts(probe_blob(|b, int| {
            let name = b.string("x");
            let var = b.add(name, Kind::Var, false, 0, int.0, &[Linkage::GLOBAL.0]);
            let tag = b.string("tag");
            b.add(tag, Kind::DeclTag, false, 0, var.0, &[u32::MAX]);
        })),
        type_tag: accepts(probe_blob(|b, int| {
            let tag = b.string("tag");
            let t = b.add(tag, Kind::TypeTag, false, 0, int.0, &[]);
            b.add(StrOffset(0), Kind::Ptr, false, 0, t.0, &[]);
        })),
        enum64: accepts(probe_blob(|b, _| {
            let name = b.string("e");
            let v = b.string("v");
            b.add(name, Kind::Enum64, false, 1, 8, &[v.0, 0, 1]);
        })),
    }
}

/// Whether the kernel takes the address of a BPF function (`ld_imm64` with
/// `BPF_PSEUDO_FUNC`, 5.13): how a program hands a callback to `bpf_loop`,
/// `bpf_for_each_map_elem` and the like. An older verifier counts only called
/// functions as subprograms, so it refuses such a program, whichever loader sends it.
///
/// Probed by loading a socket filter that takes the address of a static function of
/// its own, with the BTF `func_info` the kernel requires for it. A probe refused for
/// another reason (no BTF, no privilege) also answers `false`.
#[must_use]
pub fn probe_func_addresses(bpf: &Bpf) -> bool {
    let mut b = Builder::new(Endian::native());
    let name = b.string("int");
    let int = b.add(name, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    let proto = b.add(StrOffset(0), Kind::FuncProto, false, 0, int.0, &[]);
    let name = b.string("probe");
    let main = b.add(name, Kind::Func, false, 0, proto.0, &[]);
    let name = b.string("callback");
    let callback = b.add(name, Kind::Func, false, 0, proto.0, &[]);
    let Ok(btf) = bpf.btf_load(&b.finish(), LogLevel::Always(0)) else {
        return false;
    };
    let insns = [
        // r1 = &callback (instruction 4: 0 + imm + 1)
        sys::Insn::new(handover_uapi::LD_IMM64, 1, handover_uapi::PSEUDO_FUNC, 0, 3),
        sys::Insn::new(0, 0, 0, 0, 0),
        sys::Insn::new(0xb7, 0, 0, 0, 0), // r0 = 0
        sys::Insn::new(0x95, 0, 0, 0, 0), // exit
        sys::Insn::new(0xb7, 0, 0, 0, 0), // callback: r0 = 0
        sys::Insn::new(0x95, 0, 0, 0, 0), // exit
    ];
    // struct bpf_func_info { insn_off, type_id } of both functions.
    let func_info: Vec<u8> = [0, main.0, 4, callback.0]
        .iter()
        .flat_map(|w: &u32| w.to_ne_bytes())
        .collect();
    let mut args = ProgLoad::new(ProgramType::SocketFilter, &insns, "GPL");
    args.name = "func_addr";
    args.prog_btf_fd = Some(btf.as_fd());
    args.func_info = &func_info;
    args.func_info_rec_size = 8;
    args.log_level = LogLevel::Always(0);
    bpf.prog_load(&args).is_ok()
}

/// A native-endian blob with `int` as type 1 and whatever `more` adds.
fn probe_blob(more: impl FnOnce(&mut Builder, TypeId)) -> Vec<u8> {
    let mut b = Builder::new(Endian::native());
    let name = b.string("int");
    let int = b.add(name, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    more(&mut b, int);
    b.finish()
}

/// Why an object could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The object cannot be prepared for the kernel (byte order, BTF, a program's
    /// references, CO-RE).
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The kernel refused the prepared BTF.
    #[error("loading the object's BTF into the kernel")]
    BtfLoad {
        /// The kernel's error, with its BTF log.
        #[source]
        source: sys::Error,
    },
    /// A map could not be created.
    #[error("creating map {map}")]
    MapCreate {
        /// The map's name in the object.
        map: String,
        /// The kernel's error.
        #[source]
        source: sys::Error,
    },
    /// A map could not be filled with its initial contents or frozen.
    #[error("initialising map {map}: {what}")]
    MapInit {
        /// The map's name in the object.
        map: String,
        /// The step that failed.
        what: String,
        /// The kernel's error.
        #[source]
        source: sys::Error,
    },
    /// A map declared `LIBBPF_PIN_BY_NAME` could not be opened from or pinned under the
    /// pin root.
    #[error("map {map}: {what}")]
    Pin {
        /// The map's name in the object.
        map: String,
        /// The step that failed.
        what: &'static str,
        /// The bpffs error (boxed: it is large, and rare).
        #[source]
        source: Box<handover_bpffs::Error>,
    },
    /// A map descriptor could not be duplicated.
    #[error("duplicating the descriptor of map {map}")]
    Descriptor {
        /// The map's name in the object.
        map: String,
        /// The error of `dup`.
        #[source]
        source: std::io::Error,
    },
    /// A static slot refers to a program or map that was not loaded.
    #[error(
        "slot {index} of map {map} refers to {target}, which was not loaded: load it too (LoadOptions::programs)"
    )]
    SlotTarget {
        /// The prog array or map-in-map.
        map: String,
        /// The slot.
        index: u32,
        /// The program or map it refers to.
        target: String,
    },
    /// A map passed for reuse does not match the object's definition.
    #[error("map {map} given for reuse does not match the object's definition: {reason}")]
    ReusedMap {
        /// The map's name in the object.
        map: String,
        /// Which property differs, with both values.
        reason: String,
    },
    /// Programs to load whose sections' names give no program type, and no rule of
    /// [`LoadOptions::program_types`] gave one: every such section, with its programs.
    #[error("{}", untyped_message(sections))]
    UnknownProgramTypes {
        /// Each section without a type, with the programs in it.
        sections: Vec<UntypedSection>,
    },
    /// A map-in-map declared with key and value sizes only, and no inner map template
    /// given for it.
    #[error(
        "map {map} is a map-in-map whose inner map the object does not define (it gives \
         key and value sizes only): give the inner map's template (type, key and value \
         size, capacity) for it"
    )]
    InnerMapTemplate {
        /// The outer map.
        map: String,
    },
    /// A `__kconfig` extern has no value on this kernel (or one of the wrong kind).
    #[error(transparent)]
    Kconfig(handover_loader::KconfigError),
    /// The kernel's configuration exists but could not be read.
    #[error("reading the kernel configuration for the object's __kconfig externs")]
    KernelConfig {
        /// The error, naming the file.
        #[source]
        source: std::io::Error,
    },
    /// The verifier reached an instruction poisoned by a CO-RE relocation the running
    /// kernel cannot satisfy (libbpf's "relocation failed" case).
    #[error(
        "loading program {program} (section {}): the verifier reached instruction {}, \
         poisoned by CO-RE relocation #{} ({}): the running kernel lacks what it names; \
         guard the access (bpf_core_field_exists and the like) so that the instruction is \
         dead on such a kernel",
        poisoned.section, poisoned.insn, poisoned.index, poisoned.relocation
    )]
    PoisonedCore {
        /// The program's name.
        program: String,
        /// Which relocation, where.
        poisoned: Box<PoisonedRelocation>,
        /// The kernel's error, with the verifier log.
        #[source]
        source: sys::Error,
    },
    /// The kernel refused a program that uses what a probe then found the kernel
    /// lacks: no loader can load the program on this kernel.
    #[error("loading program {program}: {lacks}")]
    KernelLacks {
        /// The program's name.
        program: String,
        /// What the program uses that the kernel does not have (boxed: the error
        /// stays small).
        lacks: Box<Lack>,
        /// The kernel's error, with the verifier log.
        #[source]
        source: sys::Error,
    },
    /// The kernel refused a program.
    #[error("loading program {program} (section {section})")]
    ProgramLoad {
        /// The program's name.
        program: String,
        /// Its section.
        section: String,
        /// The kernel's error, with the verifier log.
        #[source]
        source: sys::Error,
    },
}

/// What a program uses that the running kernel does not have ([`LoadError::KernelLacks`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lack {
    /// The program takes the address of `function` (a callback: `ld_imm64` with
    /// `BPF_PSEUDO_FUNC`, Linux 5.13; see [`probe_func_addresses`]).
    FuncAddress {
        /// The first function whose address the program takes.
        function: String,
    },
}

impl std::fmt::Display for Lack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lack::FuncAddress { function } => write!(
                f,
                "it passes function {function} by address (a callback: ld_imm64 with \
                 BPF_PSEUDO_FUNC), which this kernel does not support (Linux 5.13 added \
                 it): load it on a newer kernel, or leave it out (LoadOptions::programs)"
            ),
        }
    }
}

/// The CO-RE relocation whose poisoned instruction the verifier reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoisonedRelocation {
    /// The program's section.
    pub section: String,
    /// The poisoned instruction.
    pub insn: u32,
    /// The relocation's index among the program's CO-RE relocations.
    pub index: usize,
    /// The relocation (kind, struct and field) and why it has no value on this kernel.
    pub relocation: String,
}

/// A program section whose name gives no program type, with the programs in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UntypedSection {
    /// The section name.
    pub section: String,
    /// Its programs that were to be loaded.
    pub programs: Vec<String>,
}

fn untyped_message(sections: &[UntypedSection]) -> String {
    let list: Vec<String> = sections
        .iter()
        .map(|s| format!("section {:?} (programs {:?})", s.section, s.programs))
        .collect();
    format!(
        "{} program section(s) have names that give no program type: {}; give each a type \
         with --program-type SECTION=TYPE[:ATTACH] (SECTION may end in * for a prefix, or \
         be * for every program)",
        sections.len(),
        list.join(", ")
    )
}

/// What a tracing program (or an `freplace` one) attaches to, when its section name
/// does not say, or says something else.
#[derive(Clone, Debug)]
pub enum AttachTo {
    /// A kernel function (`fentry`/`fexit`/`fmod_ret`), tracepoint (`tp_btf`) or LSM
    /// hook (`lsm`) by name, looked up in the kernel's BTF as the section's target is.
    Kernel(String),
    /// Function `function` of a loaded BPF program: what an `freplace` program
    /// replaces, or an `fentry`/`fexit` program traces. Found in the program's BTF.
    Program {
        /// The loaded program.
        prog: Arc<OwnedFd>,
        /// The function's name (a global function of that program, or its entry).
        function: String,
    },
}

/// Options of [`load`].
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Maps to use instead of creating them, by name in the object (pinned maps of a
    /// running version). Each must match its definition (type, key and value size,
    /// capacity, flags); it is used as it is: no initial contents are written to it, it
    /// is not frozen, and its static slots (a prog array's programs, a map-in-map's
    /// maps) are not written: a reused map is live, and writing a slot switches
    /// traffic. They are returned in [`LoadedObject::unwritten_slots`] for the caller.
    /// The loaded object holds a duplicate of each descriptor.
    pub reuse_maps: HashMap<String, Arc<OwnedFd>>,
    /// Program types by section (exact, prefix, or every program), overriding what
    /// section names say; a program whose section gives no type needs one here.
    pub program_types: ProgramTypes,
    /// Load every program that can be loaded, and report each refusal in
    /// [`LoadedObject::failed`] instead of failing the whole load at the first one.
    /// Maps are still all or nothing.
    pub keep_going: bool,
    /// Inner map templates of map-in-maps, by outer map name: needed for an outer map
    /// declared with key and value sizes only (no `__array(values, ...)`), and used
    /// instead of the object's own inner definition where one is given.
    pub inner_maps: HashMap<String, MapSpec>,
    /// The kernel configuration text (`CONFIG_X=y` lines) that `CONFIG_*` `__kconfig`
    /// externs read, instead of the running kernel's (`/boot/config-RELEASE`, else
    /// `/proc/config.gz`, as libbpf looks).
    pub kconfig: Option<String>,
    /// The object's name as libbpf has it (the file name up to its first `.`, see
    /// [`handover_uapi::object_name`]): global data maps are then created with libbpf's
    /// names (`global_d.rodata` for `.rodata` of `global_data.o`), so tools show the
    /// same names for both loaders. `None`: each is named after its section alone.
    pub object_name: Option<String>,
    /// Attach targets of tracing and `freplace` programs, by program name, instead of
    /// the target their section names.
    pub attach_to: HashMap<String, AttachTo>,
    /// The pin root of maps declared `__uint(pinning, LIBBPF_PIN_BY_NAME)`: such a map
    /// pinned there under its name is reused when it matches the definition, including
    /// the BTF layout of its key and value where both maps carry BTF (and refused with
    /// the differences when not), else it is created and pinned there (recorded in the
    /// root's manifest), as libbpf does under its pin root. `None`: such maps are
    /// created and not pinned.
    pub pin_root: Option<Arc<PinRoot>>,
    /// BTF features to assume instead of probing the kernel.
    pub btf_features: Option<BtfFeatures>,
    /// Verifier log level for program loads.
    pub log_level: LogLevel,
    /// Load only the programs with these names (`None`: every program). A static
    /// prog array slot that refers to a program left out is an error.
    pub programs: Option<BTreeSet<String>>,
    /// Raw BTF to resolve CO-RE relocations against (`None`: the running kernel's,
    /// read from `/sys/kernel/btf/vmlinux` once per load, and only if a program has
    /// CO-RE relocations).
    pub core_btf: Option<Vec<u8>>,
    /// Fail when the kernel refuses the object's BTF, instead of loading without it
    /// (libbpf's default, kept here: the refusal is then in
    /// [`LoadedObject::btf_error`]).
    pub require_btf: bool,
}

impl LoadOptions {
    /// The default options for the object read from the file `file_name`: its
    /// [`LoadOptions::object_name`] is libbpf's (the file name up to its first `.`), so
    /// its global data maps get libbpf's names.
    #[must_use]
    pub fn for_file(file_name: &str) -> Self {
        Self {
            object_name: Some(handover_uapi::object_name(file_name).to_owned()),
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The target BTF is megabytes of bytes: show its size only.
        f.debug_struct("LoadOptions")
            .field("reuse_maps", &self.reuse_maps)
            .field("program_types", &self.program_types)
            .field("keep_going", &self.keep_going)
            .field("inner_maps", &self.inner_maps)
            .field("object_name", &self.object_name)
            .field("attach_to", &self.attach_to)
            .field("pin_root", &self.pin_root)
            .field(
                "kconfig",
                &self.kconfig.as_ref().map(|t| format!("{} bytes", t.len())),
            )
            .field("btf_features", &self.btf_features)
            .field("log_level", &self.log_level)
            .field("programs", &self.programs)
            .field("require_btf", &self.require_btf)
            .field(
                "core_btf",
                &self.core_btf.as_ref().map(|b| format!("{} bytes", b.len())),
            )
            .finish()
    }
}

/// A map of a loaded object.
#[derive(Debug)]
pub struct LoadedMap {
    /// The map: a typed handle with its type, key and value sizes and name, read when
    /// it was loaded, so element commands need no further syscall to check sizes.
    pub map: Map,
    /// Its definition in the object.
    pub spec: MapSpec,
    /// Whether it came from [`LoadOptions::reuse_maps`] rather than being created.
    pub reused: bool,
    /// The BTF key and value type ids it was created with (`None`: without BTF).
    pub btf_type_ids: Option<(u32, u32)>,
}

impl LoadedMap {
    /// The map's descriptor.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd()
    }
}

/// A static slot of a map given for reuse that [`load`] left as it is: writing a live
/// prog array (or map-in-map) switches traffic, which the caller must own. The
/// caller writes `index` -> `target` itself when it switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwrittenSlot {
    /// The reused map, by name in the object.
    pub map: String,
    /// The slot.
    pub index: u32,
    /// What the object puts there: a program or map of this load, by name.
    pub target: SlotTarget,
}

/// A program of a loaded object.
#[derive(Debug)]
pub struct LoadedProgram {
    /// The program.
    pub fd: OwnedFd,
    /// Its definition in the object.
    pub spec: ProgramSpec,
    /// What each of its CO-RE relocations wrote (a `None` target: the instruction was
    /// poisoned, as the relocation has no value on the target kernel).
    pub core: Vec<CoreOutcome>,
    /// Whether the object's `.rodata` map is bound to it (`BPF_PROG_BIND_MAP`, 5.10+),
    /// so that the map lives as long as the program.
    pub rodata_bound: bool,
}

/// An object in the kernel: its BTF and owned handles to its maps and programs.
#[derive(Debug)]
pub struct LoadedObject {
    /// The object's BTF as loaded (fixed up and sanitised), if the kernel took it.
    pub btf: Option<OwnedFd>,
    /// The kernel's refusal of the object's BTF (with its BTF log), when the object was
    /// loaded without it; see [`LoadOptions::require_btf`].
    pub btf_error: Option<sys::Error>,
    /// Every map by name in the object (inner map templates excluded: they only serve
    /// to create their outer map).
    pub maps: BTreeMap<String, LoadedMap>,
    /// Every program loaded, by name.
    pub programs: BTreeMap<String, LoadedProgram>,
    /// Every program that was to be loaded but was not, by name, with why (only with
    /// [`LoadOptions::keep_going`]; without it the first refusal fails the load).
    pub failed: BTreeMap<String, LoadError>,
    /// The static slots of reused maps, which loading does not write.
    pub unwritten_slots: Vec<UnwrittenSlot>,
}

impl LoadedObject {
    /// The map named `name`.
    #[must_use]
    pub fn map(&self, name: &str) -> Option<&LoadedMap> {
        self.maps.get(name)
    }

    /// The program named `name`.
    #[must_use]
    pub fn program(&self, name: &str) -> Option<&LoadedProgram> {
        self.programs.get(name)
    }
}

fn create_map(
    bpf: &Bpf,
    spec: &MapSpec,
    features: &BtfFeatures,
    btf: Option<BorrowedFd<'_>>,
    inner: Option<BorrowedFd<'_>>,
    object_name: Option<&str>,
) -> Result<(OwnedFd, Option<(u32, u32)>), LoadError> {
    let name = handover_uapi::created_map_name(object_name, &spec.name);
    let cpus = match spec.map_type {
        MapType::PerfEventArray if spec.max_entries == 0 => {
            bpf.possible_cpus().map_err(|source| LoadError::MapCreate {
                map: spec.name.clone(),
                source,
            })?
        }
        _ => 0,
    };
    let max_entries = created_max_entries(
        spec,
        sys::page_size(),
        u32::try_from(cpus).unwrap_or(u32::MAX),
    );
    let mut args = MapCreate::new(spec.map_type, spec.key_size, spec.value_size, max_entries);
    args.flags = spec.flags;
    args.name = &name;
    // As libbpf: the node applies only when the definition also sets BPF_F_NUMA_NODE
    // (per-CPU maps refuse a node, and `numa_node` alone is a hint clang always emits
    // as written).
    args.numa_node = spec
        .numa_node
        .filter(|_| spec.flags & sys::map_flags::NUMA_NODE != 0);
    args.map_extra = spec.map_extra;
    args.inner_map_fd = inner;
    let ids = btf.and(map_btf_ids(spec, features));
    if let (Some(fd), Some((key, value))) = (btf, ids) {
        args.btf = Some(MapBtf {
            fd,
            key_type_id: key,
            value_type_id: value,
            vmlinux_value_type_id: 0,
        });
    }
    let err = |source| LoadError::MapCreate {
        map: spec.name.clone(),
        source,
    };
    match bpf.map_create(&args) {
        Ok(fd) => Ok((fd, ids)),
        // As libbpf: a map type that turns out to refuse BTF is created without it.
        Err(e) if args.btf.is_some() && e.errno() != Some(sys::errno::EPERM) => {
            args.btf = None;
            bpf.map_create(&args)
                .map(|fd| (fd, None))
                .map_err(|_| err(e))
        }
        Err(e) => Err(err(e)),
    }
}

/// The handle of a map given for reuse, checked against its definition, and against
/// the key and value layouts of `layouts` (the BTF this load gives the kernel) when
/// given.
fn check_reused(
    bpf: &Bpf,
    spec: &MapSpec,
    fd: OwnedFd,
    layouts: Option<&Btf<'_>>,
) -> Result<Map, LoadError> {
    let map = Map::new(bpf, fd).map_err(|source| LoadError::MapInit {
        map: spec.name.clone(),
        what: "reading the reused map's info".into(),
        source,
    })?;
    let info = map.info();
    let cpus = match spec.map_type {
        MapType::PerfEventArray if spec.max_entries == 0 => {
            bpf.possible_cpus().map_err(|source| LoadError::MapInit {
                map: spec.name.clone(),
                what: "counting the possible CPUs".into(),
                source,
            })?
        }
        _ => 0,
    };
    let cpus = u32::try_from(cpus).unwrap_or(u32::MAX);
    let mut diffs = reused_map_differences(info, spec, sys::page_size(), cpus);
    if let Some(ours) = layouts {
        diffs.extend(pinned::layout_differences(bpf, info, spec, ours)?);
    }
    if diffs.is_empty() {
        Ok(map)
    } else {
        Err(LoadError::ReusedMap {
            map: spec.name.clone(),
            reason: diffs.join(", "),
        })
    }
}

/// `BPF_F_RDONLY` and `BPF_F_WRONLY`: access modes of the descriptor that creates a
/// map, which the kernel clears from the map's own `map_flags`.
const FD_ACCESS_FLAGS: u32 = sys::map_flags::RDONLY | sys::map_flags::WRONLY;

/// How the map the kernel describes in `info` differs from the one [`load`] would
/// create for `spec`: compared with what creation gives (the capacity of
/// [`created_max_entries`], the flags less [`FD_ACCESS_FLAGS`]), not with the
/// definition as written.
#[must_use]
fn reused_map_differences(
    info: &sys::MapInfo,
    spec: &MapSpec,
    page_size: u32,
    possible_cpus: u32,
) -> Vec<String> {
    let mut diffs = Vec::new();
    if info.map_type != Some(spec.map_type) {
        diffs.push(format!(
            "type {} (object: {})",
            info.map_type.map_or("unknown", MapType::name),
            spec.map_type.name()
        ));
    }
    for (what, have, want) in [
        ("key size", info.key_size, spec.key_size),
        ("value size", info.value_size, spec.value_size),
        (
            "max_entries",
            info.max_entries,
            created_max_entries(spec, page_size, possible_cpus),
        ),
        (
            "flags",
            info.flags & !FD_ACCESS_FLAGS,
            spec.flags & !FD_ACCESS_FLAGS,
        ),
    ] {
        if have != want {
            diffs.push(format!("{what} {have} (object: {want})"));
        }
    }
    if info.map_extra != spec.map_extra {
        diffs.push(format!(
            "map_extra {} (object: {})",
            info.map_extra, spec.map_extra
        ));
    }
    diffs
}

/// Loads `object` into the kernel: its BTF (prepared by [`prepare_btf`] for the
/// kernel's [`BtfFeatures`]), every map (created, or taken from
/// [`LoadOptions::reuse_maps`]), global data written and `.rodata` frozen, map-in-map
/// slots filled, then every program (CO-RE relocations applied by
/// [`apply_core`] against [`LoadOptions::core_btf`] or the kernel's
/// BTF, map references by [`relocate`]), then the static slots
/// of prog arrays created by this load (those of reused maps are returned in
/// [`LoadedObject::unwritten_slots`], not written). Everything created is closed again
/// if a later step fails.
///
/// # Errors
/// The first step that fails, naming the map or program, with the kernel's log where
/// there is one.
pub fn load(
    bpf: &Bpf,
    object: &Object<'_>,
    options: LoadOptions,
) -> Result<LoadedObject, LoadError> {
    let LoadOptions {
        mut reuse_maps,
        program_types,
        keep_going,
        inner_maps,
        kconfig,
        object_name,
        attach_to,
        pin_root,
        btf_features,
        log_level,
        programs: only,
        core_btf,
        require_btf,
    } = options;
    let mut failed = BTreeMap::new();
    let to_load = typed_programs(
        object,
        &program_types,
        only.as_ref(),
        keep_going,
        &mut failed,
    )?;
    if object.endian() != Endian::native() {
        return Err(LoadError::Prepare(PrepareError::ByteOrder {
            object: object.endian(),
            host: Endian::native(),
        }));
    }
    let features = btf_features.unwrap_or_else(|| probe_btf_features(bpf));
    // As libbpf does, BTF is optional for everything this loader creates: when the
    // kernel refuses the object's BTF, maps are created and programs loaded without it
    // (no BTF key/value ids, no func/line info) and the refusal is kept in the result.
    let mut btf_error = None;
    let prepared = if features.btf {
        prepare_btf(object, &features)?
    } else {
        None
    };
    let btf_fd = match &prepared {
        Some(blob) => match bpf.btf_load(blob, LogLevel::OnFailure) {
            Ok(fd) => Some(fd),
            Err(source) if require_btf => return Err(LoadError::BtfLoad { source }),
            Err(source) => {
                btf_error = Some(source);
                None
            }
        },
        None => None,
    };
    // The layouts of maps pinned by name are compared with the BTF given to the kernel
    // (sanitised as theirs was), when it took it.
    let our_btf = match (&pin_root, &prepared, &btf_fd) {
        (Some(_), Some(blob), Some(_)) => Btf::parse(blob).ok(),
        _ => None,
    };
    let btf = btf_fd.as_ref().map(AsFd::as_fd);

    let kconfig_values = kconfig_values(object, kconfig.as_deref())?;
    let mut maps = BTreeMap::new();
    for spec in object.maps() {
        let pinned = match (&pin_root, spec.pinning) {
            (Some(root), Pinning::ByName) if !reuse_maps.contains_key(&spec.name) => {
                pinned::open(root, spec)?.map(Arc::new)
            }
            _ => None,
        };
        let given = reuse_maps.remove(&spec.name).or(pinned.clone());
        if let Some(given) = given {
            let fd = given.try_clone().map_err(|source| LoadError::Descriptor {
                map: spec.name.clone(),
                source,
            })?;
            let layouts = our_btf.as_ref().filter(|_| pinned.is_some());
            let map = check_reused(bpf, spec, fd, layouts).map_err(|e| match (e, &pinned) {
                (LoadError::ReusedMap { map, reason }, Some(_)) => LoadError::ReusedMap {
                    map,
                    reason: format!(
                        "the map pinned under its name (LIBBPF_PIN_BY_NAME) differs: {reason}"
                    ),
                },
                (e, _) => e,
            })?;
            maps.insert(
                spec.name.clone(),
                LoadedMap {
                    map,
                    spec: spec.clone(),
                    reused: true,
                    btf_type_ids: None,
                },
            );
            continue;
        }
        // The inner map is a template for the outer map's values; the kernel keeps
        // only its geometry, so it is closed once the outer map exists.
        let inner = inner_maps.get(&spec.name).or(spec.inner.as_deref());
        if inner.is_none() && spec.needs_inner_template() {
            return Err(LoadError::InnerMapTemplate {
                map: spec.name.clone(),
            });
        }
        let template = match inner {
            Some(inner) => Some(create_map(bpf, inner, &features, btf, None, None)?.0),
            None => None,
        };
        let (fd, ids) = create_map(
            bpf,
            spec,
            &features,
            btf,
            template.as_ref().map(AsFd::as_fd),
            object_name.as_deref(),
        )?;
        drop(template);
        let map = Map::new(bpf, fd).map_err(|source| LoadError::MapInit {
            map: spec.name.clone(),
            what: "reading its info".into(),
            source,
        })?;
        let data = match (&spec.initial_data, &kconfig_values) {
            (Some(data), _) => Some(data),
            (None, Some(values)) if spec.name == KCONFIG_SECTION => Some(values),
            _ => None,
        };
        if let Some(data) = data {
            init_data(spec, &map, data)?;
        }
        if let (Some(root), Pinning::ByName) = (&pin_root, spec.pinning) {
            pinned::pin(root, spec, map.fd())?;
        }
        maps.insert(
            spec.name.clone(),
            LoadedMap {
                map,
                spec: spec.clone(),
                reused: false,
                btf_type_ids: ids,
            },
        );
    }
    if let Some(name) = reuse_maps.keys().next() {
        return Err(LoadError::ReusedMap {
            map: name.clone(),
            reason: "the object has no map of that name".into(),
        });
    }
    // Static slots of reused maps are left to the caller: a reused prog array or
    // map-in-map is live, and writing it switches traffic.
    let unwritten_slots: Vec<UnwrittenSlot> = maps
        .values()
        .filter(|m| m.reused)
        .flat_map(|m| {
            m.spec.initial_slots.iter().map(|slot| UnwrittenSlot {
                map: m.spec.name.clone(),
                index: slot.index,
                target: slot.target.clone(),
            })
        })
        .collect();
    // Map-in-map slots refer to maps only, so they can be filled now.
    for m in maps.values().filter(|m| !m.reused) {
        for slot in &m.spec.initial_slots {
            if let SlotTarget::Map(target) = &slot.target {
                let fd = maps.get(target).map(|t| t.fd().as_raw_fd());
                fill_slot(m, slot.index, target, fd)?;
            }
        }
    }

    let fds: HashMap<&str, i32> = maps
        .iter()
        .map(|(k, m)| (k.as_str(), m.fd().as_raw_fd()))
        .collect();
    let license = object.license().unwrap_or("");
    let mut programs = BTreeMap::new();
    let mut vmlinux = Vmlinux::default();
    let kallsyms = std::sync::OnceLock::new();
    let core_blob =
        if to_load.iter().any(ProgramSpec::needs_core) {
            Some(match core_btf {
            Some(blob) => blob,
            None => sys::vmlinux_btf().map_err(|e| LoadError::Prepare(PrepareError::Btf {
                reason: format!(
                    "reading the kernel's BTF ({VMLINUX_BTF}) to apply CO-RE relocations: {e}"
                ),
            }))?,
        })
        } else {
            None
        };
    let core_btf = core_blob
        .as_deref()
        .map(Btf::parse)
        .transpose()
        .map_err(|e| {
            LoadError::Prepare(PrepareError::Btf {
                reason: format!("parsing the target BTF of CO-RE relocations: {e}"),
            })
        })?;
    let core_target = core_btf.as_ref().map(CoreTarget::new);
    let func_addresses = std::sync::OnceLock::new();
    for spec in to_load {
        let ctx = ProgContext {
            bpf,
            object,
            fds: &fds,
            btf,
            features: &features,
            license,
            log_level,
            kallsyms: &kallsyms,
            attach_to: attach_to.get(&spec.name),
            func_addresses: &func_addresses,
        };
        match load_program(&ctx, &spec, &mut vmlinux, core_target.as_ref()) {
            Ok((fd, core)) => {
                // As libbpf: `.rodata` lives as long as every program, even one whose
                // uses of it the verifier folded away. A kernel without
                // BPF_PROG_BIND_MAP (before 5.10) refuses it with EINVAL; like libbpf,
                // the load goes on without the binding.
                let rodata_bound = match maps.get(".rodata") {
                    Some(rodata) => bpf.prog_bind_map(&fd, rodata.fd()).is_ok(),
                    None => false,
                };
                programs.insert(
                    spec.name.clone(),
                    LoadedProgram {
                        fd,
                        spec,
                        core,
                        rodata_bound,
                    },
                );
            }
            Err(e) if keep_going => {
                failed.insert(spec.name.clone(), e);
            }
            Err(e) => return Err(e),
        }
    }
    for m in maps.values().filter(|m| !m.reused) {
        for slot in &m.spec.initial_slots {
            if let SlotTarget::Program(target) = &slot.target {
                // A program that failed is reported in `failed`; its slot stays empty.
                if failed.contains_key(target) {
                    continue;
                }
                let fd = programs.get(target).map(|p| p.fd.as_raw_fd());
                fill_slot(m, slot.index, target, fd)?;
            }
        }
    }
    Ok(LoadedObject {
        btf: btf_fd,
        btf_error,
        maps,
        programs,
        unwritten_slots,
        failed,
    })
}

/// The programs to load (every one, or those in `only`), each with the type its rule in
/// `rules` gives, else its section's name. Programs left without a type are an error
/// naming every such section, before anything is created; with `keep_going` each is
/// put in `failed` instead.
fn typed_programs(
    object: &Object<'_>,
    rules: &ProgramTypes,
    only: Option<&BTreeSet<String>>,
    keep_going: bool,
    failed: &mut BTreeMap<String, LoadError>,
) -> Result<Vec<ProgramSpec>, LoadError> {
    let mut typed = Vec::new();
    let mut untyped: Vec<UntypedSection> = Vec::new();
    for p in object.programs() {
        if only.is_some_and(|o| !o.contains(&p.name)) {
            continue;
        }
        let mut spec = p.clone();
        if let Some((prog_type, attach_type)) = rules.lookup(&spec.section) {
            spec.prog_type = prog_type;
            spec.expected_attach_type = attach_type;
        }
        if spec.type_known() {
            typed.push(spec);
            continue;
        }
        match untyped.iter_mut().find(|u| u.section == spec.section) {
            Some(u) => u.programs.push(spec.name),
            None => untyped.push(UntypedSection {
                section: spec.section,
                programs: vec![spec.name],
            }),
        }
    }
    if untyped.is_empty() {
        return Ok(typed);
    }
    if !keep_going {
        return Err(LoadError::UnknownProgramTypes { sections: untyped });
    }
    for u in untyped {
        for program in &u.programs {
            let one = UntypedSection {
                section: u.section.clone(),
                programs: vec![program.clone()],
            };
            failed.insert(
                program.clone(),
                LoadError::UnknownProgramTypes {
                    sections: vec![one],
                },
            );
        }
    }
    Ok(typed)
}

/// The `.kconfig` map's contents for the object's `__kconfig` externs (`None` without
/// any): the running kernel's version, and its configuration (`config`, else read as
/// libbpf reads it) when an extern is a `CONFIG_*` one.
fn kconfig_values(object: &Object<'_>, config: Option<&str>) -> Result<Option<Vec<u8>>, LoadError> {
    let externs = object.kconfig_externs();
    if externs.is_empty() {
        return Ok(None);
    }
    let release = sys::kernel_release().ok();
    let kernel_version = release.as_deref().and_then(kernel_version_code);
    let read;
    let (text, origin) = match config {
        Some(text) => (Some(text), "the configuration given".to_owned()),
        None if needs_config(externs) => {
            read = sys::kernel_config().map_err(|source| LoadError::KernelConfig { source })?;
            match &read {
                Some((text, from)) => (Some(text.as_str()), from.clone()),
                None => (
                    None,
                    format!(
                        "neither /boot/config-{} nor {} exists",
                        release.as_deref().unwrap_or("RELEASE"),
                        sys::PROC_CONFIG_GZ
                    ),
                ),
            }
        }
        None => (None, String::new()),
    };
    let source = KconfigSource {
        kernel_version,
        config: text,
        config_origin: &origin,
    };
    kconfig_data(externs, &source)
        .map(Some)
        .map_err(LoadError::Kconfig)
}

fn init_data(spec: &MapSpec, map: &Map, data: &[u8]) -> Result<(), LoadError> {
    let init_err = |what: &str| {
        let map = spec.name.clone();
        let what = what.to_owned();
        move |source| LoadError::MapInit { map, what, source }
    };
    map.update(&0u32.to_ne_bytes(), data, UpdateFlags::ANY)
        .map_err(init_err("writing the section's initial contents"))?;
    if spec.frozen {
        map.freeze().map_err(init_err("freezing it"))?;
    }
    Ok(())
}

fn fill_slot(map: &LoadedMap, index: u32, target: &str, fd: Option<i32>) -> Result<(), LoadError> {
    let fd = fd.ok_or_else(|| LoadError::SlotTarget {
        map: map.spec.name.clone(),
        index,
        target: target.to_owned(),
    })?;
    let value = u32::try_from(fd).unwrap_or(u32::MAX).to_ne_bytes();
    map.map
        .update(&index.to_ne_bytes(), &value, UpdateFlags::ANY)
        .map_err(|source| LoadError::MapInit {
            map: map.spec.name.clone(),
            what: format!("setting slot {index} to {target}"),
            source,
        })
}

/// What the programs of one object share while loading.
struct ProgContext<'a> {
    bpf: &'a Bpf,
    object: &'a Object<'a>,
    fds: &'a HashMap<&'a str, i32>,
    btf: Option<BorrowedFd<'a>>,
    features: &'a BtfFeatures,
    license: &'a str,
    log_level: LogLevel,
    /// The text of `/proc/kallsyms`, read on first need.
    kallsyms: &'a std::sync::OnceLock<Result<String, String>>,
    /// What the program attaches to, when the caller says.
    attach_to: Option<&'a AttachTo>,
    /// [`probe_func_addresses`], run on the first refusal of a program that needs it.
    func_addresses: &'a std::sync::OnceLock<bool>,
}

/// The kernel's BTF, read on first need.
#[derive(Default)]
struct Vmlinux {
    data: Option<Result<Vec<u8>, String>>,
}

use sys::{KALLSYMS, VMLINUX_BTF};

impl Vmlinux {
    fn find(&mut self, name: &str, kind: Kind) -> Result<Option<u32>, String> {
        self.with_btf(|btf| btf.id_by_name(name, kind).map(|t| t.0))
    }

    /// Runs `f` over the kernel's BTF.
    fn with_btf<R>(&mut self, f: impl FnOnce(&Btf<'_>) -> R) -> Result<R, String> {
        let data = self.data.get_or_insert_with(|| {
            sys::vmlinux_btf().map_err(|e| format!("cannot read {VMLINUX_BTF}: {e}"))
        });
        let data = data.as_ref().map_err(Clone::clone)?;
        let btf = Btf::parse(data).map_err(|e| format!("{VMLINUX_BTF}: {e}"))?;
        Ok(f(&btf))
    }
}

fn load_program(
    ctx: &ProgContext<'_>,
    spec: &ProgramSpec,
    vmlinux: &mut Vmlinux,
    core: Option<&CoreTarget<'_>>,
) -> Result<(OwnedFd, Vec<CoreOutcome>), LoadError> {
    let ProgContext {
        bpf,
        object,
        fds,
        btf,
        features,
        license,
        log_level,
        kallsyms,
        attach_to,
        func_addresses,
    } = *ctx;
    let perr = |reason: String| {
        LoadError::Prepare(PrepareError::Program {
            program: spec.name.clone(),
            reason,
        })
    };
    if spec.prog_type == ProgramType::Ext && !matches!(attach_to, Some(AttachTo::Program { .. })) {
        return Err(perr(
            "an freplace program needs the program and function it replaces: give them as \
             its attach target"
                .into(),
        ));
    }
    let mut outcomes = Vec::new();
    let insns = if spec.needs_core() {
        let (Some(local), Some(target)) = (object.btf(), core) else {
            return Err(perr(format!(
                "has {} CO-RE relocations but the object has no BTF to resolve them",
                spec.core_relocations.len()
            )));
        };
        let (patched, done) = apply_core(spec, local, target)
            .map_err(|e| LoadError::Prepare(PrepareError::Core(e)))?;
        outcomes = done;
        let mut relocated = spec.clone();
        relocated.insns = patched;
        relocate(&relocated, &|m| fds.get(m).copied())?
    } else {
        relocate(spec, &|m| fds.get(m).copied())?
    };
    let mut insns = insns;
    if spec
        .references
        .iter()
        .any(|r| matches!(r.target, RefTarget::Ksym { .. }))
    {
        let kallsyms = |name: &str| {
            let text = kallsyms
                .get_or_init(|| sys::kallsyms().map_err(|e| format!("cannot read {KALLSYMS}: {e}")))
                .as_ref()
                .map_err(Clone::clone)?;
            kallsyms_address(text, name)
        };
        vmlinux
            .with_btf(|kernel| resolve_ksyms(spec, &mut insns, object.btf(), kernel, &kallsyms))
            .map_err(&perr)??;
    }
    let name = kernel_name(&spec.name);
    let func_info = func_info_bytes(spec);
    let line_info = line_info_bytes(spec);
    let mut args = ProgLoad::new(spec.prog_type, &insns, license);
    args.name = &name;
    args.expected_attach_type = spec.expected_attach_type;
    args.kern_version = object.kernel_version().unwrap_or(0);
    args.log_level = log_level;
    let kernel_target;
    let named = match attach_to {
        Some(AttachTo::Kernel(function)) => {
            let mut given = spec.clone();
            given.attach_target = Some(function.clone());
            kernel_target = given;
            &kernel_target
        }
        _ => spec,
    };
    if let Some(AttachTo::Program { prog, function }) = attach_to {
        args.attach_prog_fd = Some(prog.as_fd());
        args.attach_btf_id = program_func_id(bpf, prog.as_fd(), function).map_err(&perr)?;
    } else if let Some((target, kind)) = attach_btf_name(named) {
        args.attach_btf_id = vmlinux.find(&target, kind).map_err(&perr)?.ok_or_else(|| {
            perr(format!(
                "attaches to {target}, which the kernel's BTF ({VMLINUX_BTF}) does not have"
            ))
        })?;
    } else if named.prog_type == ProgramType::Tracing && named.attach_target.is_none() {
        return Err(perr(format!(
            "section {} names no function to attach to: give it as the program's attach target",
            spec.section
        )));
    }
    if spec.sleepable {
        args.flags |= sys::prog_flags::SLEEPABLE;
    }
    if spec.xdp_frags {
        args.flags |= sys::prog_flags::XDP_HAS_FRAGS;
    }
    if let Some(fd) = btf
        && features.func
    {
        args.prog_btf_fd = Some(fd);
        if !func_info.is_empty() {
            args.func_info = &func_info;
            args.func_info_rec_size = 8;
        }
        if !line_info.is_empty() {
            args.line_info = &line_info;
            args.line_info_rec_size = 16;
        }
    }
    let fd = bpf.prog_load(&args).map_err(|source| {
        // A poisoned CO-RE instruction the verifier reached: say which relocation
        // the running kernel cannot satisfy, as libbpf does.
        let poisoned = source.log().and_then(poisoned_insn).and_then(|insn| {
            outcomes
                .iter()
                .find(|o| o.insn == insn && o.poisoned.is_some())
        });
        match poisoned {
            Some(o) => LoadError::PoisonedCore {
                program: spec.name.clone(),
                poisoned: Box::new(PoisonedRelocation {
                    section: spec.section.clone(),
                    insn: o.insn,
                    index: o.index,
                    relocation: o.poisoned.clone().unwrap_or_default(),
                }),
                source,
            },
            None => match lacks(spec, bpf, func_addresses) {
                Some(lacks) => LoadError::KernelLacks {
                    program: spec.name.clone(),
                    lacks: Box::new(lacks),
                    source,
                },
                None => LoadError::ProgramLoad {
                    program: spec.name.clone(),
                    section: spec.section.clone(),
                    source,
                },
            },
        }
    })?;
    Ok((fd, outcomes))
}

/// What refused program `spec` uses that the kernel lacks, asked of the kernel's probes
/// only for what the program uses.
fn lacks(
    spec: &ProgramSpec,
    bpf: &Bpf,
    func_addresses: &std::sync::OnceLock<bool>,
) -> Option<Lack> {
    let function = spec.references.iter().find_map(|r| match &r.target {
        RefTarget::FuncAddr { function } => Some(function),
        _ => None,
    })?;
    let present = *func_addresses.get_or_init(|| probe_func_addresses(bpf));
    (!present).then(|| Lack::FuncAddress {
        function: function.clone(),
    })
}

/// The BTF id of function `function` in the BTF of loaded program `prog`, which an
/// `freplace` (or `fentry` on BPF) program names as its attach target.
fn program_func_id(bpf: &Bpf, prog: BorrowedFd<'_>, function: &str) -> Result<u32, String> {
    let info = bpf.prog_info(prog).map_err(|e| e.to_string())?;
    if info.btf_id == 0 {
        return Err(format!(
            "the target program {} has no BTF, so its function {function} cannot be named",
            info.name
        ));
    }
    let data = pinned::kernel_btf(bpf, info.btf_id).map_err(|e| e.to_string())?;
    let btf = Btf::parse(&data).map_err(|e| format!("the target program's BTF: {e}"))?;
    btf.id_by_name(function, Kind::Func)
        .map(|id| id.0)
        .ok_or_else(|| {
            format!(
                "the target program {} has no function {function} in its BTF",
                info.name
            )
        })
}

/// The instruction at which a verifier log says it met a call to the CO-RE poison
/// helper ([`handover_loader::POISON_HELPER`]): the number of the last `N: (85) call
/// unknown#195896080` line before `invalid func unknown#195896080`.
fn poisoned_insn(log: &str) -> Option<u32> {
    let callee = format!("unknown#{}", handover_loader::POISON_HELPER);
    let refusal = format!("invalid func {callee}");
    let mut last_call = None;
    for line in log.lines() {
        if line.trim() == refusal {
            return last_call;
        }
        if let Some((n, rest)) = line.split_once(": ")
            && rest.contains("call")
            && rest.contains(&callee)
        {
            last_call = n.trim().parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests;
