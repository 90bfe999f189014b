//! `handover snapshot OBJ... -o FILE`: writes the map specs of one or more BPF objects
//! to a snapshot file, atomically. Exit status: 0 written, 1 failure, 2 usage.

use std::path::Path;
use std::process::ExitCode;

use handover::{Snapshot, is_elf, object_model, write_snapshot};

const USAGE: &str = "usage: handover snapshot OBJ... -o FILE";

/// Runs the subcommand with the arguments after `snapshot`.
pub fn run(args: &[&str]) -> ExitCode {
    if matches!(args, ["-h" | "--help"]) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut out = None;
    let mut objects = Vec::new();
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "-o" | "--output" if out.is_none() => match it.next() {
                Some(f) => out = Some(*f),
                None => return usage("-o needs a file name"),
            },
            _ if a.starts_with('-') => return usage(&format!("unknown option `{a}`")),
            _ => objects.push(a),
        }
    }
    let Some(out) = out else {
        return usage("missing -o FILE");
    };
    if objects.is_empty() {
        return usage("no object given");
    }
    let mut models = Vec::new();
    for o in objects {
        let data = match std::fs::read(o) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("handover snapshot: cannot read {o}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !is_elf(&data) {
            eprintln!("handover snapshot: {o} is not an ELF object");
            return ExitCode::FAILURE;
        }
        let name = Path::new(o)
            .file_name()
            .map_or_else(|| o.to_owned(), |n| n.to_string_lossy().into_owned());
        match object_model(&name, &data) {
            Ok(m) => models.push(m),
            Err(e) => {
                eprintln!("handover snapshot: {}", crate::error_chain(&e));
                return ExitCode::FAILURE;
            }
        }
    }
    match write_snapshot(Path::new(out), &Snapshot::new(models)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handover snapshot: {}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("handover snapshot: {why}\n{USAGE}");
    ExitCode::from(2)
}
