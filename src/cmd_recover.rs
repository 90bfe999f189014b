//! `handover recover --root DIR` (finish or roll back an interrupted upgrade now) and
//! `handover uninstall --root DIR` (links detached, every pin and the state removed).

use std::process::ExitCode;

use handover::engine::Direction;

use crate::cli::ChangeArgs;
use crate::set_args::{Failure, Place, engine_failure};

pub(crate) fn recover(args: &ChangeArgs) -> Result<ExitCode, String> {
    crate::set_args::finish("recover", recover_body(args))
}

fn recover_body(args: &ChangeArgs) -> Result<ExitCode, Failure> {
    let place = Place::of(&args.set)?;
    let mut engine = place.engine(&args.lock)?;
    let recovered = engine.recover().map_err(|e| engine_failure(&e))?;
    let text = if args.set.json {
        let mut t = serde_json::to_string_pretty(&serde_json::json!({ "recovered": recovered }))
            .unwrap_or_default();
        t.push('\n');
        t
    } else {
        match recovered {
            None => "nothing to recover: no upgrade was interrupted\n".to_owned(),
            Some(r) => format!(
                "recovered the interrupted upgrade {}: {}\n",
                r.tx,
                match r.direction {
                    Direction::Forward => "finished forward (the new set is live)",
                    Direction::Back => "rolled back (the old set is live)",
                }
            ),
        }
    };
    crate::output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn uninstall(args: &ChangeArgs) -> Result<ExitCode, String> {
    crate::set_args::finish("uninstall", uninstall_body(args))
}

fn uninstall_body(args: &ChangeArgs) -> Result<ExitCode, Failure> {
    let place = Place::of(&args.set)?;
    let mut engine = place.engine(&args.lock)?;
    let gone = engine.uninstall().map_err(|e| engine_failure(&e))?;
    let text = if args.set.json {
        let mut t = serde_json::to_string_pretty(&gone).unwrap_or_default();
        t.push('\n');
        t
    } else if gone.objects.is_empty() && gone.pins.is_empty() {
        format!("nothing is installed at {}\n", place.root.display())
    } else {
        format!(
            "removed {} pins; {} kernel objects are freed once nothing else holds them\n",
            gone.pins.len(),
            gone.objects.len()
        )
    };
    crate::output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}
