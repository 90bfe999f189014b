//! Driving a traffic harness in another process (one that has joined the dataplane's
//! cgroup and network namespace) over its standard input and output: one JSON command
//! per line in, one reply per line out. Replies start with [`PREFIX`] so that other
//! output of that process on the same stream (a test harness's banner, which may leave
//! a line unfinished) is skipped.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout};

use serde::{Deserialize, Serialize};

use super::{BackendServer, BackendSpec, ClientOptions, HeldConn, PhaseStats, Traffic};

/// What starts every reply line.
pub const PREFIX: &str = "@traffic ";

/// A command to the harness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Start the backends, then the clients in a first phase.
    Start {
        /// The backends to run.
        backends: Vec<BackendSpec>,
        /// The clients.
        clients: ClientOptions,
        /// The first phase.
        phase: String,
        /// The backends allowed in it.
        allowed: BTreeSet<String>,
    },
    /// [`Traffic::begin_phase`].
    Phase {
        /// The phase.
        name: String,
        /// The backends allowed in it.
        allowed: BTreeSet<String>,
    },
    /// [`Traffic::allow`].
    Allow {
        /// The backends allowed from now on.
        allowed: BTreeSet<String>,
    },
    /// [`Traffic::pause`].
    Pause,
    /// [`Traffic::resume`].
    Resume,
    /// [`Traffic::hold`].
    Hold {
        /// Connections to open and keep.
        count: usize,
    },
    /// [`Traffic::release`].
    Release,
    /// [`Traffic::report`].
    Report,
    /// Stop the clients and backends; the reply is the final report.
    Stop,
}

/// The harness's answer to a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Done.
    Ok,
    /// The connections held open now.
    Held(Vec<HeldConn>),
    /// The counts per phase.
    Report(Vec<PhaseStats>),
    /// The command failed.
    Error(String),
}

/// Runs a harness commanded through `input`, answering on `output`, until `Stop` or
/// the end of `input`.
///
/// # Errors
/// `output` cannot be written.
pub fn serve(input: impl BufRead, mut output: impl Write) -> io::Result<()> {
    let mut servers: Vec<BackendServer> = Vec::new();
    let mut traffic: Option<Traffic> = None;
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let (reply, last) = match serde_json::from_str::<Command>(&line) {
            Err(e) => (Reply::Error(format!("bad command {line:?}: {e}")), false),
            Ok(Command::Stop) => {
                let report = traffic.take().map(Traffic::stop).unwrap_or_default();
                servers.clear();
                (Reply::Report(report), true)
            }
            Ok(cmd) => (run(cmd, &mut servers, &mut traffic), false),
        };
        let text = serde_json::to_string(&reply).map_err(io::Error::other)?;
        writeln!(output, "{PREFIX}{text}")?;
        output.flush()?;
        if last {
            break;
        }
    }
    Ok(())
}

fn run(cmd: Command, servers: &mut Vec<BackendServer>, traffic: &mut Option<Traffic>) -> Reply {
    let not_started = || Reply::Error("the clients are not started".into());
    match cmd {
        Command::Start {
            backends,
            clients,
            phase,
            allowed,
        } => {
            if traffic.is_some() {
                return Reply::Error("already started".into());
            }
            for b in backends {
                match BackendServer::start(&b.name, b.addr) {
                    Ok(s) => servers.push(s),
                    Err(e) => {
                        return Reply::Error(format!("backend {} on {}: {e}", b.name, b.addr));
                    }
                }
            }
            match Traffic::start(clients, &phase, allowed) {
                Ok(t) => {
                    *traffic = Some(t);
                    Reply::Ok
                }
                Err(e) => Reply::Error(format!("starting the clients: {e}")),
            }
        }
        Command::Phase { name, allowed } => match traffic {
            Some(t) => {
                t.begin_phase(&name, allowed);
                Reply::Ok
            }
            None => not_started(),
        },
        Command::Allow { allowed } => match traffic {
            Some(t) => {
                t.allow(allowed);
                Reply::Ok
            }
            None => not_started(),
        },
        Command::Pause => traffic.as_ref().map_or_else(not_started, |t| {
            t.pause();
            Reply::Ok
        }),
        Command::Resume => traffic.as_ref().map_or_else(not_started, |t| {
            t.resume();
            Reply::Ok
        }),
        Command::Hold { count } => traffic
            .as_mut()
            .map_or_else(not_started, |t| Reply::Held(t.hold(count))),
        Command::Release => traffic.as_mut().map_or_else(not_started, |t| {
            t.release();
            Reply::Ok
        }),
        Command::Report => traffic
            .as_ref()
            .map_or_else(not_started, |t| Reply::Report(t.report())),
        Command::Stop => Reply::Ok,
    }
}

/// A failure talking to a remote harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The pipe to or from the process.
    #[error("talking to the traffic process: {0}")]
    Io(#[from] io::Error),
    /// The process ended or sent something else than a reply.
    #[error("traffic process: {0}")]
    Protocol(String),
    /// The harness refused a command.
    #[error("traffic process refused {command}: {message}")]
    Refused {
        /// The command.
        command: String,
        /// Its message.
        message: String,
    },
}

/// A harness in a child process, commanded through its piped stdin and stdout.
#[derive(Debug)]
pub struct RemoteTraffic {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl RemoteTraffic {
    /// Takes over `child`, spawned with piped stdin and stdout, running [`serve`].
    ///
    /// # Errors
    /// The child's stdin or stdout is not piped.
    pub fn new(mut child: Child) -> Result<Self, RemoteError> {
        let input = child
            .stdin
            .take()
            .ok_or_else(|| RemoteError::Protocol("stdin is not piped".into()))?;
        let output = child
            .stdout
            .take()
            .ok_or_else(|| RemoteError::Protocol("stdout is not piped".into()))?;
        Ok(Self {
            child,
            input,
            output: BufReader::new(output),
        })
    }

    /// The child's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `command` and waits for its reply.
    ///
    /// # Errors
    /// The pipe fails, the child ends, or it refuses the command.
    pub fn call(&mut self, command: &Command) -> Result<Reply, RemoteError> {
        let text = serde_json::to_string(command).map_err(io::Error::other)?;
        writeln!(self.input, "{text}")?;
        self.input.flush()?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.output.read_line(&mut line)? == 0 {
                return Err(RemoteError::Protocol(format!(
                    "ended before answering {text}"
                )));
            }
            // Anywhere in the line: other output may have left a line unfinished.
            if let Some((_, reply)) = line.trim_end().split_once(PREFIX) {
                let reply: Reply = serde_json::from_str(reply)
                    .map_err(|e| RemoteError::Protocol(format!("bad reply {reply:?}: {e}")))?;
                if let Reply::Error(message) = reply {
                    return Err(RemoteError::Refused {
                        command: text,
                        message,
                    });
                }
                return Ok(reply);
            }
        }
    }

    fn ok(&mut self, command: &Command) -> Result<(), RemoteError> {
        match self.call(command)? {
            Reply::Ok => Ok(()),
            other => Err(RemoteError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    fn report_of(&mut self, command: &Command) -> Result<Vec<PhaseStats>, RemoteError> {
        match self.call(command)? {
            Reply::Report(r) => Ok(r),
            other => Err(RemoteError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// [`Command::Start`].
    ///
    /// # Errors
    /// As [`RemoteTraffic::call`].
    pub fn start(
        &mut self,
        backends: Vec<BackendSpec>,
        clients: ClientOptions,
        phase: &str,
        allowed: BTreeSet<String>,
    ) -> Result<(), RemoteError> {
        self.ok(&Command::Start {
            backends,
            clients,
            phase: phase.into(),
            allowed,
        })
    }

    /// [`Traffic::begin_phase`] in the child.
    ///
    /// # Errors
    /// As [`RemoteTraffic::call`].
    pub fn begin_phase(
        &mut self,
        name: &str,
        allowed: BTreeSet<String>,
    ) -> Result<(), RemoteError> {
        self.ok(&Command::Phase {
            name: name.into(),
            allowed,
        })
    }

    /// [`Traffic::allow`] in the child.
    ///
    /// # Errors
    /// As [`RemoteTraffic::call`].
    pub fn allow(&mut self, allowed: BTreeSet<String>) -> Result<(), RemoteError> {
        self.ok(&Command::Allow { allowed })
    }

    /// [`Traffic::pause`] in the child.
    ///
    /// # Errors
    /// As [`RemoteTraffic::call`].
    pub fn pause(&mut self) -> Result<(), RemoteError> {
        self.ok(&Command::Pause)
    }

    /// [`Traffic::resume`] in the child.
    ///
    /// # Errors
    /// As [`RemoteTraffic::call`].
    pub fn resume(&mut self) -> Result<(), RemoteError> {
        self.ok(&Command::Resume)
    }

    /// [`Traffic::hold`] in the child.
    ///
    /// # Errors
    /// As [`RemoteTraffic::call`].
    pub fn hold(&mut self, count: usize) -> Result<Vec<HeldConn>, RemoteError> {
        match self.call(&Command::Hold { count })? {
            Reply::Held(h) => Ok(h),
            other => Err(RemoteError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// [`Traffic::release`] in the child.
    ///
    /// # Errors
    /// As [`RemoteTraffic::call`].
    pub fn release(&mut self) -> Result<(), RemoteError> {
        self.ok(&Command::Release)
    }

    /// [`Traffic::report`] in the child.
    ///
    /// # Errors
    /// As [`RemoteTraffic::call`].
    pub fn report(&mut self) -> Result<Vec<PhaseStats>, RemoteError> {
        self.report_of(&Command::Report)
    }

    /// Stops the child's harness, waits for the child, and returns the final counts.
    ///
    /// # Errors
    /// As [`RemoteTraffic::call`], or the child fails.
    pub fn stop(mut self) -> Result<Vec<PhaseStats>, RemoteError> {
        let report = self.report_of(&Command::Stop)?;
        let status = self.child.wait()?;
        if !status.success() {
            return Err(RemoteError::Protocol(format!("exited with {status}")));
        }
        Ok(report)
    }
}

impl Drop for RemoteTraffic {
    fn drop(&mut self) {
        // Only when `stop` did not run (a test failed): end the child we started.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests index the lines they read")]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies_round_trip_as_one_line_each() {
        let cmds = [
            Command::Phase {
                name: "restart".into(),
                allowed: ["a".to_owned()].into(),
            },
            Command::Hold { count: 3 },
            Command::Stop,
        ];
        for c in cmds {
            let text = serde_json::to_string(&c).unwrap();
            assert!(!text.contains('\n'));
            assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), c);
        }
    }

    #[test]
    fn serve_answers_every_line_and_refuses_what_it_cannot_do() {
        let input = b"{\"hold\":{\"count\":1}}\nnot json\n\"stop\"\n\"report\"\n";
        let mut out = Vec::new();
        serve(&input[..], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // The report after stop is never read: serve ends at stop.
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with(PREFIX));
        assert!(lines[0].contains("the clients are not started"), "{text}");
        assert!(lines[1].contains("bad command"), "{text}");
        assert_eq!(lines[2], format!("{PREFIX}{{\"report\":[]}}"));
    }
}
