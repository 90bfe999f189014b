//! BPF instructions decoded from an object's byte order.

use crate::raw::{Order, RawInsn};

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
/// `src_reg` of an `ld_imm64` that loads the address of a bpf-to-bpf function.
pub(crate) const PSEUDO_FUNC: u8 = 4;

/// One 8-byte BPF instruction, with its fields decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register (4 bits).
    pub dst: u8,
    /// Source register (4 bits); also the pseudo-source marker of calls and `ld_imm64`.
    pub src: u8,
    /// Signed offset.
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    pub(crate) fn decode(raw: &RawInsn, order: Order) -> Self {
        // The register byte is a C bitfield: dst in the low nibble on little-endian
        // targets, in the high nibble on big-endian ones.
        let (dst, src) = match order {
            Order::Little => (raw.regs & 0x0f, raw.regs >> 4),
            Order::Big => (raw.regs >> 4, raw.regs & 0x0f),
        };
        Self {
            code: raw.code,
            dst,
            src,
            off: order.i16(raw.off),
            imm: order.i32(raw.imm),
        }
    }

    /// Encodes the instruction in the host's byte order, as `BPF_PROG_LOAD` expects.
    #[must_use]
    pub fn to_host_bytes(&self) -> [u8; INSN_SIZE] {
        let regs = if cfg!(target_endian = "little") {
            (self.src << 4) | (self.dst & 0x0f)
        } else {
            (self.dst << 4) | (self.src & 0x0f)
        };
        let off = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        [
            self.code, regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ]
    }

    /// Whether this is the first half of a 16-byte `ld_imm64`.
    #[must_use]
    pub fn is_ld_imm64(&self) -> bool {
        self.code == LD_IMM64
    }

    /// Whether this is a bpf-to-bpf call (`call` with `src_reg == BPF_PSEUDO_CALL`).
    #[must_use]
    pub fn is_pseudo_call(&self) -> bool {
        self.code == CALL && self.src == PSEUDO_CALL
    }
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
        let a = Insn::decode(&le, Order::Little);
        let b = Insn::decode(&be, Order::Big);
        assert_eq!(a, b);
        assert_eq!((a.dst, a.src, a.off), (1, 2, 4));
        if cfg!(target_endian = "little") {
            assert_eq!(a.to_host_bytes(), [0x61, 0x21, 4, 0, 0, 0, 0, 0]);
        }
    }
}
