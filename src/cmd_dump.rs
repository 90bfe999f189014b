//! `handover dump --root DIR MAP [--json]`: every entry of a map of the installed
//! set, decoded by the key and value layouts its snapshot keeps. Entries are read by
//! batch on a reader thread and printed as they come, so memory stays bounded by a
//! few batches whatever the map holds. Reads only, without the lock.

use std::io::Write as _;
use std::process::ExitCode;

use handover::decode::{EntryFormat, Style};
use handover::engine::migrate::read_map;
use handover::engine::{Error as EngineError, Inspector};

use crate::cli::DumpArgs;
use crate::set_args::{Failure, Place, engine_failure};

/// Entries per batch read.
const CHUNK: usize = 8192;
/// Output is written in pieces of about this many bytes.
const FLUSH_AT: usize = 1 << 20;

pub(crate) fn run(args: &DumpArgs) -> Result<ExitCode, String> {
    crate::set_args::finish("dump", body(args))
}

fn body(args: &DumpArgs) -> Result<ExitCode, Failure> {
    let place = Place::of(&args.set)?;
    let mut inspector =
        Inspector::open(&place.root, &place.state).map_err(|e| engine_failure(&e))?;
    let map = match inspector.map(&args.map) {
        Ok(m) => m,
        Err(e @ EngineError::NoSuch { .. }) => {
            let known = inspector
                .state()
                .ok()
                .flatten()
                .map(|s| {
                    s.maps
                        .keys()
                        .map(|k| handover::btf::printable(k).into_owned())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            return Err(format!(
                "{}; the set's maps: {}",
                crate::error_chain(&e),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )
            .into());
        }
        Err(e) => return Err(engine_failure(&e)),
    };
    let g = map.access.geometry();
    let json = args.set.json;
    let format = EntryFormat::new(
        &map.model,
        g.cpus,
        if json { Style::Json } else { Style::Text },
    );
    if format.value_len() != g.value_len || format.key_len() != g.key_size {
        return Err(format!(
            "map {}: the kernel reads {}-byte keys and {}-byte values, its spec {} and {}",
            handover::btf::printable(&args.map),
            g.key_size,
            g.value_len,
            format.key_len(),
            format.value_len()
        )
        .into());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf: Vec<u8> = Vec::with_capacity(FLUSH_AT + 4096);
    let mut write_error: Option<std::io::Error> = None;
    let mut entries = 0usize;
    if json {
        buf.push(b'[');
    }
    let (ks, vl) = (g.key_size, g.value_len);
    let walked = read_map(map.access.as_ref(), &args.map, CHUNK, |chunk| {
        for i in 0..chunk.len {
            let key = chunk.keys.get(i * ks..(i + 1) * ks).unwrap_or_default();
            let value = chunk.values.get(i * vl..(i + 1) * vl).unwrap_or_default();
            if json {
                buf.extend_from_slice(if entries == 0 { b"\n" } else { b",\n" });
            }
            format.write(key, value, &mut buf);
            if !json {
                buf.push(b'\n');
            }
            entries += 1;
        }
        if buf.len() >= FLUSH_AT {
            if let Err(e) = out.write_all(&buf) {
                write_error = Some(e);
                return Ok(false);
            }
            buf.clear();
        }
        Ok(true)
    });
    if write_error.is_none() {
        if json {
            buf.extend_from_slice(if entries == 0 { b"]\n" } else { b"\n]\n" });
        }
        if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
            write_error = Some(e);
        }
    }
    if let Some(e) = write_error {
        // A reader that went away ends the output quietly.
        crate::output::quiet_on_closed_pipe(Err(e))?;
        return Ok(ExitCode::SUCCESS);
    }
    walked.map_err(|e| crate::error_chain(&e))?;
    Ok(ExitCode::SUCCESS)
}
