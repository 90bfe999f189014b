//! BPF object loader: ELF objects into map and program specs, CO-RE, the BTF sanitiser
//! and ksym matching, as pure functions over bytes and values.
//!
//! [`Object::parse`] reads an ELF64 object compiled for BPF (either byte order) and
//! returns a [`MapSpec`] for every map it defines (BTF-defined `.maps`, legacy `maps`,
//! global data sections) and a [`ProgramSpec`] for every program, with subprograms
//! appended, map and global data references resolved to names, and `.BTF.ext` records
//! attached. [`ObjectFile`] reads a file and parses it.
//!
//! Everything here is pure: preparing an object for a kernel ([`prepare_btf`] fixes up
//! and sanitises its BTF for the kernel's [`BtfFeatures`], [`relocate`] writes map
//! descriptors into instructions, [`apply_core`] applies CO-RE relocations by libbpf's
//! rules against a target BTF given by the caller, [`resolve_ksyms`] resolves `__ksym`
//! externs against kernel BTF and `/proc/kallsyms` text given by the caller).
//! `handover-load` puts the result into the kernel through `handover-sys`.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod btf_ext;
mod core;
mod error;
mod file;
mod kconfig;
mod maps;
mod object;
mod prepare;
mod program;
mod program_types;
mod raw;
mod section;

pub use crate::core::{CoreError, CoreKind, CoreOutcome, CoreTarget, POISON_HELPER, apply_core};
pub use btf_ext::{CoreRelocation, FuncInfo, LineInfo};
pub use error::ObjectError;
pub use file::{
    MAX_OBJECT_SIZE, ObjectFile, ReadError, WriteError, file_kind, read_regular, write_regular,
};
pub use handover_uapi::{
    INSN_SIZE, PSEUDO_BTF_ID, PSEUDO_KFUNC_CALL, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE,
};
pub use kconfig::{
    KCONFIG_SECTION, KconfigError, KconfigExtern, KconfigSource, KconfigType, kconfig_data,
    kconfig_size, kernel_version_code, needs_config,
};
pub use maps::{MapOrigin, MapSlot, MapSpec, Pinning, SlotTarget};
pub use object::{Object, ObjectOptions, ProgramSection, Variable};
pub use prepare::{
    BtfFeatures, KERNEL_NAME_LEN, KsymResolution, POISON_CALL_KFUNC_BASE, PlacedDatasec, PlacedVar,
    PrepareError, SectionLayout, attach_btf_name, created_max_entries, func_info_bytes,
    kallsyms_address, kernel_name, line_info_bytes, map_btf_ids, place_datasec, prepare_btf,
    prepare_btf_with, relocate, resolve_ksyms, ringbuf_size,
};
pub use program::{FunctionSpan, KsymKind, ProgramSpec, RefTarget, Reference};
pub use program_types::{ProgramTypes, TypeAndAttach};
