//! Error paths of the bpf(2) layer against backends that fail on purpose.
#![expect(clippy::indexing_slicing, reason = "tests index fixed buffers")]
#![allow(
    unsafe_code,
    reason = "each fake backend is made with the unsafe FnBackend::new"
)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use zerocopy::FromBytes;

use super::attr::{MapCreateAttr, ObjAttr, ProgLoadAttr};
use super::{
    Bpf, Command, Error, Feature, FnBackend, Insn, LogLevel, MapCreate, MapType, OpenFlags,
    ProgLoad, ProgramType,
};

/// A handle whose commands go to the fake kernel `f`.
fn fake<F>(f: F) -> Bpf
where
    F: Fn(Command, &mut [u8], Option<&mut [u8]>) -> io::Result<i64> + Send + Sync + 'static,
{
    // SAFETY: every closure of this file returns an errno, a count, or a descriptor it
    // just opened and gave up with `into_raw_fd`.
    Bpf::with_backend(unsafe { FnBackend::new(f) })
}

fn errno(e: i32) -> io::Result<i64> {
    Err(io::Error::from_raw_os_error(e))
}

fn devnull() -> OwnedFd {
    std::fs::File::open("/dev/null").map(OwnedFd::from).unwrap()
}

const EXIT: [Insn; 2] = [Insn::new(0xb7, 0, 0, 0, 0), Insn::new(0x95, 0, 0, 0, 0)];

#[test]
fn eperm_names_the_command_and_the_map() {
    let bpf = fake(|_: Command, _: &mut [u8], _: Option<&mut [u8]>| errno(libc::EPERM));
    let mut spec = MapCreate::new(MapType::LruHash, 4, 8, 16);
    spec.name = "sessions";
    let err = bpf.map_create(&spec).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EPERM));
    let text = err.to_string();
    assert!(
        text.starts_with("BPF_MAP_CREATE on lru_hash map \"sessions\" failed"),
        "{text}"
    );
    assert!(matches!(
        err,
        Error::Syscall {
            command: "BPF_MAP_CREATE",
            ..
        }
    ));
}

#[test]
fn enoent_and_eexist_come_back_from_pins() {
    let bpf = fake(|c: Command, _: &mut [u8], _: Option<&mut [u8]>| match c {
        Command::ObjGet => errno(libc::ENOENT),
        Command::ObjPin => errno(libc::EEXIST),
        _ => errno(libc::ENOSYS),
    });
    let err = bpf
        .obj_get(Path::new("/sys/fs/bpf/missing"), OpenFlags::READ_ONLY)
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOENT));
    assert!(
        err.to_string()
            .contains("BPF_OBJ_GET on /sys/fs/bpf/missing"),
        "{err}"
    );
    let fd = devnull();
    let err = bpf
        .obj_pin(&fd, Path::new("/sys/fs/bpf/taken"))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EEXIST));
}

#[test]
fn e2big_without_a_log_is_an_oversized_request_returned_as_it_came() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let bpf = fake(move |_: Command, _: &mut [u8], log: Option<&mut [u8]>| {
        seen.lock().unwrap().push(log.is_some());
        errno(libc::E2BIG)
    });
    let err = bpf
        .prog_load(&ProgLoad::new(ProgramType::Xdp, &EXIT, "GPL"))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::E2BIG));
    assert!(matches!(err, Error::Syscall { .. }), "{err}");
    assert!(err.log().is_none());
    // Once without a log, once with one to tell an attr refusal from the verifier's.
    assert_eq!(*calls.lock().unwrap(), [false, true]);
}

#[test]
fn e2big_from_the_verifier_carries_the_log_and_shows_its_tail() {
    // What the verifier writes when it gives up on a program, after one line per
    // instruction it walked.
    let mut text = String::new();
    for i in 0..5000 {
        text.push_str(&format!("{i}: (07) r1 += 1\n"));
    }
    text.push_str("BPF program is too large. Processed 1000001 insn\n");
    text.push_str("processed 1000001 insns (limit 1000000) max_states_per_insn 4\n");
    let log_text = text.clone();
    let bpf = fake(move |_: Command, _: &mut [u8], log: Option<&mut [u8]>| {
        let Some(log) = log else {
            return errno(libc::E2BIG);
        };
        if log.len() < log_text.len() + 1 {
            return errno(libc::ENOSPC);
        }
        log[..log_text.len()].copy_from_slice(log_text.as_bytes());
        errno(libc::E2BIG)
    });
    let mut spec = ProgLoad::new(ProgramType::Xdp, &EXIT, "GPL");
    spec.name = "walker";
    let err = bpf.prog_load(&spec).unwrap_err();
    assert_eq!(err.errno(), Some(libc::E2BIG));
    assert_eq!(err.log(), Some(text.trim_end()), "the whole log is kept");
    let shown = err.to_string();
    assert!(shown.contains("Processed 1000001 insn"), "{shown}");
    assert!(
        shown.contains("earlier lines of the log left out"),
        "{shown}"
    );
    assert!(
        !shown.contains("\n0: (07)"),
        "the head is not shown: {shown}"
    );
    assert!(shown.len() < 16 * 1024, "{} bytes shown", shown.len());
}

#[test]
fn verifier_einval_carries_the_whole_log_after_growing_the_buffer() {
    const LOG: &[u8] = b"0: (95) exit\nR0 !read_ok\n";
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let seen = sizes.clone();
    let bpf = fake(move |c: Command, attr: &mut [u8], log: Option<&mut [u8]>| {
        assert_eq!(c, Command::ProgLoad);
        let a = ProgLoadAttr::read_from_prefix(attr).unwrap().0;
        assert_eq!(a.insn_cnt, 2);
        let Some(log) = log else {
            seen.lock().unwrap().push(0);
            assert_eq!(a.log_level, 0);
            return errno(libc::EINVAL);
        };
        assert_eq!(a.log_level, 1);
        assert_eq!(a.log_size as usize, log.len());
        seen.lock().unwrap().push(log.len());
        // Pretend the full log needs 100,000 bytes: the first buffer is too small.
        if log.len() < 100_000 {
            return errno(libc::ENOSPC);
        }
        log[..LOG.len()].copy_from_slice(LOG);
        errno(libc::EINVAL)
    });
    let mut spec = ProgLoad::new(ProgramType::SocketFilter, &EXIT, "GPL");
    spec.name = "bad";
    let err = bpf.prog_load(&spec).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(err.log(), Some("0: (95) exit\nR0 !read_ok"));
    assert!(err.to_string().contains("R0 !read_ok"), "{err}");
    assert!(
        err.to_string()
            .starts_with("BPF_PROG_LOAD on socket_filter program \"bad\"")
    );
    assert_eq!(*sizes.lock().unwrap(), [0, 65536, 131_072]);
}

#[test]
fn btf_rejection_carries_the_log() {
    let bpf = fake(|_: Command, _: &mut [u8], log: Option<&mut [u8]>| {
        if let Some(log) = log {
            log[..12].copy_from_slice(b"Invalid name");
        }
        errno(libc::EINVAL)
    });
    let err = bpf.btf_load(&[0u8; 24], LogLevel::Always(1)).unwrap_err();
    assert_eq!(err.log(), Some("Invalid name"));
    assert!(
        err.to_string()
            .starts_with("BPF_BTF_LOAD on BTF blob of 24 bytes")
    );
}

#[test]
fn a_successful_load_hands_over_the_returned_descriptor() {
    use std::os::fd::IntoRawFd;
    let bpf = fake(|_: Command, _: &mut [u8], _: Option<&mut [u8]>| {
        Ok(i64::from(devnull().into_raw_fd()))
    });
    let fd = bpf
        .prog_load(&ProgLoad::new(ProgramType::Xdp, &EXIT, "GPL"))
        .unwrap();
    assert!(std::fs::File::from(fd).metadata().is_ok());
}

fn pin_at_with_probe(probe_errno: i32) -> ObjAttr {
    let pins = Arc::new(Mutex::new(Vec::new()));
    let seen = pins.clone();
    let bpf = fake(move |c: Command, attr: &mut [u8], _: Option<&mut [u8]>| {
        let a = ObjAttr::read_from_prefix(attr).unwrap().0;
        match c {
            Command::ObjGet => errno(probe_errno),
            Command::ObjPin => {
                seen.lock().unwrap().push(a);
                Ok(0)
            }
            _ => errno(libc::ENOSYS),
        }
    });
    let dir = devnull();
    let obj = devnull();
    bpf.obj_pin_at(&obj, dir.as_fd(), "counters").unwrap();
    assert_eq!(bpf.has(Feature::PathFd), probe_errno == libc::EBADF);
    pins.lock().unwrap()[0]
}

#[test]
fn pins_use_path_fd_where_the_kernel_has_it() {
    let attr = pin_at_with_probe(libc::EBADF);
    assert_eq!(attr.file_flags, 1 << 14);
    assert!(attr.path_fd > 0);
}

#[test]
fn pins_fall_back_to_proc_self_fd_on_older_kernels() {
    let attr = pin_at_with_probe(libc::EINVAL);
    assert_eq!(attr.file_flags, 0);
    assert_eq!(attr.path_fd, 0);
}

#[test]
fn the_ring_buffer_probe_asks_for_one_page_of_this_machine() {
    use std::os::fd::IntoRawFd;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let bpf = fake(move |c: Command, attr: &mut [u8], _: Option<&mut [u8]>| {
        assert_eq!(c, Command::MapCreate);
        let a = MapCreateAttr::read_from_prefix(attr).unwrap().0;
        seen.lock().unwrap().push((a.map_type, a.max_entries));
        Ok(i64::from(devnull().into_raw_fd()))
    });
    assert!(bpf.has(Feature::Ringbuf));
    assert_eq!(
        *asked.lock().unwrap(),
        [(u32::from(MapType::Ringbuf), super::page_size())]
    );
}

#[test]
fn a_load_with_log_level_zero_is_tried_once_without_a_log() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let bpf = fake(move |_: Command, _: &mut [u8], log: Option<&mut [u8]>| {
        seen.lock().unwrap().push(log.is_some());
        errno(libc::EINVAL)
    });
    let err = bpf.btf_load(&[0u8; 24], LogLevel::Always(0)).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert!(err.log().is_none());
    assert_eq!(*calls.lock().unwrap(), [false], "one call, no log buffer");
}

#[test]
fn a_program_given_both_attach_descriptors_is_refused_before_the_kernel() {
    let bpf = fake(|_: Command, _: &mut [u8], _: Option<&mut [u8]>| {
        panic!("the kernel must not be asked")
    });
    let (prog, btf) = (devnull(), devnull());
    let mut spec = ProgLoad::new(ProgramType::Tracing, &EXIT, "GPL");
    spec.attach_prog_fd = Some(prog.as_fd());
    spec.attach_btf_obj_fd = Some(btf.as_fd());
    let err = bpf.prog_load(&spec).unwrap_err();
    assert!(matches!(err, Error::Argument { .. }), "{err}");
    assert!(err.to_string().contains("share one field"), "{err}");
}
