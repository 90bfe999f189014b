//! The executor's calls into the data path (`migrate/`): copy with conversion, delta
//! passes and the three-way reconcile, each over the merge base kept in the state
//! directory. Kept in one file so that the executor's steps read the same whichever
//! functions of the data path they call.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::error::Error;
use crate::migrate::{
    Conversion, CopyOptions, DeltaLimits, Geometry, MapAccess, MergeBase, MigrateError, Patcher,
    ReconcileOptions, ReconcileReport, ValueFields, copy_map, delta_pass, delta_passes, reconcile,
};
use crate::state::MapCounts;
use crate::step::Step;
use crate::upstream::{ConversionPlan, MapModel, MergeRule};

/// One map to carry: the live map, its replacement and the planned conversions.
pub(crate) struct Carry<'a> {
    pub(crate) key: &'a str,
    pub(crate) old: Arc<dyn MapAccess>,
    pub(crate) new: Arc<dyn MapAccess>,
    pub(crate) key_plan: Option<&'a ConversionPlan>,
    pub(crate) value_plan: Option<&'a ConversionPlan>,
    /// Values hold a `bpf_spin_lock` on both sides: read and written with `BPF_F_LOCK`.
    pub(crate) lock: bool,
    /// Values of either side hold kernel-managed fields: the copy reads and writes
    /// them by the kernel's map commands only (`CopyOptions::programs`).
    pub(crate) managed: bool,
}

/// The error of `step` on map `key`: a failpoint between batches is the crash it
/// stands for, anything else a data error.
fn data_err(step: Step, key: &str) -> impl FnOnce(MigrateError) -> Error {
    let key = key.to_owned();
    move |e| match e {
        MigrateError::Interrupted { point } => Error::Crashed { point },
        e => Error::Data {
            step: step.name(),
            map: key,
            reason: e.to_string(),
        },
    }
}

/// The conversion of a map of geometry `og` by the planned key and value
/// conversions (`None`: unchanged).
pub(crate) fn conversion(
    og: &Geometry,
    key_plan: Option<&ConversionPlan>,
    value_plan: Option<&ConversionPlan>,
) -> Conversion {
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Conversion {
        key: key_plan
            .cloned()
            .unwrap_or_else(|| ConversionPlan::identity(size(og.key_size))),
        value: value_plan
            .cloned()
            .unwrap_or_else(|| ConversionPlan::identity(size(og.value_size))),
        cpus: og.cpus,
        per_cpu: og.per_cpu(),
    }
}

impl Carry<'_> {
    fn conversion(&self) -> Conversion {
        conversion(&self.old.geometry(), self.key_plan, self.value_plan)
    }

    fn base(&self, step: Step, state_dir: &Path) -> Result<MergeBase, Error> {
        MergeBase::read_from(state_dir, self.key).map_err(data_err(step, self.key))
    }
}

/// Copies every entry of `c.old` into `c.new`, converted, writing the merge base
/// into `state_dir`; `batch` entries per batch when given.
pub(crate) fn copy(
    c: &Carry<'_>,
    state_dir: &Path,
    batch: Option<usize>,
) -> Result<MapCounts, Error> {
    let mut options = CopyOptions {
        lock: c.lock,
        batch_point: Step::Copy.batch_point(),
        programs: !c.managed,
        ..CopyOptions::default()
    };
    if let Some(n) = batch {
        options.chunk = n.max(1);
    }
    let lru = crate::capacity::is_lru(c.new.geometry().map_type);
    // One writer for an LRU map: each writing CPU keeps a batch of free nodes, which
    // the preflight's capacity allows for one CPU at a time (capacity.rs).
    if lru {
        options.writers = 1;
    }
    let (_base, report) = copy_map(
        c.key,
        c.old.as_ref(),
        c.new.as_ref(),
        &c.conversion(),
        state_dir,
        &options,
    )
    .map_err(data_err(Step::Copy, c.key))?;
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

/// Delta passes over `c` while the old programs run: bounded by `limits`, or exactly
/// one pass without them. Returns the entries carried.
pub(crate) fn delta(
    c: &Carry<'_>,
    state_dir: &Path,
    limits: Option<&DeltaLimits>,
) -> Result<u64, Error> {
    let mut base = c.base(Step::Delta, state_dir)?;
    let conversion = c.conversion();
    let reports = match limits {
        Some(l) => delta_passes(
            c.key,
            c.old.as_ref(),
            c.new.as_ref(),
            &conversion,
            &mut base,
            c.lock,
            l,
        ),
        None => delta_pass(
            c.key,
            c.old.as_ref(),
            c.new.as_ref(),
            &conversion,
            &mut base,
            c.lock,
        )
        .map(|r| vec![r]),
    }
    .map_err(data_err(Step::Delta, c.key))?;
    for (i, r) in reports.iter().enumerate() {
        tracing::debug!(
            map = c.key,
            pass = i,
            created = r.created,
            changed = r.changed,
            deleted = r.deleted,
            "delta pass"
        );
    }
    Ok(reports.iter().map(|r| r.total() as u64).sum())
}

/// The value fields of map `key` for its reconcile: the leaves of the new value
/// layout in `models`, with the rules its members' `handover:merge:` tags declare,
/// overridden by the options' rules named `KEY.FIELD`.
pub(crate) fn value_fields(
    key: &str,
    models: &[MapModel],
    rules: &BTreeMap<String, MergeRule>,
) -> Result<ValueFields, Error> {
    let model = models.iter().find(|m| m.name == key);
    let prefix = format!("{key}.");
    let mine: BTreeMap<String, MergeRule> = rules
        .iter()
        .filter_map(|(k, r)| k.strip_prefix(&prefix).map(|f| (f.to_owned(), *r)))
        .collect();
    let size = model.map_or(0, |m| m.value_size as usize);
    match model.and_then(|m| m.value.as_ref()) {
        Some(layout) => ValueFields::new(key, layout, size, &mine),
        None if mine.is_empty() => Ok(ValueFields::opaque(size)),
        None => {
            return Err(Error::Options(format!(
                "merge rules name fields of map {key}, whose value has no BTF layout"
            )));
        }
    }
    .map_err(|e| Error::Options(e.to_string()))
}

/// What the reconcile of one map runs with, besides the maps.
pub(crate) struct Reconcile<'a> {
    pub(crate) fields: &'a ValueFields,
    pub(crate) patcher: &'a dyn Patcher,
    pub(crate) marks: &'a dyn MapAccess,
    pub(crate) tombstones: Option<&'a dyn MapAccess>,
    pub(crate) keep: Option<&'a HashSet<Vec<u8>>>,
    pub(crate) batch: Option<usize>,
}

/// The three-way reconcile of `c` after the switch.
pub(crate) fn reconcile_map(
    c: &Carry<'_>,
    state_dir: &Path,
    r: &Reconcile<'_>,
) -> Result<ReconcileReport, Error> {
    let base = c.base(Step::Reconcile, state_dir)?;
    let options = ReconcileOptions {
        marks: Some(r.marks),
        tombstones: r.tombstones,
        keep: r.keep,
        chunk: r.batch.unwrap_or(0),
        lock: c.lock,
        batch_point: Step::Reconcile.batch_point(),
    };
    reconcile(
        c.key,
        c.old.as_ref(),
        c.new.as_ref(),
        &c.conversion(),
        &base,
        r.fields,
        r.patcher,
        &options,
    )
    .map_err(data_err(Step::Reconcile, c.key))
}
