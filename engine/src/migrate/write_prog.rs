//! Writing a copy's entries into a kernel hash map with a generated program instead
//! of `BPF_MAP_UPDATE_BATCH`.
//!
//! The batch command copies each key and each value from user space on its own
//! (`copy_from_user` with the hardened-usercopy checks, then the update wrapper per
//! element): about a third of its time on a hash map of small entries goes there,
//! not into the hash table. Here a run of entries travels in one copy, as the value
//! of a one-element array map (the carrier), and a tc (`sched_cls`) program run by
//! `BPF_PROG_TEST_RUN` calls `bpf_map_update_elem` for each of them with pointers
//! into that value. A tc program for the same reason as the reconcile's patches: its
//! test runs touch nothing shared (see [`super::patch_prog`]).
//!
//! ```text
//! carrier value: count u32, 4 bytes unused, then RUN keys, then RUN values (packed)
//! v = lookup(carrier, 0); if !v or v.count > RUN: return -1
//! for i in 0..v.count:
//!     r = update(target, &v.keys[i], &v.values[i], BPF_ANY)
//!     if r: return i + 1
//! return 0
//! ```
//!
//! The loop is a bounded loop (5.3): the verifier walks it once per entry of a run,
//! which keeps [`RUN`] small. Entries are written in their order, so a key given twice
//! ends with its last value, as with the batch command. Only maps whose elements a
//! program writes as user space would: shared (not per-CPU) values, without a
//! `bpf_spin_lock` (a program's update of one CPU's slot, or one not under the lock,
//! would not be the same write), in a hash or LRU hash map. Whatever the program
//! cannot write (its load refused, an update refused) is left to the batch command,
//! which reports the error as it always does.

use std::os::fd::{AsRawFd, OwnedFd};

use super::access::Geometry;
use super::error::{MigrateError, kernel};
use super::patch_prog::{
    ADD64_IMM, CALL, EXIT, JEQ_IMM, LD_IMM64, MOV64_IMM, MOV64_REG, PSEUDO_MAP_FD, i32_of,
};
use super::sys::{Insn, Map, MapCreate, MapType, ProgLoad, ProgramType, UpdateFlags};

/// Entries per test run: the verifier walks the loop once per entry, so this bounds
/// its work (about 20 instructions an entry) and the load's time.
pub(crate) const RUN: usize = 512;
/// The largest carrier value: runs of large entries are shorter.
const MAX_CARRIER: usize = 1 << 20;
/// A run shorter than this gains too little over the batch command.
const MIN_RUN: usize = 16;
/// The header of the carrier's value: the count, then padding to 8 bytes.
const HEADER: usize = 8;
/// A test run takes at least an Ethernet header of packet.
const PACKET: [u8; 14] = [0; 14];

const LDX_W: u8 = 0x61;
const ST_W_IMM: u8 = 0x62;
const ADD64_REG: u8 = 0x0f;
const MUL64_IMM: u8 = 0x27;
const JGT_IMM: u8 = 0x25;
const JGE_REG: u8 = 0x3d;
const JNE_IMM: u8 = 0x55;
const JA: u8 = 0x05;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_MAP_UPDATE_ELEM: i32 = 2;

/// A loaded writer of one map: its carrier and its program. One per writing thread:
/// runs of two threads would share the carrier.
#[derive(Debug)]
pub(crate) struct ProgWriter {
    carrier: Map,
    /// Holds its own references to the carrier and the target map.
    prog: OwnedFd,
    run: usize,
    key_size: usize,
    value_len: usize,
    buf: Vec<u8>,
}

/// Entries per run for `g`, or `None` where a program does not write this map as
/// user space would (see the module documentation) or runs would be too short.
pub(crate) fn run_for(g: &Geometry, lock: bool) -> Option<usize> {
    let kinds = matches!(g.map_type, MapType::Hash | MapType::LruHash);
    if !kinds || lock || g.per_cpu() || g.key_size == 0 || g.value_len == 0 {
        return None;
    }
    let entry = g.key_size + g.value_len;
    let run = ((MAX_CARRIER - HEADER) / entry).min(RUN);
    (run >= MIN_RUN).then_some(run)
}

fn ld_map(dst: u8, fd: i32) -> [Insn; 2] {
    [
        Insn::new(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd),
        Insn::new(0, 0, 0, 0, 0),
    ]
}

/// The program; see the module documentation. Registers: r7 the carrier's value,
/// r8 the count, r9 the index.
fn program(carrier: i32, target: i32, run: usize, key_size: usize, value_len: usize) -> Vec<Insn> {
    // Jumps to the exits are patched once their places are known.
    let mut bad = Vec::new();
    let mut p = vec![Insn::new(ST_W_IMM, 10, 0, -4, 0)];
    p.extend(ld_map(1, carrier));
    p.extend([
        Insn::new(MOV64_REG, 2, 10, 0, 0),
        Insn::new(ADD64_IMM, 2, 0, 0, -4),
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
    ]);
    bad.push(p.len());
    p.push(Insn::new(JEQ_IMM, 0, 0, 0, 0));
    p.extend([
        Insn::new(MOV64_REG, 7, 0, 0, 0),
        Insn::new(LDX_W, 8, 7, 0, 0),
    ]);
    bad.push(p.len());
    p.push(Insn::new(JGT_IMM, 8, 0, 0, i32_of(run)));
    p.push(Insn::new(MOV64_IMM, 9, 0, 0, 0));
    let top = p.len();
    let to_done = p.len();
    p.push(Insn::new(JGE_REG, 9, 8, 0, 0));
    p.extend([
        Insn::new(MOV64_REG, 2, 9, 0, 0),
        Insn::new(MUL64_IMM, 2, 0, 0, i32_of(key_size)),
        Insn::new(ADD64_REG, 2, 7, 0, 0),
        Insn::new(ADD64_IMM, 2, 0, 0, i32_of(HEADER)),
        Insn::new(MOV64_REG, 3, 9, 0, 0),
        Insn::new(MUL64_IMM, 3, 0, 0, i32_of(value_len)),
        Insn::new(ADD64_REG, 3, 7, 0, 0),
        Insn::new(ADD64_IMM, 3, 0, 0, i32_of(HEADER + run * key_size)),
    ]);
    p.extend(ld_map(1, target));
    p.extend([
        Insn::new(MOV64_IMM, 4, 0, 0, 0),
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_MAP_UPDATE_ELEM),
    ]);
    let to_failed = p.len();
    p.push(Insn::new(JNE_IMM, 0, 0, 0, 0));
    p.push(Insn::new(ADD64_IMM, 9, 0, 0, 1));
    let back = p.len();
    p.push(Insn::new(JA, 0, 0, offset(back, top), 0));
    let done = p.len();
    p.extend([
        Insn::new(MOV64_IMM, 0, 0, 0, 0),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]);
    let failed = p.len();
    p.extend([
        Insn::new(MOV64_REG, 0, 9, 0, 0),
        Insn::new(ADD64_IMM, 0, 0, 0, 1),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]);
    let refused = p.len();
    p.extend([
        Insn::new(MOV64_IMM, 0, 0, 0, -1),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]);
    let retarget = |p: &mut Vec<Insn>, at: usize, to: usize| {
        if let Some(j) = p.get_mut(at) {
            j.off = offset(at, to);
        }
    };
    for at in bad {
        retarget(&mut p, at, refused);
    }
    retarget(&mut p, to_done, done);
    retarget(&mut p, to_failed, failed);
    p
}

/// The offset of a jump at `from` to `to`.
fn offset(from: usize, to: usize) -> i16 {
    let (from, to) = (
        i64::try_from(from).unwrap_or(0),
        i64::try_from(to).unwrap_or(0),
    );
    i16::try_from(to - from - 1).unwrap_or(0)
}

impl ProgWriter {
    /// Creates the carrier and loads the program writing `target` in runs of `run`
    /// entries ([`run_for`]).
    ///
    /// # Errors
    /// The kernel refuses the carrier or the program (no bounded loops before 5.3,
    /// no `BPF_PROG_TEST_RUN` of tc programs, ...): the caller writes by batch.
    pub(crate) fn new(target: &Map, name: &str, run: usize) -> Result<Self, MigrateError> {
        let g = super::access::MapAccess::geometry(target);
        let (key_size, value_len) = (g.key_size, g.value_len);
        let bpf = target.bpf();
        let size = HEADER + run * (key_size + value_len);
        let mut spec = MapCreate::new(
            MapType::Array,
            4,
            u32::try_from(size).unwrap_or(u32::MAX),
            1,
        );
        spec.name = "handover_carry";
        let carrier = Map::create(bpf, &spec).map_err(kernel(name, "creating a write carrier"))?;
        let insns = program(
            carrier.fd().as_raw_fd(),
            target.fd().as_raw_fd(),
            run,
            key_size,
            value_len,
        );
        let mut load = ProgLoad::new(ProgramType::SchedCls, &insns, "Apache-2.0");
        load.name = "handover_write";
        let prog = bpf
            .prog_load(&load)
            .map_err(kernel(name, "loading the write program"))?;
        Ok(Self {
            carrier,
            prog,
            run,
            key_size,
            value_len,
            buf: vec![0; size],
        })
    }

    /// Writes packed `keys` and `values` run by run; returns how many entries were
    /// written, all of them unless the kernel refused one (the rest is the caller's,
    /// from that entry on).
    ///
    /// # Errors
    /// A command on the carrier or the test run fails.
    pub(crate) fn write(
        &mut self,
        name: &str,
        keys: &[u8],
        values: &[u8],
    ) -> Result<usize, MigrateError> {
        let (ks, vl) = (self.key_size.max(1), self.value_len.max(1));
        let buf = &mut self.buf;
        let values_at = HEADER + self.run * ks;
        let mut written = 0;
        for (k, v) in keys.chunks(self.run * ks).zip(values.chunks(self.run * vl)) {
            let n = k.len() / ks;
            put(buf, 0, &u32::try_from(n).unwrap_or(0).to_ne_bytes());
            put(buf, HEADER, k);
            put(buf, values_at, v);
            self.carrier
                .update(&0u32.to_ne_bytes(), buf, UpdateFlags::ANY)
                .map_err(kernel(name, "filling the write carrier"))?;
            let run = self
                .carrier
                .bpf()
                .prog_test_run(&self.prog, &PACKET, None, 1)
                .map_err(kernel(name, "running the write program"))?;
            match usize::try_from(run.retval) {
                Ok(0) => written += n,
                // Entry `r - 1` was refused: the ones before it are written.
                Ok(r) if r <= n => return Ok(written + r - 1),
                _ => {
                    return Err(MigrateError::Invalid {
                        map: name.to_owned(),
                        reason: format!(
                            "the write program returned {} for a run of {n} entries",
                            run.retval
                        ),
                    });
                }
            }
        }
        Ok(written)
    }
}

/// Copies `bytes` into `buf` at `at` (in range by construction).
fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(d) = buf.get_mut(at..at + bytes.len()) {
        d.copy_from_slice(bytes);
    }
}
