//! Snapshot files: round trip, atomic replacement, and one row per way a file can be
//! damaged.

#![allow(
    clippy::indexing_slicing,
    reason = "test code: an out-of-range index is a failed test"
)]

mod common;

use common::*;
use handover::{
    FormatError, ObjectModel, Snapshot, SnapshotError, decode, encode, read_snapshot,
    write_snapshot,
};

fn sample() -> Snapshot {
    let value = cstruct(
        Some("stats"),
        vec![
            ("packets", u64_()),
            ("state", enum_("st", &[("A", 0), ("B", 7)])),
        ],
    );
    let mut inner = map("inner", "array", u32_(), u64_(), 4);
    inner.pinning = handover::Pinning::None;
    let mut outer = map("outer", "hash_of_maps", u32_(), u32_(), 8);
    outer.value = None;
    outer.inner = Some(Box::new(inner));
    Snapshot::new(vec![ObjectModel {
        name: "prog.o".into(),
        sha256: handover::sha256_hex(b"object bytes"),
        endian: handover::Endian::Big,
        maps: vec![
            map(
                "conns",
                "lru_hash",
                typedef("key_t", array(u8_(), 16)),
                value,
                1024,
            ),
            outer,
        ],
    }])
}

#[test]
fn round_trip_through_a_file() {
    let dir = tempdir();
    let path = dir.join("state.json");
    write_snapshot(&path, &sample()).unwrap();
    assert_eq!(read_snapshot(&path).unwrap(), sample());
    // Replacing keeps exactly one file in the directory: no temporary left behind.
    let mut other = sample();
    other.objects[0].maps.pop();
    write_snapshot(&path, &other).unwrap();
    assert_eq!(read_snapshot(&path).unwrap(), other);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state.json"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_is_self_describing() {
    let text = String::from_utf8(encode(&sample())).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], "handover-snapshot");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["snapshot"]["tool_version"], env!("CARGO_PKG_VERSION"));
    let conns = &v["snapshot"]["objects"][0]["maps"][0];
    assert_eq!(conns["map_type"], "lru_hash");
    assert_eq!(conns["key"]["kind"], "typedef");
    assert_eq!(conns["value"]["members"][1]["bit_offset"], 64);
    assert_eq!(conns["value"]["members"][1]["ty"]["values"][1]["value"], 7);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "handover-snapshot-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Which error a damaged file must give.
type Expect = fn(&FormatError) -> bool;

#[test]
fn corrupted_snapshots() {
    let good = encode(&sample());
    let text = String::from_utf8(good.clone()).unwrap();
    let flip_in_body = {
        let mut b = good.clone();
        let at = text.find("\"packets\"").unwrap() + 1;
        b[at] ^= 0x01; // "packets" -> "qackets": still valid JSON
        b
    };
    let mut rows: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("empty file", Vec::new(), |e| {
            matches!(e, FormatError::Truncated { .. })
        }),
        (
            "truncated in the middle",
            good[..good.len() / 2].to_vec(),
            |e| matches!(e, FormatError::Truncated { .. }),
        ),
        (
            "truncated before the last brace",
            good[..good.len() - 2].to_vec(),
            |e| matches!(e, FormatError::Truncated { .. }),
        ),
        ("one byte changed in the body", flip_in_body, |e| {
            matches!(e, FormatError::ChecksumMismatch { .. })
        }),
        (
            "format version lowered",
            text.replacen("\"format_version\": 1", "\"format_version\": 0", 1)
                .into_bytes(),
            |e| matches!(e, FormatError::Malformed { .. }),
        ),
        (
            "newer format version",
            text.replacen("\"format_version\": 1", "\"format_version\": 2", 1)
                .into_bytes(),
            |e| {
                matches!(
                    e,
                    FormatError::NewerFormat {
                        found: 2,
                        supported: 1
                    }
                )
            },
        ),
        (
            "other format",
            text.replacen("handover-snapshot", "something-else", 1)
                .into_bytes(),
            |e| matches!(e, FormatError::NotASnapshot { .. }),
        ),
        ("not JSON", b"\x7fELF\x02\x01".to_vec(), |e| {
            matches!(e, FormatError::Malformed { .. })
        }),
        ("JSON but not an object", b"[1, 2]".to_vec(), |e| {
            matches!(e, FormatError::Malformed { .. })
        }),
        (
            "checksum field removed",
            text.lines()
                .filter(|l| !l.contains("\"checksum\""))
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes(),
            |e| matches!(e, FormatError::Malformed { .. }),
        ),
        (
            "checksum altered",
            text.replacen("sha256:", "sha256:0", 1).into_bytes(),
            |e| matches!(e, FormatError::ChecksumMismatch { .. }),
        ),
    ];
    let mut duplicated = sample();
    let again = duplicated.objects[0].maps[0].clone();
    duplicated.objects[0].maps.push(again);
    rows.push((
        "a map name twice in one object (checksum valid)",
        encode(&duplicated),
        |e| matches!(e, FormatError::Duplicate { .. }),
    ));
    for (what, bytes, expected) in rows {
        match decode(&bytes) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => assert!(expected(&e), "{what}: got {e:?} ({e})"),
        }
    }
}

#[test]
fn errors_name_the_file() {
    let dir = tempdir();
    let path = dir.join("bad.json");
    std::fs::write(
        &path,
        b"{\"format\": \"handover-snapshot\", \"format_version\": 9}",
    )
    .unwrap();
    let e = read_snapshot(&path).unwrap_err();
    assert!(matches!(&e, SnapshotError::Format { path: p, .. } if *p == path));
    let msg = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        msg.contains("bad.json") && msg.contains("version 9"),
        "{msg}"
    );
    let missing = read_snapshot(&dir.join("missing.json")).unwrap_err();
    assert!(matches!(missing, SnapshotError::Io { .. }));
    let unwritable = write_snapshot(&dir.join("no/such/dir/s.json"), &sample()).unwrap_err();
    assert!(
        matches!(&unwritable, SnapshotError::Io { path, .. } if path.ends_with("no/such/dir/.s.json.tmp.".to_owned() + &std::process::id().to_string())),
        "{unwritable:?}"
    );
    // A temporary file left by a dead process with the same pid is replaced.
    let stale = dir.join(format!(".state.json.tmp.{}", std::process::id()));
    std::fs::write(&stale, b"half a snapshot").unwrap();
    write_snapshot(&dir.join("state.json"), &sample()).unwrap();
    assert!(!stale.exists());
    assert_eq!(read_snapshot(&dir.join("state.json")).unwrap(), sample());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_snapshot_with_two_objects_of_one_name_is_not_written() {
    // `handover snapshot a/prog.o b/prog.o` names both objects `prog.o`; the reader
    // refuses that, so the writer must not leave such a file behind.
    let dir = tempdir();
    let path = dir.join("twice.json");
    let mut twice = sample();
    twice.objects.push(twice.objects[0].clone());
    let err = write_snapshot(&path, &twice).unwrap_err();
    let exists = path.exists();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        matches!(
            &err,
            SnapshotError::Unreadable {
                source: FormatError::Duplicate { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("twice.json"), "{err}");
    assert!(!exists, "nothing written");
}
