//! `handover btf dump FILE [--base BASE_FILE]`: every type of a BTF blob or of an ELF
//! object's `.BTF`, in the text of `bpftool btf dump file FILE` (raw format). With a
//! base, FILE is split BTF on top of it (as `bpftool --base-btf BASE btf dump file FILE`).

use std::io::Write;
use std::process::ExitCode;

use handover::btf_file::btf_bytes;
use handover_btf::{Btf, DumpError, write_raw_dump};

const USAGE: &str = "usage: handover btf dump FILE [--base BASE_FILE]
  FILE: a raw BTF blob (/sys/kernel/btf/vmlinux) or a BPF object with a .BTF section";

/// Runs the subcommand with the arguments after `btf`.
pub fn run(args: &[&str]) -> ExitCode {
    match args {
        ["-h" | "--help"] | ["dump", "-h" | "--help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["dump", rest @ ..] => match parse_btf_dump(rest) {
            Some((file, base)) => crate::finish("btf dump", btf_dump(file, base)),
            None => crate::usage(USAGE),
        },
        _ => crate::usage(USAGE),
    }
}

/// `FILE [--base BASE_FILE]`, in either order.
fn parse_btf_dump<'a>(args: &[&'a str]) -> Option<(&'a str, Option<&'a str>)> {
    let (mut file, mut base) = (None, None);
    let mut iter = args.iter();
    while let Some(&arg) = iter.next() {
        match arg {
            "--base" if base.is_none() => base = Some(*iter.next()?),
            _ if arg.starts_with('-') || file.is_some() => return None,
            _ => file = Some(arg),
        }
    }
    Some((file?, base))
}

/// Prints every type of `file` (split on top of `base` if given) like
/// `bpftool btf dump file FILE [base BASE]`.
fn btf_dump(file: &str, base: Option<&str>) -> Result<(), String> {
    let data = read(file)?;
    let base_data = base
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
    write_raw_dump(&btf, &mut out).map_err(|e| match e {
        DumpError::Btf(e) => format!("cannot dump BTF of {file}: {e}"),
        DumpError::Io(e) => format!("cannot write the dump: {e}"),
        e => format!("cannot dump BTF of {file}: {e}"),
    })?;
    out.flush()
        .map_err(|e| format!("cannot write the dump: {e}"))
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Parses the BTF of `data` (a raw blob or an ELF object), split on `base` if given.
fn parse<'a>(path: &str, data: &'a [u8], base: Option<Btf<'a>>) -> Result<Btf<'a>, String> {
    let bytes = btf_bytes(data).map_err(|e| format!("cannot find BTF in {path}: {e}"))?;
    match base {
        Some(base) => Btf::parse_split(bytes, base),
        None => Btf::parse(bytes),
    }
    .map_err(|e| format!("cannot parse BTF of {path}: {e}"))
}
