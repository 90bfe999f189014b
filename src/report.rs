//! `handover diff` output: human-readable text and JSON of a [`DiffReport`].

use std::fmt::Write as _;

use handover::{DiffReport, FieldLoc, FieldMapping, Side, Verdict};

fn loc(l: Option<&FieldLoc>) -> String {
    l.map_or_else(String::new, |l| {
        format!("{} @{}:{}", l.ty, l.bit_offset, l.bits)
    })
}

fn field_line(f: &FieldMapping) -> String {
    let side = match f.side {
        Side::Key => "key",
        Side::Value => "value",
    };
    let path = if f.path.is_empty() {
        "(whole)"
    } else {
        &f.path
    };
    let mut s = format!(
        "    {side:<5} {path:<24} {:<9} {:<28} -> {}",
        f.action.as_str(),
        loc(f.old.as_ref()),
        loc(f.new.as_ref())
    );
    if let Some(n) = &f.note {
        let _ = write!(s, "  ({n})");
    }
    s.trim_end().to_owned()
}

/// Renders the report for a terminal: one block per map, then a summary line.
/// Field places read `type @bit_offset:bits`.
#[must_use]
pub fn render_text(report: &DiffReport) -> String {
    let mut out = String::new();
    let policy = match report.policy {
        handover::Policy::Strict => "strict",
        handover::Policy::Migrate => "migrate",
    };
    let _ = writeln!(out, "policy: {policy}");
    for m in &report.maps {
        let loss = if m.loses_entries {
            "  [entries lost]"
        } else {
            ""
        };
        let _ = writeln!(out, "map {}: {}{loss}", m.name, m.verdict.as_str());
        for c in &m.changes {
            let tag = if c.cosmetic { " (same layout)" } else { "" };
            let _ = writeln!(out, "  {}: {} -> {}{tag}", c.attribute, c.old, c.new);
        }
        if !m.fields.is_empty() {
            let _ = writeln!(out, "  fields:");
            for f in &m.fields {
                let _ = writeln!(out, "{}", field_line(f));
            }
        }
        for n in &m.notes {
            let _ = writeln!(out, "  note: {n}");
        }
    }
    let mut counts: Vec<(Verdict, usize)> = Vec::new();
    for m in &report.maps {
        match counts.iter_mut().find(|(v, _)| *v == m.verdict) {
            Some((_, n)) => *n += 1,
            None => counts.push((m.verdict, 1)),
        }
    }
    let summary: Vec<String> = counts
        .iter()
        .map(|(v, n)| format!("{n} {}", v.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "summary: {}; {}",
        if summary.is_empty() {
            "no maps".to_owned()
        } else {
            summary.join(", ")
        },
        if report.loses_entries() {
            "entries would be lost"
        } else {
            "every entry is carried"
        }
    );
    out
}

/// Renders the report as JSON: `{"policy", "maps": [{"name", "verdict",
/// "loses_entries", "changes", "fields", "notes"}]}`.
#[must_use]
pub fn render_json(report: &DiffReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
