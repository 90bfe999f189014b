//! The value converter: old encoded bytes to new encoded bytes, following a
//! [`ConversionPlan`].
//!
//! Encodings are little-endian, as on every BPF target this tool loads for
//! (`bpfel`): a bit offset counts from the least significant bit of the first byte,
//! which is how BTF places bitfields on little-endian targets.
//!
//! Per-CPU maps hold one value per possible CPU, each in a slot of the value size
//! rounded up to 8 bytes; [`convert_percpu`] converts slot by slot.

use crate::diff::field_map::{ConversionPlan, Op};

/// A conversion that could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The input does not have the size the plan was made for.
    #[error("expected {expected} bytes of old encoding, got {found}")]
    WrongSize {
        /// Bytes expected.
        expected: u64,
        /// Bytes given.
        found: u64,
    },
    /// A step reaches outside the old or new encoding (the plan came from a layout
    /// whose offsets do not fit its size).
    #[error("conversion step {index} reaches outside the {side} encoding")]
    OutOfRange {
        /// Index of the step in the plan.
        index: usize,
        /// `old` or `new`.
        side: &'static str,
    },
}

/// Converts one old key or value into the new encoding.
///
/// # Errors
/// [`ConvertError::WrongSize`] when `old` is not `plan.old_size` bytes long,
/// [`ConvertError::OutOfRange`] when a step of the plan does not fit the encodings.
pub fn convert(plan: &ConversionPlan, old: &[u8]) -> Result<Vec<u8>, ConvertError> {
    let expected = u64::from(plan.old_size);
    if old.len() as u64 != expected {
        return Err(ConvertError::WrongSize {
            expected,
            found: old.len() as u64,
        });
    }
    let mut out = vec![0u8; plan.new_size as usize];
    apply(plan, old, &mut out)?;
    Ok(out)
}

/// Size of one per-CPU slot for a value of `size` bytes.
#[must_use]
pub fn percpu_stride(size: u32) -> u64 {
    u64::from(size).div_ceil(8) * 8
}

/// Converts the per-CPU values of one entry (`nr_cpus` slots of the old value size
/// rounded up to 8 bytes) into new per-CPU slots.
///
/// # Errors
/// As [`convert`], with the size checked against `nr_cpus` old slots.
pub fn convert_percpu(
    plan: &ConversionPlan,
    old: &[u8],
    nr_cpus: usize,
) -> Result<Vec<u8>, ConvertError> {
    let old_stride = percpu_stride(plan.old_size);
    let new_stride = percpu_stride(plan.new_size);
    let expected = old_stride.saturating_mul(nr_cpus as u64);
    if old.len() as u64 != expected {
        return Err(ConvertError::WrongSize {
            expected,
            found: old.len() as u64,
        });
    }
    let (Ok(old_stride), Ok(new_stride), Ok(old_size)) = (
        usize::try_from(old_stride),
        usize::try_from(new_stride),
        usize::try_from(plan.old_size),
    ) else {
        return Err(ConvertError::OutOfRange {
            index: 0,
            side: "old",
        });
    };
    let mut out = vec![0u8; new_stride.saturating_mul(nr_cpus)];
    for (src, dst) in old
        .chunks_exact(old_stride.max(1))
        .zip(out.chunks_exact_mut(new_stride.max(1)))
    {
        let src = src.get(..old_size).ok_or(ConvertError::OutOfRange {
            index: 0,
            side: "old",
        })?;
        apply(plan, src, dst)?;
    }
    Ok(out)
}

fn apply(plan: &ConversionPlan, old: &[u8], out: &mut [u8]) -> Result<(), ConvertError> {
    for (index, op) in plan.ops.iter().enumerate() {
        match *op {
            Op::Bytes { src, dst, len } => {
                let from = range(src, len)
                    .and_then(|r| old.get(r))
                    .ok_or(ConvertError::OutOfRange { index, side: "old" })?;
                range(dst, len)
                    .and_then(|r| out.get_mut(r))
                    .ok_or(ConvertError::OutOfRange { index, side: "new" })?
                    .copy_from_slice(from);
            }
            Op::Int {
                src_bit,
                src_bits,
                dst_bit,
                dst_bits,
                signed,
            } => {
                let mut v = read_bits(old, src_bit, src_bits)
                    .ok_or(ConvertError::OutOfRange { index, side: "old" })?;
                if signed && src_bits < 128 && dst_bits > src_bits && v >> (src_bits - 1) & 1 == 1 {
                    v |= u128::MAX << src_bits;
                }
                write_bits(out, dst_bit, dst_bits, v)
                    .ok_or(ConvertError::OutOfRange { index, side: "new" })?;
            }
        }
    }
    Ok(())
}

fn range(start: u64, len: u64) -> Option<std::ops::Range<usize>> {
    let s = usize::try_from(start).ok()?;
    let e = s.checked_add(usize::try_from(len).ok()?)?;
    Some(s..e)
}

/// Reads `bits` (1..=128) bits starting `bit` bits into `buf`, little-endian.
#[must_use]
pub fn read_bits(buf: &[u8], bit: u64, bits: u32) -> Option<u128> {
    if bits == 0 || bits > 128 {
        return None;
    }
    let end = bit.checked_add(u64::from(bits))?;
    if end > (buf.len() as u64).checked_mul(8)? {
        return None;
    }
    let mut v = 0u128;
    for i in 0..u64::from(bits) {
        let b = bit + i;
        let byte = *buf.get(usize::try_from(b / 8).ok()?)?;
        if byte >> (b % 8) & 1 == 1 {
            v |= 1u128 << i;
        }
    }
    Some(v)
}

/// Writes the low `bits` (1..=128) bits of `v` starting `bit` bits into `buf`,
/// little-endian, leaving the other bits alone.
pub fn write_bits(buf: &mut [u8], bit: u64, bits: u32, v: u128) -> Option<()> {
    if bits == 0 || bits > 128 {
        return None;
    }
    let end = bit.checked_add(u64::from(bits))?;
    if end > (buf.len() as u64).checked_mul(8)? {
        return None;
    }
    for i in 0..u64::from(bits) {
        let b = bit + i;
        let byte = buf.get_mut(usize::try_from(b / 8).ok()?)?;
        let mask = 1u8 << (b % 8);
        if v >> i & 1 == 1 {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_across_bytes() {
        let mut buf = [0u8; 4];
        write_bits(&mut buf, 5, 11, 0x5a5).unwrap();
        assert_eq!(read_bits(&buf, 5, 11), Some(0x5a5));
        assert_eq!(buf[0] & 0x1f, 0, "bits below the field untouched");
        assert_eq!(read_bits(&buf, 30, 3), None, "past the end");
    }

    #[test]
    fn signed_widen_extends_the_sign() {
        let plan = ConversionPlan {
            old_size: 2,
            new_size: 8,
            ops: vec![Op::Int {
                src_bit: 0,
                src_bits: 16,
                dst_bit: 0,
                dst_bits: 64,
                signed: true,
            }],
        };
        let out = convert(&plan, &(-3i16).to_le_bytes()).unwrap();
        assert_eq!(i64::from_le_bytes(out.try_into().unwrap()), -3);
    }

    #[test]
    fn percpu_values_are_converted_per_slot() {
        // u32 -> u64, 3 CPUs: old slots are 8 bytes (4 rounded up), new slots 8 bytes.
        let plan = ConversionPlan {
            old_size: 4,
            new_size: 8,
            ops: vec![Op::Int {
                src_bit: 0,
                src_bits: 32,
                dst_bit: 0,
                dst_bits: 64,
                signed: false,
            }],
        };
        let mut old = Vec::new();
        for v in [1u32, 0xffff_ffff, 7] {
            old.extend_from_slice(&v.to_le_bytes());
            old.extend_from_slice(&[0xee; 4]); // slot padding, must not leak
        }
        let out = convert_percpu(&plan, &old, 3).unwrap();
        let vals: Vec<u64> = out
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(vals, [1, 0xffff_ffff, 7]);
        assert!(matches!(
            convert_percpu(&plan, old.get(..16).unwrap(), 3),
            Err(ConvertError::WrongSize { .. })
        ));
    }

    #[test]
    fn out_of_range_step_is_an_error() {
        let plan = ConversionPlan {
            old_size: 4,
            new_size: 4,
            ops: vec![Op::Bytes {
                src: 2,
                dst: 0,
                len: 4,
            }],
        };
        assert_eq!(
            convert(&plan, &[0; 4]),
            Err(ConvertError::OutOfRange {
                index: 0,
                side: "old"
            })
        );
    }
}
