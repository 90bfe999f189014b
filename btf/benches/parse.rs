//! Parse speed on the kernel's BTF: handover-btf against aya-obj and a byte-summing pass.
//!
//! `cargo bench -p handover-btf --bench parse [-- FILE]` prints the median of each of:
//! (a) `handover_btf::Btf::parse` (header, string framing, type-offset index),
//! (b) `aya_obj::btf::Btf::parse`, (c) one sequential pass summing every byte as a `u32` (the
//! 4-byte-word sum is printed too);
//! and the ratios between them. Built with the `bench` profile, which inherits the root
//! `[profile.release]` (opt-level 3, thin LTO, one codegen unit).

use std::hint::black_box;
use std::time::{Duration, Instant};

const DEFAULT_FILE: &str = "/sys/kernel/btf/vmlinux";

/// Median wall time of `runs` calls of `f`, after a few warm-up calls.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times.get(runs / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let file = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| DEFAULT_FILE.to_owned());
    let data = match std::fs::read(&file) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("cannot read {file}: {e}");
            std::process::exit(1);
        }
    };
    let profile = if cfg!(debug_assertions) {
        "debug (numbers are meaningless; use cargo bench)"
    } else {
        "bench = release: opt-level 3, thin LTO, codegen-units 1"
    };
    let ours_btf = handover_btf::Btf::parse(&data).expect("handover-btf parses the input");
    println!(
        "{file}: {} bytes, {} types; profile: {profile}",
        data.len(),
        ours_btf.type_count()
    );
    drop(ours_btf);
    // `cargo bench` passes `--bench`; under `cargo test` the binary only checks that both
    // parsers accept the input, as criterion's test mode does.
    if !std::env::args().any(|a| a == "--bench") {
        aya_obj::btf::Btf::parse(&data, Default::default()).expect("aya-obj parses the input");
        println!("test mode: both parsers accept the input; run `cargo bench` for timings");
        return;
    }

    let ours = median(101, || {
        let btf = handover_btf::Btf::parse(black_box(&data)).expect("parse");
        black_box(btf.type_count());
    });
    let aya = median(21, || {
        let btf =
            aya_obj::btf::Btf::parse(black_box(&data), Default::default()).expect("aya-obj parse");
        black_box(&btf);
    });
    let pass = median(101, || {
        let sum = black_box(&data)
            .iter()
            .map(|&b| u32::from(b))
            .fold(0u32, u32::wrapping_add);
        black_box(sum);
    });
    let words = median(101, || {
        let sum = black_box(&data)
            .as_chunks::<4>()
            .0
            .iter()
            .map(|&c| u32::from_le_bytes(c))
            .fold(0u32, u32::wrapping_add);
        black_box(sum);
    });

    println!(
        "(a) handover-btf parse + index        : {:8.3} ms",
        ms(ours)
    );
    println!("(b) aya-obj 0.3 Btf::parse            : {:8.3} ms", ms(aya));
    println!(
        "(c) one pass summing each byte as u32 : {:8.3} ms",
        ms(pass)
    );
    println!(
        "    (for reference: summing 4-byte words : {:8.3} ms)",
        ms(words)
    );
    println!(
        "aya-obj / handover-btf = {:.1}x (target >= 5x); handover-btf / pass = {:.2}x (target <= 3x)",
        ms(aya) / ms(ours),
        ms(ours) / ms(pass)
    );
    println!("handover-btf / word sum = {:.2}x", ms(ours) / ms(words));
}
