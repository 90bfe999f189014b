//! The human text of `handover inspect OBJ`.

use std::fmt::Write as _;

use handover::btf::printable as p;
use handover::inspect::{MapReport, Report, TypeReport};

fn type_suffix(t: Option<&TypeReport>) -> String {
    t.map(|t| format!(" ({})", p(&t.name))).unwrap_or_default()
}

fn write_map(out: &mut String, m: &MapReport, indent: &str) {
    let _ = writeln!(out, "{indent}{}: {} [{}]", p(&m.name), m.map_type, m.origin);
    let _ = writeln!(
        out,
        "{indent}  key {} bytes{}",
        m.key_size,
        type_suffix(m.key_type.as_ref())
    );
    let _ = writeln!(
        out,
        "{indent}  value {} bytes{}",
        m.value_size,
        type_suffix(m.value_type.as_ref())
    );
    let _ = write!(
        out,
        "{indent}  max_entries {}, flags {:#x}, pinning {}",
        m.max_entries, m.flags, m.pinning
    );
    if m.map_extra != 0 {
        let _ = write!(out, ", map_extra {:#x}", m.map_extra);
    }
    if let Some(n) = m.numa_node {
        let _ = write!(out, ", numa_node {n}");
    }
    if m.frozen {
        out.push_str(", frozen");
    }
    out.push('\n');
    if let Some(len) = m.initial_data_len {
        let _ = writeln!(out, "{indent}  initial data {len} bytes");
    }
    for s in &m.initial_slots {
        let _ = writeln!(
            out,
            "{indent}  slot {} = {} {}",
            s.index,
            s.kind,
            p(&s.target)
        );
    }
    if let Some(inner) = &m.inner {
        let _ = writeln!(out, "{indent}  inner map:");
        write_map(out, inner, &format!("{indent}    "));
    }
}

/// Renders the report for a person; `name` heads it.
#[must_use]
pub fn render(name: &str, r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "object {}: {}-endian, license {}, kernel version {}",
        p(name),
        r.endian,
        p(r.license.as_deref().unwrap_or("none")),
        r.kernel_version
            .map_or_else(|| "none".to_owned(), |v| format!("{v:#x}"))
    );
    let _ = writeln!(out, "maps ({}):", r.maps.len());
    for m in &r.maps {
        write_map(&mut out, m, "  ");
    }
    let _ = writeln!(out, "programs ({}):", r.programs.len());
    for prog in &r.programs {
        let _ = writeln!(
            out,
            "  {}: section {}, type {}, attach {}",
            p(&prog.name),
            p(&prog.section),
            prog.prog_type,
            prog.attach_type.unwrap_or("none")
        );
        if let Some(t) = &prog.attach_target {
            let _ = writeln!(out, "    attach target {}", p(t));
        }
        let flags: Vec<&str> = [
            (prog.sleepable, "sleepable"),
            (prog.xdp_frags, "xdp frags"),
            (!prog.autoload, "not loaded by default"),
        ]
        .into_iter()
        .filter_map(|(on, what)| on.then_some(what))
        .collect();
        if !flags.is_empty() {
            let _ = writeln!(out, "    {}", flags.join(", "));
        }
        let funcs: Vec<String> = prog
            .functions
            .iter()
            .map(|f| format!("{}@{}+{}", p(&f.name), f.start, f.len))
            .collect();
        let _ = writeln!(out, "    {} insns: {}", prog.insn_count, funcs.join(", "));
        let _ = writeln!(
            out,
            "    btf.ext: {} func_info, {} line_info",
            prog.func_info, prog.line_info
        );
        for rel in &prog.relocations {
            let off = rel.offset.map(|o| format!(" + {o}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "    insn {}: {} {}{off}",
                rel.insn,
                rel.kind,
                p(&rel.target)
            );
        }
        if !prog.core_relocations.is_empty() {
            let _ = writeln!(
                out,
                "    needs CO-RE ({} relocations, applied against the kernel's BTF at load):",
                prog.core_relocations.len()
            );
            for c in &prog.core_relocations {
                let _ = writeln!(
                    out,
                    "      insn {}: {} {} access {}",
                    c.insn,
                    c.kind,
                    p(&c.type_name),
                    p(&c.access)
                );
            }
        }
    }
    if !r.kconfig_externs.is_empty() {
        let _ = writeln!(out, "kconfig externs ({}):", r.kconfig_externs.len());
        for k in &r.kconfig_externs {
            let weak = if k.weak { ", weak" } else { "" };
            let _ = writeln!(
                out,
                "  {}: {}, {} bytes at .kconfig + {}{weak}",
                k.name, k.kind, k.size, k.offset
            );
        }
    }
    out
}
