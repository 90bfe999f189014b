//! Copies a 1,000,000-entry hash map (16-byte keys, 48-byte values) into a second
//! map element by element and by batches, and prints entries/s for each and their
//! ratio, all measured in this one run.
//!
//! Run: `cargo bench -p handover-sys --bench map_copy` (as root).

use std::process::ExitCode;
use std::time::Instant;

use handover_sys::{Bpf, Map, MapCreate, MapEntries, MapType, UpdateFlags};

const ENTRIES: u32 = 1_000_000;
const KEY: usize = 16;
const VALUE: usize = 48;

fn fresh(bpf: &Bpf, name: &str) -> Result<Map, handover_sys::Error> {
    let mut spec = MapCreate::new(MapType::Hash, 16, 48, ENTRIES);
    spec.name = name;
    Map::create(bpf, &spec)
}

fn key(i: u32) -> [u8; KEY] {
    let mut k = [0u8; KEY];
    k[..4].copy_from_slice(&i.to_ne_bytes());
    k[8..12].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_ne_bytes());
    k
}

fn copy_per_element(src: &Map, dst: &Map) -> Result<usize, handover_sys::Error> {
    let mut prev: Option<[u8; KEY]> = None;
    let mut next = [0u8; KEY];
    let mut value = [0u8; VALUE];
    let mut n = 0;
    while src.next_key(prev.as_ref().map(|k| &k[..]), &mut next)? {
        if src.lookup(&next, &mut value, UpdateFlags::ANY)? {
            dst.update(&next, &value, UpdateFlags::ANY)?;
            n += 1;
        }
        prev = Some(next);
    }
    Ok(n)
}

fn copy_batched(src: &Map, dst: &Map) -> Result<usize, handover_sys::Error> {
    let entries = src.dump()?;
    dst.update_all(&entries, UpdateFlags::ANY)?;
    Ok(entries.len())
}

fn run() -> Result<(), handover_sys::Error> {
    let bpf = Bpf::kernel();
    let src = fresh(&bpf, "bench_src")?;
    let mut entries = MapEntries::new(KEY, VALUE);
    for i in 0..ENTRIES {
        let mut v = [0u8; VALUE];
        for (j, chunk) in v.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&(i ^ u32::try_from(j).unwrap_or(0)).to_ne_bytes());
        }
        entries.push(&key(i), &v);
    }
    src.update_all(&entries, UpdateFlags::ANY)?;

    let dst_elem = fresh(&bpf, "bench_elem")?;
    let t = Instant::now();
    let n_elem = copy_per_element(&src, &dst_elem)?;
    let elem_s = t.elapsed().as_secs_f64();

    let dst_batch = fresh(&bpf, "bench_batch")?;
    let t = Instant::now();
    let n_batch = copy_batched(&src, &dst_batch)?;
    let batch_s = t.elapsed().as_secs_f64();
    let via = dst_batch.batch_support();

    // Both copies must be complete and equal to the source.
    for (name, dst, n) in [
        ("per element", &dst_elem, n_elem),
        ("batched", &dst_batch, n_batch),
    ] {
        assert_eq!(n, ENTRIES as usize, "{name} copied {n} entries");
        let mut v = [0u8; VALUE];
        for i in (0..ENTRIES).step_by(997) {
            assert!(
                dst.lookup(&key(i), &mut v, UpdateFlags::ANY)?,
                "{name}: key {i} missing"
            );
            assert_eq!(v[..4], (i).to_ne_bytes(), "{name}: value of key {i}");
        }
    }

    let elem_rate = f64::from(ENTRIES) / elem_s;
    let batch_rate = f64::from(ENTRIES) / batch_s;
    println!("map copy of {ENTRIES} hash entries (key {KEY} B, value {VALUE} B)");
    println!("  per element: {elem_s:8.3} s  {elem_rate:12.0} entries/s");
    println!("  batched:     {batch_s:8.3} s  {batch_rate:12.0} entries/s  ({via:?})");
    println!("  batched / per element: {:.2}x", batch_rate / elem_rate);
    Ok(())
}

fn main() -> ExitCode {
    // The effective uid, from /proc/self/status (second field of `Uid:`).
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("!!!!!!!! map_copy needs root to create maps: NOTHING WAS MEASURED !!!!!!!!");
        return ExitCode::from(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("map_copy: {e}");
            ExitCode::FAILURE
        }
    }
}
