//! `BPF_PROG_LOAD` and `BPF_BTF_LOAD`, with a log buffer that grows until the
//! verifier's whole log fits, and the log in the error.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::attr::{BtfLoadAttr, ProgBindMapAttr, ProgLoadAttr, TestRunAttr};
use super::map::{object_name, raw_fd};
use super::{AttachType, Bpf, Command, Error, Insn, ProgramType};

/// When to ask the kernel for a verifier log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Load without a log; if that fails, load again with level 1 to explain why (with
    /// the statistics level 4 when the verifier gave up on a program too large to
    /// walk, E2BIG, whose level-1 log would hold a line per instruction walked).
    #[default]
    OnFailure,
    /// Always log at this level (1: instructions of failing path, 2: everything);
    /// `Always(0)` never logs, not even to explain a failure (feature probes).
    Always(u32),
}

/// The arguments of `BPF_PROG_LOAD`.
#[derive(Debug, Clone, Copy)]
pub struct ProgLoad<'a> {
    /// The program type.
    pub prog_type: ProgramType,
    /// The instructions, relocated (map fds in place).
    pub insns: &'a [Insn],
    /// License string (`GPL`, `Dual BSD/GPL`, ...); GPL-only helpers need a GPL one.
    pub license: &'a str,
    /// Object name; the kernel keeps 15 bytes of `[A-Za-z0-9_.]`.
    pub name: &'a str,
    /// Attach type the program is verified for (required by e.g. `cgroup_sock_addr`).
    pub expected_attach_type: Option<AttachType>,
    /// BTF of the program (for `func_info`/`line_info`).
    pub prog_btf_fd: Option<BorrowedFd<'a>>,
    /// `struct bpf_func_info` records, packed, of `func_info_rec_size` bytes each.
    pub func_info: &'a [u8],
    /// Size of one `func_info` record.
    pub func_info_rec_size: u32,
    /// `struct bpf_line_info` records, packed, of `line_info_rec_size` bytes each.
    pub line_info: &'a [u8],
    /// Size of one `line_info` record.
    pub line_info_rec_size: u32,
    /// Attach target type id (tracing, `ext`, `lsm`, `struct_ops`).
    pub attach_btf_id: u32,
    /// BTF object holding `attach_btf_id` when it is not the kernel's (module BTF).
    pub attach_btf_obj_fd: Option<BorrowedFd<'a>>,
    /// Program to extend or trace (`ext`, `fentry` on a BPF program).
    pub attach_prog_fd: Option<BorrowedFd<'a>>,
    /// `kern_version` (kprobes of old kernels).
    pub kern_version: u32,
    /// `BPF_F_*` program flags.
    pub flags: u32,
    /// Device to offload to, 0 for none.
    pub ifindex: u32,
    /// When to collect the verifier log.
    pub log_level: LogLevel,
}

impl<'a> ProgLoad<'a> {
    /// A program of `prog_type` with every optional field unset.
    #[must_use]
    pub fn new(prog_type: ProgramType, insns: &'a [Insn], license: &'a str) -> Self {
        Self {
            prog_type,
            insns,
            license,
            name: "",
            expected_attach_type: None,
            prog_btf_fd: None,
            func_info: &[],
            func_info_rec_size: 0,
            line_info: &[],
            line_info_rec_size: 0,
            attach_btf_id: 0,
            attach_btf_obj_fd: None,
            attach_prog_fd: None,
            kern_version: 0,
            flags: 0,
            ifindex: 0,
            log_level: LogLevel::OnFailure,
        }
    }
}

/// `BPF_LOG_STATS`: the verifier logs its messages and statistics but not each
/// instruction it walks.
const LOG_STATS: u32 = 4;

/// First log buffer; grown on `ENOSPC` up to [`MAX_LOG`].
const FIRST_LOG: usize = 64 * 1024;
/// The kernel refuses log buffers above `UINT_MAX >> 2`; stay well below.
const MAX_LOG: usize = 256 * 1024 * 1024;

trait Logged: IntoBytes + FromBytes + Copy {
    fn set_log(&mut self, buf: u64, size: u32, level: u32);
    fn true_size(&self) -> u32;
}

impl Logged for ProgLoadAttr {
    fn set_log(&mut self, buf: u64, size: u32, level: u32) {
        self.log_buf = buf;
        self.log_size = size;
        self.log_level = level;
    }
    fn true_size(&self) -> u32 {
        self.log_true_size
    }
}

impl Logged for BtfLoadAttr {
    fn set_log(&mut self, buf: u64, size: u32, level: u32) {
        self.btf_log_buf = buf;
        self.btf_log_size = size;
        self.btf_log_level = level;
    }
    fn true_size(&self) -> u32 {
        self.btf_log_true_size
    }
}

fn records(command: Command, what: &str, bytes: &[u8], rec_size: u32) -> Result<u32, Error> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let rec = rec_size as usize;
    if rec == 0 || !bytes.len().is_multiple_of(rec) {
        return Err(Error::Argument {
            command: command.name(),
            object: what.to_owned(),
            reason: format!(
                "{} bytes of records are not a whole number of {rec}-byte records",
                bytes.len()
            ),
        });
    }
    u32::try_from(bytes.len() / rec).map_err(|_| Error::Argument {
        command: command.name(),
        object: what.to_owned(),
        reason: "too many records".to_owned(),
    })
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value.
    pub retval: u32,
    /// Bytes of packet data the program left (written to the output buffer).
    pub data_size_out: u32,
    /// Mean run time in nanoseconds.
    pub duration_ns: u32,
}

impl Bpf {
    /// Runs a program once per `repeat` on a copy of the packet `data_in`, without
    /// attaching it (XDP, tc, socket filter, flow dissector, ... programs). The packet
    /// as the program left it goes to `data_out` when given.
    ///
    /// # Errors
    /// The program type cannot be test-run, the packet is too short for it, or the
    /// output buffer is too small (`ENOSPC`).
    #[doc(alias = "BPF_PROG_TEST_RUN")]
    pub fn prog_test_run(
        &self,
        prog: impl AsFd,
        data_in: &[u8],
        data_out: Option<&mut [u8]>,
        repeat: u32,
    ) -> Result<TestRun, Error> {
        let c = Command::ProgTestRun;
        let prog = prog.as_fd();
        let object = || format!("program fd {}", prog.as_raw_fd());
        let too_big = || Error::Argument {
            command: c.name(),
            object: object(),
            reason: "buffer larger than 4 GiB".to_owned(),
        };
        let mut attr = TestRunAttr::new_zeroed();
        attr.prog_fd = raw_fd(prog);
        attr.data_in = data_in.as_ptr() as u64;
        attr.data_size_in = u32::try_from(data_in.len()).map_err(|_| too_big())?;
        if let Some(out) = data_out {
            attr.data_out = out.as_mut_ptr() as u64;
            attr.data_size_out = u32::try_from(out.len()).map_err(|_| too_big())?;
        }
        attr.repeat = repeat;
        self.raw(c, &mut attr, None, object)?;
        Ok(TestRun {
            retval: attr.retval,
            data_size_out: attr.data_size_out,
            duration_ns: attr.duration,
        })
    }

    /// Loads a program.
    ///
    /// # Errors
    /// [`Error::Rejected`] with the verifier log when the verifier refuses the
    /// program; [`Error::Syscall`] for other refusals (`EPERM` without privileges).
    #[doc(alias = "BPF_PROG_LOAD")]
    pub fn prog_load(&self, spec: &ProgLoad<'_>) -> Result<OwnedFd, Error> {
        let c = Command::ProgLoad;
        let object = || format!("{} program {:?}", spec.prog_type, spec.name);
        let license = CString::new(spec.license).map_err(|_| Error::Argument {
            command: c.name(),
            object: object(),
            reason: "the license contains a NUL byte".to_owned(),
        })?;
        let mut attr = ProgLoadAttr::new_zeroed();
        attr.prog_type = spec.prog_type.into();
        attr.insn_cnt = u32::try_from(spec.insns.len()).map_err(|_| Error::Argument {
            command: c.name(),
            object: object(),
            reason: "too many instructions".to_owned(),
        })?;
        attr.insns = spec.insns.as_ptr() as u64;
        attr.license = license.as_ptr() as u64;
        attr.kern_version = spec.kern_version;
        attr.prog_flags = spec.flags;
        attr.prog_name = object_name(c, spec.name)?;
        attr.prog_ifindex = spec.ifindex;
        attr.expected_attach_type = spec.expected_attach_type.map_or(0, u32::from);
        attr.prog_btf_fd = spec.prog_btf_fd.map_or(0, raw_fd);
        attr.func_info_cnt = records(c, "func_info", spec.func_info, spec.func_info_rec_size)?;
        if attr.func_info_cnt > 0 {
            attr.func_info_rec_size = spec.func_info_rec_size;
            attr.func_info = spec.func_info.as_ptr() as u64;
        }
        attr.line_info_cnt = records(c, "line_info", spec.line_info, spec.line_info_rec_size)?;
        if attr.line_info_cnt > 0 {
            attr.line_info_rec_size = spec.line_info_rec_size;
            attr.line_info = spec.line_info.as_ptr() as u64;
        }
        attr.attach_btf_id = spec.attach_btf_id;
        // One field of the attr holds either descriptor.
        attr.attach_fd = match (spec.attach_prog_fd, spec.attach_btf_obj_fd) {
            (Some(_), Some(_)) => {
                return Err(Error::Argument {
                    command: c.name(),
                    object: object(),
                    reason: "attach_prog_fd and attach_btf_obj_fd share one field: give one"
                        .to_owned(),
                });
            }
            (Some(fd), None) | (None, Some(fd)) => raw_fd(fd),
            (None, None) => 0,
        };
        self.load_logged(c, attr, spec.log_level, &object)
    }

    /// Makes `prog` hold a reference to `map` as if its instructions used it, so the
    /// map lives as long as the program (libbpf binds `.rodata` this way, whose every
    /// use the verifier may have folded away). Kernels before 5.10 lack the command
    /// and refuse it with `EINVAL`.
    ///
    /// # Errors
    /// The kernel refuses the command, or either descriptor.
    #[doc(alias = "BPF_PROG_BIND_MAP")]
    pub fn prog_bind_map(&self, prog: impl AsFd, map: impl AsFd) -> Result<(), Error> {
        let (prog, map) = (prog.as_fd(), map.as_fd());
        let mut attr = ProgBindMapAttr::new_zeroed();
        attr.prog_fd = raw_fd(prog);
        attr.map_fd = raw_fd(map);
        self.raw(Command::ProgBindMap, &mut attr, None, || {
            format!(
                "program fd {} and map fd {}",
                prog.as_raw_fd(),
                map.as_raw_fd()
            )
        })
        .map(drop)
    }

    /// Loads raw BTF (header, types and strings) into the kernel.
    ///
    /// # Errors
    /// [`Error::Rejected`] with the kernel's BTF log when it refuses the blob.
    #[doc(alias = "BPF_BTF_LOAD")]
    pub fn btf_load(&self, data: &[u8], log_level: LogLevel) -> Result<OwnedFd, Error> {
        let c = Command::BtfLoad;
        let object = || format!("BTF blob of {} bytes", data.len());
        let mut attr = BtfLoadAttr::new_zeroed();
        attr.btf = data.as_ptr() as u64;
        attr.btf_size = u32::try_from(data.len()).map_err(|_| Error::Argument {
            command: c.name(),
            object: object(),
            reason: "larger than 4 GiB".to_owned(),
        })?;
        self.load_logged(c, attr, log_level, &object)
    }

    fn load_logged<A: Logged>(
        &self,
        command: Command,
        attr: A,
        level: LogLevel,
        object: &dyn Fn() -> String,
    ) -> Result<OwnedFd, Error> {
        let mut first = None;
        let level = match level {
            LogLevel::Always(0) => {
                let mut a = attr;
                let ret = self.raw(command, &mut a, None, object)?;
                return super::syscall::owned_fd(command, ret);
            }
            LogLevel::Always(l) => l,
            LogLevel::OnFailure => {
                let mut tries = 0;
                loop {
                    let mut a = attr;
                    match self.raw(command, &mut a, None, object) {
                        Ok(ret) => return super::syscall::owned_fd(command, ret),
                        // The verifier ran out of its time budget under contention.
                        Err(e) if e.errno() == Some(libc::EAGAIN) && tries < 5 => tries += 1,
                        // No log explains missing privileges.
                        Err(e) if e.errno() == Some(libc::EPERM) => return Err(e),
                        // E2BIG is either an attr the kernel cannot take (refused
                        // before the verifier ran, with an empty log) or a program the
                        // verifier gave up on ("BPF program is too large"): the log
                        // retry tells them apart.
                        Err(e) => {
                            first = Some(e);
                            break;
                        }
                    }
                }
                // A verifier that walked a million instructions would log a line for
                // each at level 1; the statistics level logs only why it stopped.
                if first.as_ref().and_then(Error::errno) == Some(libc::E2BIG) {
                    LOG_STATS
                } else {
                    1
                }
            }
        };
        let mut size = FIRST_LOG;
        loop {
            let mut buf = vec![0u8; size];
            let mut a = attr;
            a.set_log(
                buf.as_mut_ptr() as u64,
                u32::try_from(size).unwrap_or(u32::MAX),
                level,
            );
            let result = self.raw(command, &mut a, Some(&mut buf), object);
            match result {
                Ok(ret) => return super::syscall::owned_fd(command, ret),
                Err(e) if e.errno() == Some(libc::ENOSPC) && size < MAX_LOG => {
                    let wanted = a.true_size() as usize;
                    size = if wanted > size { wanted } else { size * 2 }.min(MAX_LOG);
                }
                Err(Error::Syscall {
                    command,
                    object,
                    error,
                }) => {
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                    let log = String::from_utf8_lossy(buf.get(..end).unwrap_or_default())
                        .trim_end()
                        .to_owned();
                    if log.is_empty()
                        && error.raw_os_error() == Some(libc::E2BIG)
                        && let Some(first) = first
                    {
                        // Refused before the verifier wrote a line: the request itself.
                        return Err(first);
                    }
                    return Err(Error::Rejected {
                        command,
                        object,
                        error,
                        log,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::prog_flags;

    #[test]
    fn program_flags_match_the_uapi_header() {
        assert_eq!(prog_flags::STRICT_ALIGNMENT, 1);
        assert_eq!(prog_flags::ANY_ALIGNMENT, 2);
        assert_eq!(prog_flags::SLEEPABLE, 16);
        assert_eq!(prog_flags::XDP_HAS_FRAGS, 32);
        assert_eq!(prog_flags::XDP_DEV_BOUND_ONLY, 64);
    }
}
