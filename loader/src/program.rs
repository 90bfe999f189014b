//! Program specs: the instructions of one program with its subprograms appended, the
//! symbolic references a loader must fill in, and its BTF.ext records.

use crate::btf_ext::{CoreRelocation, FuncInfo, LineInfo};
use handover_uapi::{AttachType, Insn, ProgramType};
use zerocopy::IntoBytes;

/// What an instruction refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefTarget {
    /// `ld_imm64` of a map fd (`BPF_PSEUDO_MAP_FD`): put the fd of map `map` in `imm`.
    Map {
        /// The map's name.
        map: String,
    },
    /// `ld_imm64` of the address of a global data value (`BPF_PSEUDO_MAP_VALUE`): put the
    /// fd of map `map` in the first `imm`; the second `imm` already holds `offset`.
    MapValue {
        /// The global data map's name (its section name).
        map: String,
        /// Byte offset into the map's value.
        offset: u32,
    },
    /// A bpf-to-bpf call, already resolved to the appended copy of `function`.
    Call {
        /// The called function.
        function: String,
    },
    /// `ld_imm64` of a function address (`BPF_PSEUDO_FUNC`, callbacks), already resolved.
    FuncAddr {
        /// The referenced function.
        function: String,
    },
    /// A `__ksym` extern, resolved against the kernel's BTF at load time: an `ld_imm64`
    /// of a kernel variable's address (`BPF_PSEUDO_BTF_ID`), or a kfunc call
    /// (`BPF_PSEUDO_KFUNC_CALL`) or the address of one.
    Ksym {
        /// The extern's name, which is also its name in the kernel.
        name: String,
        /// Whether it is a variable or a function.
        kind: KsymKind,
        /// Declared `__weak`: a kernel without it is not an error (the load gets 0,
        /// a call is made invalid so that only dead code may hold it).
        weak: bool,
    },
}

/// What a `__ksym` extern names in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KsymKind {
    /// A kernel variable (a BTF `VAR`).
    Var,
    /// A kernel function callable from BPF (a kfunc, a BTF `FUNC`).
    Func,
    /// A kernel symbol declared without a type (`extern const void sym __ksym`): its
    /// address, from `/proc/kallsyms`, is loaded as a plain 64-bit constant.
    Typeless,
}

/// A reference from one instruction of a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Index of the instruction in [`ProgramSpec::insns`].
    pub insn: usize,
    /// What it refers to.
    pub target: RefTarget,
}

/// A function placed in a program's instructions: the program itself first, then each
/// subprogram it calls, directly or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSpan {
    /// The function's symbol name.
    pub name: String,
    /// Index of its first instruction in [`ProgramSpec::insns`].
    pub start: usize,
    /// Its number of instructions.
    pub len: usize,
}

/// Everything needed to load (or compare) one program.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgramSpec {
    /// The function's name.
    pub name: String,
    /// The ELF section it came from (`xdp`, `cgroup/connect4`, ...), without the `?`
    /// that marks a program not loaded by default (see [`ProgramSpec::autoload`]).
    pub section: String,
    /// Whether the program is loaded with its object by default: `false` when its
    /// section name starts with `?` (`SEC("?xdp")`), as libbpf does.
    pub autoload: bool,
    /// The program type: [`ProgramType::Unspec`] when the section's name says none
    /// (a name libbpf does not know) and no rule gave one; see
    /// [`ProgramSpec::type_known`].
    pub prog_type: ProgramType,
    /// The attach type to pass as `expected_attach_type`, if the section name implies one.
    pub expected_attach_type: Option<AttachType>,
    /// What the section name says to attach to (`do_sys_open` in `kprobe/do_sys_open`).
    pub attach_target: Option<String>,
    /// Whether the program is sleepable (`fentry.s/...`, `lsm.s/...`).
    pub sleepable: bool,
    /// Whether an XDP program accepts multi-buffer packets (`xdp.frags`).
    pub xdp_frags: bool,
    /// Instructions in host byte order, with subprograms appended and calls fixed.
    pub insns: Vec<Insn>,
    /// Symbolic references, sorted by instruction.
    pub references: Vec<Reference>,
    /// The functions making up `insns`.
    pub functions: Vec<FunctionSpan>,
    /// `.BTF.ext` function info, program-relative.
    pub func_info: Vec<FuncInfo>,
    /// `.BTF.ext` line info, program-relative.
    pub line_info: Vec<LineInfo>,
    /// CO-RE relocations the program needs before it can load on a given kernel.
    pub core_relocations: Vec<CoreRelocation>,
}

impl ProgramSpec {
    pub(crate) fn new(name: &str, section: &str) -> Self {
        Self {
            name: name.to_owned(),
            section: section.to_owned(),
            autoload: true,
            prog_type: ProgramType::Unspec,
            expected_attach_type: None,
            attach_target: None,
            sleepable: false,
            xdp_frags: false,
            insns: Vec::new(),
            references: Vec::new(),
            functions: Vec::new(),
            func_info: Vec::new(),
            line_info: Vec::new(),
            core_relocations: Vec::new(),
        }
    }

    /// The program type as the kernel spells it without `BPF_PROG_TYPE_`, lower case;
    /// `unknown` when the section's name gives none.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        if self.type_known() {
            self.prog_type.name()
        } else {
            "unknown"
        }
    }

    /// Whether the program has a type (from its section's name or a rule): loading a
    /// program without one needs a rule in
    /// [`LoadOptions::program_types`](crate::LoadOptions::program_types).
    #[must_use]
    pub fn type_known(&self) -> bool {
        self.prog_type != ProgramType::Unspec
    }

    /// The expected attach type as the kernel spells it without `BPF_`, lower case.
    #[must_use]
    pub fn attach_type_name(&self) -> Option<&'static str> {
        self.expected_attach_type.map(AttachType::name)
    }

    /// Whether loading needs CO-RE relocations applied against the running kernel's BTF
    /// first ([`load`](crate::load) applies them, see [`apply_core`](crate::apply_core)).
    #[must_use]
    pub fn needs_core(&self) -> bool {
        !self.core_relocations.is_empty()
    }

    /// The instructions in the host's byte order, as `BPF_PROG_LOAD` takes them.
    #[must_use]
    pub fn insn_bytes(&self) -> &[u8] {
        self.insns.as_bytes()
    }
}
