//! `handover diff OLD NEW [--policy strict|migrate] [--json]`.
//!
//! OLD and NEW are each a BPF object or a snapshot file (told apart by the ELF magic).
//! Exit status: 0 every entry is carried, 3 entries would be lost (a `recreate` of a
//! map holding state, or a `shrink` that may not fit), 1 failure, 2 usage.

use std::path::Path;
use std::process::ExitCode;

use crate::error_chain;
use crate::report::{render_json, render_text};
use handover::{Policy, diff_objects, kernel_env, load_side};

/// Exit status when the upgrade would lose map entries.
pub const EXIT_LOSES_ENTRIES: u8 = 3;

const USAGE: &str = "usage: handover diff OLD NEW [--policy strict|migrate] [--json]
  OLD, NEW: a BPF object (.o) or a snapshot written by `handover snapshot`
  exit status: 0 every entry carried, 3 entries would be lost, 1 failure, 2 usage";

struct Args<'a> {
    old: &'a str,
    new: &'a str,
    policy: Policy,
    json: bool,
}

fn parse<'a>(args: &[&'a str]) -> Result<Args<'a>, String> {
    let mut files = Vec::new();
    let mut policy = Policy::default();
    let mut json = false;
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--json" => json = true,
            "--policy" => {
                let v = it
                    .next()
                    .ok_or("--policy needs a value: strict or migrate")?;
                policy = v.parse()?;
            }
            _ if a.starts_with("--policy=") => {
                policy = a.trim_start_matches("--policy=").parse()?;
            }
            _ if a.starts_with('-') && a.len() > 1 => return Err(format!("unknown option `{a}`")),
            _ => files.push(a),
        }
    }
    match files.as_slice() {
        [old, new] => Ok(Args {
            old,
            new,
            policy,
            json,
        }),
        _ => Err(format!("expected OLD and NEW, got {} file(s)", files.len())),
    }
}

/// Runs the subcommand with the arguments after `diff`.
pub fn run(args: &[&str]) -> ExitCode {
    if matches!(args, ["-h" | "--help"]) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("handover diff: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let load = |p: &str| {
        load_side(Path::new(p)).map_err(|e| format!("handover diff: {}", error_chain(&e)))
    };
    let (old, new) = match (load(args.old), load(args.new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let report = diff_objects(&old, &new, args.policy, &kernel_env());
    if args.json {
        println!("{}", render_json(&report));
    } else {
        print!("{}", render_text(&report));
    }
    if report.loses_entries() {
        ExitCode::from(EXIT_LOSES_ENTRIES)
    } else {
        ExitCode::SUCCESS
    }
}
