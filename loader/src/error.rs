//! Errors raised while turning an ELF object into specs.

use std::path::PathBuf;

/// What went wrong while parsing a BPF object, with the section, symbol or offset involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The file could not be opened or mapped.
    #[error("cannot read BPF object {path}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The input is not a regular file (a FIFO, a device, a directory).
    #[error("{path}: not a regular file ({kind}): give the path of a BPF object file")]
    NotRegular {
        /// The path given.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file is larger than [`MAX_OBJECT_SIZE`](crate::MAX_OBJECT_SIZE).
    #[error(
        "{path}: {size} bytes is larger than the {limit}-byte limit on BPF object files (MAX_OBJECT_SIZE)"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, or the bytes read before the limit was passed.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The input is not an ELF64 file, or its headers are malformed.
    #[error("malformed ELF while reading {what}: {source}")]
    Elf {
        /// The part of the file being read.
        what: &'static str,
        /// The error from the ELF reader.
        #[source]
        source: object::Error,
    },
    /// The ELF file is for another machine than BPF.
    #[error("ELF machine is {machine}, expected EM_BPF (247): compile with clang -target bpf")]
    WrongMachine {
        /// The `e_machine` value found.
        machine: u16,
    },
    /// A section could not be read.
    #[error("section {section}: {reason}")]
    Section {
        /// The section name (or index when the name is unreadable).
        section: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A relocation could not be applied.
    #[error("relocation in {section} at offset {offset:#x}: {reason}")]
    Relocation {
        /// The section the relocation applies to.
        section: String,
        /// Byte offset of the relocated location in that section.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A symbol refers to something that does not exist or is out of bounds.
    #[error("symbol {symbol}: {reason}")]
    Symbol {
        /// The symbol name.
        symbol: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object refers to an external symbol (`.kconfig`, `.ksyms`, `extern`) that
    /// this loader does not resolve.
    #[error(
        "symbol {symbol} is an extern ({kind}) this loader does not resolve (of the kernel's symbols it resolves typed __ksym variables and kfuncs only); define the value in the object instead"
    )]
    UnsupportedExtern {
        /// The extern's name.
        symbol: String,
        /// Where it comes from (`.kconfig`, `.ksyms`, or `extern`).
        kind: &'static str,
    },
    /// The object refers to a symbol it declares `extern` but does not define, and that
    /// is neither a `__kconfig` nor a `__ksym` extern: it lives in another object.
    #[error(
        "symbol {symbol} is declared extern and defined in no section of this object: link it with the object that defines it first (bpftool gen object OUT.o A.o B.o)"
    )]
    UndefinedSymbol {
        /// The symbol's name.
        symbol: String,
    },
    /// A map definition is invalid.
    #[error("map {map}: {reason}")]
    Map {
        /// The map name.
        map: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A BTF-defined map could not be read because the BTF itself is malformed.
    #[error("map {map}: BTF error in field {field}")]
    MapBtf {
        /// The map name.
        map: String,
        /// The member being read (`type`, `key`, ...), or `-` for the map's own type.
        field: String,
        /// The BTF parser's error.
        #[source]
        source: handover_btf::Error,
    },
    /// The `.BTF` section could not be parsed.
    #[error("section .BTF is malformed")]
    Btf {
        /// The BTF parser's error.
        #[source]
        source: handover_btf::Error,
    },
    /// The `.BTF.ext` section could not be parsed.
    #[error("section .BTF.ext: {reason} at offset {offset:#x}")]
    BtfExt {
        /// Byte offset within `.BTF.ext`.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A program's instructions are malformed.
    #[error("program {program} (section {section}): {reason}")]
    Program {
        /// The program name.
        program: String,
        /// Its section.
        section: String,
        /// What is wrong.
        reason: String,
    },
}

impl ObjectError {
    pub(crate) fn section(section: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Section {
            section: section.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn map(map: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Map {
            map: map.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn symbol(symbol: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Symbol {
            symbol: symbol.into(),
            reason: reason.into(),
        }
    }
}
