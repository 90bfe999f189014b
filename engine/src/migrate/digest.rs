//! A seeded 64-bit hash of byte strings, stable across builds and platforms (it is
//! written to the merge base file), and a streaming checksum built on it.
//!
//! Not a cryptographic hash: it tells apart the values a map holds, and a fresh random
//! seed per merge base keeps values an outsider controls (flow keys) from being chosen
//! to collide. Words are read little-endian so that a file written on one host reads
//! the same on another.

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xbf58_476d_1ce4_e5b9;
const K2: u64 = 0x94d0_49bb_1331_11eb;

/// The final mix of SplitMix64: every input bit affects every output bit.
#[inline]
fn fmix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(K1);
    x ^= x >> 27;
    x = x.wrapping_mul(K2);
    x ^ (x >> 31)
}

/// Streaming state of the hash: feed bytes with [`Hasher64::write`], read the value
/// with [`Hasher64::finish`]. Feeding `a` then `b` equals feeding `a ‖ b`.
#[derive(Debug, Clone)]
pub struct Hasher64 {
    state: u64,
    tail: [u8; 8],
    tail_len: usize,
    len: u64,
}

impl Hasher64 {
    /// A hasher with `seed`.
    #[must_use]
    #[inline]
    pub fn new(seed: u64) -> Self {
        Self {
            state: fmix(seed ^ K0),
            tail: [0; 8],
            tail_len: 0,
            len: 0,
        }
    }

    #[inline]
    fn word(&mut self, w: u64) {
        self.state = (self.state ^ fmix(w.wrapping_add(K0)))
            .rotate_left(29)
            .wrapping_mul(K1);
    }

    /// Feeds `bytes`.
    #[inline]
    pub fn write(&mut self, mut bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u64);
        if self.tail_len > 0 {
            let take = (8 - self.tail_len).min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            if let Some(dst) = self.tail.get_mut(self.tail_len..self.tail_len + take) {
                dst.copy_from_slice(head);
            }
            self.tail_len += take;
            bytes = rest;
            if self.tail_len < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.tail);
            self.word(w);
            self.tail_len = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.word(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if let Some(dst) = self.tail.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        self.tail_len = rest.len();
    }

    /// The hash of everything fed so far.
    #[must_use]
    #[inline]
    pub fn finish(&self) -> u64 {
        let mut s = self.clone();
        let mut last = [0u8; 8];
        if let Some(src) = s.tail.get(..s.tail_len)
            && let Some(dst) = last.get_mut(..src.len())
        {
            dst.copy_from_slice(src);
        }
        s.word(u64::from_le_bytes(last));
        fmix(s.state ^ s.len.wrapping_mul(K2))
    }
}

/// The hash of the concatenation of `parts` with `seed`.
#[must_use]
#[inline]
pub fn hash64(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = Hasher64::new(seed);
    for p in parts {
        h.write(p);
    }
    h.finish()
}

/// The hash of `key` and the hash of `key ‖ value` with `seed`, in one pass over the
/// key: as `hash64(seed, &[key])` and `hash64(seed, &[key, value])`.
#[must_use]
#[inline]
pub fn hash_key_and_entry(seed: u64, key: &[u8], value: &[u8]) -> (u64, u64) {
    let (key_hash, entry, _) = hash_key_and_entry_keeping(seed, key, value, false);
    (key_hash, entry)
}

/// As [`hash_key_and_entry`], and with `keep` the hasher as it stood after the key,
/// to hash another value after the same key without going over the key again.
#[must_use]
#[inline]
pub fn hash_key_and_entry_keeping(
    seed: u64,
    key: &[u8],
    value: &[u8],
    keep: bool,
) -> (u64, u64, Option<Hasher64>) {
    let mut h = Hasher64::new(seed);
    h.write(key);
    let key_hash = h.finish();
    let after_key = keep.then(|| h.clone());
    h.write(value);
    (key_hash, h.finish(), after_key)
}

/// A seed that differs from run to run (time and address-space entropy); the merge
/// base records it.
#[must_use]
pub fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let local = 0u8;
    let addr = std::ptr::addr_of!(local) as usize as u64;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "mixing the low bits of the time"
    )]
    let t = t as u64;
    fmix(t ^ fmix(addr ^ u64::from(std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PINNED: u64 = 910_643_674_211_352_708;

    #[test]
    fn values_are_fixed_across_builds() {
        // The file format depends on these values: a change here breaks every base
        // written before it.
        assert_eq!(hash64(0, &[]), hash64(0, &[b""]));
        assert_ne!(hash64(0, &[b"a"]), hash64(1, &[b"a"]));
        assert_ne!(hash64(0, &[b"\0"]), hash64(0, &[b""]), "length counts");
        assert_eq!(hash64(7, &[b"handover"]), PINNED);
    }

    proptest! {
        #[test]
        fn split_points_do_not_matter(data in proptest::collection::vec(any::<u8>(), 0..64), at in 0usize..64) {
            let at = at.min(data.len());
            let (a, b) = data.split_at(at);
            prop_assert_eq!(hash64(3, &[a, b]), hash64(3, &[&data]));
            prop_assert_eq!(hash_key_and_entry(3, a, b), (hash64(3, &[a]), hash64(3, &[&data])));
        }
    }
}
