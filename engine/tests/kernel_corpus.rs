//! Every pair of the diff corpus (programs/diff/NAME.{old,new}.c, the list in
//! tests/common/corpus.rs) through the engine on the running kernel (root): the old
//! object installed in a private bpffs, every map the test can fill from user space
//! filled (100,000 entries where the capacity allows, else to capacity; arrays at
//! every index; per-CPU values different on each CPU), upgraded to the new object,
//! and every entry read back and checked field by field against the plan's field
//! mapping, decoded with the layouts of the old state and the new plan (copy, widen
//! with the old field's signedness, zero-fill, the new object's initial data, renames).
//!
//! A plan that loses entries must be refused without `allow_state_loss` and proceed
//! with it; a copy whose live entries do not fit its replacement (a shrink, a copy into
//! an LRU map near capacity) must be refused before anything changes, with the counts.
//! The test prints a table verdict → pairs → result.
#![allow(clippy::indexing_slicing, reason = "tests index values they built")]

#[path = "../../loader/tests/testenv/mod.rs"]
mod testenv;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use handover_engine::migrate::MapAccess;
use handover_engine::{
    ApplyOptions, Engine, Error, LayoutOption, LockWait, MapAction, ObjectSource, Options, Plan,
    Start,
};
use handover_plan::{FieldAction, FieldMapping, MapModel, MapType, Side, TypeLayout, read_bits};
use handover_sys::UpdateFlags;

const TEST: &str = "every_verdict_of_the_corpus_through_the_engine";
/// Entries filled into a map whose capacity allows it.
const FILL: u32 = 100_000;

/// The diff corpus's pair list, shared with the facade's tests; compiled in, so that the
/// binary runs where the sources are not (the kernel matrix's VMs).
fn pairs() -> Vec<String> {
    let text = include_str!("../../tests/common/corpus.rs");
    let start = text.find("pub const PAIRS").expect("PAIRS in corpus.rs");
    let list = &text[start..];
    let list = &list[..list.find("];").expect("end of PAIRS")];
    list.lines()
        .filter_map(|l| l.trim().strip_prefix("(\""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_owned)
        .collect()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn object(pair: &str, side: &str) -> ObjectSource {
    let path = root().join(format!("programs/build/diff/{pair}.{side}.o"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    // One name for both sides: global data maps are keyed by it.
    ObjectSource::new(format!("{pair}.o"), bytes)
}

/// The options a pair is installed and upgraded with: layout hints where the corpus
/// says the pair needs one (`size_only`'s `backends`, declared without BTF types).
fn options(pair: &str) -> Options {
    let mut o = Options::default();
    if pair == "size_only" {
        o.layouts.insert(
            "backends".into(),
            LayoutOption {
                key: None,
                value: Some("be_val".into()),
            },
        );
    }
    o
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    (0..n.div_ceil(8))
        .flat_map(|i| mix(seed.wrapping_mul(1_000_003).wrapping_add(i as u64)).to_le_bytes())
        .take(n)
        .collect()
}

type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every entry of a map, by key walk and lookup.
fn dump(m: &dyn MapAccess) -> Entries {
    let g = m.geometry();
    let mut out = Entries::new();
    let mut key = vec![0u8; g.key_size];
    let mut prev: Option<Vec<u8>> = None;
    while m.next_key(prev.as_deref(), &mut key).unwrap() {
        let mut v = vec![0u8; g.value_len];
        if m.lookup(&key, &mut v, UpdateFlags::ANY).unwrap() {
            out.insert(key.clone(), v);
        }
        prev = Some(key.clone());
    }
    out
}

/// Whether this test fills maps of this type from user space (the others hold
/// sockets, programs, maps or events, or have no entries).
fn fillable(t: MapType) -> bool {
    matches!(
        t,
        MapType::Hash
            | MapType::LruHash
            | MapType::PercpuHash
            | MapType::LruPercpuHash
            | MapType::Array
            | MapType::PercpuArray
    )
}

fn is_array(t: MapType) -> bool {
    matches!(t, MapType::Array | MapType::PercpuArray)
}

/// Fills a map; returns what it holds afterwards (`None`: not filled, and why).
fn fill(key: &str, m: &dyn MapAccess) -> Result<Entries, String> {
    let g = m.geometry();
    if !fillable(g.map_type) {
        return Err(format!(
            "{key}: {:?} is not filled by this test",
            g.map_type
        ));
    }
    let n = if is_array(g.map_type) {
        g.max_entries
    } else {
        let distinct = 1u64 << (8 * g.key_size.min(4)).min(32);
        let n = u64::from(FILL.min(g.max_entries)).min(distinct);
        u32::try_from(n).unwrap()
    };
    let stride = g.value_len / g.cpus;
    for i in 0..n {
        let mut k = bytes(u64::from(i) ^ 0x5555, g.key_size);
        let index = i.to_le_bytes();
        let len = k.len().min(4);
        k[..len].copy_from_slice(&index[..len]);
        let mut v = Vec::with_capacity(g.value_len);
        for cpu in 0..g.cpus {
            let mut slot = bytes(u64::from(i) << 8 | cpu as u64, g.value_size);
            slot.resize(stride, 0);
            v.extend(slot);
        }
        if let Err(e) = m.update(&k, &v, UpdateFlags::ANY) {
            return Err(format!("{key}: update refused: {e}"));
        }
    }
    Ok(dump(m))
}

/// Whether the integer (or enum) of `layout` at `bit`..`bit+bits` is signed.
fn signed_at(layout: &TypeLayout, bit: u64, bits: u64) -> Option<bool> {
    match layout {
        TypeLayout::Int { signed, .. } | TypeLayout::Enum { signed, .. } => {
            (bit == 0).then_some(*signed)
        }
        TypeLayout::Typedef { target, .. } => signed_at(target, bit, bits),
        TypeLayout::Struct { members, .. } | TypeLayout::Union { members, .. } => {
            members.iter().find_map(|m| {
                let size = if m.bitfield_size > 0 {
                    u64::from(m.bitfield_size)
                } else {
                    m.ty.size()? * 8
                };
                if bit >= m.bit_offset && bit + bits <= m.bit_offset + size {
                    signed_at(&m.ty, bit - m.bit_offset, bits)
                } else {
                    None
                }
            })
        }
        TypeLayout::Array { elem, .. } => {
            let size = elem.size()? * 8;
            (size > 0)
                .then(|| signed_at(elem, bit % size, bits))
                .flatten()
        }
        _ => None,
    }
}

/// One key or value (one CPU's slot) of the new map as the field mapping says it
/// must be, from the old one: the bits each field must hold, and which bits are set
/// by some field (the others, padding, are not checked).
struct Expected {
    bits: Vec<u8>,
    mask: Vec<u8>,
}

fn set_bits(buf: &mut [u8], bit: u64, bits: u64, v: u128) {
    handover_plan::write_bits(buf, bit, u32::try_from(bits).unwrap(), v).unwrap();
}

/// Builds the expected encoding, field by field; `Err` names a field the mapping
/// cannot place (a test failure).
fn expected(
    fields: &[&FieldMapping],
    old_layout: Option<&TypeLayout>,
    old: &[u8],
    new_size: usize,
    initial: Option<&[u8]>,
) -> Result<Expected, String> {
    let mut e = Expected {
        bits: vec![0; new_size],
        mask: vec![0; new_size],
    };
    for f in fields {
        let Some(new) = &f.new else { continue };
        // Fields wider than 128 bits (arrays, unions copied whole) in 64-bit pieces.
        let mut done = 0;
        while done < new.bits {
            let piece = (new.bits - done).min(64);
            let at = new.bit_offset + done;
            let value = match f.action {
                FieldAction::Drop => unreachable!("a dropped field has no new place"),
                FieldAction::ZeroFill => 0,
                FieldAction::Initial => {
                    let init =
                        initial.ok_or_else(|| format!("{}: initial without data", f.path))?;
                    read_bits(init, at, u32::try_from(piece).unwrap()).unwrap_or(0)
                }
                FieldAction::Copy | FieldAction::Widen => {
                    let o = f
                        .old
                        .as_ref()
                        .ok_or_else(|| format!("{}: no old place", f.path))?;
                    if done >= o.bits {
                        // The high part of a widened integer: sign or zeroes.
                        let sign_bit = read_bits(old, o.bit_offset + o.bits - 1, 1)
                            .ok_or_else(|| format!("{}: outside the old value", f.path))?;
                        let signed = old_layout
                            .and_then(|l| signed_at(l, o.bit_offset, o.bits))
                            .ok_or_else(|| format!("{}: no integer in the old layout", f.path))?;
                        if signed && sign_bit == 1 {
                            (1u128 << piece) - 1
                        } else {
                            0
                        }
                    } else {
                        let take = piece.min(o.bits - done);
                        let low = read_bits(old, o.bit_offset + done, u32::try_from(take).unwrap())
                            .ok_or_else(|| format!("{}: outside the old value", f.path))?;
                        if take < piece {
                            // The widening starts inside this piece.
                            let sign_bit = low >> (take - 1) & 1;
                            let signed = old_layout
                                .and_then(|l| signed_at(l, o.bit_offset, o.bits))
                                .unwrap_or(false);
                            if signed && sign_bit == 1 {
                                low | (((1u128 << piece) - 1) & !((1u128 << take) - 1))
                            } else {
                                low
                            }
                        } else {
                            low
                        }
                    }
                }
            };
            set_bits(&mut e.bits, at, piece, value);
            set_bits(&mut e.mask, at, piece, (1u128 << piece) - 1);
            done += piece;
        }
    }
    Ok(e)
}

fn matches(got: &[u8], e: &Expected) -> bool {
    got.len() == e.bits.len()
        && got
            .iter()
            .zip(&e.bits)
            .zip(&e.mask)
            .all(|((g, b), m)| g & m == b & m)
}

/// Checks a carried map: every old entry is in the new map at its converted key,
/// with every field as the mapping says, and the new map holds nothing else.
fn check_carried(
    key: &str,
    plan: &Plan,
    old_model: &MapModel,
    old: &Entries,
    new: &dyn MapAccess,
) -> Result<usize, String> {
    let m = plan.map(key).unwrap();
    let new_model = plan.models.iter().find(|x| x.name == key).unwrap();
    let g = new.geometry();
    let key_fields: Vec<&FieldMapping> = m.fields.iter().filter(|f| f.side == Side::Key).collect();
    let value_fields: Vec<&FieldMapping> =
        m.fields.iter().filter(|f| f.side == Side::Value).collect();
    let whole = |side: Side, size: u32| FieldMapping {
        side,
        path: String::new(),
        action: FieldAction::Copy,
        old: Some(handover_plan::FieldLoc {
            ty: "bytes".into(),
            bit_offset: 0,
            bits: u64::from(size) * 8,
        }),
        new: Some(handover_plan::FieldLoc {
            ty: "bytes".into(),
            bit_offset: 0,
            bits: u64::from(size) * 8,
        }),
        note: None,
        merge: None,
    };
    // Without a mapping (an unchanged layout) the bytes are carried as they are.
    let key_whole = whole(Side::Key, old_model.key_size);
    let value_whole = whole(Side::Value, old_model.value_size);
    let key_fields = if key_fields.is_empty() {
        vec![&key_whole]
    } else {
        key_fields
    };
    let value_fields = if value_fields.is_empty() {
        vec![&value_whole]
    } else {
        value_fields
    };
    let old_stride = old_model.value_size.next_multiple_of(8) as usize;
    let new_stride = g.value_len / g.cpus;
    let per_cpu = g.map_type.is_per_cpu();
    let mut seen = 0;
    for (k, v) in old {
        let ek = expected(&key_fields, old_model.key.as_ref(), k, g.key_size, None)?;
        let mut nk = ek.bits.clone();
        // Key bits no field sets (padding) are zero in a converted key.
        for (b, m) in nk.iter_mut().zip(&ek.mask) {
            *b &= m;
        }
        let mut got = vec![0u8; g.value_len];
        if !new.lookup(&nk, &mut got, UpdateFlags::ANY).unwrap() {
            return Err(format!("{key}: entry {} lost", hex(k)));
        }
        seen += 1;
        for cpu in 0..g.cpus {
            let (os, ns) = if per_cpu {
                (old_stride, new_stride)
            } else {
                (v.len(), got.len())
            };
            let old_slot = &v[cpu * os..cpu * os + old_model.value_size as usize];
            let new_slot = &got[cpu * ns..cpu * ns + g.value_size];
            let ev = expected(
                &value_fields,
                old_model.value.as_ref(),
                old_slot,
                g.value_size,
                new_model.initial_data.as_deref(),
            )?;
            if !matches(new_slot, &ev) {
                return Err(format!(
                    "{key}: entry {} (cpu {cpu}): {} carried as {}, the mapping says {} (mask {})",
                    hex(k),
                    hex(old_slot),
                    hex(new_slot),
                    hex(&ev.bits),
                    hex(&ev.mask)
                ));
            }
        }
    }
    let now = dump(new).len();
    if !is_array(g.map_type) && now != seen {
        return Err(format!(
            "{key}: the new map holds {now} entries, {seen} carried"
        ));
    }
    Ok(seen)
}

/// An error with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let _ = write!(s, ": {c}");
        cause = c.source();
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// The outcome of one pair: its verdicts and what the test found.
struct Outcome {
    verdicts: Vec<(String, String)>,
    /// What was found per map, or why the pair failed.
    result: Result<BTreeMap<String, String>, String>,
}

fn run_pair(fs: &Path, pair: &str) -> Outcome {
    let pins = fs.join(pair);
    std::fs::create_dir(&pins).unwrap();
    let state = testenv::TempDir::new(&format!("handover-corpus-{pair}"));
    let opts = options(pair);
    let mut verdicts = Vec::new();
    let result = (|| -> Result<BTreeMap<String, String>, String> {
        let mut e =
            Engine::open(&pins, state.path(), LockWait::Refuse).map_err(|e| e.to_string())?;
        let old = [object(pair, "old")];
        let new = [object(pair, "new")];
        let install = e.plan(&old, &opts).map_err(|e| format!("plan old: {e}"))?;
        if install.start != (Start::Fresh { stale: None }) {
            return Err(format!("install plan: {install}"));
        }
        e.apply(&install, &old, ApplyOptions::default())
            .map_err(|e| format!("install old: {}", chain(&e)))?;
        let installed = e.state().unwrap().unwrap();
        let mut filled: BTreeMap<String, Entries> = BTreeMap::new();
        let mut summary: BTreeMap<String, String> = BTreeMap::new();
        for key in installed.maps.keys() {
            let access = e.map_access(key).map_err(|e| e.to_string())?;
            match fill(key, access.as_ref()) {
                Ok(entries) => {
                    filled.insert(key.clone(), entries);
                }
                Err(why) => {
                    summary.insert(key.clone(), why);
                }
            }
        }
        let plan = e.plan(&new, &opts).map_err(|e| format!("plan new: {e}"))?;
        for m in &plan.maps {
            let v = m.verdict.map_or("-", |v| v.as_str());
            verdicts.push((m.key.clone(), v.to_owned()));
        }
        // A copy whose live entries do not fit its replacement is refused before
        // anything changes, with the counts, whatever the options; the old map is
        // then trimmed to what fits and the upgrade tried again.
        let mut refused: Vec<(String, String)> = Vec::new();
        let (plan, report) = loop {
            let plan = e.plan(&new, &opts).map_err(|e| format!("plan new: {e}"))?;
            let lost = plan.lost_maps();
            if !lost.is_empty() {
                match e.apply(&plan, &new, ApplyOptions::default()) {
                    Err(Error::StateLoss { maps }) if maps == lost => {}
                    other => {
                        return Err(format!(
                            "loses {lost:?} but applied without allow_state_loss: {other:?}"
                        ));
                    }
                }
            }
            let allow = ApplyOptions {
                allow_state_loss: !lost.is_empty(),
                ..ApplyOptions::default()
            };
            match e.apply(&plan, &new, allow) {
                Ok(report) => break (plan, report),
                Err(Error::DoesNotFit {
                    map,
                    live,
                    capacity,
                    why,
                }) => {
                    let old_key = plan
                        .map(&map)
                        .and_then(|m| m.from.clone())
                        .unwrap_or(map.clone());
                    let held = filled.get(&old_key).map_or(0, Entries::len);
                    if live != held || capacity as usize >= held {
                        return Err(format!(
                            "{map}: refused with {live} live > {capacity}, {held} filled"
                        ));
                    }
                    if e.journal().unwrap().is_some() {
                        return Err(format!("{map}: a refused upgrade left a journal"));
                    }
                    let now = e.plan(&new, &opts).map_err(|e| e.to_string())?;
                    if now != plan {
                        return Err(format!("{map}: a refused upgrade changed the live state"));
                    }
                    refused.push((
                        map.clone(),
                        format!("refused while {live} live > {capacity} ({why}), then"),
                    ));
                    let access = e.map_access(&old_key).map_err(|e| e.to_string())?;
                    let entries = filled.get_mut(&old_key).unwrap();
                    while entries.len() > capacity as usize {
                        let (k, _) = entries.pop_last().unwrap();
                        access.delete(&k).unwrap();
                    }
                }
                Err(other) => return Err(format!("upgrade: {}", chain(&other))),
            }
            if refused.len() > plan.maps.len() {
                return Err(format!("refused again and again: {refused:?}"));
            }
        };
        if !matches!(report.start, Start::Upgrade { .. }) {
            return Err(format!("not an upgrade: {:?}", report.start));
        }
        // Every map of the plan, read back.
        let mut say = |map: &str, what: String| {
            let before = refused
                .iter()
                .filter(|(m, _)| m == map)
                .map(|(_, s)| s.clone())
                .collect::<Vec<_>>()
                .join(" ");
            let entry = summary.entry(map.to_owned()).or_default();
            *entry = [before, what, std::mem::take(entry)]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
        };
        for m in &plan.maps {
            let old_key = m.from.clone().unwrap_or_else(|| m.key.clone());
            let old_entries = filled.get(&old_key);
            let old_model = installed.models.iter().find(|x| x.name == old_key);
            match m.action {
                MapAction::Reuse => {
                    if let Some(old_entries) = old_entries {
                        let access = e.map_access(&m.key).map_err(|e| e.to_string())?;
                        let now = dump(access.as_ref());
                        if &now != old_entries {
                            return Err(format!("{}: reused, but its entries changed", m.key));
                        }
                        say(&m.key, format!("kept {} entries", now.len()));
                    }
                }
                MapAction::Copy => {
                    let (Some(old_entries), Some(old_model)) = (old_entries, old_model) else {
                        say(&m.key, "copied".to_owned());
                        continue;
                    };
                    let access = e.map_access(&m.key).map_err(|e| e.to_string())?;
                    let n = check_carried(&m.key, &plan, old_model, old_entries, access.as_ref())?;
                    let copied = report.maps.get(&m.key).map_or(0, |c| c.copied);
                    if copied != n as u64 {
                        return Err(format!("{}: report says {copied} copied, {n} found", m.key));
                    }
                    say(
                        &m.key,
                        format!("{n} entries converted, every field as mapped"),
                    );
                }
                MapAction::Create => {
                    let held = old_entries.map_or(0, Entries::len);
                    let array = old_model.is_some_and(|o| is_array(o.map_type));
                    if held > 0 && !m.loses_entries && !array {
                        return Err(format!(
                            "{}: recreated over {held} entries, loss not stated",
                            m.key
                        ));
                    }
                    if held > 0 && m.loses_entries {
                        say(
                            &m.key,
                            format!(
                                "{held} entries lost: refused without allow_state_loss, done with it"
                            ),
                        );
                    }
                }
                MapAction::Remove => {
                    if e.map_access(&m.key).is_ok() {
                        return Err(format!("{}: removed, but still a map of the set", m.key));
                    }
                }
            }
        }
        Ok(summary)
    })();
    Outcome { verdicts, result }
}

#[test]
fn every_verdict_of_the_corpus_through_the_engine() {
    if !testenv::privileged(TEST) {
        return;
    }
    let fs = testenv::Bpffs::mount();
    let mut table: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut failures = Vec::new();
    for pair in pairs() {
        let o = run_pair(fs.path(), &pair);
        // A pair fails only where libbpf loads both its objects: an object this
        // kernel refuses to libbpf too is what the kernel lacks, not the engine.
        let mut refused = None;
        if let Err(why) = &o.result {
            refused = ["old", "new"].iter().find_map(|side| {
                let path = root().join(format!("programs/build/diff/{pair}.{side}.o"));
                testenv::bpftool_loads(&path, fs.path()).err().map(|e| {
                    format!("what {pair}.{side}.o needs (libbpf's load of it is refused too: {e})")
                })
            });
            match &refused {
                Some(what) => {
                    testenv::kernel_lacks(&format!("{TEST}: pair {pair}"), what);
                }
                None => failures.push(format!("{pair}: {why}")),
            }
        }
        for (map, verdict) in &o.verdicts {
            let result = match (&o.result, &refused) {
                (Ok(per_map), _) => per_map.get(map).cloned().unwrap_or_default(),
                (Err(e), Some(_)) => format!("NOT RUN, the kernel refuses the pair: {e}"),
                (Err(e), None) => format!("FAILED: {e}"),
            };
            table
                .entry(verdict.clone())
                .or_default()
                .push((format!("{pair}/{map}"), result));
        }
    }
    let mut out = format!("\n{:<10} {:<38} result\n", "verdict", "pair/map");
    for (verdict, rows) in &table {
        for (name, r) in rows {
            let _ = writeln!(out, "{verdict:<10} {name:<38} {r}");
        }
    }
    eprintln!("{out}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
