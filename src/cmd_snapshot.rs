//! `handover snapshot OBJ... -o FILE`: writes the map specs of one or more BPF objects
//! to a snapshot file, atomically.

use std::process::ExitCode;

use handover::{ModelOptions, Snapshot, read_object_model, write_snapshot};

use crate::cli::SnapshotArgs;

pub(crate) fn run(args: &SnapshotArgs) -> Result<ExitCode, String> {
    let options = ModelOptions {
        layouts: args.layout.clone(),
    };
    let models = args
        .objects
        .iter()
        .map(|o| read_object_model(o, &options).map_err(|e| crate::error_chain(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    crate::cli::check_layout_maps(&args.layout, &models.iter().collect::<Vec<_>>())?;
    write_snapshot(&args.output, &Snapshot::new(models)).map_err(|e| crate::error_chain(&e))?;
    Ok(ExitCode::SUCCESS)
}
