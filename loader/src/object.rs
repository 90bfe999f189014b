//! Reading an ELF object: sections, symbols, relocations, and the specs built from them.

use std::collections::{BTreeMap, HashMap};

use handover_btf::{Btf, Detail, Endian, Kind};
use object::elf::{
    EM_BPF, FileHeader64, SHF_EXECINSTR, SHT_NOBITS, SHT_REL, SHT_RELA, SHT_SYMTAB, STB_LOCAL,
    STB_WEAK, STT_FUNC, STT_SECTION,
};
use object::read::elf::{FileHeader, Rel, SectionHeader, Sym};
use object::{Endianness, SectionIndex};

use crate::btf_ext::{BtfExt, SectionExt};
use crate::error::ObjectError;
use crate::kconfig::{self, KCONFIG_SECTION, KconfigExtern};
use crate::maps::{self, MapSlot, MapSpec, SlotTarget};
use crate::program::{FunctionSpan, KsymKind, ProgramSpec, RefTarget, Reference};
use crate::program_types::ProgramTypes;

use crate::section;
use handover_uapi::{
    AttachType, CALL, INSN_SIZE, Insn, PSEUDO_FUNC, PSEUDO_KFUNC_CALL, PSEUDO_MAP_FD,
    PSEUDO_MAP_VALUE, ProgramType,
};

type Elf = FileHeader64<Endianness>;

/// Options for [`Object::parse_with`].
#[derive(Clone, Debug, Default)]
pub struct ObjectOptions {
    program_types: ProgramTypes,
}

impl ObjectOptions {
    /// Options with every program type taken from its section name.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the program type and expected attach type of the programs in `section`,
    /// overriding whatever its name says. Use it for sections whose names libbpf does
    /// not know.
    #[must_use]
    pub fn program_type(
        mut self,
        section: &str,
        prog_type: ProgramType,
        attach_type: Option<AttachType>,
    ) -> Self {
        self.program_types = self.program_types.section(section, prog_type, attach_type);
        self
    }

    /// Gives program types by the rules of `types` (exact sections, prefixes, every
    /// program), overriding what section names say.
    #[must_use]
    pub fn program_types(mut self, types: ProgramTypes) -> Self {
        self.program_types = types;
        self
    }
}

/// The programs of one program section, as [`Object::program_sections`] lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramSection<'a> {
    /// The section name (without a leading `?`).
    pub section: &'a str,
    /// The program type its name (or a parse-time rule) gives, `None` when it gives
    /// none: loading its programs then needs a rule in
    /// [`LoadOptions::program_types`](crate::LoadOptions::program_types).
    pub prog_type: Option<ProgramType>,
    /// The expected attach type that goes with it.
    pub attach_type: Option<AttachType>,
    /// Its programs, in offset order.
    pub programs: Vec<&'a str>,
}

/// A parsed BPF object: its maps, programs, license, kernel version and BTF.
pub struct Object<'data> {
    endian: Endian,
    license: Option<String>,
    kernel_version: Option<u32>,
    btf: Option<Btf<'data>>,
    maps: Vec<MapSpec>,
    programs: Vec<ProgramSpec>,
    section_sizes: BTreeMap<String, u64>,
    variables: Vec<Variable>,
    kconfig: Vec<KconfigExtern>,
}

/// A data symbol (a global or static variable) of the ELF symbol table: where the
/// variable lies in its section. Clang leaves the offsets of `VAR`s and the sizes of
/// `DATASEC`s at zero in `.BTF`; a loader takes them from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The symbol name (the BTF `VAR` name).
    pub name: String,
    /// The section holding it.
    pub section: String,
    /// Byte offset in that section.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Whether its visibility is hidden or internal (`STV_HIDDEN`, `STV_INTERNAL`):
    /// such globals are static as far as user space is concerned.
    pub hidden: bool,
}

impl std::fmt::Debug for Object<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The BTF blob is left out: it is large and has its own dump.
        f.debug_struct("Object")
            .field("endian", &self.endian)
            .field("license", &self.license)
            .field("kernel_version", &self.kernel_version)
            .field("btf_types", &self.btf.as_ref().map(Btf::type_count))
            .field("maps", &self.maps)
            .field("programs", &self.programs)
            .finish()
    }
}

struct SecInfo<'data> {
    name: &'data str,
    sh_type: u32,
    flags: u64,
    size: u64,
    data: &'data [u8],
}

struct SymInfo<'data> {
    name: &'data str,
    section: Option<usize>,
    value: u64,
    size: u64,
    kind: u8,
    visibility: u8,
    bind: u8,
}

/// One relocation: offset in its target section and symbol index.
#[derive(Clone, Copy)]
struct Reloc {
    offset: u64,
    symbol: usize,
}

/// A function: a code range of one executable section.
struct Func<'data> {
    name: &'data str,
    is_static: bool,
    section: usize,
    start: usize,
    len: usize,
}

/// Where a map lives in the ELF file, to resolve relocations against it.
struct MapSite {
    section: usize,
    start: u64,
    end: u64,
    map: usize,
    values_offset: Option<u32>,
}

fn elf_err(what: &'static str) -> impl FnOnce(object::Error) -> ObjectError {
    move |source| ObjectError::Elf { what, source }
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, ObjectError> {
    std::str::from_utf8(bytes).map_err(|_| ObjectError::section(what, "name is not valid UTF-8"))
}

struct Parser<'data, 'o> {
    order: Endian,
    kconfig: Vec<KconfigExtern>,
    sections: Vec<SecInfo<'data>>,
    symbols: Vec<SymInfo<'data>>,
    relocs: HashMap<usize, Vec<Reloc>>,
    btf: Option<&'o Btf<'data>>,
}

impl<'data> Parser<'data, '_> {
    fn sec_name(&self, index: usize) -> String {
        self.sections
            .get(index)
            .map_or_else(|| format!("#{index}"), |s| s.name.to_owned())
    }

    fn symbol(
        &self,
        index: usize,
        section: usize,
        offset: u64,
    ) -> Result<&SymInfo<'data>, ObjectError> {
        self.symbols
            .get(index)
            .ok_or_else(|| ObjectError::Relocation {
                section: self.sec_name(section),
                offset,
                reason: format!(
                    "refers to symbol #{index}, but the symbol table has {} entries",
                    self.symbols.len()
                ),
            })
    }

    /// How a relocation's symbol is named in errors: section symbols have no name of
    /// their own, so they are named after their section.
    fn sym_label(&self, sym: &SymInfo<'_>) -> String {
        match sym.section {
            Some(sec) if sym.kind == STT_SECTION.0 || sym.name.is_empty() => {
                format!("section symbol of {}", self.sec_name(sec))
            }
            _ => sym.name.to_owned(),
        }
    }

    /// The name of the type of variable `var` in DATASEC `section`, if the BTF says.
    fn var_type_name(&self, section: &str, var: &str) -> Option<String> {
        let btf = self.btf?;
        let t = btf
            .type_by_id(btf.id_by_name(section, Kind::Datasec)?)
            .ok()?;
        let Detail::Datasec(ds) = t.detail() else {
            return None;
        };
        for v in ds.vars {
            let vt = btf.type_by_id(v.ty).ok()?;
            if vt.name().ok()? != var {
                continue;
            }
            let Detail::Var(detail) = vt.detail() else {
                return None;
            };
            return btf
                .type_by_id(btf.resolve(detail.ty).ok()?)
                .ok()?
                .name()
                .ok()
                .map(str::to_owned);
        }
        None
    }

    /// The error for a reference to `name`, a symbol defined in no section: a kernel
    /// extern (`__kconfig`, `__ksym`) this loader does not resolve, or a symbol another
    /// object defines, which only a static link resolves.
    fn extern_error(&self, name: &str) -> ObjectError {
        match self.extern_kind(name) {
            "extern" => ObjectError::UndefinedSymbol {
                symbol: name.to_owned(),
            },
            kind => ObjectError::UnsupportedExtern {
                symbol: name.to_owned(),
                kind,
            },
        }
    }

    /// The reference an instruction relocated against the undefined symbol `sym` makes:
    /// a `__ksym` extern the BTF types (a `VAR` of a known type, or a `FUNC`), read by
    /// an `ld_imm64` or, for a function, called. Anything else is an error.
    fn ksym_ref(
        &self,
        sym: &SymInfo<'_>,
        insn: &Insn,
        wide: bool,
    ) -> Result<RefTarget, ObjectError> {
        let kind = self
            .ksym_kind(sym.name)
            .ok_or_else(|| self.extern_error(sym.name))?;
        let kfunc_call = insn.code == CALL && kind == KsymKind::Func;
        if !(wide || kfunc_call) {
            return Err(ObjectError::symbol(
                sym.name,
                format!(
                    "__ksym extern used by an instruction with opcode {:#04x}; only ld_imm64 and (for a kfunc) call may refer to it",
                    insn.code
                ),
            ));
        }
        Ok(RefTarget::Ksym {
            name: sym.name.to_owned(),
            kind,
            weak: sym.bind == STB_WEAK.0,
        })
    }

    /// What the `.ksyms` `DATASEC` says `name` is: a function, a variable with a type,
    /// or one without (`extern const void x __ksym`); `None` for a name it does not
    /// list.
    fn ksym_kind(&self, name: &str) -> Option<KsymKind> {
        let btf = self.btf?;
        let t = btf
            .type_by_id(btf.id_by_name(".ksyms", Kind::Datasec)?)
            .ok()?;
        let Detail::Datasec(ds) = t.detail() else {
            return None;
        };
        for v in ds.vars {
            let vt = btf.type_by_id(v.ty).ok()?;
            if vt.name().ok()? != name {
                continue;
            }
            return match vt.detail() {
                Detail::Func(_) => Some(KsymKind::Func),
                Detail::Var(var) if btf.resolve(var.ty).ok()?.0 != 0 => Some(KsymKind::Var),
                Detail::Var(_) => Some(KsymKind::Typeless),
                _ => None,
            };
        }
        None
    }

    fn extern_kind(&self, name: &str) -> &'static str {
        let Some(btf) = self.btf else { return "extern" };
        for sec in [".kconfig", ".ksyms"] {
            let Some(id) = btf.id_by_name(sec, Kind::Datasec) else {
                continue;
            };
            let Ok(t) = btf.type_by_id(id) else { continue };
            if let Detail::Datasec(ds) = t.detail() {
                for v in ds.vars {
                    if btf
                        .type_by_id(v.ty)
                        .and_then(|t| t.name())
                        .is_ok_and(|n| n == name)
                    {
                        return if sec == ".kconfig" {
                            ".kconfig"
                        } else {
                            ".ksyms"
                        };
                    }
                }
            }
        }
        "extern"
    }
}

impl<'data> Object<'data> {
    /// Parses an ELF64 BPF object with every program type taken from its section name.
    ///
    /// # Errors
    /// Any malformed or unsupported construct, as an [`ObjectError`] naming the section,
    /// symbol or offset.
    pub fn parse(data: &'data [u8]) -> Result<Self, ObjectError> {
        Self::parse_with(data, &ObjectOptions::default())
    }

    /// Parses an ELF64 BPF object with explicit program types for some sections.
    ///
    /// # Errors
    /// As [`Object::parse`].
    pub fn parse_with(data: &'data [u8], options: &ObjectOptions) -> Result<Self, ObjectError> {
        let hdr = Elf::parse(data).map_err(elf_err("file header"))?;
        let e = hdr.endian().map_err(elf_err("file header"))?;
        let machine = hdr.e_machine(e);
        if machine != EM_BPF {
            return Err(ObjectError::WrongMachine { machine: machine.0 });
        }
        let order = if e == Endianness::Little {
            Endian::Little
        } else {
            Endian::Big
        };
        let table = hdr.sections(e, data).map_err(elf_err("section headers"))?;

        let mut sections = Vec::with_capacity(table.len());
        let mut rel_sections = Vec::new();
        for (index, sh) in table.enumerate() {
            let raw_name = table
                .section_name(e, sh)
                .map_err(elf_err("section names"))?;
            let name = utf8(raw_name, &format!("#{}", index.0))?;
            let sh_type = sh.sh_type(e).0;
            let data = if sh_type == SHT_NOBITS.0 {
                &[][..]
            } else {
                sh.data(e, data)
                    .map_err(|_| ObjectError::section(name, "section data lies outside the file"))?
            };
            if sh_type == SHT_REL.0 {
                rel_sections.push((index.0, sh));
            } else if sh_type == SHT_RELA.0 && sh.sh_size(e) != 0 {
                return Err(ObjectError::section(
                    name,
                    "RELA relocations are not used by BPF objects",
                ));
            }
            sections.push(SecInfo {
                name,
                sh_type,
                flags: sh.sh_flags(e).0,
                size: sh.sh_size(e),
                data,
            });
        }

        let symtab = table
            .symbols(e, data, SHT_SYMTAB)
            .map_err(elf_err("symbol table"))?;
        let mut symbols = Vec::with_capacity(symtab.len());
        for (index, sym) in symtab.enumerate() {
            let name = utf8(
                symtab
                    .symbol_name(e, sym)
                    .map_err(elf_err("symbol names"))?,
                "symbol name",
            )?;
            let section = symtab
                .symbol_section(e, sym, index)
                .map_err(elf_err("symbol section index"))?
                .map(|s| s.0);
            if let Some(s) = section
                && s >= sections.len()
            {
                return Err(ObjectError::symbol(
                    name,
                    format!(
                        "section index {s} out of range ({} sections)",
                        sections.len()
                    ),
                ));
            }
            symbols.push(SymInfo {
                name,
                section,
                value: sym.st_value(e),
                size: sym.st_size(e),
                kind: sym.st_type().0,
                visibility: sym.st_other().0 & 0x3,
                bind: sym.st_bind().0,
            });
        }

        let mut relocs: HashMap<usize, Vec<Reloc>> = HashMap::new();
        for (index, sh) in rel_sections {
            let target = usize::try_from(sh.sh_info(e)).unwrap_or(usize::MAX);
            let rel_name = sections.get(index).map_or("", |s| s.name);
            let Some(target_sec) = sections.get(target) else {
                return Err(ObjectError::section(
                    rel_name,
                    format!("relocates section #{target}, which does not exist"),
                ));
            };
            // Only code and map definitions are relocated here; debug info and BTF
            // relocations are not needed to build specs.
            if target_sec.flags & SHF_EXECINSTR.0 == 0 && target_sec.name != ".maps" {
                continue;
            }
            if sh.link(e) != symtab.section() {
                return Err(ObjectError::section(
                    rel_name,
                    "relocations refer to a symbol table other than .symtab",
                ));
            }
            let (rels, _) = sh
                .rel(e, data)
                .map_err(elf_err("relocation section"))?
                .unwrap_or((&[], SectionIndex(0)));
            let is_code = target_sec.flags & SHF_EXECINSTR.0 != 0;
            let list = relocs.entry(target).or_default();
            for r in rels {
                let offset = r.r_offset(e);
                // Code relocations apply to whole instructions; one elsewhere would be
                // silently lost.
                if is_code && (offset % INSN_SIZE as u64 != 0 || offset >= target_sec.size) {
                    return Err(ObjectError::Relocation {
                        section: target_sec.name.to_owned(),
                        offset,
                        reason: format!(
                            "not at an instruction inside the section ({} bytes)",
                            target_sec.size
                        ),
                    });
                }
                list.push(Reloc {
                    offset,
                    symbol: usize::try_from(r.r_sym(e)).unwrap_or(usize::MAX),
                });
            }
        }

        let find = |name: &str| sections.iter().position(|s| s.name == name);
        let license = match find("license") {
            Some(i) => {
                let d = sections.get(i).map_or(&[][..], |s| s.data);
                let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
                Some(utf8(d.get(..end).unwrap_or(&[]), "license")?.to_owned())
            }
            None => None,
        };
        let kernel_version = match find("version") {
            Some(i) => {
                let d = sections.get(i).map_or(&[][..], |s| s.data);
                let b: [u8; 4] = d.try_into().map_err(|_| {
                    ObjectError::section("version", format!("{} bytes, expected 4", d.len()))
                })?;
                Some(order.u32(b))
            }
            None => None,
        };
        let btf = match find(".BTF") {
            Some(i) => {
                let d = sections.get(i).map_or(&[][..], |s| s.data);
                Some(Btf::parse(d).map_err(|source| ObjectError::Btf { source })?)
            }
            None => None,
        };
        let btf_ext = match (find(".BTF.ext"), &btf) {
            (Some(i), Some(b)) => {
                let d = sections.get(i).map_or(&[][..], |s| s.data);
                BtfExt::parse(d, &|off| b.string_at(off).ok())?
            }
            (Some(_), None) => {
                return Err(ObjectError::section(
                    ".BTF.ext",
                    "present without .BTF, whose strings it refers to",
                ));
            }
            _ => BtfExt::default(),
        };

        let section_sizes: BTreeMap<String, u64> = sections
            .iter()
            .filter(|s| !s.name.is_empty())
            .map(|s| (s.name.to_owned(), s.size))
            .collect();
        // STT_OBJECT symbols with a name, in a section: the variables of data sections.
        let variables = symbols
            .iter()
            .filter(|s| s.kind == object::elf::STT_OBJECT.0 && !s.name.is_empty())
            .filter_map(|s| {
                let sec = sections.get(s.section?)?;
                Some(Variable {
                    name: s.name.to_owned(),
                    section: sec.name.to_owned(),
                    offset: s.value,
                    size: s.size,
                    hidden: s.visibility == object::elf::STV_HIDDEN.0
                        || s.visibility == object::elf::STV_INTERNAL.0,
                })
            })
            .collect();
        let kconfig = match &btf {
            Some(b) => kconfig::collect(b, &|name| {
                symbols
                    .iter()
                    .any(|s| s.name == name && s.section.is_none() && s.bind == STB_WEAK.0)
            })?,
            None => Vec::new(),
        };
        let parser = Parser {
            order,
            kconfig,
            sections,
            symbols,
            relocs,
            btf: btf.as_ref(),
        };
        let (mut maps, sites) = parser.collect_maps()?;
        let programs = parser.collect_programs(options, &maps, &sites, &btf_ext)?;
        parser.static_init(&mut maps, &sites)?;
        if !parser.kconfig.is_empty() {
            maps.push(maps::kconfig_map(kconfig::kconfig_size(&parser.kconfig)));
        }

        let kconfig = parser.kconfig;
        let endian = order;
        Ok(Self {
            endian,
            license,
            kernel_version,
            btf,
            maps,
            programs,
            section_sizes,
            variables,
            kconfig,
        })
    }

    /// The `__kconfig` externs, with where each lies in the `.kconfig` map (whose
    /// contents a loader fills from the running kernel, see
    /// [`kconfig_data`](crate::kconfig_data)).
    #[must_use]
    pub fn kconfig_externs(&self) -> &[KconfigExtern] {
        &self.kconfig
    }

    /// The size of the ELF section named `name`.
    #[must_use]
    pub fn section_size(&self, name: &str) -> Option<u64> {
        self.section_sizes.get(name).copied()
    }

    /// The variable `name` defined in section `section`, from the symbol table.
    #[must_use]
    pub fn variable(&self, section: &str, name: &str) -> Option<&Variable> {
        self.variables
            .iter()
            .find(|v| v.section == section && v.name == name)
    }

    /// Byte order of the object.
    #[must_use]
    pub fn endian(&self) -> Endian {
        self.endian
    }

    /// The `license` section's string.
    #[must_use]
    pub fn license(&self) -> Option<&str> {
        self.license.as_deref()
    }

    /// The `version` section's value (`LINUX_VERSION_CODE`), if present.
    #[must_use]
    pub fn kernel_version(&self) -> Option<u32> {
        self.kernel_version
    }

    /// The object's `.BTF`, which the type ids of the specs refer to.
    #[must_use]
    pub fn btf(&self) -> Option<&Btf<'data>> {
        self.btf.as_ref()
    }

    /// Every map, in section and offset order.
    #[must_use]
    pub fn maps(&self) -> &[MapSpec] {
        &self.maps
    }

    /// The map named `name`.
    #[must_use]
    pub fn map(&self, name: &str) -> Option<&MapSpec> {
        self.maps.iter().find(|m| m.name == name)
    }

    /// Sets the capacity of map `name` before it is loaded (libbpf's
    /// `bpf_map__set_max_entries`): a caller that keeps a live map of another capacity
    /// loads the programs against that one. Returns `false` when there is no such map.
    pub fn set_max_entries(&mut self, name: &str, max_entries: u32) -> bool {
        match self.maps.iter_mut().find(|m| m.name == name) {
            Some(m) => {
                m.max_entries = max_entries;
                true
            }
            None => false,
        }
    }

    /// Every program, in section and offset order.
    #[must_use]
    pub fn programs(&self) -> &[ProgramSpec] {
        &self.programs
    }

    /// The program named `name`.
    #[must_use]
    pub fn program(&self, name: &str) -> Option<&ProgramSpec> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// Every program section with its programs and the type its name gives, in the
    /// order of [`Object::programs`]: what a caller looks at to choose the program
    /// types of sections whose names give none.
    #[must_use]
    pub fn program_sections(&self) -> Vec<ProgramSection<'_>> {
        let mut out: Vec<ProgramSection<'_>> = Vec::new();
        for p in &self.programs {
            if let Some(s) = out.iter_mut().find(|s| s.section == p.section) {
                s.programs.push(&p.name);
                continue;
            }
            out.push(ProgramSection {
                section: &p.section,
                prog_type: p.type_known().then_some(p.prog_type),
                attach_type: p.expected_attach_type,
                programs: vec![&p.name],
            });
        }
        out
    }
}

impl<'data> Parser<'data, '_> {
    fn is_exec(&self, index: usize) -> bool {
        self.sections
            .get(index)
            .is_some_and(|s| s.flags & SHF_EXECINSTR.0 != 0)
    }

    /// Symbols defined in `section` that name objects (not the section symbol itself).
    fn object_symbols(&self, section: usize) -> Vec<&SymInfo<'data>> {
        let mut v: Vec<_> = self
            .symbols
            .iter()
            .filter(|s| s.section == Some(section) && s.kind != STT_SECTION.0 && !s.name.is_empty())
            .collect();
        v.sort_by_key(|s| s.value);
        v
    }

    fn collect_maps(&self) -> Result<(Vec<MapSpec>, Vec<MapSite>), ObjectError> {
        let mut maps = Vec::new();
        let mut sites = Vec::new();
        for (index, sec) in self.sections.iter().enumerate() {
            if sec.name == ".maps" {
                self.btf_maps(index, sec, &mut maps, &mut sites)?;
            } else if sec.name == "maps" {
                self.legacy_maps(index, sec, &mut maps, &mut sites)?;
            } else if sec.name.starts_with(".struct_ops") {
                let sym = self
                    .object_symbols(index)
                    .first()
                    .map_or_else(|| sec.name.to_owned(), |s| s.name.to_owned());
                let ops = self
                    .var_type_name(sec.name, &sym)
                    .map_or_else(String::new, |t| format!(", struct {t}"));
                return Err(ObjectError::map(
                    sym,
                    format!(
                        "struct_ops maps (section {}{ops}) are not supported: this loader \
                         does not match ops structs against the kernel's BTF",
                        sec.name
                    ),
                ));
            } else if let Some(kind) = maps::data_kind(sec.name) {
                if sec.size == 0 || self.is_exec(index) {
                    continue;
                }
                let contents = if sec.sh_type == SHT_NOBITS.0 {
                    let len = usize::try_from(sec.size).map_err(|_| {
                        ObjectError::section(sec.name, "size does not fit in memory")
                    })?;
                    if len > 1 << 30 {
                        return Err(ObjectError::section(
                            sec.name,
                            format!("size {len} is absurd for a BPF global data section"),
                        ));
                    }
                    vec![0; len]
                } else {
                    sec.data.to_vec()
                };
                sites.push(MapSite {
                    section: index,
                    start: 0,
                    end: sec.size,
                    map: maps.len(),
                    values_offset: None,
                });
                maps.push(maps::global_data_map(sec.name, kind, contents, self.btf)?);
            }
        }
        Ok((maps, sites))
    }

    fn btf_maps(
        &self,
        index: usize,
        sec: &SecInfo<'data>,
        maps: &mut Vec<MapSpec>,
        sites: &mut Vec<MapSite>,
    ) -> Result<(), ObjectError> {
        let btf = self
            .btf
            .ok_or_else(|| ObjectError::section(".maps", "BTF-defined maps need a .BTF section"))?;
        let symbols = self.object_symbols(index);
        let Some(ds_id) = btf.id_by_name(".maps", Kind::Datasec) else {
            if let Some(s) = symbols.first() {
                return Err(ObjectError::symbol(
                    s.name,
                    "in .maps but .BTF has no DATASEC .maps describing it",
                ));
            }
            return Ok(());
        };
        let ds = btf
            .type_by_id(ds_id)
            .map_err(|source| ObjectError::Btf { source })?;
        let Detail::Datasec(ds) = ds.detail() else {
            return Err(ObjectError::section(
                ".maps",
                "BTF type named .maps is not a DATASEC",
            ));
        };
        let mut found = Vec::new();
        for v in ds.vars {
            let var = btf
                .type_by_id(v.ty)
                .map_err(|source| ObjectError::Btf { source })?;
            let name = var.name().map_err(|source| ObjectError::Btf { source })?;
            let Detail::Var(var_detail) = var.detail() else {
                return Err(ObjectError::section(
                    ".maps",
                    format!("DATASEC entry {name} is not a VAR"),
                ));
            };
            let sym = symbols.iter().find(|s| s.name == name).ok_or_else(|| {
                ObjectError::symbol(name, "map variable in BTF has no symbol in .maps")
            })?;
            let def = maps::parse_btf_map(btf, name, var_detail.ty, false)?;
            // A statically initialised `values` array makes the symbol longer than the
            // struct, whose flexible array member has size zero.
            let size = btf
                .size_of(var_detail.ty)
                .map_err(|source| ObjectError::MapBtf {
                    map: name.to_owned(),
                    field: "-".into(),
                    source,
                })?;
            let size = u64::from(size).max(sym.size);
            let end = sym
                .value
                .checked_add(size)
                .filter(|&e| e <= sec.size)
                .ok_or_else(|| {
                    ObjectError::symbol(
                        name,
                        format!(
                            "map at offset {:#x} size {size} lies outside .maps ({} bytes)",
                            sym.value, sec.size
                        ),
                    )
                })?;
            found.push((sym.value, end, def));
        }
        found.sort_by_key(|f| f.0);
        for (start, end, def) in found {
            sites.push(MapSite {
                section: index,
                start,
                end,
                map: maps.len(),
                values_offset: def.values_offset,
            });
            maps.push(def.spec);
        }
        Ok(())
    }

    fn legacy_maps(
        &self,
        index: usize,
        sec: &SecInfo<'data>,
        maps: &mut Vec<MapSpec>,
        sites: &mut Vec<MapSite>,
    ) -> Result<(), ObjectError> {
        let symbols = self.object_symbols(index);
        if symbols.is_empty() {
            return Ok(());
        }
        let count = u64::try_from(symbols.len()).unwrap_or(u64::MAX);
        let record = sec.size / count;
        if record == 0 || !sec.size.is_multiple_of(count) {
            return Err(ObjectError::section(
                "maps",
                format!("{} bytes do not divide into {count} map records", sec.size),
            ));
        }
        for sym in symbols {
            let end = sym.value.checked_add(record).filter(|&e| e <= sec.size && sym.value % record == 0).ok_or_else(|| {
                ObjectError::symbol(sym.name, format!("map at offset {:#x} (record size {record}) lies outside the maps section ({} bytes) or between records", sym.value, sec.size))
            })?;
            let (s, e) = (
                usize::try_from(sym.value).unwrap_or(usize::MAX),
                usize::try_from(end).unwrap_or(usize::MAX),
            );
            let bytes = sec.data.get(s..e).ok_or_else(|| {
                ObjectError::symbol(sym.name, "map record outside the section data")
            })?;
            sites.push(MapSite {
                section: index,
                start: sym.value,
                end,
                map: maps.len(),
                values_offset: None,
            });
            maps.push(maps::legacy_map(sym.name, bytes, self.order)?);
        }
        Ok(())
    }

    fn site_at(sites: &[MapSite], section: usize, offset: u64) -> Option<&MapSite> {
        sites
            .iter()
            .find(|s| s.section == section && s.start <= offset && offset < s.end.max(s.start + 1))
    }

    /// Applies `.rel.maps`: statically initialised slots of prog arrays and map-in-maps.
    fn static_init(&self, maps: &mut [MapSpec], sites: &[MapSite]) -> Result<(), ObjectError> {
        let Some(maps_sec) = self.sections.iter().position(|s| s.name == ".maps") else {
            return Ok(());
        };
        let Some(list) = self.relocs.get(&maps_sec) else {
            return Ok(());
        };
        for r in list {
            let err = |reason: String| ObjectError::Relocation {
                section: ".maps".into(),
                offset: r.offset,
                reason,
            };
            let site = Self::site_at(sites, maps_sec, r.offset)
                .ok_or_else(|| err("does not fall inside any map definition".into()))?;
            let values = site
                .values_offset
                .ok_or_else(|| err("map has no values member to initialise".into()))?;
            let rel = r.offset - site.start;
            let slot_off = rel
                .checked_sub(u64::from(values))
                .filter(|o| o % 8 == 0)
                .ok_or_else(|| err("not at a pointer slot of the values array".into()))?;
            let index =
                u32::try_from(slot_off / 8).map_err(|_| err("slot index overflows".into()))?;
            let sym = self.symbol(r.symbol, maps_sec, r.offset)?;
            let target_sec = sym.section.ok_or_else(|| self.extern_error(sym.name))?;
            let target = if target_sec == maps_sec {
                let t = Self::site_at(sites, maps_sec, sym.value)
                    .ok_or_else(|| err(format!("symbol {} is not a map", sym.name)))?;
                SlotTarget::Map(maps.get(t.map).map(|m| m.name.clone()).unwrap_or_default())
            } else if self.is_exec(target_sec) && sym.kind == STT_FUNC.0 {
                // Only entry programs have an fd to store; functions in .text are
                // subprograms, copied into the programs that call them.
                if self
                    .sections
                    .get(target_sec)
                    .is_some_and(|s| is_text(s.name))
                {
                    return Err(err(format!(
                        "slot {index} holds {}, a function in {}, which is a subprogram \
                         and not a program: put it in a program section with SEC(...)",
                        sym.name,
                        self.sec_name(target_sec)
                    )));
                }
                SlotTarget::Program(sym.name.to_owned())
            } else {
                return Err(err(format!(
                    "symbol {} is neither a map nor a program",
                    sym.name
                )));
            };
            let map = maps
                .get_mut(site.map)
                .ok_or_else(|| err("map index out of range".into()))?;
            if index >= map.max_entries {
                return Err(err(format!(
                    "slot {index} is beyond max_entries {} of map {}",
                    map.max_entries, map.name
                )));
            }
            map.initial_slots.push(MapSlot { index, target });
        }
        for m in maps.iter_mut() {
            m.initial_slots.sort_by_key(|s| s.index);
        }
        Ok(())
    }

    fn decode(&self, section: usize) -> Result<Vec<Insn>, ObjectError> {
        let sec = self
            .sections
            .get(section)
            .ok_or_else(|| ObjectError::section(format!("#{section}"), "no such section"))?;
        if sec.data.len() % INSN_SIZE != 0 {
            return Err(ObjectError::section(
                sec.name,
                format!("code size {} is not a multiple of 8", sec.data.len()),
            ));
        }
        Insn::decode_all(sec.data, self.order).ok_or_else(|| {
            ObjectError::section(sec.name, "code size is not a multiple of 8".to_owned())
        })
    }

    fn collect_programs(
        &self,
        options: &ObjectOptions,
        maps: &[MapSpec],
        sites: &[MapSite],
        ext: &BtfExt,
    ) -> Result<Vec<ProgramSpec>, ObjectError> {
        // Every function of every executable section, and each section's instructions.
        let mut funcs: Vec<Func<'data>> = Vec::new();
        let mut code: BTreeMap<usize, Vec<Insn>> = BTreeMap::new();
        for (index, sec) in self.sections.iter().enumerate() {
            if !self.is_exec(index) || sec.size == 0 {
                continue;
            }
            let insns = self.decode(index)?;
            let mut syms: Vec<_> = self
                .symbols
                .iter()
                .filter(|s| s.section == Some(index) && s.kind == STT_FUNC.0)
                .collect();
            syms.sort_by_key(|s| s.value);
            if syms.is_empty() && !is_text(sec.name) {
                return Err(ObjectError::section(
                    sec.name,
                    "code section without function symbols",
                ));
            }
            for s in syms {
                let start = s.value / INSN_SIZE as u64;
                let len = s.size / INSN_SIZE as u64;
                if s.value % INSN_SIZE as u64 != 0
                    || s.size % INSN_SIZE as u64 != 0
                    || len == 0
                    || start.saturating_add(len) > insns.len() as u64
                {
                    return Err(ObjectError::symbol(
                        s.name,
                        format!(
                            "function at offset {:#x} size {} lies outside section {} or is misaligned",
                            s.value, s.size, sec.name
                        ),
                    ));
                }
                funcs.push(Func {
                    name: s.name,
                    is_static: s.bind == STB_LOCAL.0,
                    section: index,
                    start: usize::try_from(start).unwrap_or(usize::MAX),
                    len: usize::try_from(len).unwrap_or(usize::MAX),
                });
            }
            code.insert(index, insns);
        }
        let reloc_maps: HashMap<usize, HashMap<u64, usize>> = self
            .relocs
            .iter()
            .map(|(sec, list)| (*sec, list.iter().map(|r| (r.offset, r.symbol)).collect()))
            .collect();

        let mut programs = Vec::new();
        for (fid, f) in funcs.iter().enumerate() {
            let elf_sec = self.sections.get(f.section).map_or("", |s| s.name);
            if is_text(elf_sec) {
                continue;
            }
            // Every function of a program section is an entry point, which libbpf only
            // accepts from global functions.
            if f.is_static {
                return Err(ObjectError::Program {
                    program: f.name.to_owned(),
                    section: elf_sec.to_owned(),
                    reason: "static function in a program section: entry points must be \
                             global (drop `static`), or move the function to .text (no \
                             SEC()) to call it as a subprogram"
                        .into(),
                });
            }
            // A leading `?` (libbpf's `SEC("?xdp")`) only says the program is not loaded
            // unless asked for; the rest of the name is classified as usual.
            let (sec, autoload) = match elf_sec.strip_prefix('?') {
                Some(rest) => (rest, false),
                None => (elf_sec, true),
            };
            // A section name libbpf does not know gives no type: the program parses
            // (its maps and references are all there is to compare), and only loading
            // it needs a type, given then.
            let kind = section::classify(sec);
            let (prog_type, attach_type) = match options.program_types.lookup(sec) {
                Some(given) => given,
                None => kind.map_or((ProgramType::Unspec, None), |k| {
                    (k.prog_type, k.attach_type)
                }),
            };
            let mut spec = self.link(fid, &funcs, &code, &reloc_maps, maps, sites, ext)?;
            spec.prog_type = prog_type;
            spec.expected_attach_type = attach_type;
            spec.attach_target = section::attach_target(sec).map(str::to_owned);
            spec.sleepable = kind.is_some_and(|k| k.sleepable);
            spec.xdp_frags = kind.is_some_and(|k| k.xdp_frags);
            spec.section = sec.to_owned();
            spec.autoload = autoload;
            programs.push(spec);
        }
        Ok(programs)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the parse state of one object, used in one place"
    )]
    fn link(
        &self,
        main: usize,
        funcs: &[Func<'data>],
        code: &BTreeMap<usize, Vec<Insn>>,
        relocs: &HashMap<usize, HashMap<u64, usize>>,
        maps: &[MapSpec],
        sites: &[MapSite],
        ext: &BtfExt,
    ) -> Result<ProgramSpec, ObjectError> {
        let f0 = funcs
            .get(main)
            .ok_or_else(|| ObjectError::section("?", "function index out of range"))?;
        let section_name = self.sections.get(f0.section).map_or("", |s| s.name);
        let prog_err = |reason: String| ObjectError::Program {
            program: f0.name.to_owned(),
            section: section_name.to_owned(),
            reason,
        };
        let mut image: Vec<Insn> = Vec::new();
        let mut placed: Vec<(usize, usize)> = Vec::new(); // (function id, base in image)
        let mut base_of: HashMap<usize, usize> = HashMap::new();
        let mut references = Vec::new();

        let place = |fid: usize,
                     image: &mut Vec<Insn>,
                     placed: &mut Vec<(usize, usize)>,
                     base_of: &mut HashMap<usize, usize>|
         -> Result<usize, ObjectError> {
            if let Some(&b) = base_of.get(&fid) {
                return Ok(b);
            }
            let f = funcs
                .get(fid)
                .ok_or_else(|| ObjectError::section("?", "function index out of range"))?;
            let insns = code
                .get(&f.section)
                .and_then(|c| c.get(f.start..f.start + f.len))
                .ok_or_else(|| ObjectError::symbol(f.name, "function outside its section"))?;
            let base = image.len();
            image.extend_from_slice(insns);
            placed.push((fid, base));
            base_of.insert(fid, base);
            Ok(base)
        };
        let find_func = |section: usize, insn: u64| -> Option<usize> {
            funcs
                .iter()
                .position(|f| f.section == section && f.start as u64 == insn)
        };

        // Functions are appended depth first, as libbpf does: a callee seen for the
        // first time is placed and walked before the rest of its caller, so that the
        // same object gets the same instructions (and program tag) under both loaders.
        // An explicit stack of (function, base, next instruction) bounds the depth by
        // the heap, not the thread's stack.
        let mut stack = vec![(main, place(main, &mut image, &mut placed, &mut base_of)?, 0)];
        while let Some(&(fid, base, j)) = stack.last() {
            let top = stack.len() - 1;
            let f = funcs
                .get(fid)
                .ok_or_else(|| prog_err("function index out of range".into()))?;
            if j >= f.len {
                stack.pop();
                continue;
            }
            let sec_relocs = relocs.get(&f.section);
            {
                let pc = base + j;
                let insn = *image
                    .get(pc)
                    .ok_or_else(|| prog_err("instruction index out of range".into()))?;
                let byte_off = ((f.start + j) * INSN_SIZE) as u64;
                let sym = sec_relocs.and_then(|m| m.get(&byte_off)).copied();
                let wide = insn.is_ld_imm64();
                if wide && j + 1 >= f.len {
                    return Err(prog_err(format!(
                        "ld_imm64 at instruction {pc} has no second half"
                    )));
                }
                // (callee function, instruction index within its section)
                let mut callee: Option<(usize, u64)> = None;
                // A callee placed by this instruction, walked next.
                let mut new_callee: Option<(usize, usize)> = None;
                if let Some(si) = sym {
                    let s = self.symbol(si, f.section, byte_off)?;
                    let rerr = |reason: String| ObjectError::Relocation {
                        section: section_name_of(self, f.section),
                        offset: byte_off,
                        reason,
                    };
                    let Some(target_sec) = s.section else {
                        if let Some(k) = self.kconfig.iter().find(|k| k.name == s.name) {
                            if !wide {
                                return Err(rerr(format!(
                                    "__kconfig extern {} used by an instruction with opcode \
                                     {:#04x}; only ld_imm64 may refer to it",
                                    s.name, insn.code
                                )));
                            }
                            set_imm(&mut image, pc, PSEUDO_MAP_VALUE, 0, Some(k.offset))
                                .ok_or_else(|| {
                                    prog_err(format!("ld_imm64 at instruction {pc} is truncated"))
                                })?;
                            references.push(Reference {
                                insn: pc,
                                target: RefTarget::MapValue {
                                    map: KCONFIG_SECTION.to_owned(),
                                    offset: k.offset,
                                },
                            });
                            if let Some(frame) = stack.get_mut(top) {
                                frame.2 = j + 2;
                            }
                            continue;
                        }
                        let target = self.ksym_ref(s, &insn, wide)?;
                        if !wide {
                            let slot = image
                                .get_mut(pc)
                                .ok_or_else(|| prog_err("instruction index out of range".into()))?;
                            *slot = Insn::new(slot.code, slot.dst(), PSEUDO_KFUNC_CALL, 0, 0);
                        }
                        references.push(Reference { insn: pc, target });
                        if let Some(frame) = stack.get_mut(top) {
                            frame.2 = j + if wide { 2 } else { 1 };
                        }
                        continue;
                    };
                    // clang emits a callback's address as a plain `ld_imm64` (src 0)
                    // relocated against code; only the loader marks it BPF_PSEUDO_FUNC.
                    let func_addr = wide && (insn.src() == PSEUDO_FUNC || self.is_exec(target_sec));
                    if wide && !func_addr {
                        let addend = u64::try_from(i64::from(insn.imm))
                            .map_err(|_| rerr("negative addend".into()))?;
                        let offset = s
                            .value
                            .checked_add(addend)
                            .ok_or_else(|| rerr("offset overflows".into()))?;
                        let site = Self::site_at(sites, target_sec, offset).ok_or_else(|| {
                            rerr(format!(
                                "symbol {} in section {} is not a map or global data",
                                self.sym_label(s),
                                section_name_of(self, target_sec)
                            ))
                        })?;
                        let map = maps
                            .get(site.map)
                            .map(|m| m.name.clone())
                            .unwrap_or_default();
                        let is_data = matches!(
                            maps.get(site.map).map(|m| &m.origin),
                            Some(maps::MapOrigin::GlobalData { .. })
                        );
                        if is_data {
                            let value_off = u32::try_from(offset - site.start)
                                .map_err(|_| rerr("offset overflows".into()))?;
                            set_imm(&mut image, pc, PSEUDO_MAP_VALUE, 0, Some(value_off))
                                .ok_or_else(|| {
                                    prog_err(format!("ld_imm64 at instruction {pc} is truncated"))
                                })?;
                            references.push(Reference {
                                insn: pc,
                                target: RefTarget::MapValue {
                                    map,
                                    offset: value_off,
                                },
                            });
                        } else {
                            if offset != site.start {
                                return Err(rerr(format!("refers into the middle of map {map}")));
                            }
                            set_imm(&mut image, pc, PSEUDO_MAP_FD, 0, Some(0)).ok_or_else(
                                || prog_err(format!("ld_imm64 at instruction {pc} is truncated")),
                            )?;
                            references.push(Reference {
                                insn: pc,
                                target: RefTarget::Map { map },
                            });
                        }
                    } else if func_addr || insn.is_pseudo_call() {
                        if !self.is_exec(target_sec) {
                            return Err(rerr(format!(
                                "call target {} is not code",
                                self.sym_label(s)
                            )));
                        }
                        let target = if wide {
                            // Function address: the addend is a byte offset.
                            let byte = s.value.wrapping_add_signed(i64::from(insn.imm));
                            if byte % INSN_SIZE as u64 != 0 {
                                return Err(rerr(format!(
                                    "address of {} + {} is not at an instruction boundary",
                                    self.sym_label(s),
                                    insn.imm
                                )));
                            }
                            byte / INSN_SIZE as u64
                        } else {
                            (s.value / INSN_SIZE as u64)
                                .wrapping_add_signed(i64::from(insn.imm) + 1)
                        };
                        callee = Some((target_sec, target));
                    } else {
                        return Err(rerr(format!(
                            "relocation against {} on instruction with opcode {:#04x} is not supported",
                            self.sym_label(s),
                            insn.code
                        )));
                    }
                } else if insn.is_pseudo_call() {
                    let target =
                        ((f.start + j) as u64).wrapping_add_signed(i64::from(insn.imm) + 1);
                    callee = Some((f.section, target));
                } else if wide && insn.src() == PSEUDO_FUNC {
                    // Only a relocation says which function an address load means.
                    return Err(prog_err(format!(
                        "function address load (BPF_PSEUDO_FUNC) at instruction {pc} has no relocation"
                    )));
                }
                if let Some((csec, cinsn)) = callee {
                    let cfid = find_func(csec, cinsn).ok_or_else(|| {
                        prog_err(format!("call at instruction {pc} targets instruction {cinsn} of {}, which is not the start of a function", section_name_of(self, csec)))
                    })?;
                    let first_seen = !base_of.contains_key(&cfid);
                    let cbase = place(cfid, &mut image, &mut placed, &mut base_of)?;
                    if first_seen {
                        new_callee = Some((cfid, cbase));
                    }
                    let rel = i64::try_from(cbase).unwrap_or(i64::MAX)
                        - i64::try_from(pc).unwrap_or(0)
                        - 1;
                    let rel = i32::try_from(rel)
                        .map_err(|_| prog_err("call distance overflows".into()))?;
                    let slot = image
                        .get_mut(pc)
                        .ok_or_else(|| prog_err("instruction index out of range".into()))?;
                    slot.imm = rel;
                    if wide {
                        *slot = Insn::new(slot.code, slot.dst(), PSEUDO_FUNC, slot.off, rel);
                    }
                    let name = funcs.get(cfid).map_or("", |c| c.name).to_owned();
                    let target = if wide {
                        RefTarget::FuncAddr { function: name }
                    } else {
                        RefTarget::Call { function: name }
                    };
                    references.push(Reference { insn: pc, target });
                }
                if let Some(frame) = stack.get_mut(top) {
                    frame.2 = j + if wide { 2 } else { 1 };
                }
                if let Some((cfid, cbase)) = new_callee {
                    stack.push((cfid, cbase, 0));
                }
            }
        }

        let mut spec = ProgramSpec::new(f0.name, section_name);
        for &(fid, base) in &placed {
            let Some(f) = funcs.get(fid) else { continue };
            spec.functions.push(FunctionSpan {
                name: f.name.to_owned(),
                start: base,
                len: f.len,
            });
            let empty = SectionExt::default();
            let sec_ext = ext
                .sections
                .get(self.sections.get(f.section).map_or("", |s| s.name))
                .unwrap_or(&empty);
            let range = f.start..f.start + f.len;
            let shift = |insn: u32| -> Option<u32> {
                let i = usize::try_from(insn).ok()?;
                range
                    .contains(&i)
                    .then(|| u32::try_from(i - f.start + base).ok())
                    .flatten()
            };
            for r in &sec_ext.func_info {
                if let Some(insn) = shift(r.insn) {
                    spec.func_info.push(crate::FuncInfo { insn, ..*r });
                }
            }
            for r in &sec_ext.line_info {
                if let Some(insn) = shift(r.insn) {
                    spec.line_info.push(crate::LineInfo { insn, ..*r });
                }
            }
            for r in &sec_ext.core_relos {
                if let Some(insn) = shift(r.insn) {
                    spec.core_relocations
                        .push(crate::CoreRelocation { insn, ..r.clone() });
                }
            }
        }
        references.sort_by_key(|r: &Reference| r.insn);
        spec.references = references;
        spec.insns = image;
        Ok(spec)
    }
}

/// Whether an executable section holds subprograms rather than programs: `.text`, and
/// the `.text.NAME` sections `-ffunction-sections` gives each function.
fn is_text(section: &str) -> bool {
    section == ".text" || section.starts_with(".text.")
}

fn section_name_of(p: &Parser<'_, '_>, index: usize) -> String {
    p.sec_name(index)
}

/// Marks an `ld_imm64` as a map load: `src_reg`, first immediate and second immediate.
/// `None` if the instruction pair is not inside `image` (the caller names the program).
fn set_imm(image: &mut [Insn], pc: usize, src: u8, imm: i32, second: Option<u32>) -> Option<()> {
    let first = image.get_mut(pc)?;
    *first = Insn::new(first.code, first.dst(), src, first.off, imm);
    if let Some(v) = second {
        let hi = image.get_mut(pc + 1)?;
        hi.imm = i32::from_ne_bytes(v.to_ne_bytes());
    }
    Some(())
}
