//! `handover inspect OBJ [--json] [--program-type SECTION=TYPE[:ATTACH]]...`: every map and
//! program of a BPF object.

use std::process::ExitCode;

use handover::inspect::report;
use handover_loader::{ObjectFile, ObjectOptions};

use crate::cli::InspectArgs;
use crate::inspect_render::render;

pub(crate) fn run(args: &InspectArgs) -> Result<ExitCode, String> {
    let options = ObjectOptions::new().program_types(crate::cli::program_types(&args.program_type));
    let path = args.object.display();
    let file = ObjectFile::open(&args.object).map_err(|e| crate::error_chain(&e))?;
    let obj = file
        .parse_with(&options)
        .map_err(|e| format!("{path}: {}", crate::error_chain(&e)))?;
    let r = report(&obj);
    let text = if args.json {
        let mut text =
            serde_json::to_string_pretty(&r).map_err(|e| format!("cannot encode JSON: {e}"))?;
        text.push('\n');
        text
    } else {
        render(&path.to_string(), &r)
    };
    crate::output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}
