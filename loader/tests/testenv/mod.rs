//! Isolation for privileged tests: a private bpffs mount, a private cgroup, a
//! private network namespace, child processes, and a small BTF encoder.
//!
//! Shared by the integration tests of `handover-loader` and `handover-bpffs`
//! (included with `#[path]`). Every guard undoes its work in `Drop`, so cleanup also
//! runs when a test panics.
//!
//! # Safety
//! The libc calls here take NUL-terminated strings that outlive the call, integer
//! flags and ids, live descriptors owned by the caller, and a zero-initialised `ifreq` owned
//! by the caller.
#![allow(unsafe_code)]
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Environment variable that makes a re-executed test binary play a child role.
pub const ROLE_VAR: &str = "HANDOVER_TESTENV_ROLE";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the test may touch the kernel (root: CAP_BPF, CAP_SYS_ADMIN,
/// CAP_NET_ADMIN); when it may not, [`skip`] says so.
#[must_use]
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        true
    } else {
        skip(
            test,
            "needs root (CAP_BPF, CAP_SYS_ADMIN, CAP_NET_ADMIN): NOTHING WAS TESTED",
        )
    }
}

/// Whether this run is under CI (`CI` set and not empty, `0` or `false`).
#[must_use]
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Skips `test` for `reason`: under CI ([`under_ci`]) a test that cannot run is a
/// failure, so this panics; otherwise it prints `SKIPPED: TEST (REASON)` on its own
/// line and returns `false`. `.ci/run` counts those lines in its closing summary.
pub fn skip(test: &str, reason: &str) -> bool {
    assert!(!under_ci(), "{test} cannot run under CI: {reason}");
    // Straight to the stderr stream: the test harness captures eprintln! output of
    // passing tests, and a skip must not be silent.
    let _ = writeln!(io::stderr(), "\nSKIPPED: {test} ({reason})");
    false
}

/// Skips `test` because the running kernel lacks `what`, as a probe found: not a
/// failure under CI either (the matrix runs old kernels on purpose), but a loud
/// `KERNEL LACKS` line in the log. Returns `false`.
pub fn kernel_lacks(test: &str, what: &str) -> bool {
    let _ = writeln!(
        io::stderr(),
        "\n!!!!!!!! KERNEL LACKS: {test} NOT TESTED: this kernel lacks {what} !!!!!!!!"
    );
    false
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("test paths have no NUL")
}

/// A directory under the system temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir(&path).expect("create temporary directory");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A fresh bpffs instance mounted on a temporary directory; unmounted on drop.
#[derive(Debug)]
pub struct Bpffs {
    dir: TempDir,
}

impl Bpffs {
    pub fn mount() -> Self {
        let dir = TempDir::new("handover-bpffs");
        let target = c(dir.path());
        // SAFETY: see the module header.
        let ret = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                c"mode=0700".as_ptr().cast(),
            )
        };
        assert_eq!(ret, 0, "mount bpffs: {}", io::Error::last_os_error());
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let target = c(self.dir.path());
        // SAFETY: see the module header.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A cgroup of this test under the cgroup v2 hierarchy; removed on drop.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    dir: std::fs::File,
}

pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";

impl Cgroup {
    pub fn new() -> Self {
        let path = Path::new(CGROUP2_ROOT).join(unique("handover-test"));
        std::fs::create_dir(&path).expect("create test cgroup");
        let dir = std::fs::File::open(&path).expect("open test cgroup");
        Self { path, dir }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup directory, to attach programs to.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.dir)
    }

    /// Inode number of the cgroup directory: its cgroup id.
    pub fn id(&self) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&self.dir.metadata().expect("stat cgroup"))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Children are waited for before the guard drops; a dying task may still be
        // listed for a moment, so retry briefly.
        for _ in 0..100 {
            match std::fs::remove_dir(&self.path) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => return,
            }
        }
    }
}

/// Moves this whole process into `cgroup` (a child process, never the test runner).
pub fn join_cgroup(cgroup: &Path) {
    std::fs::write(cgroup.join("cgroup.procs"), b"0").expect("join cgroup");
}

/// Moves the calling thread into a new network namespace with `lo` up.
pub fn enter_new_netns() {
    // SAFETY: see the module header; CLONE_NEWNET is allowed in threaded processes.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        ret,
        0,
        "unshare(CLONE_NEWNET): {}",
        io::Error::last_os_error()
    );
    // A socket to send the interface ioctls through; owned, so it is closed even
    // when an assertion below fails.
    // (Bound to no address: `lo` is still down.)
    let sock = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
        .expect("socket for interface ioctls");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: an all-zero ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: `fd` is the live socket above; `ifr` is a local ifreq naming `lo`.
    unsafe {
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &raw mut ifr), 0);
        ifr.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).expect("IFF_UP fits");
        assert_eq!(
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &raw mut ifr),
            0,
            "bring lo up: {}",
            io::Error::last_os_error()
        );
    }
}

/// Drops this process to `uid`/`gid` (a child process, never the test runner):
/// `setgroups`, `setgid`, then `setuid`, so no privilege is left.
pub fn become_user(uid: u32, gid: u32) {
    // SAFETY: see the module header; an empty group list.
    let ret = unsafe { libc::setgroups(0, std::ptr::null()) };
    assert_eq!(ret, 0, "setgroups: {}", io::Error::last_os_error());
    // SAFETY: see the module header.
    let ret = unsafe { libc::setgid(gid) };
    assert_eq!(ret, 0, "setgid({gid}): {}", io::Error::last_os_error());
    // SAFETY: see the module header.
    let ret = unsafe { libc::setuid(uid) };
    assert_eq!(ret, 0, "setuid({uid}): {}", io::Error::last_os_error());
}

/// The role this process plays when a test re-executed its binary, if any.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// Runs the test `test` of this binary again in a child process with `role` and the
/// extra environment `env`; returns its stdout. Panics if the child fails.
pub fn run_child(test: &str, role: &str, env: &[(&str, String)]) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {role} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Encodes raw BTF: a header, type records and a string section.
#[derive(Debug, Default)]
pub struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
    count: u32,
}

impl BtfBuilder {
    pub fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            count: 0,
        }
    }

    fn name(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = u32::try_from(self.strings.len()).unwrap();
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }

    fn word(&mut self, w: u32) {
        self.types.extend_from_slice(&w.to_ne_bytes());
    }

    fn head(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32) -> u32 {
        let name = self.name(name);
        self.word(name);
        self.word((kind << 24) | vlen);
        self.word(size_or_type);
        self.count += 1;
        self.count
    }

    /// `BTF_KIND_INT` of `size` bytes, unsigned.
    pub fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.head(name, 1, 0, size);
        self.word(size * 8); // encoding 0, offset 0, bits
        id
    }

    /// `BTF_KIND_ARRAY` of `n` elements of `elem`, indexed by `index` (an int).
    pub fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        let id = self.head("", 3, 0, 0);
        self.word(elem);
        self.word(index);
        self.word(n);
        id
    }

    /// `BTF_KIND_STRUCT` with `(name, type, bit offset)` members.
    pub fn structure(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let vlen = u32::try_from(members.len()).unwrap();
        let id = self.head(name, 4, vlen, size);
        for &(m, ty, bits) in members {
            let off = self.name(m);
            self.word(off);
            self.word(ty);
            self.word(bits);
        }
        id
    }

    /// Adds a string to the string section; returns its offset.
    pub fn string(&mut self, s: &str) -> u32 {
        self.name(s)
    }

    /// `BTF_KIND_FUNC_PROTO` returning `ret` with `(name, type)` parameters.
    pub fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
        let vlen = u32::try_from(params.len()).unwrap();
        let id = self.head("", 13, vlen, ret);
        for &(p, ty) in params {
            let off = self.name(p);
            self.word(off);
            self.word(ty);
        }
        id
    }

    /// `BTF_KIND_FUNC` named `name` of prototype `proto`, global linkage.
    pub fn func(&mut self, name: &str, proto: u32) -> u32 {
        self.head(name, 12, 1, proto)
    }

    pub fn build(&self) -> Vec<u8> {
        let type_len = u32::try_from(self.types.len()).unwrap();
        let str_len = u32::try_from(self.strings.len()).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
        out.push(1); // version
        out.push(0); // flags
        for w in [24, 0, type_len, type_len, str_len] {
            out.extend_from_slice(&u32::to_ne_bytes(w));
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// Runs bpftool in a private mount namespace whose /sys/fs/bpf is `bpffs` (so maps
/// libbpf pins by name land in the test's own bpffs); returns (success, stderr).
pub fn bpftool_in<S: AsRef<std::ffi::OsStr>>(bpffs: &Path, args: &[S]) -> (bool, String) {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"dir="$1"; shift; mount --bind "$dir" /sys/fs/bpf && exec bpftool "$@""#)
        .arg("sh")
        .arg(bpffs)
        .args(args)
        .output()
        .expect("run unshare/bpftool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `bpftool prog loadall OBJ PROGS [pinmaps MAPS]` run by [`bpftool_in`]: libbpf's
/// load of `obj`, its programs pinned under `progs` (and its maps under `maps`);
/// panics with bpftool's output when it fails.
pub fn bpftool_loadall(bpffs: &Path, obj: &Path, progs: &Path, maps: Option<&Path>) {
    let mut args = vec![
        std::ffi::OsStr::new("prog"),
        std::ffi::OsStr::new("loadall"),
        obj.as_os_str(),
        progs.as_os_str(),
    ];
    if let Some(maps) = maps {
        args.extend([std::ffi::OsStr::new("pinmaps"), maps.as_os_str()]);
    }
    let (ok, err) = bpftool_in(bpffs, &args);
    assert!(ok, "bpftool prog loadall {}: {err}", obj.display());
}

/// Whether libbpf (through bpftool) loads `obj`: `bpftool prog loadall` in a private
/// mount namespace whose /sys/fs/bpf is a directory of the test's bpffs `bpffs` (for
/// maps pinned by name), everything it pinned removed afterwards. The error is
/// libbpf's reason.
pub fn bpftool_loads(obj: &Path, bpffs: &Path) -> Result<(), String> {
    let name = obj.file_name().map_or_else(String::new, |n| {
        n.to_string_lossy().replace(['.', '-'], "_")
    });
    let auto = bpffs.join(format!("auto{name}"));
    let pins = bpffs.join(format!("pins{name}"));
    std::fs::create_dir(&auto).expect("create a directory in the test's bpffs");
    let (ok, err) = bpftool_in(
        &auto,
        &[
            std::ffi::OsStr::new("prog"),
            std::ffi::OsStr::new("loadall"),
            obj.as_os_str(),
            pins.as_os_str(),
        ],
    );
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_dir_all(&auto);
    if ok {
        Ok(())
    } else {
        // The reason is on libbpf's last line before bpftool's own summary.
        let reason = err
            .lines()
            .rfind(|l| l.starts_with("libbpf:"))
            .unwrap_or("bpftool failed");
        Err(reason.to_owned())
    }
}
