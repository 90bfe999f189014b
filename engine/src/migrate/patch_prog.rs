//! [`KernelPatcher`]: applies a reconcile [`Patch`] inside the kernel, with a small
//! XDP program generated per map and run by `BPF_PROG_TEST_RUN`, so that the `sum`
//! deltas are atomic adds that cannot lose the adds the new programs make meanwhile.
//!
//! The test-run packet carries the key, a mask of the leaves to apply and one data
//! slot per leaf: 8 bytes of delta for a `sum` leaf, the leaf's bytes for the others.
//! The program checks the packet's length, looks the key up in the new map (the key
//! pointer is the packet itself), and for each leaf whose mask bit is set either adds
//! the delta with `BPF_ATOMIC | BPF_ADD` at the leaf's offset or copies the bytes.
//! Return values: 1 applied, 2 no such entry, 3 packet too short (a bug here).
//!
//! Per-CPU maps: the lookup returns the slot of the CPU the test run happens on, so
//! the delta lands in that one slot; readers of a per-CPU counter sum the slots, so
//! the total is exact. Writes of per-CPU leaves go to every slot and are done from
//! user space (read, change, write back), as no program can reach another CPU's slot.
//! Values with a `bpf_spin_lock` are patched from user space under `BPF_F_LOCK`
//! instead ([`UserPatcher`](super::UserPatcher)), since this program takes no lock.

use std::os::fd::{AsRawFd, OwnedFd};

use super::access::MapAccess;
use super::error::{MigrateError, kernel};
use super::fields::ValueFields;
use super::plan::MergeRule;
use super::reconcile::{MARK_DONE, MARK_VALUE_SIZE, Patch, Patcher};
use super::sys::{Bpf, Insn, Map, ProgLoad, ProgramType, UpdateFlags};

/// `BPF_PSEUDO_MAP_FD`: the immediate of a 64-bit load is a map descriptor.
pub(super) const PSEUDO_MAP_FD: u8 = 1;
/// The Ethernet header length, the least packet `BPF_PROG_TEST_RUN` takes for XDP.
const ETH_HLEN: usize = 14;
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
pub(super) const JEQ_IMM: u8 = 0x15;
pub(super) const CALL: u8 = 0x85;
pub(super) const EXIT: u8 = 0x95;
pub(super) const LD_IMM64: u8 = 0x18;
/// `BPF_STX | BPF_ATOMIC | size`, immediate `BPF_ADD`.
const ATOMIC_ADD_W: u8 = 0xc3;
const ATOMIC_ADD_DW: u8 = 0xdb;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_MAP_UPDATE_ELEM: i32 = 2;
/// `BPF_ST | BPF_MEM | BPF_DW` and `| BPF_W`: store an immediate.
const ST_DW_IMM: u8 = 0x7a;

/// `BPF_LDX | BPF_MEM | size` and `BPF_STX | BPF_MEM | size` for 8, 4, 2, 1 bytes.
pub(super) const MOVES: [(usize, u8, u8); 4] = [
    (8, 0x79, 0x7b),
    (4, 0x61, 0x63),
    (2, 0x69, 0x6b),
    (1, 0x71, 0x73),
];

fn i16_of(n: usize) -> i16 {
    i16::try_from(n).unwrap_or(i16::MAX)
}

fn i32_of(n: usize) -> i32 {
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
                at += if leaf.rule == MergeRule::Sum {
                    8
                } else {
                    leaf.len
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

/// The program for `fields` over the map `map_fd`, marking keys done in `marks_fd`.
fn program(fields: &ValueFields, layout: &Layout, map_fd: i32, marks_fd: Option<i32>) -> Vec<Insn> {
    let mut p = vec![
        Insn::new(MOV64_REG, 6, 1, 0, 0),
        // data, data_end of struct xdp_md.
        Insn::new(0x61, 7, 6, 0, 0),
        Insn::new(0x61, 8, 6, 4, 0),
        Insn::new(MOV64_REG, 1, 7, 0, 0),
        Insn::new(ADD64_IMM, 1, 0, 0, i32_of(layout.len)),
        Insn::new(JLE_REG, 1, 8, 2, 0),
        Insn::new(MOV64_IMM, 0, 0, 0, 3),
        Insn::new(EXIT, 0, 0, 0, 0),
        Insn::new(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(MOV64_REG, 2, 7, 0, 0),
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
        Insn::new(JNE_IMM, 0, 0, 2, 0),
        Insn::new(MOV64_IMM, 0, 0, 0, 2),
        Insn::new(EXIT, 0, 0, 0, 0),
        // The mask.
        Insn::new(0x79, 9, 7, i16_of(layout.key_size), 0),
    ];
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
            body.push(Insn::new(add, 0, 1, i16_of(leaf.offset), 0));
        } else {
            let mut c = 0;
            while c < leaf.len {
                let &(size, ldx, stx) = MOVES
                    .iter()
                    .find(|(s, ..)| *s <= leaf.len - c)
                    .unwrap_or(&MOVES[3]);
                body.push(Insn::new(ldx, 1, 7, i16_of(at + c), 0));
                body.push(Insn::new(stx, 0, 1, i16_of(leaf.offset + c), 0));
                c += size;
            }
        }
        p.push(Insn::new(MOV64_REG, 1, 9, 0, 0));
        p.push(Insn::new(RSH64_IMM, 1, 0, 0, i32_of(i)));
        p.push(Insn::new(AND64_IMM, 1, 0, 0, 1));
        p.push(Insn::new(JEQ_IMM, 1, 0, i16_of(body.len()), 0));
        p.extend(body);
    }
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
    p.push(Insn::new(MOV64_IMM, 0, 0, 0, 1));
    p.push(Insn::new(EXIT, 0, 0, 0, 0));
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
    per_cpu: bool,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl KernelPatcher {
    /// Generates and loads the patch program of `map` (the new map) with value
    /// `fields`; with `marks` (the reconcile's marks map), each patch marks its key
    /// done in the same run.
    ///
    /// # Errors
    /// More than 64 leaves, a packet larger than a page, or the kernel refuses the
    /// program (the error carries the verifier log).
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
        if layout.len > 3000 {
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
        let insns = program(
            fields,
            &layout,
            map.fd().as_raw_fd(),
            marks.as_ref().map(|m| m.fd().as_raw_fd()),
        );
        let mut spec = ProgLoad::new(ProgramType::Xdp, &insns, "Apache-2.0");
        spec.name = "handover_patch";
        let prog = bpf
            .prog_load(&spec)
            .map_err(kernel(name, "loading the in-kernel patch program"))?;
        Ok(Self {
            bpf: bpf.clone(),
            map,
            marks,
            name: name.to_owned(),
            fields: fields.clone(),
            layout,
            prog,
            per_cpu: g.per_cpu(),
        })
    }

    fn run(&self, key: &[u8], patch: &Patch) -> Result<bool, MigrateError> {
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
            for (leaf, _, bytes) in &patch.writes {
                if let Some(&(_, at, true)) = self.layout.slots.get(*leaf) {
                    mask |= 1 << leaf;
                    if let Some(d) = packet.get_mut(at..at + bytes.len()) {
                        d.copy_from_slice(bytes);
                    }
                }
            }
        }
        let ks = self.layout.key_size;
        if let Some(m) = packet.get_mut(ks..ks + 8) {
            m.copy_from_slice(&mask.to_le_bytes());
        }
        let run = self
            .bpf
            .prog_test_run(&self.prog, &packet, None, 1)
            .map_err(kernel(&self.name, "running the in-kernel patch program"))?;
        match run.retval {
            1 => Ok(true),
            2 => Ok(false),
            other => Err(MigrateError::Invalid {
                map: self.name.clone(),
                reason: format!(
                    "the patch program returned {other} for a packet of {} bytes",
                    packet.len()
                ),
            }),
        }
    }

    /// Per-CPU writes: every slot, from user space.
    fn write_slots(&self, key: &[u8], patch: &Patch) -> Result<bool, MigrateError> {
        let g = MapAccess::geometry(&self.map);
        let mut value = vec![0u8; g.value_len];
        if !Map::lookup(&self.map, key, &mut value, UpdateFlags::ANY)
            .map_err(kernel(&self.name, "reading an entry to patch"))?
        {
            return Ok(false);
        }
        let stride = g.value_size.next_multiple_of(8);
        for (leaf, slot, bytes) in &patch.writes {
            if let Some(l) = self.fields.leaves.get(*leaf) {
                let at = slot * stride + l.offset;
                if let Some(d) = value.get_mut(at..at + bytes.len()) {
                    d.copy_from_slice(bytes);
                }
            }
        }
        match Map::update(&self.map, key, &value, UpdateFlags::EXIST) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(kernel(&self.name, "writing a patched entry")(e)),
        }
    }
}

impl Patcher for KernelPatcher {
    fn marks_done(&self) -> bool {
        self.marks.is_some()
    }

    fn apply(&self, key: &[u8], patch: &Patch) -> Result<bool, MigrateError> {
        if self.per_cpu && !patch.writes.is_empty() && !self.write_slots(key, patch)? {
            return Ok(false);
        }
        self.run(key, patch)
    }
}
