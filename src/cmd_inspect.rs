//! `handover inspect OBJ [--json] [--program-type SECTION=TYPE[:ATTACH]]...`: every map and
//! program of a BPF object.

use std::process::ExitCode;

use crate::inspect_render::render;
use handover::inspect::report;
use handover_loader::{ObjectError, ObjectFile, ObjectOptions};
use handover_uapi::{AttachType, ProgramType};

const USAGE: &str = "usage: handover inspect OBJ [--json] [--program-type SECTION=TYPE[:ATTACH]]...
  prints every map (all spec fields, key/value types) and program (section, type,
  attach type, instructions, relocations) of a BPF object; --json for machines.
  --program-type gives the program type (and expected attach type) of the programs in a
  section whose name libbpf does not know, spelled as the kernel's enum in lower case
  without prefix: --program-type my_hook=sock_ops:cgroup_sock_ops";

/// Runs the subcommand with the arguments after `inspect`.
pub fn run(args: &[&str]) -> ExitCode {
    if matches!(args, ["-h" | "--help"]) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut path = None;
    let mut json = false;
    let mut options = ObjectOptions::new();
    let mut rest = args.iter();
    while let Some(&arg) = rest.next() {
        match arg {
            "--json" => json = true,
            "--program-type" => {
                let Some(Ok((section, ty, attach))) = rest.next().map(|v| program_type(v)) else {
                    return crate::usage(USAGE);
                };
                options = options.program_type(section, ty, attach);
            }
            _ if !arg.starts_with('-') && path.is_none() => path = Some(arg),
            _ => return crate::usage(USAGE),
        }
    }
    let Some(path) = path else {
        return crate::usage(USAGE);
    };
    crate::finish("inspect", inspect(path, json, &options))
}

/// Reads `SECTION=TYPE[:ATTACH]`. Type names hold neither `=` nor `:`, so the section
/// name is everything before the last `=`.
fn program_type(value: &str) -> Result<(&str, ProgramType, Option<AttachType>), String> {
    let (section, spec) = value
        .rsplit_once('=')
        .ok_or_else(|| format!("{value:?} is not SECTION=TYPE[:ATTACH]"))?;
    let (ty, attach) = match spec.split_once(':') {
        Some((ty, attach)) => (ty, Some(attach)),
        None => (spec, None),
    };
    let ty = ty.parse::<ProgramType>().map_err(|e| e.to_string())?;
    let attach = attach
        .map(str::parse::<AttachType>)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok((section, ty, attach))
}

fn inspect(path: &str, json: bool, options: &ObjectOptions) -> Result<(), String> {
    let file = ObjectFile::open(path).map_err(|e| crate::error_chain(&e))?;
    let obj = file.parse_with(options).map_err(|e| {
        let mut msg = format!("{path}: {}", crate::error_chain(&e));
        if let ObjectError::UnknownSection { section } = &e {
            msg.push_str(&format!(
                "\n  to inspect it anyway: handover inspect {path} --program-type \
                 '{section}=TYPE[:ATTACH]' (e.g. sched_cls, or sock_ops:cgroup_sock_ops)"
            ));
        }
        msg
    })?;
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
