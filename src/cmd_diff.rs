//! `handover diff OLD NEW [--policy strict|migrate] [--json]`.
//!
//! OLD and NEW are each a BPF object or a snapshot file (told apart by the ELF magic).
//! Exit status: 0 every entry is carried with its values, 3 entries would be lost, 4
//! every entry is carried but some field values are dropped, 1 failure, 2 usage.

use std::process::ExitCode;

use handover::{ModelOptions, Plan, diff_objects, kernel_env, load_side_with, missing_objects};

use crate::cli::DiffArgs;
use crate::report::{render_json, render_text};
use crate::{EXIT_DROPS_FIELDS, EXIT_LOSES_ENTRIES};

pub(crate) fn run(args: &DiffArgs) -> Result<ExitCode, String> {
    let options = ModelOptions {
        layouts: args.layout.clone(),
    };
    let load =
        |p: &std::path::Path| load_side_with(p, &options).map_err(|e| crate::error_chain(&e));
    let old = load(&args.old)?;
    let new = load(&args.new)?;
    crate::cli::check_layout_maps(&args.layout, &old.iter().chain(&new).collect::<Vec<_>>())?;
    let missing = missing_objects(&old, &new);
    if !missing.is_empty() && !args.allow_missing_objects {
        return Err(format!(
            "{} holds objects that {} does not: {}; give them too (a snapshot of every \
             object), or --allow-missing-objects to report their maps removed",
            args.old.display(),
            args.new.display(),
            missing
                .iter()
                .map(|m| handover::btf::printable(m).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let plan = Plan::new(diff_objects(&old, &new, args.policy.into(), &kernel_env()));
    let text = if args.json {
        let mut t = render_json(&plan.diff);
        t.push('\n');
        t
    } else {
        render_text(&plan.diff)
    };
    crate::output::print(&text)?;
    Ok(if plan.loses_entries() {
        ExitCode::from(EXIT_LOSES_ENTRIES)
    } else if plan.drops_values() {
        ExitCode::from(EXIT_DROPS_FIELDS)
    } else {
        ExitCode::SUCCESS
    })
}
