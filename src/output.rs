//! Writing to standard output and standard error.
//!
//! A reader that goes away (`handover inspect X --json | head -c 100`) closes the
//! pipe: the rest of the output is not wanted, so writing stops without a message and
//! the command exits with the status it has decided, as `cat` or `grep` appear to.

use std::io::{ErrorKind, Write};

/// Writes `text` to standard output; a closed pipe ends the output quietly.
///
/// # Errors
/// Any other write failure (a full disk behind a redirection), in words.
pub(crate) fn print(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    quiet_on_closed_pipe(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

/// Maps a write result: a closed pipe is the end of the output, not a failure.
pub(crate) fn quiet_on_closed_pipe(r: std::io::Result<()>) -> Result<(), String> {
    match r {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(format!("cannot write the output: {e}")),
        _ => Ok(()),
    }
}

/// Writes one line to standard error; a closed standard error loses it silently
/// rather than ending the command with a panic.
pub(crate) fn error(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}
