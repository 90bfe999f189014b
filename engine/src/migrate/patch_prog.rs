//! [`KernelPatcher`]: applies a reconcile [`Patch`] inside the kernel, with a small
//! tc (`sched_cls`) program generated per map and run by `BPF_PROG_TEST_RUN`, so that
//! the `sum` deltas are atomic adds that cannot lose the adds the new programs make
//! meanwhile. A tc program rather than an XDP one: every test run of an XDP program
//! re-patches the kernel's XDP dispatcher, which the XDP programs of every device run
//! through (on 5.10 under concurrent test runs this has ended in an int3 oops inside
//! `bpf_dispatcher_xdp_func`); a tc test run changes nothing shared.
//!
//! The test-run packet carries the key, a mask of the leaves to apply and one data
//! slot per leaf: 8 bytes of delta for a `sum` leaf, for the others the leaf's new
//! bytes followed by the bytes expected there. The program checks the packet's
//! length, looks the key up in the new map (the key pointer is the packet itself),
//! compares every leaf to write with its expected bytes and stops if one differs (the
//! new programs wrote the entry after the reconcile read it), then for each leaf whose
//! mask bit is set either adds the delta with `BPF_ATOMIC | BPF_ADD` at the leaf's
//! offset or copies the bytes. Return values: 1 applied, 2 no such entry, 3 packet too
//! short (a bug here), 4 a leaf holds other bytes than expected (nothing changed).
//!
//! A second program deletes an entry only if its leaves still hold the bytes expected
//! (the packet: the key, then the whole value expected), with the same return values.
//!
//! Per-CPU maps: the lookup returns the slot of the CPU the test run happens on, so
//! the delta lands in that one slot; readers of a per-CPU counter sum the slots, so
//! the total is exact. Writes of per-CPU leaves go to every slot and are done from
//! user space (read, change, write back), as no program can reach another CPU's slot.
//! Values with a `bpf_spin_lock`: both programs take the element's lock around the
//! compare and the change (`bpf_spin_lock`, 5.1), so that the compare, the writes and
//! the adds are one step against programs that change the value under its lock; the
//! delete program releases it before the delete (no helper may run under a lock).

use std::os::fd::{AsRawFd, OwnedFd};

use super::access::MapAccess;
use super::error::{MigrateError, kernel};
use super::fields::ValueFields;
use super::plan::MergeRule;
use super::reconcile::{
    MARK_DONE, MARK_VALUE_SIZE, Outcome, Patch, Patcher, delete_if_unchanged, writes_expected,
};
use super::sys::{Bpf, Insn, Map, ProgLoad, ProgramType, UpdateFlags};

/// `BPF_PSEUDO_MAP_FD`: the immediate of a 64-bit load is a map descriptor.
pub(super) const PSEUDO_MAP_FD: u8 = 1;
/// The Ethernet header length, the least packet `BPF_PROG_TEST_RUN` takes for a
/// packet program.
const ETH_HLEN: usize = 14;
/// Offsets of `data` and `data_end` in `struct __sk_buff`.
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
/// Leaves one program can address (bits of the mask).
const MAX_LEAVES: usize = 64;

// Opcodes (`include/uapi/linux/bpf.h`, `bpf_common.h`).
pub(super) const MOV64_REG: u8 = 0xbf;
pub(super) const MOV64_IMM: u8 = 0xb7;
pub(super) const ADD64_IMM: u8 = 0x07;
const RSH64_IMM: u8 = 0x77;
const AND64_IMM: u8 = 0x57;
const JLE_REG: u8 = 0xbd;
const JNE_IMM: u8 = 0x55;
const JNE_REG: u8 = 0x5d;
pub(super) const JEQ_IMM: u8 = 0x15;
pub(super) const CALL: u8 = 0x85;
pub(super) const EXIT: u8 = 0x95;
pub(super) const LD_IMM64: u8 = 0x18;
/// `BPF_STX | BPF_ATOMIC | size`, immediate `BPF_ADD`.
const ATOMIC_ADD_W: u8 = 0xc3;
const ATOMIC_ADD_DW: u8 = 0xdb;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_MAP_UPDATE_ELEM: i32 = 2;
const BPF_FUNC_MAP_DELETE_ELEM: i32 = 3;
const BPF_FUNC_SPIN_LOCK: i32 = 93;
const BPF_FUNC_SPIN_UNLOCK: i32 = 94;
/// Return values of the programs.
const RET_APPLIED: i32 = 1;
const RET_MISSING: i32 = 2;
const RET_SHORT: i32 = 3;
const RET_CHANGED: i32 = 4;
/// `BPF_ST | BPF_MEM | BPF_DW` and `| BPF_W`: store an immediate.
const ST_DW_IMM: u8 = 0x7a;

/// `BPF_LDX | BPF_MEM | size` and `BPF_STX | BPF_MEM | size` for 8, 4, 2, 1 bytes.
pub(super) const MOVES: [(usize, u8, u8); 4] = [
    (8, 0x79, 0x7b),
    (4, 0x61, 0x63),
    (2, 0x69, 0x6b),
    (1, 0x71, 0x73),
];

pub(super) fn i16_of(n: usize) -> i16 {
    i16::try_from(n).unwrap_or(i16::MAX)
}

pub(super) fn i32_of(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Where each leaf's data sits in the packet, and the packet's length.
struct Layout {
    key_size: usize,
    /// (leaf index, packet offset, in kernel) per leaf.
    slots: Vec<(usize, usize, bool)>,
    len: usize,
}

impl Layout {
    fn new(fields: &ValueFields, key_size: usize, per_cpu: bool) -> Self {
        let mut at = key_size + 8;
        let mut slots = Vec::new();
        for (i, leaf) in fields.leaves.iter().enumerate() {
            let in_kernel = leaf.rule == MergeRule::Sum || !per_cpu;
            slots.push((i, at, in_kernel));
            if in_kernel {
                // A delta, or the bytes to write and the bytes expected.
                at += if leaf.rule == MergeRule::Sum {
                    8
                } else {
                    2 * leaf.len
                };
            }
        }
        Self {
            key_size,
            slots,
            len: at.max(ETH_HLEN),
        }
    }
}

/// Jumps to the end of a program, resolved when its end is known.
#[derive(Default)]
struct Exits(Vec<usize>);

impl Exits {
    /// A jump (`code`, registers and immediate as given) to the exit, at the end of `p`.
    fn jump(&mut self, p: &mut Vec<Insn>, code: u8, dst: u8, src: u8, imm: i32) {
        self.0.push(p.len());
        p.push(Insn::new(code, dst, src, 0, imm));
    }

    /// Appends the exit with `ret` (releasing the lock at `lock` first) and points
    /// every jump at it; nothing without jumps.
    fn resolve(self, p: &mut Vec<Insn>, lock: Option<usize>, ret: i32) {
        // The verifier refuses instructions no path reaches.
        if self.0.is_empty() {
            return;
        }
        let at = p.len();
        for j in self.0 {
            if let Some(insn) = p.get_mut(j) {
                insn.off = i16_of(at - j - 1);
            }
        }
        lock_call(p, lock, BPF_FUNC_SPIN_UNLOCK);
        p.push(Insn::new(MOV64_IMM, 0, 0, 0, ret));
        p.push(Insn::new(EXIT, 0, 0, 0, 0));
    }
}

/// The start of both programs: r7 the packet, bounds checked against `len`; r6 the
/// element of the key at the packet's start in `map_fd` (or the program returns),
/// its spin lock taken when the value has one at `lock`.
fn prologue(len: usize, map_fd: i32, lock: Option<usize>) -> Vec<Insn> {
    let mut p = vec![
        Insn::new(MOV64_REG, 6, 1, 0, 0),
        // data, data_end of struct __sk_buff.
        Insn::new(0x61, 7, 6, SKB_DATA, 0),
        Insn::new(0x61, 8, 6, SKB_DATA_END, 0),
        Insn::new(MOV64_REG, 1, 7, 0, 0),
        Insn::new(ADD64_IMM, 1, 0, 0, i32_of(len)),
        Insn::new(JLE_REG, 1, 8, 2, 0),
        Insn::new(MOV64_IMM, 0, 0, 0, RET_SHORT),
        Insn::new(EXIT, 0, 0, 0, 0),
        Insn::new(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(MOV64_REG, 2, 7, 0, 0),
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
        Insn::new(JNE_IMM, 0, 0, 2, 0),
        Insn::new(MOV64_IMM, 0, 0, 0, RET_MISSING),
        Insn::new(EXIT, 0, 0, 0, 0),
        Insn::new(MOV64_REG, 6, 0, 0, 0),
    ];
    lock_call(&mut p, lock, BPF_FUNC_SPIN_LOCK);
    p
}

/// `bpf_spin_lock` or `bpf_spin_unlock` (`func`) on the lock at `lock` of the element
/// in r6; nothing without a lock.
fn lock_call(p: &mut Vec<Insn>, lock: Option<usize>, func: i32) {
    if let Some(at) = lock {
        p.push(Insn::new(MOV64_REG, 1, 6, 0, 0));
        p.push(Insn::new(ADD64_IMM, 1, 0, 0, i32_of(at)));
        p.push(Insn::new(CALL, 0, 0, 0, func));
    }
}

/// Compares `len` bytes of the element (r6) at `offset` with the packet (r7) at `at`,
/// jumping to `changed` at the first difference.
fn compare(p: &mut Vec<Insn>, changed: &mut Exits, offset: usize, at: usize, len: usize) {
    let mut c = 0;
    while c < len {
        let &(size, ldx, _) = MOVES
            .iter()
            .find(|(s, ..)| *s <= len - c)
            .unwrap_or(&MOVES[3]);
        p.push(Insn::new(ldx, 1, 6, i16_of(offset + c), 0));
        p.push(Insn::new(ldx, 2, 7, i16_of(at + c), 0));
        changed.jump(p, JNE_REG, 1, 2, 0);
        c += size;
    }
}

/// Instructions that skip `body` unless bit `bit` of the mask (r9) is set.
fn masked(p: &mut Vec<Insn>, bit: usize, body: Vec<Insn>) {
    p.push(Insn::new(MOV64_REG, 1, 9, 0, 0));
    p.push(Insn::new(RSH64_IMM, 1, 0, 0, i32_of(bit)));
    p.push(Insn::new(AND64_IMM, 1, 0, 0, 1));
    p.push(Insn::new(JEQ_IMM, 1, 0, i16_of(body.len()), 0));
    p.extend(body);
}

/// The patch program for `fields` over the map `map_fd`, marking keys done in
/// `marks_fd`.
fn program(fields: &ValueFields, layout: &Layout, map_fd: i32, marks_fd: Option<i32>) -> Vec<Insn> {
    let lock = fields.spin_lock;
    let mut p = prologue(layout.len, map_fd, lock);
    // The mask.
    p.push(Insn::new(0x79, 9, 7, i16_of(layout.key_size), 0));
    let mut changed = Exits::default();
    // Every leaf to write still holds the bytes expected, or nothing is changed.
    for &(i, at, in_kernel) in &layout.slots {
        let Some(leaf) = fields.leaves.get(i) else {
            continue;
        };
        if !in_kernel || leaf.rule == MergeRule::Sum {
            continue;
        }
        let mut body = Vec::new();
        let mut jumps = Exits::default();
        compare(&mut body, &mut jumps, leaf.offset, at + leaf.len, leaf.len);
        // The jumps count from the body's start: shift them to where it lands.
        let start = p.len() + 4;
        changed.0.extend(jumps.0.into_iter().map(|j| j + start));
        masked(&mut p, i, body);
    }
    for &(i, at, in_kernel) in &layout.slots {
        let Some(leaf) = fields.leaves.get(i) else {
            continue;
        };
        if !in_kernel {
            continue;
        }
        let mut body = Vec::new();
        if leaf.rule == MergeRule::Sum {
            let (load, add) = if leaf.len == 8 {
                (0x79, ATOMIC_ADD_DW)
            } else {
                (0x61, ATOMIC_ADD_W)
            };
            body.push(Insn::new(load, 1, 7, i16_of(at), 0));
            // Immediate BPF_ADD (0) without BPF_FETCH.
            body.push(Insn::new(add, 6, 1, i16_of(leaf.offset), 0));
        } else {
            let mut c = 0;
            while c < leaf.len {
                let &(size, ldx, stx) = MOVES
                    .iter()
                    .find(|(s, ..)| *s <= leaf.len - c)
                    .unwrap_or(&MOVES[3]);
                body.push(Insn::new(ldx, 1, 7, i16_of(at + c), 0));
                body.push(Insn::new(stx, 6, 1, i16_of(leaf.offset + c), 0));
                c += size;
            }
        }
        masked(&mut p, i, body);
    }
    lock_call(&mut p, lock, BPF_FUNC_SPIN_UNLOCK);
    if let Some(fd) = marks_fd {
        // The mark's value on the stack: the state, then zeros.
        let at = -i16_of(MARK_VALUE_SIZE);
        p.push(Insn::new(ST_DW_IMM, 10, 0, at, i32_of(MARK_DONE as usize)));
        p.push(Insn::new(ST_DW_IMM, 10, 0, at + 8, 0));
        p.push(Insn::new(LD_IMM64, 1, PSEUDO_MAP_FD, 0, fd));
        p.push(Insn::new(0, 0, 0, 0, 0));
        p.push(Insn::new(MOV64_REG, 2, 7, 0, 0));
        p.push(Insn::new(MOV64_REG, 3, 10, 0, 0));
        p.push(Insn::new(ADD64_IMM, 3, 0, 0, i32::from(at)));
        p.push(Insn::new(MOV64_IMM, 4, 0, 0, 0));
        p.push(Insn::new(CALL, 0, 0, 0, BPF_FUNC_MAP_UPDATE_ELEM));
    }
    p.push(Insn::new(MOV64_IMM, 0, 0, 0, RET_APPLIED));
    p.push(Insn::new(EXIT, 0, 0, 0, 0));
    changed.resolve(&mut p, lock, RET_CHANGED);
    p
}

/// The packet length of the delete program: the key, then one whole value.
fn delete_len(key_size: usize, value_size: usize) -> usize {
    (key_size + value_size).max(ETH_HLEN)
}

/// The program that deletes the key at the packet's start from `map_fd` if every leaf
/// of its element holds the bytes of the value that follows the key in the packet.
fn delete_program(fields: &ValueFields, key_size: usize, map_fd: i32) -> Vec<Insn> {
    let lock = fields.spin_lock;
    let mut p = prologue(delete_len(key_size, fields.size), map_fd, lock);
    let mut changed = Exits::default();
    for leaf in &fields.leaves {
        compare(
            &mut p,
            &mut changed,
            leaf.offset,
            key_size + leaf.offset,
            leaf.len,
        );
    }
    // No helper but the unlock may run under the lock: the delete follows it.
    lock_call(&mut p, lock, BPF_FUNC_SPIN_UNLOCK);
    p.extend([
        Insn::new(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(MOV64_REG, 2, 7, 0, 0),
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_MAP_DELETE_ELEM),
        Insn::new(JEQ_IMM, 0, 0, 2, 0),
        Insn::new(MOV64_IMM, 0, 0, 0, RET_MISSING),
        Insn::new(EXIT, 0, 0, 0, 0),
        Insn::new(MOV64_IMM, 0, 0, 0, RET_APPLIED),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]);
    changed.resolve(&mut p, lock, RET_CHANGED);
    p
}

/// A [`Patcher`] that applies patches in the kernel; see the module documentation.
#[derive(Debug)]
pub struct KernelPatcher {
    bpf: Bpf,
    map: Map,
    marks: Option<Map>,
    name: String,
    fields: ValueFields,
    layout: Layout,
    prog: OwnedFd,
    /// The delete program; none for per-CPU maps (a program sees one CPU's slot) and
    /// values too large for a test-run packet, deleted from user space.
    delete: Option<OwnedFd>,
    per_cpu: bool,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// The most bytes of a test-run packet these programs take.
const MAX_PACKET: usize = 3000;

impl KernelPatcher {
    /// Generates and loads the patch program of `map` (the new map) with value
    /// `fields`; with `marks` (the reconcile's marks map), each patch marks its key
    /// done in the same run.
    ///
    /// # Errors
    /// More than 64 leaves, a packet larger than a test run takes, or the kernel
    /// refuses the program (the error carries the verifier log).
    pub fn new(
        bpf: &Bpf,
        map: &Map,
        name: &str,
        fields: &ValueFields,
        marks: Option<&Map>,
    ) -> Result<Self, MigrateError> {
        let g = MapAccess::geometry(map);
        let invalid = |reason: String| MigrateError::Invalid {
            map: name.to_owned(),
            reason,
        };
        if fields.leaves.len() > MAX_LEAVES {
            return Err(invalid(format!(
                "the value has {} fields, an in-kernel patch program takes at most {MAX_LEAVES}: patch from user space",
                fields.leaves.len()
            )));
        }
        let layout = Layout::new(fields, g.key_size, g.per_cpu());
        if layout.len > MAX_PACKET {
            return Err(invalid(format!(
                "a patch of this value takes a {}-byte packet, more than a test run takes: patch from user space",
                layout.len
            )));
        }
        let own = |m: &Map| {
            m.fd()
                .try_clone_to_owned()
                .map_err(|e| invalid(format!("duplicating a map descriptor: {e}")))
                .and_then(|fd| Map::new(bpf, fd).map_err(kernel(name, "opening a map to patch")))
        };
        let map = own(map)?;
        let marks = marks.map(own).transpose()?;
        let load = |insns: &[Insn], what: &'static str| {
            let mut spec = ProgLoad::new(ProgramType::SchedCls, insns, "Apache-2.0");
            spec.name = "handover_patch";
            bpf.prog_load(&spec).map_err(kernel(name, what))
        };
        let map_fd = map.fd().as_raw_fd();
        let prog = load(
            &program(
                fields,
                &layout,
                map_fd,
                marks.as_ref().map(|m| m.fd().as_raw_fd()),
            ),
            "loading the in-kernel patch program",
        )?;
        let delete = if g.per_cpu() || delete_len(g.key_size, fields.size) > MAX_PACKET {
            None
        } else {
            Some(load(
                &delete_program(fields, g.key_size, map_fd),
                "loading the in-kernel delete program",
            )?)
        };
        Ok(Self {
            bpf: bpf.clone(),
            map,
            marks,
            name: name.to_owned(),
            fields: fields.clone(),
            layout,
            prog,
            delete,
            per_cpu: g.per_cpu(),
        })
    }

    /// Runs `prog` on `packet`.
    fn test_run(
        &self,
        prog: &OwnedFd,
        packet: &[u8],
        what: &'static str,
    ) -> Result<Outcome, MigrateError> {
        let run = self
            .bpf
            .prog_test_run(prog, packet, None, 1)
            .map_err(kernel(&self.name, what))?;
        match i32::try_from(run.retval) {
            Ok(RET_APPLIED) => Ok(Outcome::Applied),
            Ok(RET_MISSING) => Ok(Outcome::Missing),
            Ok(RET_CHANGED) => Ok(Outcome::Changed),
            _ => Err(MigrateError::Invalid {
                map: self.name.clone(),
                reason: format!(
                    "{what}: the program returned {} for a packet of {} bytes",
                    run.retval,
                    packet.len()
                ),
            }),
        }
    }

    fn run(&self, key: &[u8], patch: &Patch) -> Result<Outcome, MigrateError> {
        let mut packet = vec![0u8; self.layout.len];
        let mut mask = 0u64;
        if let Some(k) = packet.get_mut(..self.layout.key_size) {
            k.copy_from_slice(key);
        }
        for (leaf, delta) in &patch.adds {
            if let Some(&(_, at, true)) = self.layout.slots.get(*leaf) {
                mask |= 1 << leaf;
                if let Some(d) = packet.get_mut(at..at + 8) {
                    d.copy_from_slice(&delta.to_le_bytes());
                }
            }
        }
        if !self.per_cpu {
            for w in &patch.writes {
                if let Some(&(_, at, true)) = self.layout.slots.get(w.leaf) {
                    mask |= 1 << w.leaf;
                    let n = w.bytes.len();
                    if let Some(d) = packet.get_mut(at..at + n) {
                        d.copy_from_slice(&w.bytes);
                    }
                    if let Some(d) = packet.get_mut(at + n..at + n + w.expect.len()) {
                        d.copy_from_slice(&w.expect);
                    }
                }
            }
        }
        let ks = self.layout.key_size;
        if let Some(m) = packet.get_mut(ks..ks + 8) {
            m.copy_from_slice(&mask.to_le_bytes());
        }
        self.test_run(&self.prog, &packet, "running the in-kernel patch program")
    }

    /// Per-CPU writes: every slot, from user space, after the same compare.
    fn write_slots(&self, key: &[u8], patch: &Patch) -> Result<Outcome, MigrateError> {
        let g = MapAccess::geometry(&self.map);
        let mut value = vec![0u8; g.value_len];
        if !Map::lookup(&self.map, key, &mut value, UpdateFlags::ANY)
            .map_err(kernel(&self.name, "reading an entry to patch"))?
        {
            return Ok(Outcome::Missing);
        }
        if !writes_expected(&self.fields, g.cpus, &value, patch) {
            return Ok(Outcome::Changed);
        }
        let stride = g.value_size.next_multiple_of(8);
        for w in &patch.writes {
            if let Some(l) = self.fields.leaves.get(w.leaf) {
                let at = w.slot * stride + l.offset;
                if let Some(d) = value.get_mut(at..at + w.bytes.len()) {
                    d.copy_from_slice(&w.bytes);
                }
            }
        }
        match Map::update(&self.map, key, &value, UpdateFlags::EXIST) {
            Ok(()) => Ok(Outcome::Applied),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(Outcome::Missing),
            Err(e) => Err(kernel(&self.name, "writing a patched entry")(e)),
        }
    }
}

impl Patcher for KernelPatcher {
    fn marks_done(&self) -> bool {
        self.marks.is_some()
    }

    fn apply(&self, key: &[u8], patch: &Patch) -> Result<Outcome, MigrateError> {
        if self.per_cpu && !patch.writes.is_empty() {
            let written = self.write_slots(key, patch)?;
            if written != Outcome::Applied {
                return Ok(written);
            }
            // The writes are in: what remains are the adds, with nothing to compare.
            let adds = Patch {
                writes: Vec::new(),
                adds: patch.adds.clone(),
            };
            return self.run(key, &adds);
        }
        self.run(key, patch)
    }

    fn delete_unchanged(&self, key: &[u8], expect: &[u8]) -> Result<Outcome, MigrateError> {
        let Some(prog) = &self.delete else {
            return delete_if_unchanged(
                &self.map,
                &self.name,
                &self.fields,
                UpdateFlags::ANY,
                key,
                expect,
            );
        };
        let ks = self.layout.key_size;
        let mut packet = vec![0u8; delete_len(ks, self.fields.size)];
        if let Some(k) = packet.get_mut(..ks) {
            k.copy_from_slice(key);
        }
        if let (Some(v), Some(e)) = (
            packet.get_mut(ks..ks + self.fields.size),
            expect.get(..self.fields.size),
        ) {
            v.copy_from_slice(e);
        }
        self.test_run(prog, &packet, "running the in-kernel delete program")
    }
}
