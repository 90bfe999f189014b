//! A [`ConversionPlan`] compiled once into byte operations, for converting many
//! entries fast.
//!
//! The steps of a plan address bits, which is what bitfields need; most fields of
//! real layouts start and end on byte boundaries, and for those a step is a copy of
//! bytes, possibly followed by a zero or sign fill. [`ConversionProgram::compile`]
//! checks every step against the sizes once, turns byte-aligned steps into such
//! operations (merging copies that continue each other), keeps the bit-level step for
//! the rest, and zeroes only the output bytes no step writes whole. Running it
//! allocates nothing and gives exactly the bytes [`convert`](super::convert::convert)
//! gives.

use crate::diff::convert::{ConvertError, read_bits, write_bits};
use crate::diff::field_map::{ConversionPlan, Op};

/// One operation of a [`ConversionProgram`]; byte ranges are checked at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `out[dst..dst + len] = 0`.
    Zero { dst: usize, len: usize },
    /// `out[dst..dst + len]` = the same bytes of the plan's initial encoding.
    Initial { dst: usize, len: usize },
    /// `out[dst..dst + len] = old[src..src + len]`.
    Copy { src: usize, dst: usize, len: usize },
    /// An integer of `src_len` bytes into one of `dst_len` (wider) bytes: the bytes
    /// copied, the rest filled with zeroes or, when `signed` and the top bit is set,
    /// with ones.
    Extend {
        src: usize,
        src_len: usize,
        dst: usize,
        dst_len: usize,
        signed: bool,
    },
    /// A step that is not byte-aligned, run bit by bit.
    Bits {
        src_bit: u64,
        src_bits: u32,
        dst_bit: u64,
        dst_bits: u32,
        signed: bool,
    },
}

/// A conversion plan compiled for repeated use; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionProgram {
    old_size: usize,
    new_size: usize,
    steps: Vec<Step>,
    /// The plan's initial bytes (new fields of global data), `new_size` long.
    initial: Option<Vec<u8>>,
}

fn byte_range(start: u64, len: u64, size: usize) -> Option<(usize, usize)> {
    let s = usize::try_from(start).ok()?;
    let l = usize::try_from(len).ok()?;
    (s.checked_add(l)? <= size).then_some((s, l))
}

fn bit_range_fits(bit: u64, bits: u32, size: usize) -> bool {
    (1..=128).contains(&bits)
        && bit
            .checked_add(u64::from(bits))
            .is_some_and(|end| end <= (size as u64).saturating_mul(8))
}

impl ConversionProgram {
    /// Compiles `plan`.
    ///
    /// # Errors
    /// [`ConvertError::OutOfRange`] when a step reaches outside the old or new
    /// encoding, and [`ConvertError::WrongInitial`] when the initial bytes are not the
    /// new size, as [`convert`](super::convert::convert) would report them.
    pub fn compile(plan: &ConversionPlan) -> Result<Self, ConvertError> {
        let old_size = plan.old_size as usize;
        let new_size = plan.new_size as usize;
        if let Some(bytes) = &plan.initial
            && bytes.len() != new_size
        {
            return Err(ConvertError::WrongInitial {
                expected: new_size as u64,
                found: bytes.len() as u64,
            });
        }
        let mut steps: Vec<Step> = Vec::with_capacity(plan.ops.len() + 1);
        // Output bytes some step writes whole; the others start as the plan's initial
        // bytes, or zero.
        let mut whole = vec![false; new_size];
        let mut mark = |dst: usize, len: usize| {
            if let Some(w) = whole.get_mut(dst..dst + len) {
                w.fill(true);
            }
        };
        for (index, op) in plan.ops.iter().enumerate() {
            let old_err = ConvertError::OutOfRange { index, side: "old" };
            let new_err = ConvertError::OutOfRange { index, side: "new" };
            let step = match *op {
                Op::Bytes { src, dst, len } => {
                    let (src, len) = byte_range(src, len, old_size).ok_or(old_err)?;
                    let (dst, _) = byte_range(dst, len as u64, new_size).ok_or(new_err)?;
                    mark(dst, len);
                    Step::Copy { src, dst, len }
                }
                Op::Int {
                    src_bit,
                    src_bits,
                    dst_bit,
                    dst_bits,
                    signed,
                } => {
                    if !bit_range_fits(src_bit, src_bits, old_size) {
                        return Err(old_err);
                    }
                    if !bit_range_fits(dst_bit, dst_bits, new_size) {
                        return Err(new_err);
                    }
                    let aligned = [src_bit, u64::from(src_bits), dst_bit, u64::from(dst_bits)]
                        .iter()
                        .all(|b| b % 8 == 0);
                    if aligned {
                        // In range, so these fit in usize.
                        let (src, src_len) = ((src_bit / 8) as usize, (src_bits / 8) as usize);
                        let (dst, dst_len) = ((dst_bit / 8) as usize, (dst_bits / 8) as usize);
                        mark(dst, dst_len);
                        if dst_len <= src_len {
                            // Same width, or the low bytes of a narrower target.
                            Step::Copy {
                                src,
                                dst,
                                len: dst_len,
                            }
                        } else {
                            Step::Extend {
                                src,
                                src_len,
                                dst,
                                dst_len,
                                // A 128-bit source has nothing to extend into.
                                signed: signed && src_bits < 128,
                            }
                        }
                    } else {
                        Step::Bits {
                            src_bit,
                            src_bits,
                            dst_bit,
                            dst_bits,
                            signed,
                        }
                    }
                }
            };
            // A copy continuing the previous one on both sides becomes one copy.
            if let (
                Some(Step::Copy {
                    src: ps,
                    dst: pd,
                    len: pl,
                }),
                Step::Copy { src, dst, len },
            ) = (steps.last_mut(), step)
                && *ps + *pl == src
                && *pd + *pl == dst
            {
                *pl += len;
                continue;
            }
            steps.push(step);
        }
        // The fills run first: the steps then overwrite as the bit path does.
        let mut zeros = Vec::new();
        let mut i = 0;
        while i < new_size {
            if whole.get(i).copied().unwrap_or(true) {
                i += 1;
                continue;
            }
            let len = whole.iter().skip(i).take_while(|w| !**w).count();
            zeros.push(if plan.initial.is_some() {
                Step::Initial { dst: i, len }
            } else {
                Step::Zero { dst: i, len }
            });
            i += len;
        }
        zeros.extend(steps);
        Ok(Self {
            old_size,
            new_size,
            steps: zeros,
            initial: plan.initial.clone(),
        })
    }

    /// Bytes of an old encoding.
    #[must_use]
    pub fn old_size(&self) -> usize {
        self.old_size
    }

    /// Bytes of a new encoding.
    #[must_use]
    pub fn new_size(&self) -> usize {
        self.new_size
    }

    /// Whether the program copies the whole encoding unchanged.
    #[must_use]
    pub fn is_identity(&self) -> bool {
        self.old_size == self.new_size
            && (self.new_size == 0
                || self.steps
                    == [Step::Copy {
                        src: 0,
                        dst: 0,
                        len: self.new_size,
                    }])
    }

    /// Converts `old` into `out`, which it overwrites whole.
    ///
    /// # Errors
    /// [`ConvertError::WrongSize`] when `old` is not [`old_size`](Self::old_size) or
    /// `out` not [`new_size`](Self::new_size) bytes long.
    pub fn run(&self, old: &[u8], out: &mut [u8]) -> Result<(), ConvertError> {
        if old.len() != self.old_size {
            return Err(ConvertError::WrongSize {
                expected: self.old_size as u64,
                found: old.len() as u64,
            });
        }
        if out.len() != self.new_size {
            return Err(ConvertError::WrongSize {
                expected: self.new_size as u64,
                found: out.len() as u64,
            });
        }
        // The ranges were checked against these sizes by `compile`: no `get` below
        // fails, and one that did would leave its bytes alone rather than panic.
        for step in &self.steps {
            match *step {
                Step::Zero { dst, len } => {
                    if let Some(d) = out.get_mut(dst..dst + len) {
                        d.fill(0);
                    }
                }
                Step::Initial { dst, len } => {
                    let from = self.initial.as_deref().and_then(|i| i.get(dst..dst + len));
                    if let (Some(d), Some(s)) = (out.get_mut(dst..dst + len), from) {
                        d.copy_from_slice(s);
                    }
                }
                Step::Copy { src, dst, len } => {
                    if let (Some(d), Some(s)) =
                        (out.get_mut(dst..dst + len), old.get(src..src + len))
                    {
                        d.copy_from_slice(s);
                    }
                }
                Step::Extend {
                    src,
                    src_len,
                    dst,
                    dst_len,
                    signed,
                } => {
                    let (Some(s), Some(d)) =
                        (old.get(src..src + src_len), out.get_mut(dst..dst + dst_len))
                    else {
                        continue;
                    };
                    let (low, high) = d.split_at_mut(src_len);
                    low.copy_from_slice(s);
                    let negative = signed && s.last().is_some_and(|b| b & 0x80 != 0);
                    high.fill(if negative { 0xff } else { 0 });
                }
                Step::Bits {
                    src_bit,
                    src_bits,
                    dst_bit,
                    dst_bits,
                    signed,
                } => {
                    let Some(mut v) = read_bits(old, src_bit, src_bits) else {
                        continue;
                    };
                    if signed
                        && src_bits < 128
                        && dst_bits > src_bits
                        && v >> (src_bits - 1) & 1 == 1
                    {
                        v |= u128::MAX << src_bits;
                    }
                    let _ = write_bits(out, dst_bit, dst_bits, v);
                }
            }
        }
        Ok(())
    }

    /// Converts the per-CPU slots of one entry: `old` holds `nr_cpus` slots of the old
    /// size rounded up to 8 bytes, `out` as many of the new size rounded up; slot
    /// padding is zeroed.
    ///
    /// # Errors
    /// [`ConvertError::WrongSize`] when either buffer does not hold `nr_cpus` slots.
    pub fn run_percpu(
        &self,
        old: &[u8],
        out: &mut [u8],
        nr_cpus: usize,
    ) -> Result<(), ConvertError> {
        let old_stride = self.old_size.next_multiple_of(8);
        let new_stride = self.new_size.next_multiple_of(8);
        for (buf, stride) in [(old.len(), old_stride), (out.len(), new_stride)] {
            let expected = stride.saturating_mul(nr_cpus);
            if buf != expected {
                return Err(ConvertError::WrongSize {
                    expected: expected as u64,
                    found: buf as u64,
                });
            }
        }
        if nr_cpus == 0 {
            return Ok(());
        }
        for (src, dst) in old
            .chunks_exact(old_stride.max(1))
            .zip(out.chunks_exact_mut(new_stride.max(1)))
        {
            let (value, pad) = dst.split_at_mut(self.new_size.min(dst.len()));
            self.run(src.get(..self.old_size).unwrap_or(&[]), value)?;
            pad.fill(0);
        }
        Ok(())
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests slice fixed buffers")]
mod tests {
    use super::*;
    use crate::diff::convert::{convert, convert_percpu};
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..24, 0u64..24, 0u64..12).prop_map(|(src, dst, len)| Op::Bytes { src, dst, len }),
            // Byte-aligned integers (the fast path), widening, narrowing or equal.
            (
                0u64..24,
                prop::sample::select(vec![8u32, 16, 32, 64, 128]),
                0u64..24,
                prop::sample::select(vec![8u32, 16, 32, 64, 128]),
                any::<bool>()
            )
                .prop_map(|(s, sb, d, db, signed)| Op::Int {
                    src_bit: s * 8,
                    src_bits: sb,
                    dst_bit: d * 8,
                    dst_bits: db,
                    signed,
                }),
            // Bitfields anywhere.
            (0u64..256, 1u32..70, 0u64..256, 1u32..70, any::<bool>()).prop_map(
                |(src_bit, src_bits, dst_bit, dst_bits, signed)| Op::Int {
                    src_bit,
                    src_bits,
                    dst_bit,
                    dst_bits,
                    signed,
                }
            ),
        ]
    }

    proptest! {
        /// The compiled program gives the bit path's bytes, and refuses what it refuses.
        #[test]
        fn program_equals_the_bit_path(
            old_size in 0u32..40,
            new_size in 0u32..40,
            ops in prop::collection::vec(op(), 0..8),
            seed in prop::collection::vec(any::<u8>(), 40),
            initial in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        ) {
            // Initial bytes of the new size mostly, of another size sometimes.
            let initial = initial.map(|mut i| {
                if i.len() % 4 != 0 {
                    i.resize(new_size as usize, 0x33);
                }
                i
            });
            let plan = ConversionPlan {
                old_size,
                new_size,
                ops,
                initial,
            };
            let old = &seed[..old_size as usize];
            match (convert(&plan, old), ConversionProgram::compile(&plan)) {
                (Ok(want), Ok(program)) => {
                    // Garbage in the output buffer must not survive.
                    let mut out = vec![0xa5u8; new_size as usize];
                    program.run(old, &mut out).unwrap();
                    prop_assert_eq!(out, want);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "bit path {:?}, program {:?}", a, b.map(|_| ())),
            }
        }

        #[test]
        fn percpu_program_equals_the_bit_path(
            ops in prop::collection::vec(op(), 0..6),
            cpus in 1usize..4,
            seed in prop::collection::vec(any::<u8>(), 160),
        ) {
            let plan = ConversionPlan {
                old_size: 28,
                new_size: 36,
                ops,
                initial: None,
            };
            let old = &seed[..32 * cpus];
            if let (Ok(want), Ok(program)) =
                (convert_percpu(&plan, old, cpus), ConversionProgram::compile(&plan))
            {
                let mut out = vec![0x5au8; 40 * cpus];
                program.run_percpu(old, &mut out, cpus).unwrap();
                prop_assert_eq!(out, want);
            }
        }
    }

    #[test]
    fn aligned_fields_compile_to_byte_steps() {
        // u32 a, u32 b -> u64 a (widened, signed), gap, u32 b: one extend, one copy,
        // one zero fill for the gap.
        let plan = ConversionPlan {
            old_size: 8,
            new_size: 16,
            ops: vec![
                Op::Int {
                    src_bit: 0,
                    src_bits: 32,
                    dst_bit: 0,
                    dst_bits: 64,
                    signed: true,
                },
                Op::Bytes {
                    src: 4,
                    dst: 12,
                    len: 4,
                },
            ],
            initial: None,
        };
        let p = ConversionProgram::compile(&plan).unwrap();
        assert!(p.steps.iter().all(|s| !matches!(s, Step::Bits { .. })));
        assert_eq!(p.steps.first(), Some(&Step::Zero { dst: 8, len: 4 }));
        let mut out = [0xffu8; 16];
        let old = [0xfe, 0xff, 0xff, 0xff, 1, 2, 3, 4];
        p.run(&old, &mut out).unwrap();
        assert_eq!(
            out,
            [
                0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3, 4
            ]
        );
        assert!(
            ConversionProgram::compile(&ConversionPlan::identity(48))
                .unwrap()
                .is_identity()
        );
    }
}
