//! BPF instructions decoded from an object's byte order.

use crate::raw::{Order, RawInsn};
use crate::sys::Insn;

/// Size of one instruction in bytes.
pub const INSN_SIZE: usize = 8;

/// `BPF_LD | BPF_IMM | BPF_DW`: the first half of a 16-byte `ld_imm64`.
pub(crate) const LD_IMM64: u8 = 0x18;
/// `BPF_JMP | BPF_CALL`.
pub(crate) const CALL: u8 = 0x85;
/// `src_reg` of a call to a bpf-to-bpf function.
pub(crate) const PSEUDO_CALL: u8 = 1;
/// `src_reg` of an `ld_imm64` that loads a map fd.
pub const PSEUDO_MAP_FD: u8 = 1;
/// `src_reg` of an `ld_imm64` that loads the address of a map value plus offset.
pub const PSEUDO_MAP_VALUE: u8 = 2;
/// `src_reg` of an `ld_imm64` that loads the address of a kernel variable or function
/// by its BTF id (`imm`) in the BTF object whose fd index is the second `imm`.
pub const PSEUDO_BTF_ID: u8 = 3;
/// `src_reg` of a call to a kernel function (kfunc) by its BTF id (`imm`) in the BTF
/// object whose fd index is `off` (0: vmlinux).
pub const PSEUDO_KFUNC_CALL: u8 = 2;
/// `src_reg` of an `ld_imm64` that loads the address of a bpf-to-bpf function.
pub(crate) const PSEUDO_FUNC: u8 = 4;

/// Decodes one instruction from the object's byte order into host order.
pub(crate) fn decode(raw: &RawInsn, order: Order) -> Insn {
    // The register byte is a C bitfield: dst in the low nibble on little-endian
    // targets, in the high nibble on big-endian ones.
    let (dst, src) = match order {
        Order::Little => (raw.regs & 0x0f, raw.regs >> 4),
        Order::Big => (raw.regs >> 4, raw.regs & 0x0f),
    };
    Insn::new(raw.code, dst, src, order.i16(raw.off), order.i32(raw.imm))
}

/// Whether `insn` is the first half of a 16-byte `ld_imm64`.
pub(crate) fn is_ld_imm64(insn: &Insn) -> bool {
    insn.code == LD_IMM64
}

/// Whether `insn` is a bpf-to-bpf call (`call` with `src_reg == BPF_PSEUDO_CALL`).
pub(crate) fn is_pseudo_call(insn: &Insn) -> bool {
    insn.code == CALL && insn.src() == PSEUDO_CALL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_nibbles_follow_byte_order() {
        // r1 = *(u32 *)(r2 + 4): code 0x61, dst 1, src 2, off 4.
        let le = RawInsn {
            code: 0x61,
            regs: 0x21,
            off: [4, 0],
            imm: [0; 4],
        };
        let be = RawInsn {
            code: 0x61,
            regs: 0x12,
            off: [0, 4],
            imm: [0; 4],
        };
        let a = decode(&le, Order::Little);
        let b = decode(&be, Order::Big);
        assert_eq!(a, b);
        assert_eq!((a.dst(), a.src(), a.off), (1, 2, 4));
    }

    /// The same instruction written in either byte order decodes to the same value,
    /// and on a little-endian host its encoding is the little-endian bytes again.
    fn swap(le: [u8; 8]) -> [u8; 8] {
        let [code, regs, o0, o1, i0, i1, i2, i3] = le;
        [code, regs.rotate_left(4), o1, o0, i3, i2, i1, i0]
    }

    proptest::proptest! {
        #[test]
        fn decoding_is_independent_of_byte_order(le in proptest::array::uniform8(proptest::num::u8::ANY)) {
            let raw = |b: [u8; 8]| {
                let [code, regs, o0, o1, i0, i1, i2, i3] = b;
                RawInsn { code, regs, off: [o0, o1], imm: [i0, i1, i2, i3] }
            };
            let a = decode(&raw(le), Order::Little);
            let b = decode(&raw(swap(le)), Order::Big);
            proptest::prop_assert_eq!(a, b);
            if cfg!(target_endian = "little") {
                proptest::prop_assert_eq!(zerocopy::IntoBytes::as_bytes(&a), &le[..]);
            }
        }
    }
}
