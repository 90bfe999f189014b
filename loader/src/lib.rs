//! BPF object loader: ELF objects into map and program specs, and the bpf(2) layer.
//!
//! [`Object::parse`] reads an ELF64 object compiled for BPF (either byte order) and
//! returns a [`MapSpec`] for every map it defines (BTF-defined `.maps`, legacy `maps`,
//! global data sections) and a [`ProgramSpec`] for every program, with subprograms
//! appended, map and global data references resolved to names, and `.BTF.ext` records
//! attached. [`ObjectFile`] maps a file and parses it.
//!
//! [`load`] puts a parsed object into the kernel: its BTF (fixed up and sanitised for
//! the kernel's [`BtfFeatures`]), its maps (or maps given for reuse), its programs, with
//! their CO-RE relocations applied against the kernel's BTF by libbpf's rules
//! ([`apply_core`]); the result, a [`LoadedObject`], owns every descriptor by name.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod btf_ext;
mod core;
mod error;
mod file;
mod insn;
mod load;
mod maps;
mod object;
mod program;
mod program_types;
mod raw;
mod section;
pub mod sys;

pub use crate::core::{CoreError, CoreKind, CoreOutcome, CoreTarget, POISON_HELPER, apply_core};
pub use btf_ext::{CoreRelocation, FuncInfo, LineInfo};
pub use error::ObjectError;
pub use file::ObjectFile;
pub use insn::{INSN_SIZE, PSEUDO_BTF_ID, PSEUDO_KFUNC_CALL, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE};
pub use load::{
    BtfFeatures, KERNEL_NAME_LEN, KsymResolution, LoadError, LoadOptions, LoadedMap, LoadedObject,
    LoadedProgram, POISON_CALL_KFUNC_BASE, SectionLayout, UntypedSection, attach_btf_name,
    created_max_entries, func_info_bytes, kallsyms_address, kernel_name, line_info_bytes, load,
    map_btf_ids, prepare_btf, prepare_btf_with, relocate, resolve_ksyms, ringbuf_size,
};
pub use maps::{MapOrigin, MapSlot, MapSpec, Pinning, SlotTarget};
pub use object::{Object, ObjectOptions, ProgramSection, Variable};
pub use program::{FunctionSpan, KsymKind, ProgramSpec, RefTarget, Reference};
pub use program_types::{ProgramTypes, TypeAndAttach};
