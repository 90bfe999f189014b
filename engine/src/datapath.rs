//! The executor's calls into the data path (`migrate/`): copy with conversion and the
//! merge base. Kept in one file so that the executor's steps read the same whichever
//! functions of the data path they call.

use std::path::Path;
use std::sync::Arc;

use crate::error::Error;
use crate::migrate::{Conversion, CopyOptions, MapAccess, copy_map};
use crate::state::MapCounts;
use crate::step::Step;
use crate::upstream::ConversionPlan;

/// One map to carry: the live map, its replacement and the planned conversions.
pub(crate) struct Carry<'a> {
    pub(crate) key: &'a str,
    pub(crate) old: Arc<dyn MapAccess>,
    pub(crate) new: Arc<dyn MapAccess>,
    pub(crate) key_plan: Option<&'a ConversionPlan>,
    pub(crate) value_plan: Option<&'a ConversionPlan>,
}

/// Copies every entry of `c.old` into `c.new`, converted, writing the merge base
/// into `state_dir`.
pub(crate) fn copy(c: &Carry<'_>, state_dir: &Path) -> Result<MapCounts, Error> {
    let og = c.old.geometry();
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let conversion = Conversion {
        key: c
            .key_plan
            .cloned()
            .unwrap_or_else(|| ConversionPlan::identity(size(og.key_size))),
        value: c
            .value_plan
            .cloned()
            .unwrap_or_else(|| ConversionPlan::identity(size(og.value_size))),
        cpus: og.cpus,
        per_cpu: og.per_cpu(),
    };
    let lru = crate::capacity::is_lru(c.new.geometry().map_type);
    // One writer for an LRU map: each writing CPU keeps a batch of free nodes, which
    // the preflight's capacity allows for one CPU at a time (capacity.rs).
    let copy_options = CopyOptions {
        writers: if lru {
            1
        } else {
            CopyOptions::default().writers
        },
        ..CopyOptions::default()
    };
    let (_base, report) = copy_map(
        c.key,
        c.old.as_ref(),
        c.new.as_ref(),
        &conversion,
        state_dir,
        &copy_options,
    )
    .map_err(|e| Error::Data {
        step: Step::Copy.name(),
        map: c.key.to_owned(),
        reason: e.to_string(),
    })?;
    if lru {
        // The kernel evicts from an LRU map silently: an entry copied and gone since
        // is an entry lost, and the upgrade is still before its switch.
        let held = c.new.count_entries().map_err(|e| Error::Data {
            step: Step::Copy.name(),
            map: c.key.to_owned(),
            reason: e.to_string(),
        })?;
        if held < report.copied {
            return Err(Error::Data {
                step: Step::Copy.name(),
                map: c.key.to_owned(),
                reason: format!(
                    "the new LRU map evicted {} of the {} entries copied into it; raise its \
                     max_entries",
                    report.copied - held,
                    report.copied
                ),
            });
        }
    }
    Ok(MapCounts {
        copied: report.copied as u64,
        ..MapCounts::default()
    })
}
