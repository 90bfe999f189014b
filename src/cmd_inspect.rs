//! `handover inspect OBJ [--json]`: every map and program of a BPF object.

use std::process::ExitCode;

use handover::inspect::{render, report};
use handover_loader::ObjectFile;

const USAGE: &str = "usage: handover inspect OBJ [--json]
  prints every map (all spec fields, key/value types) and program (section, type,
  attach type, instructions, relocations) of a BPF object; --json for machines";

/// Runs the subcommand with the arguments after `inspect`.
pub fn run(args: &[&str]) -> ExitCode {
    let (path, json) = match args {
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [path] if !path.starts_with('-') => (*path, false),
        [path, "--json"] | ["--json", path] if !path.starts_with('-') => (*path, true),
        _ => return crate::usage(USAGE),
    };
    crate::finish("inspect", inspect(path, json))
}

fn inspect(path: &str, json: bool) -> Result<(), String> {
    let file = ObjectFile::open(path).map_err(|e| crate::error_chain(&e))?;
    let obj = file
        .parse()
        .map_err(|e| format!("{path}: {}", crate::error_chain(&e)))?;
    let r = report(&obj);
    if json {
        let text =
            serde_json::to_string_pretty(&r).map_err(|e| format!("cannot encode JSON: {e}"))?;
        println!("{text}");
    } else {
        print!("{}", render(path, &r));
    }
    Ok(())
}
