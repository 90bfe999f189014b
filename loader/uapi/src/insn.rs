//! eBPF instructions (`struct bpf_insn`): encoding, the one decoder from an object's
//! byte order, and the `src_reg` values of pseudo instructions.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::Endian;

/// Size of one instruction in bytes.
pub const INSN_SIZE: usize = 8;

/// `BPF_LD | BPF_IMM | BPF_DW`: the first half of a 16-byte `ld_imm64`.
pub const LD_IMM64: u8 = 0x18;
/// `BPF_JMP | BPF_CALL`.
pub const CALL: u8 = 0x85;
/// `src_reg` of a call to a bpf-to-bpf function.
pub const PSEUDO_CALL: u8 = 1;
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
pub const PSEUDO_FUNC: u8 = 4;

/// One eBPF instruction (`struct bpf_insn`) in host byte order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register in the low nibble, source register in the high nibble.
    pub regs: u8,
    /// Signed offset.
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    /// An instruction from its fields.
    #[must_use]
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            regs: (dst & 0x0f) | (src << 4),
            off,
            imm,
        }
    }

    /// Decodes one 8-byte instruction of an object of byte order `order` into host
    /// order: the one instruction decoder. The register byte is a C bitfield, so in
    /// big-endian objects `dst` is the high nibble; `off` and `imm` are in `order`.
    #[must_use]
    pub const fn decode(bytes: [u8; INSN_SIZE], order: Endian) -> Self {
        let [code, regs, o0, o1, i0, i1, i2, i3] = bytes;
        let regs = match order {
            Endian::Little => regs,
            Endian::Big => regs.rotate_left(4),
        };
        Self {
            code,
            regs,
            off: order.i16([o0, o1]),
            imm: order.i32([i0, i1, i2, i3]),
        }
    }

    /// Decodes a section of instructions; `None` if its length is not a multiple of
    /// [`INSN_SIZE`].
    #[must_use]
    pub fn decode_all(bytes: &[u8], order: Endian) -> Option<Vec<Self>> {
        let chunks = bytes.chunks_exact(INSN_SIZE);
        if !chunks.remainder().is_empty() {
            return None;
        }
        Some(
            chunks
                .filter_map(|c| <[u8; INSN_SIZE]>::try_from(c).ok())
                .map(|c| Self::decode(c, order))
                .collect(),
        )
    }

    /// Whether this is the first half of a 16-byte `ld_imm64`.
    #[must_use]
    pub const fn is_ld_imm64(self) -> bool {
        self.code == LD_IMM64
    }

    /// Whether this is a bpf-to-bpf call (`call` with `src_reg == BPF_PSEUDO_CALL`).
    #[must_use]
    pub const fn is_pseudo_call(self) -> bool {
        self.code == CALL && self.src() == PSEUDO_CALL
    }

    /// The destination register.
    #[must_use]
    pub const fn dst(self) -> u8 {
        self.regs & 0x0f
    }

    /// The source register.
    #[must_use]
    pub const fn src(self) -> u8 {
        self.regs >> 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_nibbles_follow_byte_order() {
        // r1 = *(u32 *)(r2 - 8) with imm 0x01020304: code 0x61, dst 1, src 2.
        let le = [0x61, 0x21, 0xf8, 0xff, 4, 3, 2, 1];
        let be = [0x61, 0x12, 0xff, 0xf8, 1, 2, 3, 4];
        let want = Insn::new(0x61, 1, 2, -8, 0x0102_0304);
        assert_eq!(Insn::decode(le, Endian::Little), want);
        assert_eq!(Insn::decode(be, Endian::Big), want);
        assert_eq!((want.dst(), want.src(), want.off), (1, 2, -8));
        assert_eq!(
            Insn::decode_all(&[le, le].concat(), Endian::Little),
            Some(vec![want, want])
        );
        assert_eq!(Insn::decode_all(&le[..7], Endian::Little), None);
    }

    fn swap(le: [u8; 8]) -> [u8; 8] {
        let [code, regs, o0, o1, i0, i1, i2, i3] = le;
        [code, regs.rotate_left(4), o1, o0, i3, i2, i1, i0]
    }

    proptest::proptest! {
        /// The same instruction written in either byte order decodes to the same value,
        /// and on a little-endian host its encoding is the little-endian bytes again.
        #[test]
        fn decoding_is_independent_of_byte_order(le in proptest::array::uniform8(proptest::num::u8::ANY)) {
            let a = Insn::decode(le, Endian::Little);
            let b = Insn::decode(swap(le), Endian::Big);
            proptest::prop_assert_eq!(a, b);
            if cfg!(target_endian = "little") {
                proptest::prop_assert_eq!(zerocopy::IntoBytes::as_bytes(&a), &le[..]);
            }
        }
    }
}
