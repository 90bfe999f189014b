//! `handover plan --root DIR OBJ... [-o PLAN]`: what upgrading the set to OBJ...
//! would do, per map and field, computed against the live state; nothing changes.

use std::process::ExitCode;

use handover::engine::{Plan, Start};

use crate::cli::PlanArgs;
use crate::set_args::{EXIT_LOSES_ENTRIES, Failure, Place, PlanFile, engine_failure};

/// The exit code a plan earns: entries lost, field values dropped, or neither.
pub(crate) fn plan_code(plan: &Plan) -> ExitCode {
    if !plan.lost_maps().is_empty() {
        ExitCode::from(EXIT_LOSES_ENTRIES)
    } else if drops_values(plan) {
        ExitCode::from(crate::EXIT_DROPS_FIELDS)
    } else {
        ExitCode::SUCCESS
    }
}

fn drops_values(plan: &Plan) -> bool {
    plan.maps.iter().any(|m| {
        m.fields
            .iter()
            .any(|f| f.action == handover::FieldAction::Drop)
    })
}

/// The plan as printed: its text (names escaped), or its JSON.
pub(crate) fn render(plan: &Plan, json: bool) -> String {
    if json {
        let mut t = serde_json::to_string_pretty(plan).unwrap_or_default();
        t.push('\n');
        t
    } else {
        // Line by line: names from the objects are escaped, the plan's line ends kept.
        let mut t: String = plan
            .to_string()
            .lines()
            .map(|l| format!("{}\n", handover::btf::printable(l)))
            .collect();
        if drops_values(plan) {
            t.push_str("field values dropped: see the fields marked drop (no flag needed)\n");
        }
        t
    }
}

pub(crate) fn run(args: &PlanArgs) -> Result<ExitCode, String> {
    crate::set_args::finish("plan", body(args))
}

fn body(args: &PlanArgs) -> Result<ExitCode, Failure> {
    let place = Place::of(&args.set)?;
    let objects = crate::set_args::read_objects(&args.objects)?;
    let options = crate::set_args::options(&objects, &args.load)?;
    let mut engine = place.engine(&args.lock)?;
    let plan = engine
        .plan(&objects, &options)
        .map_err(|e| engine_failure(&e))?;
    if let Some(out) = &args.output {
        if let Start::Interrupted { tx } = &plan.start {
            return Err(format!(
                "an interrupted upgrade ({tx}) is in the journal: run `handover recover` first; \
                 no plan file is written"
            )
            .into());
        }
        PlanFile::new(&place.root, &args.objects, plan.clone())?.write(out)?;
    }
    crate::output::print(&render(&plan, args.set.json))?;
    Ok(plan_code(&plan))
}
