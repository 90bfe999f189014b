//! Reads arbitrary bytes as a snapshot file. Whatever decodes must encode and decode
//! back to the same snapshot, and must go through the whole comparison (a diff with
//! itself, field mappings and conversions of every key and value) without a panic;
//! the diff of a snapshot with itself never loses an entry.
//!
//! The input is tried twice: as a whole file, and as the body of a file sealed with
//! the right checksum, so that the fuzzer reaches the body parser and everything after
//! it rather than stopping at the checksum.

#![no_main]

use handover_plan::{
    KernelEnv, Policy, Side, Snapshot, convert, decode, diff_objects, encode, map_layout,
    sha256_hex,
};
use libfuzzer_sys::fuzz_target;

const ENV: KernelEnv = KernelEnv {
    page_size: 4096,
    possible_cpus: 4,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = decode(data) {
        check(&snapshot);
    }
    if let Ok(body) = std::str::from_utf8(data) {
        let mut sealed_input = b"handover-snapshot/1\n".to_vec();
        sealed_input.extend_from_slice(body.as_bytes());
        let sealed = format!(
            "{{\"format\":\"handover-snapshot\",\"format_version\":1,\"checksum\":\"sha256:{}\",\"snapshot\":{body}}}",
            sha256_hex(&sealed_input)
        );
        if let Ok(snapshot) = decode(sealed.as_bytes()) {
            check(&snapshot);
        }
    }
});

fn check(snapshot: &Snapshot) {
    let again = decode(&encode(snapshot)).expect("an encoded snapshot decodes");
    assert_eq!(&again, snapshot);
    for policy in [Policy::Strict, Policy::Migrate] {
        let report = diff_objects(&snapshot.objects, &snapshot.objects, policy, &ENV);
        assert!(
            !report.loses_entries(),
            "a spec compared with itself loses nothing"
        );
    }
    for object in &snapshot.objects {
        for map in &object.maps {
            for (layout, size, side) in [
                (&map.key, map.key_size, Side::Key),
                (&map.value, map.value_size, Side::Value),
            ] {
                let Some(layout) = layout else { continue };
                let mapping = map_layout(layout, layout, size, size, side);
                if let Ok(buf) = usize::try_from(size) {
                    if buf <= 1 << 16 {
                        let _ = convert(&mapping.plan, &vec![0xa5; buf]);
                    }
                }
            }
        }
    }
}
