//! The keyed-state checkpoint layer shared by every stateful operator.
//!
//! Keyed state is stored **by key group** (`stable_hash(key) % KEY_GROUPS`,
//! see [`crate::hash`]): an operator's part of a checkpoint is a header
//! `(group, offset, length)*` followed by one bincode block per group, each
//! block a `Vec` of the operator's entries of that group. A restore reads,
//! from the parts of *every* old worker, only the groups the new worker owns
//! ([`owner`]), so a job may restore with any number of workers or processes.
//!
//! Layout of a part: `u64 LE header length | bincode Vec<(group, offset,
//! length)> | blocks`.
//!
//! An operator writes its part with [`encode_groups`] when an epoch completes
//! at its input (see [`crate::checkpoint::checkpoint_to_write`]) and loads it
//! with [`restore_owned`] when it is built.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::checkpoint::Restore;
use crate::hash::{key_group, owner};

/// The group of a part whose entries *every* worker loads on a restore:
/// broadcast state (the same on every worker, so written by one) and
/// operator state redistributed as a union (each worker reads what all old
/// workers wrote). Not a key group ([`crate::hash::KEY_GROUPS`] are below).
pub const UNION_GROUP: u64 = u64::MAX;

/// Encodes `entries` — `(key hash, entry)` — grouped by key group, and the
/// `union` entries in [`UNION_GROUP`] (every worker loads them on a
/// restore; see [`restore_owned`]).
///
/// # Examples
/// ```
/// use streamforge_dataflow::keyed_state::{decode_groups, encode_groups_with_union, UNION_GROUP};
/// use streamforge_dataflow::stable_hash;
/// let part = encode_groups_with_union(
///     [(stable_hash("k"), "keyed".to_string())],
///     ["everyone".to_string()],
/// );
/// let mut union = Vec::new();
/// decode_groups::<String>(&part, |g| g == UNION_GROUP, |e| union.push(e)).unwrap();
/// assert_eq!(union, ["everyone"]);
/// ```
pub fn encode_groups_with_union<E: Serialize>(
    entries: impl IntoIterator<Item = (u64, E)>,
    union: impl IntoIterator<Item = E>,
) -> Vec<u8> {
    let mut groups: BTreeMap<u64, Vec<E>> = BTreeMap::new();
    for (h, e) in entries {
        groups.entry(key_group(h)).or_default().push(e);
    }
    let union: Vec<E> = union.into_iter().collect();
    if !union.is_empty() {
        groups.insert(UNION_GROUP, union);
    }
    encode_blocks(&groups)
}

/// Encodes `entries` — `(key hash, entry)` — grouped by key group.
///
/// Entries of a group keep their relative order. `E` may hold references
/// (`(&K, &V)`): bincode encodes them exactly as the owned values, so
/// [`decode_groups`] can read them back as `(K, V)`.
///
/// # Examples
/// ```
/// use streamforge_dataflow::keyed_state::{decode_groups, encode_groups};
/// use streamforge_dataflow::{hash::{key_group, owner}, stable_hash};
/// let entries: Vec<(u64, (String, u64))> = ["a", "b", "c", "d"]
///     .iter()
///     .map(|k| (stable_hash(k), (k.to_string(), k.len() as u64)))
///     .collect();
/// let part = encode_groups(entries.iter().map(|(h, (k, v))| (*h, (k, v))));
/// // Restoring on 2 workers: each reads the groups it owns; together all.
/// let mut seen = Vec::new();
/// for worker in 0..2 {
///     decode_groups::<(String, u64)>(&part, |g| owner(g, 2) == worker, |e| {
///         assert_eq!(owner(key_group(stable_hash(&e.0)), 2), worker);
///         seen.push(e.0);
///     })
///     .unwrap();
/// }
/// seen.sort();
/// assert_eq!(seen, ["a", "b", "c", "d"]);
/// ```
pub fn encode_groups<E: Serialize>(entries: impl IntoIterator<Item = (u64, E)>) -> Vec<u8> {
    encode_groups_with_union(entries, std::iter::empty())
}

fn encode_blocks<E: Serialize>(groups: &BTreeMap<u64, Vec<E>>) -> Vec<u8> {
    let mut blocks = Vec::new();
    let mut index: Vec<(u64, u64, u64)> = Vec::with_capacity(groups.len());
    for (g, entries) in groups {
        let start = blocks.len() as u64;
        bincode::serialize_into(&mut blocks, entries).expect("keyed state serializes");
        index.push((*g, start, blocks.len() as u64 - start));
    }
    let header = bincode::serialize(&index).expect("index serializes");
    let mut out = Vec::with_capacity(8 + header.len() + blocks.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&blocks);
    out
}

/// Decodes the groups of a part written by [`encode_groups`] for which
/// `want(group)` holds, calling `f` for each entry.
///
/// # Errors
/// A truncated or undecodable part (the reason as text).
pub fn decode_groups<E: DeserializeOwned>(
    bytes: &[u8],
    want: impl Fn(u64) -> bool,
    mut f: impl FnMut(E),
) -> Result<(), String> {
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("too short")?;
    let header = bytes.get(8..8 + len).ok_or("truncated header")?;
    let index: Vec<(u64, u64, u64)> = bincode::deserialize(header).map_err(|e| e.to_string())?;
    let blocks = &bytes[8 + len..];
    for (g, start, n) in index {
        if !want(g) {
            continue;
        }
        let block = blocks
            .get(start as usize..(start + n) as usize)
            .ok_or("truncated block")?;
        let entries: Vec<E> = bincode::deserialize(block).map_err(|e| e.to_string())?;
        entries.into_iter().for_each(&mut f);
    }
    Ok(())
}

/// Loads, from every old worker's part `<prefix><j>` of `restore`, the key
/// groups that worker `index` of `peers` owns now and the [`UNION_GROUP`],
/// calling `f` per entry.
///
/// # Errors
/// A part is missing, damaged or undecodable: `"part NAME: reason"`.
pub fn restore_owned<E: DeserializeOwned>(
    restore: &Restore,
    prefix: &str,
    index: usize,
    peers: usize,
    mut f: impl FnMut(E),
) -> Result<(), String> {
    for name in restore.parts_with_prefix(prefix) {
        let bytes = restore.part(name).map_err(|e| e.to_string())?;
        decode_groups(
            &bytes,
            |g| g == UNION_GROUP || owner(g, peers) == index as u64,
            &mut f,
        )
        .map_err(|e| format!("part {name}: {e}"))?;
    }
    Ok(())
}
