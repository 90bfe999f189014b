//! Reading a kernel hash map's entries with a generated program instead of
//! `BPF_MAP_LOOKUP_BATCH`.
//!
//! The batch lookup takes each bucket's lock, copies its entries into a kernel buffer
//! and then to user space with one `copy_to_user` (and its hardened-usercopy checks)
//! per bucket for the keys and one for the values: in a hash map of about one entry
//! per bucket that is most of its time (about 0.3 us an entry of 16 + 48 bytes on the
//! machine the benchmark ran on). Here a tc (`sched_cls`) program run by
//! `BPF_PROG_TEST_RUN` walks the map with `bpf_for_each_map_elem` (5.13) and copies
//! the entries into the elements of an array (the carrier, `BPF_F_MMAPABLE`), which
//! user space reads in place through a mapping of the pages it needs (about 0.1 us an
//! entry, and 0.05 us to read it out).
//!
//! ```text
//! carrier: array of SLOTS + 1 elements of max(key + value, 24) bytes;
//!          element 0 the header { skip u64, count u64, zero u64 }, element i the
//!          i-th entry copied: key, then value
//! main: h = lookup(carrier, 0); ctx = { h.skip, h.zero (copied), h.count }
//!       if h.count > SLOTS: return -1
//!       for_each_map_elem(map, callback, &ctx); return ctx.copied
//! callback(map, key, value, ctx):
//!       if ctx.skip: ctx.skip -= 1; return 0          (entries read before)
//!       if ctx.copied >= ctx.count: return 1          (this pass is full)
//!       ctx.copied += 1; slot = lookup(carrier, ctx.copied)
//!       copy key and value into slot; return 0
//! ```
//!
//! Every value the callback's context starts from comes from the header, unknown to
//! the verifier, so that the verifiers that check a callback as a loop (6.8) find its
//! states equal at once.
//!
//! A pass cannot resume where the last one stopped: it visits again the entries read
//! before it (about 0.09 us each), so the carrier holds half the map
//! ([`MAX_PASSES`]), up to [`MAX_CARRIER`] bytes, and a larger map is read by batch.
//! The walk's order is the batch lookup's (buckets in order, each bucket's list from
//! its head), so a walk that started by batch goes on by program from the count it
//! read. While programs change the map, a pass may skip an entry that moved before
//! its start or read one twice: the copy keeps the last value of a key read twice,
//! and the delta pass that always follows a copy, a batch walk, carries whatever a
//! pass skipped.
//! Only maps a callback reads as user space would: shared values (a callback sees one
//! CPU's slot of a per-CPU value), without a `bpf_spin_lock` (its read would not be
//! under the lock), in a hash or LRU hash map; and not for values holding fields the
//! kernel manages (the copy's `programs` option off): a callback would read a kptr
//! as the raw pointer where a batch lookup reads zeroes.

use std::os::fd::{AsRawFd, OwnedFd};

use handover_btf::{Builder, Endian, Kind, StrOffset};

use super::access::Geometry;
use super::error::{MigrateError, kernel};
use super::patch_prog::{ADD64_IMM, CALL, EXIT, JEQ_IMM, LD_IMM64, MOV64_IMM, MOV64_REG, i32_of};
use super::sys::{
    Insn, LogLevel, Map, MapCreate, MapType, ProgLoad, ProgramType, UpdateFlags, map_flags,
};

/// The most full passes a walk by program may take (see the module documentation).
pub(crate) const MAX_PASSES: usize = 2;
/// The most bytes of a carrier.
const MAX_CARRIER: usize = 64 << 20;
/// The largest entry a program copies (two instructions per 8 bytes): past it a
/// batch lookup's per-entry cost is small next to the bytes it copies anyway.
const MAX_ENTRY: usize = 4096;
/// The header: skip, count and a zero, each a u64.
const HEADER: usize = 24;
/// A test run takes at least an Ethernet header of packet.
const PACKET: [u8; 14] = [0; 14];
/// The return value of a program that found no header.
const REFUSED: u32 = u32::MAX;

const LDX_DW: u8 = 0x79;
const STX_DW: u8 = 0x7b;
const STX_W: u8 = 0x63;
const ST_W_IMM: u8 = 0x62;
const JGT_IMM: u8 = 0x25;
const JGE_REG: u8 = 0x3d;
const PSEUDO_MAP_FD: u8 = 1;
const PSEUDO_FUNC: u8 = 4;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_FOR_EACH_MAP_ELEM: i32 = 164;

/// A loaded reader of one map: its carrier and its program.
pub(crate) struct ProgReader {
    carrier: Map,
    prog: OwnedFd,
    header: Vec<u8>,
    slots: usize,
    elem: usize,
    key_size: usize,
    value_len: usize,
}

impl std::fmt::Debug for ProgReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgReader")
            .field("slots", &self.slots)
            .field("elem", &self.elem)
            .finish_non_exhaustive()
    }
}

/// Slots of a carrier for `g`, or `None` where a program does not read this map as
/// user space would (see the module documentation), its entries are larger than
/// [`MAX_ENTRY`], or it would take more than [`MAX_PASSES`] passes of a carrier of at
/// most [`MAX_CARRIER`] bytes.
pub(crate) fn slots_for(g: &Geometry, lock: bool) -> Option<usize> {
    let kinds = matches!(g.map_type, MapType::Hash | MapType::LruHash);
    if !kinds || lock || g.per_cpu() || g.key_size == 0 || g.value_len == 0 {
        return None;
    }
    let elem = element(g.key_size, g.value_len);
    if g.key_size + g.value_len > MAX_ENTRY {
        return None;
    }
    let slots = (g.max_entries as usize)
        .div_ceil(MAX_PASSES)
        .min(MAX_CARRIER / elem - 1);
    (g.max_entries as usize <= slots * MAX_PASSES).then_some(slots)
}

/// Bytes of one carrier element, as the kernel lays an array out (rounded to 8).
fn element(key_size: usize, value_len: usize) -> usize {
    (key_size + value_len).max(HEADER).next_multiple_of(8)
}

fn ld(dst: u8, src: u8, imm: i32) -> [Insn; 2] {
    [
        Insn::new(LD_IMM64, dst, src, 0, imm),
        Insn::new(0, 0, 0, 0, 0),
    ]
}

/// Copies `len` bytes from `*(src + 0..)` to `*(dst + at..)` through r1, widest loads
/// first.
fn copy(p: &mut Vec<Insn>, dst: u8, src: u8, len: usize, at: usize) {
    let mut off = 0;
    for (size, ldx, stx) in [
        (8, LDX_DW, STX_DW),
        (4, 0x61, STX_W),
        (2, 0x69, 0x6b),
        (1, 0x71, 0x73),
    ] {
        while len - off >= size {
            let (from, to) = (
                i16::try_from(off).unwrap_or(i16::MAX),
                i16::try_from(at + off).unwrap_or(i16::MAX),
            );
            p.push(Insn::new(ldx, 1, src, from, 0));
            p.push(Insn::new(stx, dst, 1, to, 0));
            off += size;
        }
    }
}

/// The program; see the module documentation. The callback's context is on the main
/// function's stack: skip at -24, copied at -16, count at -8. Returns the
/// instructions and the callback's first instruction.
fn program(
    carrier: i32,
    target: i32,
    slots: usize,
    key_size: usize,
    value_len: usize,
) -> (Vec<Insn>, usize) {
    let mut p = vec![Insn::new(ST_W_IMM, 10, 0, -28, 0)];
    p.extend(ld(1, PSEUDO_MAP_FD, carrier));
    p.extend([
        Insn::new(MOV64_REG, 2, 10, 0, 0),
        Insn::new(ADD64_IMM, 2, 0, 0, -28),
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
    ]);
    let no_header = p.len();
    p.push(Insn::new(JEQ_IMM, 0, 0, 0, 0));
    p.extend([Insn::new(LDX_DW, 1, 0, 8, 0)]);
    let too_many = p.len();
    p.push(Insn::new(JGT_IMM, 1, 0, 0, i32_of(slots)));
    p.extend([
        Insn::new(STX_DW, 10, 1, -8, 0),
        Insn::new(LDX_DW, 1, 0, 0, 0),
        Insn::new(STX_DW, 10, 1, -24, 0),
        Insn::new(LDX_DW, 1, 0, 16, 0),
        Insn::new(STX_DW, 10, 1, -16, 0),
    ]);
    p.extend(ld(1, PSEUDO_MAP_FD, target));
    let func_at = p.len();
    p.extend(ld(2, PSEUDO_FUNC, 0));
    p.extend([
        Insn::new(MOV64_REG, 3, 10, 0, 0),
        Insn::new(ADD64_IMM, 3, 0, 0, -24),
        Insn::new(MOV64_IMM, 4, 0, 0, 0),
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_FOR_EACH_MAP_ELEM),
        Insn::new(LDX_DW, 0, 10, -16, 0),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]);
    let refused = p.len();
    p.extend([
        Insn::new(MOV64_IMM, 0, 0, 0, -1),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]);
    // The callback: r6 the key, r7 the value, r8 the context.
    let callback = p.len();
    p.extend([
        Insn::new(MOV64_REG, 6, 2, 0, 0),
        Insn::new(MOV64_REG, 7, 3, 0, 0),
        Insn::new(MOV64_REG, 8, 4, 0, 0),
        Insn::new(LDX_DW, 1, 8, 0, 0),
        Insn::new(JEQ_IMM, 1, 0, 4, 0),
        Insn::new(ADD64_IMM, 1, 0, 0, -1),
        Insn::new(STX_DW, 8, 1, 0, 0),
        Insn::new(MOV64_IMM, 0, 0, 0, 0),
        Insn::new(EXIT, 0, 0, 0, 0),
        Insn::new(LDX_DW, 1, 8, 8, 0),
        Insn::new(LDX_DW, 2, 8, 16, 0),
    ]);
    let full = p.len();
    p.push(Insn::new(JGE_REG, 1, 2, 0, 0));
    p.extend([
        Insn::new(ADD64_IMM, 1, 0, 0, 1),
        Insn::new(STX_DW, 8, 1, 8, 0),
        Insn::new(STX_W, 10, 1, -4, 0),
    ]);
    p.extend(ld(1, PSEUDO_MAP_FD, carrier));
    p.extend([
        Insn::new(MOV64_REG, 2, 10, 0, 0),
        Insn::new(ADD64_IMM, 2, 0, 0, -4),
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
    ]);
    let no_slot = p.len();
    p.push(Insn::new(JEQ_IMM, 0, 0, 0, 0));
    copy(&mut p, 0, 6, key_size, 0);
    copy(&mut p, 0, 7, value_len, key_size);
    p.extend([
        Insn::new(MOV64_IMM, 0, 0, 0, 0),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]);
    let stop = p.len();
    p.extend([
        Insn::new(MOV64_IMM, 0, 0, 0, 1),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]);
    let mut jump = |at: usize, to: usize| {
        if let Some(j) = p.get_mut(at) {
            j.off = offset(at, to);
        }
    };
    jump(no_header, refused);
    jump(too_many, refused);
    jump(full, stop);
    jump(no_slot, stop);
    if let Some(f) = p.get_mut(func_at) {
        f.imm = i32::try_from(callback - func_at - 1).unwrap_or(0);
    }
    (p, callback)
}

/// The offset of a jump at `from` to `to`.
fn offset(from: usize, to: usize) -> i16 {
    let (from, to) = (
        i64::try_from(from).unwrap_or(0),
        i64::try_from(to).unwrap_or(0),
    );
    i16::try_from(to - from - 1).unwrap_or(0)
}

/// The BTF the kernel needs for a program that takes a function's address: both
/// functions static, returning `int`, and their `func_info` records.
fn functions(callback: usize) -> (Vec<u8>, Vec<u8>) {
    let mut b = Builder::new(Endian::native());
    let name = b.string("int");
    let int = b.add(name, Kind::Int, false, 0, 4, &[(1 << 24) | 32]);
    let proto = b.add(StrOffset(0), Kind::FuncProto, false, 0, int.0, &[]);
    let name = b.string("handover_read");
    let main = b.add(name, Kind::Func, false, 0, proto.0, &[]);
    let name = b.string("handover_entry");
    let entry = b.add(name, Kind::Func, false, 0, proto.0, &[]);
    let at = u32::try_from(callback).unwrap_or(0);
    let info = [0, main.0, at, entry.0]
        .iter()
        .flat_map(|w: &u32| w.to_ne_bytes())
        .collect();
    (b.finish(), info)
}

impl ProgReader {
    /// Creates the carrier of `slots` entries ([`slots_for`]), maps it and loads the
    /// program reading `target`.
    ///
    /// # Errors
    /// The kernel refuses the carrier, its mapping, the BTF or the program (no
    /// `bpf_for_each_map_elem` before 5.13, no mmapable arrays before 5.5): the
    /// caller reads by batch.
    pub(crate) fn new(target: &Map, name: &str, slots: usize) -> Result<Self, MigrateError> {
        let g = super::access::MapAccess::geometry(target);
        let (key_size, value_len) = (g.key_size, g.value_len);
        let bpf = target.bpf();
        let elem = element(key_size, value_len);
        let mut spec = MapCreate::new(
            MapType::Array,
            4,
            u32::try_from(elem).unwrap_or(u32::MAX),
            u32::try_from(slots + 1).unwrap_or(u32::MAX),
        );
        spec.flags = map_flags::MMAPABLE;
        spec.name = "handover_rcarry";
        let carrier = Map::create(bpf, &spec).map_err(kernel(name, "creating a read carrier"))?;
        let (insns, callback) = program(
            carrier.fd().as_raw_fd(),
            target.fd().as_raw_fd(),
            slots,
            key_size,
            value_len,
        );
        let (btf, func_info) = functions(callback);
        let btf = bpf
            .btf_load(&btf, LogLevel::Always(0))
            .map_err(kernel(name, "loading the read program's BTF"))?;
        let mut load = ProgLoad::new(ProgramType::SchedCls, &insns, "Apache-2.0");
        load.name = "handover_read";
        load.prog_btf_fd = Some(std::os::fd::AsFd::as_fd(&btf));
        load.func_info = &func_info;
        load.func_info_rec_size = 8;
        let prog = bpf
            .prog_load(&load)
            .map_err(kernel(name, "loading the read program"))?;
        Ok(Self {
            carrier,
            prog,
            header: vec![0; elem],
            slots,
            elem,
            key_size,
            value_len,
        })
    }

    /// Entries one pass reads at most.
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// Reads up to `count` entries (at most [`Self::slots`]) after the first `skip`
    /// ones of the walk into the carrier; returns how many it read, fewer than
    /// `count` once the walk has reached the map's end.
    ///
    /// # Errors
    /// The test run fails.
    pub(crate) fn pass(
        &mut self,
        name: &str,
        skip: usize,
        count: usize,
    ) -> Result<usize, MigrateError> {
        let count = count.min(self.slots);
        for (at, v) in [skip, count, 0].into_iter().enumerate() {
            if let Some(d) = self.header.get_mut(at * 8..at * 8 + 8) {
                d.copy_from_slice(&(v as u64).to_ne_bytes());
            }
        }
        self.carrier
            .update(&0u32.to_ne_bytes(), &self.header, UpdateFlags::ANY)
            .map_err(kernel(name, "writing the read carrier's header"))?;
        let run = self
            .carrier
            .bpf()
            .prog_test_run(&self.prog, &PACKET, None, 1)
            .map_err(kernel(name, "running the read program"))?;
        match usize::try_from(run.retval) {
            Ok(n) if run.retval != REFUSED && n <= count => Ok(n),
            _ => Err(MigrateError::Invalid {
                map: name.to_owned(),
                reason: format!(
                    "the read program returned {} for a pass of {count} entries",
                    run.retval
                ),
            }),
        }
    }

    /// Appends entries `from..from + n` of the last pass to packed `keys` and
    /// `values`, read through a mapping of the carrier's pages that hold them (a
    /// mapping of a BPF array holds all its pages resident, so the whole carrier
    /// mapped at once would count in full against the process's memory).
    ///
    /// # Errors
    /// The kernel refuses the mapping.
    pub(crate) fn take(
        &self,
        name: &str,
        from: usize,
        n: usize,
        keys: &mut Vec<u8>,
        values: &mut Vec<u8>,
    ) -> Result<(), MigrateError> {
        let (ks, vl) = (self.key_size, self.value_len);
        let (start, end) = ((from + 1) * self.elem, (from + 1 + n) * self.elem);
        let page = page_size();
        let at = start / page * page;
        // SAFETY: a read-only mapping of the BPF array created by `new` with
        // BPF_F_MMAPABLE, within its `(slots + 1) * elem` bytes (`from + n` is at
        // most the last pass's count); the kernel writes the array only during a
        // test run of the program, which `pass` waited for, and this thread runs the
        // next one only after the mapping is gone.
        #[allow(unsafe_code, reason = "a BPF array is read in place through mmap(2)")]
        let mem = unsafe {
            memmap2::MmapOptions::new()
                .offset(at as u64)
                .len(end - at)
                .map(self.carrier.fd().as_raw_fd())
        }
        .map_err(|e| MigrateError::Invalid {
            map: name.to_owned(),
            reason: format!("mapping the read carrier: {e}"),
        })?;
        let slots = mem.get(start - at..).unwrap_or_default();
        for slot in slots.chunks_exact(self.elem) {
            keys.extend_from_slice(slot.get(..ks).unwrap_or_default());
            values.extend_from_slice(slot.get(ks..ks + vl).unwrap_or_default());
        }
        Ok(())
    }
}

/// The size of a page, which a mapping's offset is a multiple of.
fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    #[allow(unsafe_code, reason = "sysconf(3) has no safe wrapper in std")]
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}
