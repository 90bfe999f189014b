//! Malformed objects: each defect gives a typed error that says what and where, never a
//! panic. Inputs are real fixtures with one field changed, located with the `object`
//! crate so the table does not depend on a particular layout.

#![expect(
    clippy::indexing_slicing,
    reason = "tests index into values they just checked; a panic is a failure"
)]

mod common;

use handover_loader::{Object, ObjectError};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

const EHDR_SHOFF: usize = 0x28;
const EHDR_SHNUM: usize = 0x3c;
const SHDR_SIZE: usize = 64;
const SHDR_SH_SIZE: usize = 0x20;
const SYM_SIZE: usize = 24;
const SYM_VALUE: usize = 8;
const SYM_SIZE_FIELD: usize = 16;

fn fixture(name: &str) -> Vec<u8> {
    common::read(&common::fixture(name))
}

fn put_u64(data: &mut [u8], at: usize, v: u64) {
    data[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn shoff(data: &[u8]) -> usize {
    usize::try_from(u64::from_le_bytes(
        data[EHDR_SHOFF..EHDR_SHOFF + 8].try_into().unwrap(),
    ))
    .unwrap()
}

/// File offset of the section header of `name`.
fn section_header(data: &[u8], name: &str) -> usize {
    let file = object::File::parse(data).unwrap();
    let index = file
        .section_by_name(name)
        .unwrap_or_else(|| panic!("no section {name}"))
        .index()
        .0;
    shoff(data) + index * SHDR_SIZE
}

/// File offset of the symbol table entry of `name`.
fn symbol_entry(data: &[u8], name: &str) -> usize {
    let file = object::File::parse(data).unwrap();
    let sym = file
        .symbol_by_name(name)
        .unwrap_or_else(|| panic!("no symbol {name}"));
    let (symtab, _) = common::section_range(data, ".symtab");
    symtab + sym.index().0 * SYM_SIZE
}

fn parse_err(data: &[u8]) -> ObjectError {
    match Object::parse(data) {
        Ok(_) => panic!("malformed object parsed"),
        Err(e) => e,
    }
}

type Case = (
    &'static str,
    fn() -> Vec<u8>,
    fn(&ObjectError) -> bool,
    &'static [&'static str],
);

/// (defect, input, expected variant, words the message must contain)
const CASES: &[Case] = &[
    (
        "empty input",
        Vec::new,
        |e| matches!(e, ObjectError::Elf { .. }),
        &["file header"],
    ),
    (
        "not ELF",
        || b"this is not an ELF file at all, just text........................".to_vec(),
        |e| matches!(e, ObjectError::Elf { .. }),
        &["file header"],
    ),
    (
        "ELF32 class",
        || {
            let mut d = fixture("maps_btf");
            d[4] = 1;
            d
        },
        |e| matches!(e, ObjectError::Elf { .. }),
        &["malformed ELF"],
    ),
    (
        "wrong machine (x86-64)",
        || {
            let mut d = fixture("maps_btf");
            d[18..20].copy_from_slice(&62_u16.to_le_bytes());
            d
        },
        |e| matches!(e, ObjectError::WrongMachine { machine: 62 }),
        &["62", "EM_BPF"],
    ),
    (
        "truncated section headers",
        || {
            let mut d = fixture("maps_btf");
            let at = shoff(&d) + 10;
            d.truncate(at);
            d
        },
        |e| {
            matches!(
                e,
                ObjectError::Elf {
                    what: "section headers",
                    ..
                }
            )
        },
        &["section headers"],
    ),
    (
        "absurd section count",
        || {
            let mut d = fixture("maps_btf");
            d[EHDR_SHNUM..EHDR_SHNUM + 2].copy_from_slice(&0xfff0_u16.to_le_bytes());
            d
        },
        |e| matches!(e, ObjectError::Elf { .. }),
        &["malformed ELF"],
    ),
    (
        "absurd section size",
        || {
            let mut d = fixture("maps_btf");
            let at = section_header(&d, ".maps") + SHDR_SH_SIZE;
            put_u64(&mut d, at, u64::MAX);
            d
        },
        |e| matches!(e, ObjectError::Section { section, .. } if section == ".maps"),
        &[".maps", "outside the file"],
    ),
    (
        "absurd symbol table size",
        || {
            let mut d = fixture("maps_btf");
            let at = section_header(&d, ".symtab") + SHDR_SH_SIZE;
            put_u64(&mut d, at, u64::MAX - 7);
            d
        },
        |e| matches!(e, ObjectError::Section { section, .. } if section == ".symtab"),
        &[".symtab", "outside the file"],
    ),
    (
        "absurd relocation count",
        || {
            let mut d = fixture("maps_btf");
            let at = section_header(&d, ".relxdp") + SHDR_SH_SIZE;
            put_u64(&mut d, at, 16 << 40);
            d
        },
        |e| matches!(e, ObjectError::Section { section, .. } if section == ".relxdp"),
        &[".relxdp"],
    ),
    (
        "relocation against a missing symbol",
        || {
            let mut d = fixture("maps_btf");
            let (rel, _) = common::section_range(&d, ".relxdp");
            // r_info of the first Elf64_Rel: symbol index in the upper 32 bits.
            let info_at = rel + 8;
            let ty = u64::from_le_bytes(d[info_at..info_at + 8].try_into().unwrap()) & 0xffff_ffff;
            put_u64(&mut d, info_at, (0x00ff_ffff_u64 << 32) | ty);
            d
        },
        |e| matches!(e, ObjectError::Relocation { section, .. } if section == "xdp"),
        &["xdp", "symbol #16777215"],
    ),
    (
        "relocation between instructions",
        || {
            let mut d = fixture("maps_btf");
            let (rel, _) = common::section_range(&d, ".relxdp");
            put_u64(&mut d, rel, 43); // r_offset of the first Elf64_Rel
            d
        },
        |e| matches!(e, ObjectError::Relocation { section, offset: 43, .. } if section == "xdp"),
        &["xdp", "0x2b", "not at an instruction"],
    ),
    (
        "map symbol outside its section",
        || {
            let mut d = fixture("maps_btf");
            let at = symbol_entry(&d, "flows") + SYM_VALUE;
            put_u64(&mut d, at, 0x10_0000);
            d
        },
        |e| matches!(e, ObjectError::Symbol { symbol, .. } if symbol == "flows"),
        &["flows", "outside .maps"],
    ),
    (
        "legacy map symbol outside the maps section",
        || {
            let mut d = fixture("legacy_maps");
            let at = symbol_entry(&d, "legacy_array") + SYM_VALUE;
            put_u64(&mut d, at, 28 * 5);
            d
        },
        |e| matches!(e, ObjectError::Symbol { symbol, .. } if symbol == "legacy_array"),
        &["legacy_array", "outside the maps section"],
    ),
    (
        "legacy maps section not a whole number of records",
        || {
            let mut d = fixture("legacy_maps");
            let at = section_header(&d, "maps") + SHDR_SH_SIZE;
            put_u64(&mut d, at, 55);
            d
        },
        |e| matches!(e, ObjectError::Section { section, .. } if section == "maps"),
        &["55 bytes", "2 map records"],
    ),
    (
        "function larger than its section",
        || {
            let mut d = fixture("sockops");
            let at = symbol_entry(&d, "connect4") + SYM_SIZE_FIELD;
            put_u64(&mut d, at, 1 << 40);
            d
        },
        |e| matches!(e, ObjectError::Symbol { symbol, .. } if symbol == "connect4"),
        &["connect4", "outside section cgroup/connect4"],
    ),
    (
        "absurd BTF.ext record count",
        || {
            let mut d = fixture("sockops");
            let (ext, _) = common::section_range(&d, ".BTF.ext");
            let hdr_len = u32::from_le_bytes(d[ext + 4..ext + 8].try_into().unwrap()) as usize;
            let func_off = u32::from_le_bytes(d[ext + 8..ext + 12].try_into().unwrap()) as usize;
            // rec_size (4 bytes), then the first section's sec_name_off and num_info.
            let num_info = ext + hdr_len + func_off + 4 + 4;
            d[num_info..num_info + 4].copy_from_slice(&0x7fff_ffff_u32.to_le_bytes());
            d
        },
        |e| matches!(e, ObjectError::BtfExt { .. }),
        &[".BTF.ext", "records extend past"],
    ),
    (
        "BTF.ext with a bad magic",
        || {
            let mut d = fixture("sockops");
            let (ext, _) = common::section_range(&d, ".BTF.ext");
            d[ext] = 0;
            d
        },
        |e| matches!(e, ObjectError::BtfExt { offset: 0, .. }),
        &["bad magic"],
    ),
];

#[test]
fn malformed_inputs_give_clear_errors() {
    for (what, input, expected, words) in CASES {
        let data = input();
        let err = parse_err(&data);
        assert!(expected(&err), "{what}: unexpected error {err:?}");
        let msg = err.to_string();
        for w in *words {
            assert!(msg.contains(w), "{what}: message {msg:?} lacks {w:?}");
        }
    }
}

/// Checks that parsing `data` returns without panicking; its result does not matter.
fn survives(data: &[u8]) {
    let _ = Object::parse(data).map(|o| o.programs().len());
}

#[test]
fn every_single_byte_change_and_truncation_is_survived() {
    // subprogs (callbacks, tail call slots) and linked (bpftool gen object output) from
    // programs/subprogs.c and programs/link/linked_{a,b}.c.
    for name in [
        "sockops",
        "global_data",
        "legacy_maps",
        "subprogs",
        "linked",
    ] {
        let original = fixture(name);
        let mut data = original.clone();
        for i in 0..data.len() {
            for v in [0xff, data[i] ^ 0x80] {
                let old = data[i];
                data[i] = v;
                survives(&data);
                data[i] = old;
            }
        }
        for len in (0..original.len()).step_by(3) {
            survives(&original[..len]);
        }
    }
}

#[test]
fn static_function_in_a_program_section_is_refused_like_libbpf() {
    // programs/sections.c with xdp_multi_buffer's binding turned from GLOBAL to LOCAL, as
    // `static` would have made it: it was taken as an entry program, which libbpf refuses.
    const ST_INFO: usize = 4;
    let mut data = fixture("sections");
    let at = symbol_entry(&data, "xdp_multi_buffer") + ST_INFO;
    assert_eq!(data[at], 0x12, "GLOBAL FUNC");
    data[at] = 0x02;
    match parse_err(&data) {
        ObjectError::Program {
            program,
            section,
            reason,
        } => {
            assert_eq!(
                (program.as_str(), section.as_str()),
                ("xdp_multi_buffer", "xdp.frags")
            );
            assert!(
                reason.contains("static function in a program section"),
                "{reason}"
            );
        }
        other => panic!("expected a static entry point error, got {other}"),
    }
}

#[test]
fn prog_array_slot_holding_a_text_subprogram_is_refused() {
    // programs/subprogs.c with jump_table_init's slot 1 pointed at count_packet, a global
    // function in .text, instead of the program xdp_second: it was reported as a slot
    // holding "program count_packet", a program that does not exist.
    const REL_SIZE: usize = 16;
    const R_INFO: usize = 8;
    let mut data = fixture("subprogs");
    let file = object::File::parse(&*data).unwrap();
    let index = |name: &str| u64::try_from(file.symbol_by_name(name).unwrap().index().0).unwrap();
    let (from, to) = (index("xdp_second"), index("count_packet"));
    drop(file);
    let (rel, len) = common::section_range(&data, ".rel.maps");
    let mut patched = 0;
    for at in (rel..rel + len).step_by(REL_SIZE) {
        let info = u64::from_le_bytes(data[at + R_INFO..at + R_INFO + 8].try_into().unwrap());
        if info >> 32 == from {
            put_u64(&mut data, at + R_INFO, (to << 32) | (info & 0xffff_ffff));
            patched += 1;
        }
    }
    assert_eq!(patched, 1);
    match parse_err(&data) {
        ObjectError::Relocation {
            section, reason, ..
        } => {
            assert_eq!(section, ".maps");
            assert!(
                reason.contains("count_packet") && reason.contains("not a program"),
                "{reason}"
            );
        }
        other => panic!("expected a .maps relocation error, got {other}"),
    }
}

#[test]
fn callback_address_between_instructions_is_refused() {
    // programs/subprogs.c: the ld_imm64 loading loop_step's address (relocated against
    // the .text section symbol, byte offset in imm) moved by 4 bytes, into the middle of
    // an instruction: it was rounded down to the instruction holding it.
    use object::{ObjectSection as _, RelocationTarget, SymbolKind};
    let mut data = fixture("subprogs");
    let file = object::File::parse(&*data).unwrap();
    let xdp = file.section_by_name("xdp").unwrap();
    let (code_at, _) = common::section_range(&data, "xdp");
    let mut sites = Vec::new();
    for (offset, rel) in xdp.relocations() {
        let RelocationTarget::Symbol(si) = rel.target() else {
            continue;
        };
        let sym = file.symbol_by_index(si).unwrap();
        let at = code_at + usize::try_from(offset).unwrap();
        if sym.kind() == SymbolKind::Section && data[at] == 0x18 {
            sites.push(at);
        }
    }
    drop(file);
    assert_eq!(sites.len(), 2, "loop_step and sum_entry addresses");
    let imm = sites[0] + 4;
    let v = u32::from_le_bytes(data[imm..imm + 4].try_into().unwrap()) + 4;
    data[imm..imm + 4].copy_from_slice(&v.to_le_bytes());
    match parse_err(&data) {
        ObjectError::Relocation {
            section, reason, ..
        } => {
            assert_eq!(section, "xdp");
            assert!(
                reason.contains("not at an instruction boundary"),
                "{reason}"
            );
        }
        other => panic!("expected a relocation error, got {other}"),
    }
}

#[test]
fn function_address_load_without_relocation_is_refused() {
    // programs/subprogs.c: the ld_imm64 of loop_step's address marked BPF_PSEUDO_FUNC and
    // its relocation moved to the next instruction. Its immediate, a section offset,
    // was left in place as if it were already resolved.
    use object::{ObjectSection as _, RelocationTarget, SymbolKind};
    const REL_SIZE: usize = 16;
    let mut data = fixture("subprogs");
    let file = object::File::parse(&*data).unwrap();
    let xdp = file.section_by_name("xdp").unwrap();
    let (code_at, _) = common::section_range(&data, "xdp");
    let offset = xdp
        .relocations()
        .find_map(|(offset, rel)| {
            let RelocationTarget::Symbol(si) = rel.target() else {
                return None;
            };
            let at = code_at + usize::try_from(offset).unwrap();
            (file.symbol_by_index(si).unwrap().kind() == SymbolKind::Section && data[at] == 0x18)
                .then_some(offset)
        })
        .unwrap();
    drop(file);
    let at = code_at + usize::try_from(offset).unwrap();
    data[at + 1] = (4 << 4) | (data[at + 1] & 0x0f); // src_reg = BPF_PSEUDO_FUNC
    let (rel, len) = common::section_range(&data, ".relxdp");
    let entry = (rel..rel + len)
        .step_by(REL_SIZE)
        .find(|&e| u64::from_le_bytes(data[e..e + 8].try_into().unwrap()) == offset)
        .unwrap();
    put_u64(&mut data, entry, offset + 16);
    match parse_err(&data) {
        ObjectError::Program {
            section, reason, ..
        } => {
            assert_eq!(section, "xdp");
            assert!(reason.contains("has no relocation"), "{reason}");
        }
        other => panic!("expected a program error, got {other}"),
    }
}
