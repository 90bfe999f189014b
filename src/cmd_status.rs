//! `handover status --root DIR`: the installed set against its live pins (maps,
//! programs, attachments live or missing), its snapshot, and the journal of an
//! unfinished upgrade. Reads only, without the lock: it works while the daemon runs.

use std::fmt::Write as _;
use std::process::ExitCode;

use handover::btf::printable;
use handover::engine::{Direction, Hold, Inspector, LinkState, PinState, PinStatus, Status};

use crate::cli::StatusArgs;
use crate::set_args::{Failure, Place, engine_failure};

pub(crate) fn run(args: &StatusArgs) -> Result<ExitCode, String> {
    crate::set_args::finish("status", body(args))
}

fn body(args: &StatusArgs) -> Result<ExitCode, Failure> {
    let place = Place::of(&args.set)?;
    let mut inspector =
        Inspector::open(&place.root, &place.state).map_err(|e| engine_failure(&e))?;
    let status = inspector.status().map_err(|e| engine_failure(&e))?;
    let text = if args.set.json {
        let mut t = serde_json::to_string_pretty(&serde_json::json!({
            "root": place.root,
            "state_dir": place.state,
            "status": status,
        }))
        .unwrap_or_default();
        t.push('\n');
        t
    } else {
        render(&place, &status)
    };
    crate::output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn pin_state(s: PinState) -> String {
    match s {
        PinState::Live => "live".into(),
        PinState::Missing => "MISSING".into(),
        PinState::Other { id } => format!("HOLDS ANOTHER OBJECT (id {id})"),
    }
}

fn pins(t: &mut String, title: &str, list: &[PinStatus]) {
    let _ = writeln!(t, "{title}:");
    if list.is_empty() {
        let _ = writeln!(t, "  none");
    }
    for p in list {
        let _ = writeln!(
            t,
            "  {:<24} {:<32} id {:<6} {}",
            printable(&p.name),
            printable(&p.pin),
            p.id,
            pin_state(p.state)
        );
    }
}

fn render(place: &Place, s: &Status) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "pin root: {}", place.root.display());
    let _ = writeln!(
        t,
        "state:    {}{}",
        place.state.display(),
        if s.locked {
            " (locked: a daemon or an upgrade holds it)"
        } else {
            ""
        }
    );
    match &s.identity {
        None => {
            let _ = writeln!(t, "installed: nothing");
        }
        Some(id) => {
            let _ = writeln!(
                t,
                "installed: {} ({})",
                id.get(..12).unwrap_or(id),
                s.objects
                    .iter()
                    .map(|o| printable(o).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            pins(&mut t, "maps", &s.maps);
            pins(&mut t, "programs", &s.programs);
            let _ = writeln!(t, "attachments:");
            if s.links.is_empty() {
                let _ = writeln!(t, "  none");
            }
            for l in &s.links {
                let state = match l.state {
                    LinkState::Live => "live".to_owned(),
                    LinkState::Missing => "MISSING (a restart attaches it again)".to_owned(),
                    LinkState::Detached => "DETACHED (a restart attaches it again)".to_owned(),
                    LinkState::Unknown => {
                        "unknown (the kernel answers no query here before 5.19; a restart \
                         attaches it again)"
                            .to_owned()
                    }
                    LinkState::RunsOther { prog } => format!("RUNS ANOTHER PROGRAM (id {prog})"),
                };
                if l.hold == Hold::ProgAttach {
                    let _ = writeln!(
                        t,
                        "  {:<24} {} at {}, held without a link, prog id {}: {state}",
                        printable(&l.name),
                        printable(&l.program),
                        printable(&l.point.to_string()),
                        l.id
                    );
                    continue;
                }
                let _ = writeln!(
                    t,
                    "  {:<24} {} at {}, {} id {}: {state}",
                    printable(&l.name),
                    printable(&l.program),
                    printable(&l.point.to_string()),
                    printable(&l.pin),
                    l.id
                );
            }
            let _ = writeln!(
                t,
                "snapshot: {} map specs ({})",
                s.snapshot.len(),
                s.snapshot
                    .iter()
                    .map(|m| printable(m).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    match &s.journal {
        None => {
            let _ = writeln!(t, "journal: none (no upgrade unfinished)");
        }
        Some(j) => {
            let how = match j.recovery {
                Direction::Forward => "finishes it forward",
                Direction::Back => "rolls it back",
            };
            let done: Vec<&str> = j.done.iter().map(|s| s.name()).collect();
            let _ = writeln!(
                t,
                "journal: {} upgrade {} to {}: done [{}]{}; a recovery {how}{}",
                if j.interrupted {
                    "INTERRUPTED"
                } else {
                    "running"
                },
                j.tx,
                j.identity.get(..12).unwrap_or(&j.identity),
                done.join(", "),
                j.running
                    .map(|s| format!(", stopped in {s}"))
                    .unwrap_or_default(),
                if j.interrupted {
                    " (run `handover recover`)"
                } else {
                    ""
                }
            );
        }
    }
    if !s.other_pins.is_empty() {
        let _ = writeln!(t, "other pins under the root (not of the installed set):");
        for p in &s.other_pins {
            let _ = writeln!(t, "  {}", printable(p));
        }
    }
    t
}
