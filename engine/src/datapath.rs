//! The executor's calls into the data path (`migrate/`): copy with conversion, delta
//! passes, reconcile. Kept in one file so that the executor's steps read the same
//! whichever functions of the data path they end up calling.

use std::path::Path;
use std::sync::Arc;

use handover_sys::UpdateFlags;

use crate::error::Error;
use crate::migrate::MapAccess;
use crate::state::MapCounts;
use crate::step::{Step, checkpoint};
use crate::upstream::{ConversionPlan, convert};

/// One map to carry: the live map, its replacement and the planned conversions.
pub(crate) struct Carry<'a> {
    pub(crate) key: &'a str,
    pub(crate) old: Arc<dyn MapAccess>,
    pub(crate) new: Arc<dyn MapAccess>,
    pub(crate) key_plan: Option<&'a ConversionPlan>,
    pub(crate) value_plan: Option<&'a ConversionPlan>,
}

fn data_err(step: Step, map: &str) -> impl Fn(String) -> Error {
    let map = map.to_owned();
    move |reason| Error::Data {
        step: step.name(),
        map: map.clone(),
        reason,
    }
}

fn converted(plan: Option<&ConversionPlan>, bytes: &[u8], len: usize) -> Result<Vec<u8>, String> {
    match plan {
        Some(p) => convert(p, bytes).map_err(|e| e.to_string()),
        None if bytes.len() == len => Ok(bytes.to_vec()),
        None => Err(format!(
            "{} bytes where {len} are expected and no conversion is planned",
            bytes.len()
        )),
    }
}

/// Copies every entry of `c.old` into `c.new`, converted; evaluates the copy step's
/// item failpoint every `every` entries, so a crash can land in the middle of a copy.
pub(crate) fn copy(c: &Carry<'_>, _base_dir: &Path, every: usize) -> Result<MapCounts, Error> {
    let err = data_err(Step::Copy, c.key);
    let og = c.old.geometry();
    let ng = c.new.geometry();
    let mut key = vec![0u8; og.key_size];
    let mut value = vec![0u8; og.value_len];
    let mut prev: Option<Vec<u8>> = None;
    let mut counts = MapCounts::default();
    while c
        .old
        .next_key(prev.as_deref(), &mut key)
        .map_err(|e| err(e.to_string()))?
    {
        if c.old
            .lookup(&key, &mut value, UpdateFlags::ANY)
            .map_err(|e| err(e.to_string()))?
        {
            let k = converted(c.key_plan, &key, ng.key_size).map_err(&err)?;
            let v = converted(c.value_plan, &value, ng.value_len).map_err(&err)?;
            c.new
                .update(&k, &v, UpdateFlags::ANY)
                .map_err(|e| err(e.to_string()))?;
            counts.copied += 1;
            if every > 0 && counts.copied % every as u64 == 0 {
                checkpoint(Step::Copy.item_point())?;
            }
        }
        prev = Some(key.clone());
    }
    Ok(counts)
}
