//! The `handover` command line: arguments are parsed by `clap` (`cli`), each command
//! lives in its `cmd_*` module, and rendering in `report` and `inspect_render`. All of
//! it is binary-only; the library holds none of it.
//!
//! Exit codes are listed in `exit_codes!` (and in `handover --help`).

mod cli;
mod cmd_btf;
mod cmd_demo;
mod cmd_diff;
mod cmd_dump;
mod cmd_inspect;
mod cmd_plan;
mod cmd_recover;
mod cmd_snapshot;
mod cmd_status;
mod cmd_upgrade;
mod inspect_render;
mod output;
#[cfg(test)]
mod render_tests;
mod report;
mod set_args;

use std::process::ExitCode;

use clap::Parser as _;

/// The table of exit codes, shown by `handover --help` and kept equal to README's
/// (a macro, so that help texts can `concat!` it).
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  success (diff, plan: every entry is carried with every field value)
  1  the command failed (unreadable or malformed input, refused output path, a
     failed upgrade: rolled back when it failed before its switch)
  2  usage error (unknown command, option or value)
  3  diff, plan: map entries would be lost (a recreate of a map holding state, or a
     shrink); upgrade: refused for that reason without --allow-state-loss
  4  diff, plan: every entry is carried, but some field values are dropped
  5  upgrade --plan: refused, the live state is not the one the plan was made against
  6  plan, upgrade, recover, uninstall: the state directory is locked by another
     process (a daemon or an upgrade)"
    };
}
pub(crate) use exit_codes;

/// `diff`, `plan`: entries would be lost (`upgrade`: refused for that).
pub(crate) const EXIT_LOSES_ENTRIES: u8 = 3;
/// `diff`, `plan`: every entry is carried, some field values are dropped.
pub(crate) const EXIT_DROPS_FIELDS: u8 = 4;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that print to stdout and exit 0; a
            // closed stdout is not worth a message there either.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let (command, result) = match cli.command {
        cli::Command::Btf {
            command: cli::BtfCommand::Dump(args),
        } => ("btf dump", cmd_btf::dump(&args)),
        cli::Command::Inspect(args) => ("inspect", cmd_inspect::run(&args)),
        cli::Command::Snapshot(args) => ("snapshot", cmd_snapshot::run(&args)),
        cli::Command::Diff(args) => ("diff", cmd_diff::run(&args)),
        cli::Command::Plan(args) => ("plan", cmd_plan::run(&args)),
        cli::Command::Upgrade(args) => ("upgrade", cmd_upgrade::run(&args)),
        cli::Command::Status(args) => ("status", cmd_status::run(&args)),
        cli::Command::Dump(args) => ("dump", cmd_dump::run(&args)),
        cli::Command::Recover(args) => ("recover", cmd_recover::recover(&args)),
        cli::Command::Uninstall(args) => ("uninstall", cmd_recover::uninstall(&args)),
        cli::Command::Demo(args) => ("demo", cmd_demo::run(&args)),
        cli::Command::DemoMeshd { version, rest } => return cmd_demo::meshd(&version, &rest),
        cli::Command::DemoTraffic { cgroup } => ("__demo-traffic", cmd_demo::traffic(&cgroup)),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            output::error(&format!("handover {command}: {message}"));
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources, joined by `: `, so the cause (an errno, an offset) is
/// never hidden behind the outer message. A source whose text a message already
/// shows (`"...failed: {source}"`) is not repeated. Names from the input inside the
/// messages are escaped ([`printable`](handover::btf::printable)) like every text
/// the command prints.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    handover::btf::printable(&raw_chain(e)).into_owned()
}

fn raw_chain(e: &dyn std::error::Error) -> String {
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
        let chain = super::raw_chain(&outer);
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
