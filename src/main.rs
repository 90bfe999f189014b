//! The `handover` command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("usage: handover <command>");
    ExitCode::from(2)
}
