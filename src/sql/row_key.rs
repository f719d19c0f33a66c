//! A row keyed by some of its columns, without copying them out.
//!
//! A window over rows is keyed by a list of columns. Copying those values
//! into a key `Vec` for every record costs an allocation, a copy and a drop
//! per record (and, across workers, the key travels twice: once in the key,
//! once in the row). A [`RowKey`] is the row itself plus the indices of its
//! key columns: it hashes and compares as the key alone, so the window
//! operator can look its state up by the record, and stores a row only when
//! it opens a new (window, key). The key is hashed once, when it is made.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use streamforge_dataflow::stable_hash;
use streamforge_sources::row::{Row, Value};

/// Key columns stored inline up to this many (more spill to the heap).
const INLINE: usize = 8;

/// The indices of the key columns of a row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum KeyColumns {
    /// Up to [`INLINE`] indices: `(count, indices)`.
    Inline(u8, [u16; INLINE]),
    /// More indices.
    Heap(std::sync::Arc<[u16]>),
}

impl KeyColumns {
    /// The key columns `cols` (indices into a row).
    ///
    /// # Panics
    /// When an index exceeds `u16::MAX` (a schema has far fewer columns).
    pub fn new(cols: &[usize]) -> KeyColumns {
        let idx: Vec<u16> = cols
            .iter()
            .map(|&c| u16::try_from(c).expect("column index fits u16"))
            .collect();
        if idx.len() <= INLINE {
            let mut a = [0u16; INLINE];
            a[..idx.len()].copy_from_slice(&idx);
            KeyColumns::Inline(idx.len() as u8, a)
        } else {
            KeyColumns::Heap(idx.into())
        }
    }

    /// The indices, in key order.
    #[inline]
    pub fn as_slice(&self) -> &[u16] {
        match self {
            KeyColumns::Inline(n, a) => &a[..*n as usize],
            KeyColumns::Heap(a) => a,
        }
    }
}

/// A row that hashes and compares by its key columns only.
///
/// The key is hashed once, when the `RowKey` is made (the stable hash of
/// the key as a `Vec<Value>` of the key columns, [`RowKey::key_hash`]);
/// hashing a `RowKey` hashes that number, so routing to a worker, the key
/// group and the window operator's lookup do not hash the values again.
///
/// # Examples
/// ```
/// use streamforge::sql::row_key::{KeyColumns, RowKey};
/// use streamforge::sources::row::Value;
/// use streamforge::dataflow::stable_hash;
/// let cols = KeyColumns::new(&[2, 0]);
/// let a = RowKey::new(cols.clone(), vec![Value::Int(1), Value::Int(10), Value::str("x")]);
/// let b = RowKey::new(cols, vec![Value::Int(1), Value::Int(99), Value::str("x")]);
/// assert_eq!(a, b); // column 1 is not part of the key
/// assert_eq!(a.key(), vec![Value::str("x"), Value::Int(1)]);
/// assert_eq!(a.key_hash(), stable_hash(&a.key()));
/// assert_eq!(stable_hash(&a), stable_hash(&b));
/// // A clone is the key alone (what a window keeps per key): equal, with
/// // the same hash and key, without the rest of the row.
/// let c = a.clone();
/// assert_eq!((c == a, c.key_hash(), c.key()), (true, a.key_hash(), a.key()));
/// assert_eq!(c.row.len(), 2);
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub struct RowKey {
    /// The stable hash of the key values.
    hash: u64,
    /// The key columns of `row`.
    pub cols: KeyColumns,
    /// The whole row.
    pub row: Row,
}

impl RowKey {
    /// `row` keyed by `cols`.
    #[inline]
    pub fn new(cols: KeyColumns, row: Row) -> RowKey {
        let mut k = RowKey { hash: 0, cols, row };
        k.hash = encoded_key_hash(&k).unwrap_or_else(|| stable_hash(&KeyValues(&k)));
        k
    }

    /// The stable hash of the key's values (as of a `Vec<Value>` of them).
    #[inline]
    pub fn key_hash(&self) -> u64 {
        self.hash
    }

    /// The key's values, copied, in key order.
    pub fn key(&self) -> Vec<Value> {
        self.key_values().cloned().collect()
    }

    /// The key's values, in key order.
    #[inline]
    pub fn key_values(&self) -> impl Iterator<Item = &Value> + '_ {
        self.cols.as_slice().iter().map(|&i| &self.row[i as usize])
    }
}

/// Bytes gathered by [`encoded_key_hash`] before it gives up (a longer key
/// is hashed through `Hash`).
const ENCODED_BYTES: usize = 128;

/// The stable hash of the key's values, their `Hash` bytes
/// ([`Value::hash_bytes`]) gathered in one buffer and hashed once — the
/// value `stable_hash` gives, without a hasher call per piece. `None` for a
/// key over [`ENCODED_BYTES`] bytes.
#[inline]
fn encoded_key_hash(k: &RowKey) -> Option<u64> {
    let mut buf = [0u8; ENCODED_BYTES];
    let mut n = 0;
    let mut fits = true;
    let mut put = |bytes: &[u8]| match buf.get_mut(n..n + bytes.len()) {
        Some(dst) if fits => {
            dst.copy_from_slice(bytes);
            n += bytes.len();
        }
        _ => fits = false,
    };
    // As `Vec<Value>::hash`: the length, then each value.
    put(&k.cols.as_slice().len().to_ne_bytes());
    for v in k.key_values() {
        v.hash_bytes(&mut put);
    }
    fits.then(|| streamforge_dataflow::hash::stable_hash_bytes(&buf[..n]))
}

/// The key values of a row key, hashing as a `Vec<Value>` of them.
struct KeyValues<'a>(&'a RowKey);

impl Hash for KeyValues<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // As `Vec<Value>::hash`: the length, then each value.
        h.write_usize(self.0.cols.as_slice().len());
        for v in self.0.key_values() {
            v.hash(h);
        }
    }
}

/// A clone keeps only the key's values (`cols` become `0..n`): the keyed
/// operators clone a key to store it with its state, and only ever read a
/// stored key's values (equality, output), never the rest of its row.
impl Clone for RowKey {
    fn clone(&self) -> RowKey {
        let n = self.cols.as_slice().len();
        let cols: Vec<usize> = (0..n).collect();
        RowKey {
            hash: self.hash,
            cols: KeyColumns::new(&cols),
            row: self.key(),
        }
    }
}

impl Hash for RowKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash);
    }
}

impl PartialEq for RowKey {
    fn eq(&self, other: &RowKey) -> bool {
        let (a, b) = (self.cols.as_slice(), other.cols.as_slice());
        self.hash == other.hash
            && a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&i, &j)| self.row[i as usize] == other.row[j as usize])
    }
}

impl Eq for RowKey {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoded_key_hash_equals_the_hash_of_the_copied_key_for_every_type() {
        let long = "x".repeat(200);
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Float(2.5),
            Value::Decimal("1.50".parse().unwrap()),
            Value::str("cart"),
            Value::str(""),
            Value::str(&long),
            Value::Timestamp(1_674_950_398_640),
        ];
        for a in &values {
            for b in &values {
                let row = vec![a.clone(), Value::Int(0), b.clone()];
                for cols in [vec![0], vec![2, 0], vec![0, 1, 2]] {
                    let k = RowKey::new(KeyColumns::new(&cols), row.clone());
                    let copied: Vec<Value> = cols.iter().map(|&c| row[c].clone()).collect();
                    assert_eq!(k.key_hash(), stable_hash(&copied), "{copied:?}");
                }
            }
        }
        // The direct encoding covered the common keys (not the fallback).
        let k = RowKey::new(
            KeyColumns::new(&[0, 1]),
            vec![Value::str("a"), Value::Int(1)],
        );
        assert!(encoded_key_hash(&k).is_some());
    }

    #[test]
    fn a_row_key_hashes_and_compares_as_its_copied_key_inline_and_on_the_heap() {
        for n in [1usize, 3, 8, 9, 12] {
            let row: Row = (0..2 * n as i64).map(Value::Int).collect();
            let cols: Vec<usize> = (0..n).map(|i| 2 * i + 1).collect();
            let k = RowKey::new(KeyColumns::new(&cols), row.clone());
            let copied: Vec<Value> = cols.iter().map(|&c| row[c].clone()).collect();
            assert_eq!(k.key(), copied);
            assert_eq!(k.key_hash(), stable_hash(&copied), "{n} columns");
            let mut other = row.clone();
            other[0] = Value::Int(-1); // not a key column
            assert_eq!(k, RowKey::new(KeyColumns::new(&cols), other.clone()));
            other[1] = Value::Int(-1); // a key column
            assert_ne!(k, RowKey::new(KeyColumns::new(&cols), other));
        }
    }
}
