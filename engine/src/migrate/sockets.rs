//! Carrying the entries of a sockmap or sockhash into a new map, in the kernel.
//!
//! User space cannot re-insert a socket it does not hold (its update takes a socket
//! descriptor), and the sockets in a daemon's map belong to the connections its
//! programs steer. The kernel's `sockmap` iterator (5.10+) visits every element of a
//! sockmap or sockhash with its socket, and a tracing program attached there may
//! insert that socket into another such map. [`carry_sockets`] generates that
//! program for one pair of maps:
//!
//! ```text
//! ctx = struct bpf_iter__sockmap { meta, map, key, sk }
//! if ctx.key and ctx.sk:
//!     record.key = *ctx.key            (the helper cannot take the context's buffer)
//!     key = &record.key
//!     if only:
//!         key = bpf_map_lookup_elem(&only, &record.key)
//!         if not key: return 0
//!     record.ret = bpf_map_update_elem(&new, key, ctx.sk, flags)
//!     bpf_seq_write(ctx.meta.seq, &record, sizeof record)
//! return 0
//! ```
//!
//! `only` (a hash map from each old key to carry to its key in the new map, which
//! is how keys are converted: user space converts them, the program looks them up)
//! and `flags` (`BPF_ANY`, or `BPF_NOEXIST` so that a socket the new map holds at a
//! key is kept) are chosen per pass ([`SocketPass`]): the upgrade's copy and delta
//! passes carry everything, its last pass after the switch only what the old
//! programs changed.
//!
//! [`carry_sockets_with`] attaches it with an iterator link over the old map, and reads one run of the
//! iterator to its end. Each record says which key was carried or why not (the
//! update's error), so the report is exact without a second walk; an iterator
//! program cannot stop on an error (it returns 0 or 1), so failures are reported, not
//! raised half-way.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::error::{MigrateError, kernel};
use super::patch_prog::{
    ADD64_IMM, CALL, EXIT, JEQ_IMM, LD_IMM64, MOV64_IMM, MOV64_REG, MOVES, PSEUDO_MAP_FD, i16_of,
};
use super::sys::{
    AttachType, Bpf, Insn, IterTarget, Map, MapType, ProgLoad, ProgramType, UpdateFlags,
    vmlinux_btf,
};

/// The kernel's iterator target function for sockmap and sockhash elements.
const ITER_TARGET: &str = "bpf_iter_sockmap";
/// Offsets in `struct bpf_iter__sockmap` (four pointers) and `struct bpf_iter_meta`.
const CTX_META: i16 = 0;
const CTX_KEY: i16 = 16;
const CTX_SK: i16 = 24;
const META_SEQ: i16 = 0;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_MAP_UPDATE_ELEM: i32 = 2;
const BPF_FUNC_SEQ_WRITE: i32 = 127;
/// `BPF_ST | BPF_MEM | BPF_DW`: store an immediate.
const ST_DW: u8 = 0x7a;
/// `BPF_STX | BPF_MEM | BPF_DW`.
const STX_DW: u8 = 0x7b;
/// `BPF_LDX | BPF_MEM | BPF_DW`.
const LDX_DW: u8 = 0x79;
/// Keys larger than this do not fit the program's stack record.
const MAX_KEY: usize = 256;

/// Which sockets one run of [`carry_sockets_with`] carries, and how.
#[derive(Debug, Clone, Copy)]
pub struct SocketPass<'a> {
    /// Only the keys present in this map (keyed like the old map), each under the
    /// key its value holds (values of the new map's key size); `None`: every socket,
    /// under its old key.
    pub only: Option<&'a Map>,
    /// The update's flags: [`UpdateFlags::ANY`], or [`UpdateFlags::NOEXIST`] to keep
    /// a socket the new map holds already at a key (refused with `EEXIST`).
    pub flags: UpdateFlags,
}

impl Default for SocketPass<'_> {
    fn default() -> Self {
        Self {
            only: None,
            flags: UpdateFlags::ANY,
        }
    }
}

/// What [`carry_sockets`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SocketReport {
    /// Sockets the iterator met in the old map (of the keys asked for, with
    /// [`SocketPass::only`]).
    pub seen: usize,
    /// Sockets inserted into the new map.
    pub carried: usize,
    /// The (old) keys of the sockets inserted, in the iterator's order.
    pub keys: Vec<Vec<u8>>,
    /// Keys (old key bytes) whose socket the new map refused, with the errno:
    /// `E2BIG` a sockmap index past the new capacity, `ENOMEM` a full sockhash,
    /// `EOPNOTSUPP` a socket in a state a map takes no more (closing), `EEXIST` a key
    /// the new map holds already under [`UpdateFlags::NOEXIST`].
    pub refused: Vec<(Vec<u8>, i32)>,
    /// Wall time, program load included.
    pub elapsed: Duration,
}

fn is_socket_map(t: Option<MapType>) -> bool {
    matches!(t, Some(MapType::Sockmap | MapType::Sockhash))
}

/// Copies every socket of sockmap or sockhash `old` into `new` (same type, same key
/// size, a capacity of its own) under the same key by a generated `iter/sockmap`
/// program; `name` names the map in errors.
///
/// # Errors
/// The maps are not socket maps of one type and key size, the kernel has no
/// `sockmap` iterator (before 5.10, or no BTF), or a command fails.
pub fn carry_sockets(
    bpf: &Bpf,
    name: &str,
    old: &Map,
    new: &Map,
) -> Result<SocketReport, MigrateError> {
    carry_sockets_with(bpf, name, old, new, SocketPass::default())
}

/// [`carry_sockets`] of the sockets and with the flags `pass` says.
///
/// # Errors
/// As [`carry_sockets`]; `pass.only` is not keyed like the old map or its values are
/// not keys of the new map. With `pass.only` the key sizes may differ.
pub fn carry_sockets_with(
    bpf: &Bpf,
    name: &str,
    old: &Map,
    new: &Map,
    pass: SocketPass<'_>,
) -> Result<SocketReport, MigrateError> {
    let start = Instant::now();
    let invalid = |reason: String| MigrateError::Invalid {
        map: name.to_owned(),
        reason,
    };
    let (oi, ni) = (old.info(), new.info());
    if !is_socket_map(oi.map_type) || oi.map_type != ni.map_type {
        return Err(invalid(format!(
            "sockets are carried between two sockmaps or two sockhashes, not from {} to {}",
            oi.map_type
                .map_or("an unknown map type".to_owned(), |t| t.to_string()),
            ni.map_type
                .map_or("an unknown map type".to_owned(), |t| t.to_string()),
        )));
    }
    let key_size = old.key_size();
    if key_size == 0 || key_size > MAX_KEY {
        return Err(invalid(format!(
            "keys of {key_size} bytes: a socket map's keys are carried up to {MAX_KEY} bytes"
        )));
    }
    match pass.only {
        None if key_size != new.key_size() => {
            return Err(invalid(format!(
                "keys of {key_size} and {} bytes: without new keys, a socket map is carried into one of the same key size",
                new.key_size()
            )));
        }
        Some(only) if only.key_size() != key_size || only.value_len() != new.key_size() => {
            return Err(invalid(format!(
                "the map of keys to carry maps keys of {} bytes to {}, the socket maps have keys of {key_size} and {}",
                only.key_size(),
                only.value_len(),
                new.key_size()
            )));
        }
        _ => {}
    }
    let target = iter_target_id().map_err(|reason| {
        invalid(format!(
            "the kernel offers no sockmap iterator ({reason}); it needs Linux 5.10 or newer with BTF"
        ))
    })?;
    let record = key_size.next_multiple_of(8) + 8;
    let insns = program(
        key_size,
        record,
        new.fd().as_raw_fd(),
        pass.only.map(|m| m.fd().as_raw_fd()),
        i32::try_from(pass.flags.0).unwrap_or(0),
    );
    let mut spec = ProgLoad::new(ProgramType::Tracing, &insns, LICENSE);
    spec.name = "handover_socks";
    spec.expected_attach_type = Some(AttachType::TraceIter);
    spec.attach_btf_id = target;
    let prog = bpf
        .prog_load(&spec)
        .map_err(kernel(name, "loading the sockmap iterator program"))?;
    let link = bpf
        .link_create_iter(&prog, IterTarget::Map(old.fd()))
        .map_err(kernel(
            name,
            "attaching the sockmap iterator to the old map",
        ))?;
    let iter = bpf
        .iter_create(&link)
        .map_err(kernel(name, "opening a run of the sockmap iterator"))?;
    let mut out = Vec::new();
    std::fs::File::from(iter)
        .read_to_end(&mut out)
        .map_err(|source| MigrateError::Io {
            path: format!("<sockmap iterator of {name}>").into(),
            doing: "running the iterator",
            source,
        })?;
    if out.len() % record != 0 {
        return Err(invalid(format!(
            "the iterator wrote {} bytes, not whole {record}-byte records",
            out.len()
        )));
    }
    let mut report = SocketReport {
        seen: out.len() / record,
        ..SocketReport::default()
    };
    for rec in out.chunks_exact(record) {
        let (key, ret) = rec.split_at(record - 8);
        // The update's result is an int: a kernel whose map operations return int
        // (5.10) calls the map's update directly and leaves the upper half of r0 zero,
        // so only the lower half, sign-extended, is the result.
        let ret = (ret.try_into().map_or(0, i64::from_ne_bytes) << 32) >> 32;
        if ret == 0 {
            report.carried += 1;
            report
                .keys
                .push(key.get(..key_size).unwrap_or(key).to_vec());
        } else {
            let errno = i32::try_from(-ret).unwrap_or(i32::MAX);
            report
                .refused
                .push((key.get(..key_size).unwrap_or(key).to_vec(), errno));
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// The license the program declares: the kernel lets only GPL-compatible programs
/// call `bpf_seq_write`.
const LICENSE: &str = "GPL";

/// The BTF id of the sockmap iterator's target function in the running kernel.
fn iter_target_id() -> Result<u32, String> {
    let data = vmlinux_btf().map_err(|e| format!("reading the kernel BTF: {e}"))?;
    let btf =
        handover_btf::Btf::parse(&data).map_err(|e| format!("parsing the kernel BTF: {e}"))?;
    btf.id_by_name(ITER_TARGET, handover_btf::Kind::Func)
        .map(|id| id.0)
        .ok_or_else(|| format!("no function {ITER_TARGET} in the kernel BTF"))
}

/// The iterator program: see the module documentation. `record` bytes of stack hold
/// the old key (zero-padded to 8 bytes) and the update's result.
fn program(
    key_size: usize,
    record: usize,
    new_map_fd: i32,
    only_fd: Option<i32>,
    flags: i32,
) -> Vec<Insn> {
    let rec = -i16_of(record);
    let mut p = vec![
        Insn::new(MOV64_REG, 6, 1, 0, 0),
        Insn::new(LDX_DW, 7, 6, CTX_KEY, 0),
    ];
    // Both null checks jump to the final `return 0`, patched once its place is known.
    let mut to_out = vec![p.len()];
    p.push(Insn::new(JEQ_IMM, 7, 0, 0, 0));
    p.push(Insn::new(LDX_DW, 8, 6, CTX_SK, 0));
    to_out.push(p.len());
    p.push(Insn::new(JEQ_IMM, 8, 0, 0, 0));
    p.push(Insn::new(LDX_DW, 9, 6, CTX_META, 0));
    p.push(Insn::new(LDX_DW, 9, 9, META_SEQ, 0));
    // The record's key area, zeroed (the helper reads initialised stack only), then
    // the key copied in.
    for at in (0..record - 8).step_by(8) {
        p.push(Insn::new(ST_DW, 10, 0, rec + i16_of(at), 0));
    }
    let mut c = 0;
    while c < key_size {
        let &(size, ldx, stx) = MOVES
            .iter()
            .find(|(size, ..)| key_size - c >= *size)
            .unwrap_or(&(1, 0x71, 0x73));
        p.push(Insn::new(ldx, 1, 7, i16_of(c), 0));
        p.push(Insn::new(stx, 10, 1, rec + i16_of(c), 0));
        c += size;
    }
    if let Some(only) = only_fd {
        p.extend([
            Insn::new(LD_IMM64, 1, PSEUDO_MAP_FD, 0, only),
            Insn::new(0, 0, 0, 0, 0),
            Insn::new(MOV64_REG, 2, 10, 0, 0),
            Insn::new(ADD64_IMM, 2, 0, 0, i32::from(rec)),
            Insn::new(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
        ]);
        to_out.push(p.len());
        p.push(Insn::new(JEQ_IMM, 0, 0, 0, 0));
    }
    p.extend([
        Insn::new(LD_IMM64, 1, PSEUDO_MAP_FD, 0, new_map_fd),
        Insn::new(0, 0, 0, 0, 0),
    ]);
    if only_fd.is_some() {
        // The new key: the value the lookup found.
        p.push(Insn::new(MOV64_REG, 2, 0, 0, 0));
    } else {
        p.push(Insn::new(MOV64_REG, 2, 10, 0, 0));
        p.push(Insn::new(ADD64_IMM, 2, 0, 0, i32::from(rec)));
    }
    p.extend([
        Insn::new(MOV64_REG, 3, 8, 0, 0),
        Insn::new(MOV64_IMM, 4, 0, 0, flags),
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_MAP_UPDATE_ELEM),
        Insn::new(STX_DW, 10, 0, -8, 0),
        Insn::new(MOV64_REG, 1, 9, 0, 0),
        Insn::new(MOV64_REG, 2, 10, 0, 0),
        Insn::new(ADD64_IMM, 2, 0, 0, i32::from(rec)),
        Insn::new(MOV64_IMM, 3, 0, 0, i32::from(-rec)),
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_SEQ_WRITE),
    ]);
    let out = p.len();
    p.push(Insn::new(MOV64_IMM, 0, 0, 0, 0));
    p.push(Insn::new(EXIT, 0, 0, 0, 0));
    for at in to_out {
        if let Some(j) = p.get_mut(at) {
            *j = Insn::new(JEQ_IMM, j.dst(), 0, i16_of(out - at - 1), 0);
        }
    }
    p
}
