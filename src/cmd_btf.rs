//! `handover btf dump FILE [--base BASE_FILE]`: every type of a BTF blob or of an ELF
//! object's `.BTF`, in the text of `bpftool btf dump file FILE` (raw format). With a
//! base, FILE is split BTF on top of it (as `bpftool --base-btf BASE btf dump file FILE`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use handover::btf_file::btf_bytes;
use handover_btf::{Btf, DumpError, write_raw_dump};
use handover_loader::{MAX_OBJECT_SIZE, read_regular};

use crate::cli::BtfDumpArgs;
use crate::output::quiet_on_closed_pipe;

/// Prints every type of `args.file` (split on top of `args.base` if given) like
/// `bpftool btf dump file FILE [base BASE]`.
pub(crate) fn dump(args: &BtfDumpArgs) -> Result<ExitCode, String> {
    let file = args.file.as_path();
    let data = read(file)?;
    let base_data = args
        .base
        .as_deref()
        .map(|path| Ok::<_, String>((path, read(path)?)))
        .transpose()?;
    let btf = match &base_data {
        Some((base_path, base_data)) => {
            let base_btf = parse(base_path, base_data, None)?;
            parse(file, &data, Some(base_btf))?
        }
        None => parse(file, &data, None)?,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match write_raw_dump(&btf, &mut out) {
        Ok(()) => {}
        Err(DumpError::Io(e)) => quiet_on_closed_pipe(Err(e))?,
        Err(e) => return Err(format!("cannot dump BTF of {}: {e}", file.display())),
    }
    quiet_on_closed_pipe(out.flush())?;
    Ok(ExitCode::SUCCESS)
}

/// A BTF file is a raw blob or an object holding one: the object limit bounds both.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    read_regular(
        path,
        MAX_OBJECT_SIZE,
        "BTF and object files (MAX_OBJECT_SIZE)",
    )
    .map_err(|e| crate::error_chain(&e))
}

/// Parses the BTF of `data` (a raw blob or an ELF object), split on `base` if given.
fn parse<'a>(path: &Path, data: &'a [u8], base: Option<Btf<'a>>) -> Result<Btf<'a>, String> {
    let path = path.display();
    let bytes = btf_bytes(data).map_err(|e| format!("cannot find BTF in {path}: {e}"))?;
    match base {
        Some(base) => Btf::parse_split(bytes, base),
        None => Btf::parse(bytes),
    }
    .map_err(|e| format!("cannot parse BTF of {path}: {e}"))
}
