//! Benchmarks of the data path, each against a baseline measured in the same run:
//!
//! 1. migrating 1,000,000 entries (16-byte keys, 48-byte values, one field widened and
//!    the fields reordered) with `copy_map`, against a plain sequential batch copy
//!    without conversion (one thread: a batch read, then its batch write, through one
//!    buffer); target at least 1.5x the baseline's entries/s, and peak RSS (VmHWM) at
//!    most 64 MiB;
//!    A two-thread batch copy with neither conversion nor base is timed too, as the
//!    reference of what overlapping reads and writes alone gains here;
//! 2. the reconcile of 1,000,000 entries with 1% changed by the old side.
//!
//! Run: `cargo bench -p handover-engine --bench migrate` (as root).

#![expect(
    clippy::cast_possible_truncation,
    reason = "benchmark sizes and indexes are small constants"
)]

use std::process::ExitCode;
use std::time::Instant;

use handover_engine::migrate::{
    Conversion, CopyOptions, MapAccess, ReconcileOptions, UserPatcher, ValueFields, copy_map,
    reconcile,
};
use handover_plan::{Member, Side, TypeLayout, map_layout};
use handover_sys::{Bpf, Map, MapCreate, MapEntries, MapType, UpdateFlags};

const N: u32 = 1_000_000;
/// Rounds of the migration against the plain copy.
const ROUNDS: usize = 5;
const KEY: usize = 16;
const VALUE: usize = 48;

fn u(bits: u32) -> TypeLayout {
    TypeLayout::Int {
        name: format!("u{bits}"),
        size: bits / 8,
        signed: false,
        bits,
        bit_offset: 0,
    }
}

fn st(fields: &[(&str, u32, u64)], size: u32) -> TypeLayout {
    TypeLayout::Struct {
        name: Some("v".into()),
        size,
        members: fields
            .iter()
            .map(|(n, bits, off)| Member {
                name: Some((*n).into()),
                bit_offset: off * 8,
                bitfield_size: 0,
                ty: u(*bits),
                renamed_from: None,
                merge: None,
            })
            .collect(),
    }
}

/// Old: `{ u32 a; u32 b; u64 c; u64 d[4] as d0..d3 }`, 48 bytes; new: `c` first,
/// `a` widened to u64, `b`, then `d0..d3`: 48 bytes.
fn layouts() -> (TypeLayout, TypeLayout) {
    let old = st(
        &[
            ("a", 32, 0),
            ("b", 32, 4),
            ("c", 64, 8),
            ("d0", 64, 16),
            ("d1", 64, 24),
            ("d2", 64, 32),
            ("d3", 64, 40),
        ],
        48,
    );
    let new = st(
        &[
            ("c", 64, 0),
            ("a", 64, 8),
            ("d0", 64, 16),
            ("d1", 64, 24),
            ("d2", 64, 32),
            ("b", 32, 40),
            ("pad", 32, 44),
        ],
        48,
    );
    (old, new)
}

fn fresh(bpf: &Bpf, name: &str) -> Result<Map, handover_sys::Error> {
    let mut spec = MapCreate::new(MapType::Hash, KEY as u32, VALUE as u32, N);
    spec.name = name;
    Map::create(bpf, &spec)
}

fn key(i: u32) -> [u8; KEY] {
    let mut k = [0u8; KEY];
    k[..4].copy_from_slice(&i.to_ne_bytes());
    k[8..12].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_ne_bytes());
    k
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn fill(src: &Map) -> Result<(), handover_sys::Error> {
    // In slices, so that the filling does not raise the peak RSS measured later.
    for start in (0..N).step_by(100_000) {
        let mut entries = MapEntries::new(KEY, VALUE);
        for i in start..(start + 100_000).min(N) {
            let mut v = [0u8; VALUE];
            for (j, c) in v.chunks_exact_mut(4).enumerate() {
                c.copy_from_slice(&(i ^ j as u32).to_ne_bytes());
            }
            entries.push(&key(i), &v);
        }
        src.update_all(&entries, UpdateFlags::ANY)?;
    }
    Ok(())
}

/// The baseline: a plain sequential copy by batches on one thread, each batch read
/// then written through one reused buffer, nothing converted and nothing recorded.
/// Returns the entries written.
fn sequential_copy(src: &Map, dst: &Map) -> Result<usize, Box<dyn std::error::Error>> {
    use handover_engine::migrate::Cursor;
    const CH: usize = 16 * 1024;
    let g = MapAccess::geometry(src);
    let (mut k, mut v) = (vec![0u8; CH * KEY], vec![0u8; CH * VALUE]);
    let mut cursor = Cursor::start(&g);
    let mut n = 0;
    while !cursor.done() {
        let got = src.lookup_batch(&mut cursor, &mut k, &mut v, UpdateFlags::ANY)?;
        let (keys, values) = (k.get(..got * KEY), v.get(..got * VALUE));
        let (Some(keys), Some(values)) = (keys, values) else {
            return Err("a batch returned more entries than its buffer holds".into());
        };
        dst.update_batch(keys, values, UpdateFlags::ANY)
            .map_err(|p| p.error.to_string())?;
        n += got;
    }
    Ok(n)
}

/// The reference of what overlapping alone gains on this machine: one thread reads
/// the old map by batches while another writes the new one, nothing converted and
/// nothing recorded. Returns the entries written.
fn two_thread_copy(src: &Map, dst: &Map) -> Result<usize, Box<dyn std::error::Error>> {
    use handover_engine::migrate::Cursor;
    const CH: usize = 16 * 1024;
    let g = MapAccess::geometry(src);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<u8>)>(4);
    let (ftx, frx) = std::sync::mpsc::channel::<(Vec<u8>, Vec<u8>)>();
    for _ in 0..5 {
        ftx.send((vec![0; CH * KEY], vec![0; CH * VALUE]))?;
    }
    std::thread::scope(|s| {
        let w = s.spawn(move || {
            let mut n = 0;
            for (k, v) in rx {
                dst.update_batch(&k, &v, UpdateFlags::ANY)
                    .map_err(|p| p.error.to_string())?;
                n += k.len() / KEY;
                let _ = ftx.send((k, v));
            }
            Ok::<usize, String>(n)
        });
        let mut cursor = Cursor::start(&g);
        while !cursor.done() {
            let (mut k, mut v) = frx.recv()?;
            k.resize(CH * KEY, 0);
            v.resize(CH * VALUE, 0);
            let n = src.lookup_batch(&mut cursor, &mut k, &mut v, UpdateFlags::ANY)?;
            k.truncate(n * KEY);
            v.truncate(n * VALUE);
            tx.send((k, v))?;
        }
        drop(tx);
        Ok(w.join().map_err(|_| "writer panicked")??)
    })
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let bpf = Bpf::kernel();
    let src = fresh(&bpf, "bench_src")?;
    fill(&src)?;
    let state = std::env::temp_dir().join(format!("handover-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    let (old_l, new_l) = layouts();
    let conv = Conversion {
        key: handover_plan::ConversionPlan::identity(KEY as u32),
        value: map_layout(&old_l, &new_l, 48, 48, Side::Value).plan,
        cpus: 1,
        per_cpu: false,
    };

    // Rounds of (migration, plain copy), each pair back to back so that the load of
    // a shared machine weighs on both alike; the migration first, so that VmHWM
    // after the first round is its peak, not the baseline's.
    let rate = |s: f64| f64::from(N) / s;
    let hwm_before = vm_hwm_kib();
    let mut ratios = Vec::new();
    let mut last = None;
    for round in 1..=ROUNDS {
        let dst = fresh(&bpf, "bench_mig")?;
        // An upgrade removes each map's base when it commits: so does each round,
        // outside the timed part.
        drop(last.take());
        let _ = std::fs::remove_file(handover_engine::migrate::base_path(&state, "bench"));
        let t = Instant::now();
        let (base, report) = copy_map("bench", &src, &dst, &conv, &state, &CopyOptions::default())?;
        let mig_s = t.elapsed().as_secs_f64();
        assert_eq!(report.copied, N as usize);
        if round == 1 {
            let hwm = vm_hwm_kib();
            println!(
                "peak RSS (VmHWM) after the migration: {} KiB = {:.1} MiB (before: {} KiB; target <= 64 MiB)",
                hwm,
                hwm as f64 / 1024.0,
                hwm_before
            );
        }

        let dst_plain = fresh(&bpf, "bench_plain")?;
        let t = Instant::now();
        let copied = sequential_copy(&src, &dst_plain)?;
        let plain_s = t.elapsed().as_secs_f64();
        assert_eq!(copied, N as usize);
        drop(dst_plain);

        let dst_pipe = fresh(&bpf, "bench_pipe")?;
        let t = Instant::now();
        let piped = two_thread_copy(&src, &dst_pipe)?;
        let pipe_s = t.elapsed().as_secs_f64();
        assert_eq!(piped, N as usize);
        drop(dst_pipe);
        println!(
            "round {round}: reference, a two-thread batch copy without conversion or base {:.3} s = {:.2}x the plain copy",
            pipe_s,
            plain_s / pipe_s
        );

        let st = report.stages;
        let busy = st.read + st.convert + st.write;
        println!(
            "round {round}: stages busy: read {:.3} s ({} entries by the read program), convert and base {:.3} s, write {:.3} s (busiest writer; \
             {} entries by the write program), base finish {:.3} s; overlap (busy / wall) {:.2}",
            st.read.as_secs_f64(),
            report.read_by_program,
            st.convert.as_secs_f64(),
            st.write.as_secs_f64(),
            report.written_by_program,
            st.finish.as_secs_f64(),
            busy.as_secs_f64() / mig_s
        );
        let ratio = rate(mig_s) / rate(plain_s);
        ratios.push(ratio);
        println!(
            "round {round}: migration with conversion {:.3} s = {:.0} entries/s (base file and fsync included); \
             plain sequential batch copy {:.3} s = {:.0} entries/s; ratio {:.2}x",
            mig_s,
            rate(mig_s),
            plain_s,
            rate(plain_s),
            ratio
        );
        last = Some((dst, base));
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio, median of {ROUNDS} rounds: {:.2}x (target >= 1.5x)",
        ratios.get(ratios.len() / 2).copied().unwrap_or(0.0)
    );
    let Some((dst, base)) = last else {
        return Err("no round ran".into());
    };

    // Reconcile: 1% of the entries changed by the old side.
    let mut v = [0u8; VALUE];
    for i in (0..N).step_by(100) {
        src.lookup(&key(i), &mut v, UpdateFlags::ANY)?;
        v[0] ^= 0xff;
        src.update(&key(i), &v, UpdateFlags::ANY)?;
    }
    let fields = ValueFields::opaque(VALUE);
    let patcher = UserPatcher::new(&dst, "bench", fields.clone(), false);
    let t = Instant::now();
    let r = reconcile(
        "bench",
        &src,
        &dst,
        &conv,
        &base,
        &fields,
        &patcher,
        &ReconcileOptions::default(),
    )?;
    let rec_s = t.elapsed().as_secs_f64();
    assert_eq!(r.changed, (N / 100) as usize);
    println!(
        "reconcile of {N} entries, 1% changed: {:.3} s, {:.0} entries/s ({} changed)",
        rec_s,
        rate(rec_s),
        r.changed
    );
    // The baseline of the same run: one plain batch read of the old map.
    let t = Instant::now();
    let n = src.dump()?.len();
    let dump_s = t.elapsed().as_secs_f64();
    println!(
        "baseline, one batch read of the map: {:.3} s ({n} entries); reconcile/read = {:.2}",
        dump_s,
        rec_s / dump_s
    );
    let _ = MapAccess::geometry(&src);
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn main() -> ExitCode {
    // Under CI a missing privilege is a failure, not a skip.
    if std::env::var_os("CI").is_none() && !is_root() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: migrate bench (needs root, CAP_BPF; NOTHING WAS MEASURED) !!!!!!!!\n"
        );
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
