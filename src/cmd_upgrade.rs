//! `handover upgrade --root DIR (OBJ... | --plan PLAN)`: installs, restarts or
//! upgrades the set. With `--plan`, exactly the stored plan runs, refused when the
//! live state is no longer the one it was computed against. A plan that loses map
//! entries needs `--allow-state-loss`; field values dropped by a layout change are
//! in the plan and need no flag.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use handover::engine::{
    ApplyOptions, CopyProgress, Engine, ObjectSource, Plan, RealKernel, Report, Start,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::UpgradeArgs;
use crate::set_args::{EXIT_LOSES_ENTRIES, Failure, Place, PlanFile, Refusal, engine_failure};

pub(crate) fn run(args: &UpgradeArgs) -> Result<ExitCode, String> {
    crate::set_args::finish("upgrade", body(args))
}

/// Copies shorter than this many entries show no bar.
const BAR_FROM: u64 = 100_000;

/// A progress bar per map copied, drawn on stderr (only installed when stderr is a
/// terminal), from the first report past [`BAR_FROM`] entries.
fn progress_bar() -> handover::engine::ProgressFn {
    let bar: Mutex<Option<(String, ProgressBar)>> = Mutex::new(None);
    Arc::new(move |p: &CopyProgress| {
        let mut slot = bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_some_and(|(m, _)| *m != p.map)
            && let Some((_, b)) = slot.take()
        {
            b.finish_and_clear();
        }
        if slot.is_none() && !p.done && p.read >= BAR_FROM.min(p.total.unwrap_or(u64::MAX)) {
            let b = ProgressBar::with_draw_target(p.total, ProgressDrawTarget::stderr());
            let template = if p.total.is_some() {
                "{msg}: {bar:30} {pos}/{len} entries ({per_sec})"
            } else {
                "{msg}: {pos} entries copied ({per_sec})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                b.set_style(style);
            }
            b.set_message(handover::btf::printable(&p.map).into_owned());
            *slot = Some((p.map.clone(), b));
        }
        if let Some((_, b)) = slot.as_ref() {
            b.set_position(p.read);
            if p.done {
                b.finish_and_clear();
            }
        }
        if p.done {
            *slot = None;
        }
    })
}

fn apply(
    engine: &mut Engine<RealKernel>,
    plan: &Plan,
    objects: &[ObjectSource],
    allow_state_loss: bool,
) -> Result<Report, Refusal> {
    let lost = plan.lost_maps();
    if !lost.is_empty() && !allow_state_loss && !matches!(plan.start, Start::Interrupted { .. }) {
        return Err(Refusal {
            code: EXIT_LOSES_ENTRIES,
            message: format!(
                "refused: the plan loses the entries of {} (see `handover plan`); give \
                 --allow-state-loss to accept that",
                lost.iter()
                    .map(|m| handover::btf::printable(m).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    engine
        .apply(
            plan,
            objects,
            ApplyOptions {
                allow_state_loss,
                ..ApplyOptions::default()
            },
        )
        .map_err(|e| engine_failure(&e))
}

fn body(args: &UpgradeArgs) -> Result<ExitCode, Failure> {
    if args.plan.is_some() && args.load.any() {
        return Err(Refusal {
            code: 2,
            message: "--plan runs the stored plan with its own objects and options; give \
                      either --plan or objects with options"
                .into(),
        });
    }
    let place = Place::of(&args.set)?;
    let (objects, stored) = match &args.plan {
        Some(path) => {
            let file = PlanFile::read(path)?;
            if file.root != place.root {
                return Err(format!(
                    "plan {} was made for the pin root {}, not {}",
                    path.display(),
                    file.root.display(),
                    place.root.display()
                )
                .into());
            }
            (
                crate::set_args::read_objects(&file.objects)?,
                Some(file.plan),
            )
        }
        None => (crate::set_args::read_objects(&args.objects)?, None),
    };
    let mut engine = place.engine(&args.lock)?;
    if std::io::stderr().is_terminal() {
        engine.set_progress(Some(progress_bar()));
    }
    let mut reports = Vec::new();
    match stored {
        Some(plan) => {
            let r = apply(&mut engine, &plan, &objects, args.allow_state_loss)?;
            reports.push((plan, r));
        }
        None => {
            let options = crate::set_args::options(&objects, &args.load)?;
            let plan = engine
                .plan(&objects, &options)
                .map_err(|e| engine_failure(&e))?;
            let interrupted = matches!(plan.start, Start::Interrupted { .. });
            let r = apply(&mut engine, &plan, &objects, args.allow_state_loss)?;
            reports.push((plan, r));
            if interrupted {
                // The interrupted upgrade is recovered; now the one asked for.
                let plan = engine
                    .plan(&objects, &options)
                    .map_err(|e| engine_failure(&e))?;
                let r = apply(&mut engine, &plan, &objects, args.allow_state_loss)?;
                reports.push((plan, r));
            }
        }
    }
    let text = if args.set.json {
        let all: Vec<&Report> = reports.iter().map(|(_, r)| r).collect();
        let mut t = serde_json::to_string_pretty(&serde_json::json!({
            "reports": all,
        }))
        .unwrap_or_default();
        t.push('\n');
        t
    } else {
        reports.iter().map(|(p, r)| render_report(p, r)).collect()
    };
    crate::output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn render_report(plan: &Plan, r: &Report) -> String {
    use std::fmt::Write as _;
    let short = |s: &str| s.get(..12).unwrap_or(s).to_owned();
    let mut t = String::new();
    let _ = match (&r.start, &r.recovered) {
        (_, Some(rec)) => writeln!(
            t,
            "recovered the interrupted upgrade {}: {}",
            rec.tx,
            match rec.direction {
                handover::engine::Direction::Forward => "finished forward (the new set is live)",
                handover::engine::Direction::Back => "rolled back (the old set is live)",
            }
        ),
        (Start::Interrupted { tx }, None) => writeln!(t, "nothing to recover for {tx}"),
        (Start::Fresh { .. }, _) => writeln!(t, "installed {}", short(&r.identity)),
        (Start::Restart, _) => writeln!(
            t,
            "restarted {}: pins reopened, nothing loaded",
            short(&r.identity)
        ),
        (Start::Upgrade { from }, _) => {
            writeln!(t, "upgraded {} to {}", short(from), short(&r.identity))
        }
    };
    for (map, c) in &r.maps {
        let _ = writeln!(
            t,
            "  {:<24} copied {}, delta {}, reconciled {}, deleted {}, conflicts {}",
            handover::btf::printable(map),
            c.copied,
            c.delta,
            c.reconciled,
            c.deleted,
            c.conflicts
        );
        if c.tombstoned > 0 || c.ambiguous_adds > 0 {
            let _ = writeln!(
                t,
                "  {:<24} not brought back (tombstones) {}, added back within the {} us window {}",
                "", c.tombstoned, c.window_us, c.ambiguous_adds
            );
        }
        if c.rewritten > 0 {
            let _ = writeln!(
                t,
                "  {:<24} merged again after the new programs wrote the entry {}",
                "", c.rewritten
            );
        }
        if c.sockets_unsure > 0 {
            let _ = writeln!(
                t,
                "  {:<24} sockets whose carrier could not be told (cookies unreadable) {}",
                "", c.sockets_unsure
            );
        }
    }
    for a in &r.reattached {
        let _ = writeln!(t, "  re-attached {}", handover::btf::printable(a));
    }
    if let (Some(us), Start::Upgrade { .. }) = (r.switch_window_us, &r.start) {
        let _ = writeln!(t, "  old and new programs ran side by side for {us} us");
    }
    let created = plan
        .maps
        .iter()
        .filter(|m| m.action == handover::engine::MapAction::Create && m.loses_entries)
        .count();
    if created > 0 {
        let _ = writeln!(t, "  {created} map(s) recreated empty (--allow-state-loss)");
    }
    t
}
