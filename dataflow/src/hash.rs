//! Key hashing that is identical in every process of a cluster.
//!
//! `std`'s `RandomState` is seeded per process, so two processes would route the
//! same key to different workers. Every exchange in streamforge routes by
//! [`stable_hash`] instead: xxh3 with seed 0 over the key's `Hash` encoding.

use std::hash::{Hash, Hasher};

/// Hashes `value` with xxh3 (seed 0). The result depends only on the value's
/// `Hash` implementation, never on the process, so it is safe for routing.
///
/// # Examples
/// ```
/// use streamforge_dataflow::stable_hash;
/// assert_eq!(stable_hash(&("svc", "op")), stable_hash(&("svc", "op")));
/// assert_ne!(stable_hash(&("svc", "op")), stable_hash(&("svc", "op2")));
/// ```
pub fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = OneShot::default();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Bytes of a `Hash` encoding gathered on the stack and hashed with one
/// `xxh3_64` call: the same value as the streaming `Xxh3` (XXH3's streaming
/// and one-shot forms agree, and `Xxh3`'s `Hasher` has only `write`), but a
/// key of many small writes (a row key: a tag byte, the bytes, a terminator
/// per column) costs one hash instead of one buffered update per write.
/// Encodings longer than the buffer go on in the streaming hasher.
struct OneShot {
    buf: [u8; ONE_SHOT_BYTES],
    len: usize,
    spill: Option<Box<xxhash_rust::xxh3::Xxh3>>,
}

const ONE_SHOT_BYTES: usize = 128;

impl Default for OneShot {
    #[inline]
    fn default() -> Self {
        OneShot {
            buf: [0; ONE_SHOT_BYTES],
            len: 0,
            spill: None,
        }
    }
}

impl Hasher for OneShot {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        if let Some(s) = self.spill.as_mut() {
            s.update(bytes);
        } else if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            let mut s = Box::new(xxhash_rust::xxh3::Xxh3::with_seed(0));
            s.update(&self.buf[..self.len]);
            s.update(bytes);
            self.spill = Some(s);
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        match &self.spill {
            Some(s) => s.digest(),
            None => xxhash_rust::xxh3::xxh3_64(&self.buf[..self.len]),
        }
    }
}

/// Hashes raw bytes with xxh3 (seed 0); the fast path for string keys.
pub fn stable_hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Number of key groups: the unit in which keyed state is routed and stored
/// (Flink's default maximum parallelism). A restore may use any number of
/// workers; each loads the key groups it owns.
pub const KEY_GROUPS: u64 = 128;

/// The key group of a key hash.
pub fn key_group(hash: u64) -> u64 {
    hash % KEY_GROUPS
}

/// The worker (of `peers`) that owns `key_group` — the same rule timely's
/// `Exchange` applies to a routing value (`value % peers`).
///
/// # Examples
/// ```
/// use streamforge_dataflow::hash::{key_group, owner, KEY_GROUPS};
/// let g = key_group(12_345);
/// assert!(g < KEY_GROUPS);
/// assert_eq!(owner(g, 4), g % 4);
/// ```
pub fn owner(key_group: u64, peers: usize) -> u64 {
    key_group % peers as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routing and key groups of checkpoints depend on these exact values:
    /// a change (another hash, another `Hash` encoding in std, a changed
    /// seed) would send keys to other workers than a checkpoint written by
    /// an earlier version or another process expects. Pinned, so such a
    /// change fails here first.
    #[test]
    fn stable_hash_values_are_pinned() {
        let got = [
            stable_hash(&("svc", "op")),
            stable_hash(&42u64),
            stable_hash("order-1"),
            stable_hash_bytes(b"cart"),
        ];
        assert_eq!(got, PINNED);
        assert_eq!(key_group(PINNED[0]), PINNED[0] % 128);
    }

    /// The one-shot hasher agrees with the streaming one for encodings
    /// shorter and longer than its buffer, in any pieces.
    #[test]
    fn one_shot_equals_streaming() {
        for n in [0usize, 1, 7, 127, 128, 129, 300, 5_000] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            for piece in [1usize, 3, 64, 200] {
                let mut a = OneShot::default();
                let mut b = xxhash_rust::xxh3::Xxh3::with_seed(0);
                for c in bytes.chunks(piece) {
                    a.write(c);
                    b.write(c);
                }
                assert_eq!(a.finish(), b.finish(), "{n} bytes in pieces of {piece}");
            }
        }
        let long: Vec<String> = (0..40).map(|i| format!("value-{i}")).collect();
        let mut b = xxhash_rust::xxh3::Xxh3::with_seed(0);
        long.hash(&mut b);
        assert_eq!(stable_hash(&long), b.finish());
    }

    const PINNED: [u64; 4] = [
        4_023_255_632_930_828_716,
        15_395_265_915_043_915_720,
        1_632_263_939_559_161_360,
        16_187_531_608_924_356_957,
    ];
}
