//! The `handover` command line.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error; `diff` exits 3 when map entries
//! would be lost.

mod cmd_btf;
mod cmd_diff;
mod cmd_inspect;
mod cmd_snapshot;
mod inspect_render;
#[cfg(test)]
mod render_tests;
mod report;

use std::process::ExitCode;

const USAGE: &str = "usage: handover <command> [args]
  handover btf dump FILE [--base BASE_FILE]    print BTF like `bpftool btf dump file`
  handover inspect OBJ [--json] [--program-type SECTION=TYPE[:ATTACH]]
                                               maps and programs of a BPF object
  handover snapshot OBJ... -o FILE             write the map specs of objects to a snapshot
  handover diff OLD NEW [--policy strict|migrate] [--json]
                                               what an upgrade does with every map
exit status: 0 ok, 1 failed, 2 usage; diff: 3 when map entries would be lost
`handover COMMAND --help` tells more about one command";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["btf", rest @ ..] => cmd_btf::run(rest),
        ["inspect", rest @ ..] => cmd_inspect::run(rest),
        ["snapshot", rest @ ..] => cmd_snapshot::run(rest),
        ["diff", rest @ ..] => cmd_diff::run(rest),
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage(USAGE),
    }
}

/// Prints `usage` and exits 2.
pub(crate) fn usage(usage: &str) -> ExitCode {
    eprintln!("{usage}");
    ExitCode::from(2)
}

/// Exits 0, or prints the failure of `command` and exits 1.
pub(crate) fn finish(command: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("handover {command}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources, joined by `: `, so the cause (an errno, an offset) is
/// never hidden behind the outer message. A source whose text a message already
/// shows (`"...failed: {source}"`) is not repeated.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("{what}")]
    struct Layer {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    }

    #[test]
    fn a_source_already_in_its_message_is_printed_once() {
        let errno = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
        let errno_text = errno.to_string();
        // A bpf(2) error shows its errno and also returns it as its source.
        let syscall = Layer {
            what: format!("BPF_OBJ_PIN on x failed: {errno_text}"),
            source: Box::new(errno),
        };
        let outer = Layer {
            what: "pinning map x".to_owned(),
            source: Box::new(syscall),
        };
        let chain = error_chain(&outer);
        assert_eq!(
            chain,
            format!("pinning map x: BPF_OBJ_PIN on x failed: {errno_text}")
        );
        assert_eq!(chain.matches(&errno_text).count(), 1, "{chain}");
    }

    #[test]
    fn every_new_source_is_appended() {
        let inner = std::io::Error::other("truncated at byte 7");
        let outer = Layer {
            what: "reading snapshot s.json".to_owned(),
            source: Box::new(inner),
        };
        assert_eq!(
            error_chain(&outer),
            "reading snapshot s.json: truncated at byte 7"
        );
    }
}
