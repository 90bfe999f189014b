//! The executor's passes of a [`Carry::Sockets`](crate::Carry::Sockets) map, whose
//! entries are references to kernel objects rather than bytes: the sockets of a
//! sockmap or sockhash carried by the kernel's sockmap iterator
//! ([`Kernel::carry_sockets`]), since user space cannot insert a socket it reads back
//! as a cookie; and, by the same passes, the inner maps of a map-in-map
//! ([`Carry::InnerMaps`](crate::Carry::InnerMaps)), read back as ids and inserted
//! again by descriptor ([`Kernel::insert_inner_map`]). Below, a socket's cookie is an
//! inner map's id.
//!
//! - Before the switch (the copy, then each delta pass) only this upgrade writes the
//!   new map: every socket of the old map is inserted again under its key, and the
//!   keys the previous pass inserted that the old map no longer holds are deleted.
//!   Each pass records the keys it carried with the cookie the new map holds there
//!   (`KEY.sockets` in the state directory, checksummed).
//! - After the switch (in the reconcile step) the new programs write the new map too.
//!   With that record `B`, the old map `O` and the new map `N` per key: a socket the
//!   old programs added (`O`, no `B`, no `N`) or put in place of the one carried
//!   (`O != B`, and `N` is still `B` or empty) is carried; one they removed (no `O`,
//!   `N` still `B`) is deleted; everything else is the new programs' and kept. The
//!   rules hold when run again after a crash half way. A new program that inserted
//!   the very socket already there under the same key changed nothing that can be
//!   seen, so that socket is deleted too. A socket or inner map the new map refuses
//!   then (full, or an index past its capacity) fails the pass before the switch, so
//!   that the upgrade is rolled back; after it, it is logged as lost, since the
//!   upgrade can only go forward.
//! - Cookies are readable only from maps of 8-byte values (the kernel answers
//!   `ENOSPC` to a lookup of a socket map of 4-byte values). Without them the last
//!   pass cannot tell the new programs' sockets from the carried ones: it adds the
//!   old map's sockets at keys the new map leaves empty, deletes nothing, and counts
//!   those it could not decide (`MapCounts::sockets_unsure`).
//! - Where the plan converts the keys (a sockhash's or a hash of maps' key mapping
//!   that carries every field, so one-to-one), every old key is converted here and
//!   each socket or inner map inserted under its new key: the sockmap iterator is
//!   given the pairs (old key, new key) to carry. The record and the three-way rules
//!   above are in new keys: the old map's keys are converted before they are
//!   compared.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::files;
use crate::kernel::{Kernel, ObjRef};
use crate::migrate::{MapAccess, SocketReport};
use crate::state::MapCounts;
use crate::step::Step;
use crate::upstream::ConversionPlan;
use handover_sys::UpdateFlags;

/// One socket map of an upgrade: the live map and its staged replacement.
pub(crate) struct SocketMaps<'a> {
    pub(crate) key: &'a str,
    pub(crate) old: ObjRef,
    pub(crate) new: ObjRef,
    pub(crate) old_access: &'a dyn MapAccess,
    pub(crate) new_access: &'a dyn MapAccess,
    /// The entries are inner maps (by id), not sockets.
    pub(crate) inner_maps: bool,
    /// The plan's conversion of the keys; `None`: keys are carried as they are.
    pub(crate) key_plan: Option<&'a ConversionPlan>,
}

/// Pairs of an old key and its key in the new map.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

impl SocketMaps<'_> {
    /// The key in the new map of old key `k`.
    fn new_key(&self, step: Step, k: &[u8]) -> Result<Vec<u8>, Error> {
        match self.key_plan {
            None => Ok(k.to_vec()),
            Some(plan) => crate::upstream::convert(plan, k).map_err(|e| {
                data(
                    step,
                    self.key,
                    format!("converting the key {}: {e}", files::hex(k)),
                )
            }),
        }
    }

    /// Each of `keys` (old keys) with its key in the new map.
    ///
    /// # Errors
    /// A key does not convert, or two convert to one new key.
    fn pairs<'k>(
        &self,
        step: Step,
        keys: impl IntoIterator<Item = &'k Vec<u8>>,
    ) -> Result<Pairs, Error> {
        let mut out = Vec::new();
        let mut seen = BTreeMap::new();
        for k in keys {
            let to = self.new_key(step, k)?;
            if let Some(other) = seen.insert(to.clone(), k.clone()) {
                return Err(data(
                    step,
                    self.key,
                    format!(
                        "the keys {} and {} convert to one new key {}",
                        files::hex(&other),
                        files::hex(k),
                        files::hex(&to)
                    ),
                ));
            }
            out.push((k.clone(), to));
        }
        Ok(out)
    }
}

/// The sockets the last pass before the switch put into the new map: key, cookie
/// (0: not readable).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    sockets: Vec<(Vec<u8>, u64)>,
}

/// The record file of map `key` in `state_dir`.
pub(crate) fn record_path(state_dir: &Path, key: &str) -> PathBuf {
    state_dir.join(format!("{key}.sockets"))
}

const COOKIE: usize = 8;

fn data(step: Step, key: &str, reason: String) -> Error {
    Error::Data {
        step: step.name(),
        map: key.to_owned(),
        reason,
    }
}

/// Every socket of `map` by key, with its cookie (`inner_maps`: every inner map, by
/// id); `None` when the map's values are not cookies (4 bytes).
fn read(
    map: &dyn MapAccess,
    inner_maps: bool,
    step: Step,
    key: &str,
) -> Result<Option<BTreeMap<Vec<u8>, u64>>, Error> {
    let g = map.geometry();
    let size = if inner_maps { 4 } else { COOKIE };
    if g.value_len != size {
        return Ok(None);
    }
    let mut out = BTreeMap::new();
    let mut prev: Option<Vec<u8>> = None;
    let mut next = vec![0u8; g.key_size];
    let mut cookie = [0u8; COOKIE];
    // A sockmap's next key walks every index, filled or not; a sockhash's, its
    // sockets. Bounded in case sockets come and go under the walk.
    let limit = (g.max_entries as usize)
        .saturating_mul(4)
        .saturating_add(16);
    let mut steps = 0usize;
    let walk_err = |e: handover_sys::Error| data(step, key, format!("reading the sockets: {e}"));
    while steps < limit && map.next_key(prev.as_deref(), &mut next).map_err(walk_err)? {
        steps += 1;
        let value = cookie.get_mut(..size).unwrap_or_default();
        match map.lookup(&next, value, UpdateFlags::ANY) {
            Ok(true) => {
                let mut c = [0u8; COOKIE];
                c.get_mut(..size).unwrap_or_default().copy_from_slice(value);
                out.insert(next.clone(), u64::from_ne_bytes(c));
            }
            Ok(false) => {}
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(data(step, key, format!("reading a socket's cookie: {e}"))),
        }
        prev = Some(next.clone());
    }
    Ok(Some(out))
}

/// Every key of `map` (a sockmap's next key walks every index, filled or not; a
/// sockhash's, its sockets).
fn keys(map: &dyn MapAccess, step: Step, key: &str) -> Result<Vec<Vec<u8>>, Error> {
    let g = map.geometry();
    let mut out = Vec::new();
    let mut next = vec![0u8; g.key_size];
    // Bounded in case sockets come and go under the walk.
    let limit = (g.max_entries as usize)
        .saturating_mul(4)
        .saturating_add(16);
    while out.len() < limit
        && map
            .next_key(out.last().map(Vec::as_slice), &mut next)
            .map_err(|e| data(step, key, format!("reading the sockets' keys: {e}")))?
    {
        out.push(next.clone());
    }
    Ok(out)
}

/// Carries the sockets (inner maps) of the old map at the old keys `only` pairs
/// with a new key, or all of them, into the new map. The report's `keys` are the new
/// keys of those carried; its refused keys are old keys.
fn carry<K: Kernel>(
    kernel: &mut K,
    m: &SocketMaps<'_>,
    step: Step,
    only: Option<&[(Vec<u8>, Vec<u8>)]>,
    keep_existing: bool,
) -> Result<SocketReport, Error> {
    // Converted keys go to the kernel as pairs: every key of the old map when all
    // are carried.
    let all;
    let only = match only {
        None if m.key_plan.is_some() => {
            all = m.pairs(step, &keys(m.old_access, step, m.key)?)?;
            Some(all.as_slice())
        }
        only => only,
    };
    let mut report = if m.inner_maps {
        insert_inner_maps(kernel, m, step, only, keep_existing)?
    } else {
        kernel
            .carry_sockets(m.key, m.old, m.new, only, keep_existing)
            .map_err(|source| Error::Kernel {
                step: step.name(),
                what: format!("carry the sockets of {}", m.key),
                source,
            })?
    };
    if let Some(pairs) = only {
        let to: BTreeMap<&Vec<u8>, &Vec<u8>> = pairs.iter().map(|(k, t)| (k, t)).collect();
        for k in &mut report.keys {
            match to.get(k) {
                Some(t) => k.clone_from(t),
                None => *k = m.new_key(step, k)?,
            }
        }
    }
    // A socket that no longer fits is one the new map loses: before the switch that
    // fails the upgrade (rolled back); a closing socket (EOPNOTSUPP) or one the new
    // map holds under NOEXIST (EEXIST) is not carried, as it should not be.
    let lost: Vec<String> = report
        .refused
        .iter()
        .filter(|(_, e)| *e != libc::EOPNOTSUPP && *e != libc::EEXIST)
        .map(|(k, e)| {
            format!(
                "key {} ({})",
                files::hex(k),
                std::io::Error::from_raw_os_error(*e)
            )
        })
        .collect();
    if !lost.is_empty() && step == Step::Reconcile {
        // After the switch a failure would leave the upgrade unable to finish: what the
        // old programs added there and the new map cannot take is lost, and said so.
        tracing::warn!(
            map = m.key,
            lost = lost.len(),
            keys = %lost.join(", "),
            "the new map refused what the old programs added after the last delta pass"
        );
    } else if !lost.is_empty() {
        return Err(data(
            step,
            m.key,
            format!(
                "the new map refused {} of the {} sockets: {}; give it the capacity of the old \
                 map",
                lost.len(),
                report.seen,
                lost.join(", ")
            ),
        ));
    }
    tracing::debug!(
        map = m.key,
        seen = report.seen,
        carried = report.carried,
        elapsed_us = report.elapsed.as_micros(),
        "sockets carried"
    );
    Ok(report)
}

/// Every inner map of the old outer map (at the old keys `only` pairs with a new
/// key, under that key; without `only` all, under the same key) inserted into the new
/// one. The report's keys are old keys, as the kernel's socket carry reports them.
fn insert_inner_maps<K: Kernel>(
    kernel: &mut K,
    m: &SocketMaps<'_>,
    step: Step,
    only: Option<&[(Vec<u8>, Vec<u8>)]>,
    keep_existing: bool,
) -> Result<SocketReport, Error> {
    let started = std::time::Instant::now();
    let old = read(m.old_access, true, step, m.key)?.ok_or_else(|| {
        data(
            step,
            m.key,
            "the outer map's values are not 4-byte map ids".to_owned(),
        )
    })?;
    let mut report = SocketReport::default();
    let to: Option<BTreeMap<&Vec<u8>, &Vec<u8>>> =
        only.map(|pairs| pairs.iter().map(|(k, t)| (k, t)).collect());
    for (k, id) in old {
        let at = match &to {
            None => &k,
            Some(to) => match to.get(&k) {
                Some(t) => *t,
                None => continue,
            },
        };
        report.seen += 1;
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        let inserted = match kernel.insert_inner_map(m.new, at, id, keep_existing) {
            Ok(inserted) => inserted,
            // After the switch: refused, reported with the sockets' refusals.
            Err(e) if step == Step::Reconcile => {
                tracing::warn!(map = m.key, inner = id, error = %e, "inner map not carried");
                report.refused.push((k, libc::EINVAL));
                continue;
            }
            Err(source) => {
                return Err(Error::Kernel {
                    step: step.name(),
                    what: format!(
                        "carry inner map {id} of {} at key {}",
                        m.key,
                        files::hex(at)
                    ),
                    source,
                });
            }
        };
        if inserted {
            report.carried += 1;
            report.keys.push(k);
        } else {
            report.refused.push((k, libc::EEXIST));
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// A pass before the switch (`step` is the copy or the delta): every socket of the
/// old map carried, the previous pass's sockets the old map dropped deleted, the
/// record written. Returns the sockets carried that the previous pass had not, and
/// those deleted.
pub(crate) fn pass<K: Kernel>(
    kernel: &mut K,
    m: &SocketMaps<'_>,
    step: Step,
    state_dir: &Path,
) -> Result<(u64, u64), Error> {
    let path = record_path(state_dir, m.key);
    let previous: BTreeSet<Vec<u8>> = match step {
        Step::Copy => BTreeSet::new(),
        _ => files::read_checked::<Record>(&path)?
            .unwrap_or_default()
            .sockets
            .into_iter()
            .map(|(k, _)| k)
            .collect(),
    };
    let report = carry(kernel, m, step, None, false)?;
    let carried: BTreeSet<Vec<u8>> = report.keys.iter().cloned().collect();
    let mut deleted = 0;
    for k in previous.difference(&carried) {
        match m.new_access.delete(k) {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            // A sockmap answers EINVAL for an empty index: the socket closed.
            Err(e) if e.errno() == Some(libc::EINVAL) => {}
            Err(e) => {
                return Err(data(
                    step,
                    m.key,
                    format!("deleting the socket at key {}: {e}", files::hex(k)),
                ));
            }
        }
    }
    let cookies = read(m.new_access, m.inner_maps, step, m.key)?;
    let sockets = carried
        .iter()
        .map(|k| {
            let c = cookies
                .as_ref()
                .and_then(|c| c.get(k))
                .copied()
                .unwrap_or(0);
            (k.clone(), c)
        })
        .collect();
    files::write_checked(&path, &Record { sockets })?;
    let added = carried.difference(&previous).count();
    Ok((added as u64, deleted))
}

/// The last pass, after the switch: see the module documentation.
pub(crate) fn last_pass<K: Kernel>(
    kernel: &mut K,
    m: &SocketMaps<'_>,
    state_dir: &Path,
) -> Result<MapCounts, Error> {
    const STEP: Step = Step::Reconcile;
    let path = record_path(state_dir, m.key);
    let record = files::read_checked::<Record>(&path)?.ok_or_else(|| {
        data(
            STEP,
            m.key,
            format!(
                "the record of the sockets carried before the switch ({}) is missing",
                path.display()
            ),
        )
    })?;
    let before: BTreeMap<Vec<u8>, u64> = record.sockets.into_iter().collect();
    let mut counts = MapCounts::default();
    let (Some(old_keyed), Some(new)) = (
        read(m.old_access, m.inner_maps, STEP, m.key)?,
        read(m.new_access, m.inner_maps, STEP, m.key)?,
    ) else {
        // No cookies: every socket of the old map at a key the new map leaves empty.
        let report = carry(kernel, m, STEP, None, true)?;
        counts.reconciled = report.carried as u64;
        counts.sockets_unsure = report.carried as u64;
        tracing::warn!(
            map = m.key,
            added = report.carried,
            "socket cookies are not readable (4-byte values): sockets the new programs \
             removed may be back, and sockets the old programs removed are kept"
        );
        return Ok(counts);
    };
    // The old map's sockets by their new keys, each with its old key.
    let pairs = m.pairs(STEP, old_keyed.keys())?;
    let mut old = BTreeMap::new();
    let mut from = BTreeMap::new();
    for (k, to) in pairs {
        if let Some(c) = old_keyed.get(&k) {
            old.insert(to.clone(), *c);
        }
        from.insert(to, k);
    }
    let keys: BTreeSet<&Vec<u8>> = old.keys().chain(new.keys()).chain(before.keys()).collect();
    let mut add = Vec::new();
    let mut delete = Vec::new();
    for k in keys {
        let (o, b, n) = (old.get(k), before.get(k).filter(|c| **c != 0), new.get(k));
        match (o, b, n) {
            (Some(_), None, None) => add.push(k.clone()),
            (Some(o), Some(b), None) if o != b => add.push(k.clone()),
            (Some(o), Some(b), Some(n)) if o != b && n == b => {
                delete.push(k.clone());
                add.push(k.clone());
            }
            (None, Some(b), Some(n)) if n == b => delete.push(k.clone()),
            _ => {}
        }
    }
    let replaced: BTreeSet<&Vec<u8>> = add.iter().collect();
    for k in &delete {
        match m.new_access.delete(k) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::EINVAL) => {}
            Err(e) => {
                return Err(data(
                    STEP,
                    m.key,
                    format!("deleting the socket at key {}: {e}", files::hex(k)),
                ));
            }
        }
        if !replaced.contains(k) {
            counts.deleted += 1;
        }
    }
    if !add.is_empty() {
        // Every key to add is one of the old map's (`o` is there), by its new key.
        let add: Pairs = add
            .into_iter()
            .filter_map(|to| from.get(&to).map(|k| (k.clone(), to)))
            .collect();
        let report = carry(kernel, m, STEP, Some(&add), true)?;
        counts.reconciled = report.carried as u64;
    }
    Ok(counts)
}
