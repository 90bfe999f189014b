//! `handover inspect OBJ [--json] [--program-type SECTION=TYPE[:ATTACH]]...`: every map and
//! program of a BPF object.

use std::process::ExitCode;

use crate::inspect_render::render;
use handover::inspect::report;
use handover_loader::{ObjectFile, ObjectOptions, ProgramTypes};

const USAGE: &str = "usage: handover inspect OBJ [--json] [--program-type SECTION=TYPE[:ATTACH]]...
  prints every map (all spec fields, key/value types) and program (section, type,
  attach type, instructions, relocations) of a BPF object; --json for machines.
  --program-type gives the program type (and expected attach type) of the programs in a
  section whose name libbpf does not know (shown as type unknown without it), spelled as
  the kernel's enum in lower case without prefix: --program-type my_hook=sock_ops:cgroup_sock_ops;
  a SECTION ending in * is a prefix (cgroup/connect4/*=...), * alone every program";

/// Runs the subcommand with the arguments after `inspect`.
pub fn run(args: &[&str]) -> ExitCode {
    if matches!(args, ["-h" | "--help"]) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut path = None;
    let mut json = false;
    let mut types = ProgramTypes::new();
    let mut rest = args.iter();
    while let Some(&arg) = rest.next() {
        match arg {
            "--json" => json = true,
            "--program-type" => {
                let Some(Ok(more)) = rest.next().map(|v| types.clone().rule(v)) else {
                    return crate::usage(USAGE);
                };
                types = more;
            }
            _ if !arg.starts_with('-') && path.is_none() => path = Some(arg),
            _ => return crate::usage(USAGE),
        }
    }
    let Some(path) = path else {
        return crate::usage(USAGE);
    };
    let options = ObjectOptions::new().program_types(types);
    crate::finish("inspect", inspect(path, json, &options))
}

fn inspect(path: &str, json: bool, options: &ObjectOptions) -> Result<(), String> {
    let file = ObjectFile::open(path).map_err(|e| crate::error_chain(&e))?;
    let obj = file
        .parse_with(options)
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
