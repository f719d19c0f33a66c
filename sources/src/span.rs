//! The span record of the main job and its interned key.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};
use streamforge_dataflow::hash::stable_hash_bytes;

/// The grouping key of the main job: (service, operator_name, operator_class).
///
/// Cheap to clone (one reference count) and to hash (the stable hash is computed
/// once, when the key is interned or deserialized).
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "KeyParts", into = "KeyParts")]
pub struct SpanKey(Arc<KeyInner>);

struct KeyInner {
    hash: u64,
    parts: KeyParts,
}

/// The strings of a [`SpanKey`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyParts {
    /// Service name.
    pub service: String,
    /// Operator (operation) name.
    pub operator_name: String,
    /// Operator class.
    pub operator_class: String,
}

/// The stable hash a [`SpanKey`] of these strings has (without building one).
///
/// # Examples
/// ```
/// use streamforge_sources::span::{parts_hash, SpanKey};
/// assert_eq!(parts_hash("cart", "Get", "span"), SpanKey::new("cart", "Get", "span").stable_hash());
/// ```
pub fn parts_hash(service: &str, operator_name: &str, operator_class: &str) -> u64 {
    let a = stable_hash_bytes(service.as_bytes());
    let b = stable_hash_bytes(operator_name.as_bytes());
    let c = stable_hash_bytes(operator_class.as_bytes());
    a ^ b.rotate_left(21) ^ c.rotate_left(42) ^ 0x9e37_79b9_7f4a_7c15
}

impl From<KeyParts> for SpanKey {
    fn from(parts: KeyParts) -> Self {
        let hash = parts_hash(&parts.service, &parts.operator_name, &parts.operator_class);
        SpanKey(Arc::new(KeyInner { hash, parts }))
    }
}

impl From<SpanKey> for KeyParts {
    fn from(k: SpanKey) -> Self {
        k.0.parts.clone()
    }
}

impl SpanKey {
    /// A key from its three strings.
    ///
    /// # Examples
    /// ```
    /// use streamforge_sources::SpanKey;
    /// let a = SpanKey::new("cart", "GetCart", "span");
    /// assert_eq!(a, SpanKey::new("cart", "GetCart", "span"));
    /// assert_eq!(a.service(), "cart");
    /// ```
    pub fn new(service: &str, operator_name: &str, operator_class: &str) -> Self {
        KeyParts {
            service: service.into(),
            operator_name: operator_name.into(),
            operator_class: operator_class.into(),
        }
        .into()
    }
    /// Service name.
    pub fn service(&self) -> &str {
        &self.0.parts.service
    }
    /// Operator name.
    pub fn operator_name(&self) -> &str {
        &self.0.parts.operator_name
    }
    /// Operator class.
    pub fn operator_class(&self) -> &str {
        &self.0.parts.operator_class
    }
    /// The stable hash (identical in every process).
    pub fn stable_hash(&self) -> u64 {
        self.0.hash
    }
    /// The key's strings.
    pub fn parts(&self) -> &KeyParts {
        &self.0.parts
    }
}

impl PartialEq for SpanKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.parts == other.0.parts)
    }
}
impl Eq for SpanKey {}

impl Hash for SpanKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash)
    }
}

impl PartialOrd for SpanKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SpanKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.parts.cmp(&other.0.parts)
    }
}

impl std::fmt::Debug for SpanKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}|{}|{}",
            self.service(),
            self.operator_name(),
            self.operator_class()
        )
    }
}

/// Interns keys so that records of one key share one allocation.
#[derive(Default)]
pub struct KeyInterner {
    table: HashTable<SpanKey>,
}

impl KeyInterner {
    /// The interned key for these strings.
    #[inline]
    pub fn intern(&mut self, service: &str, operator_name: &str, operator_class: &str) -> SpanKey {
        let h = parts_hash(service, operator_name, operator_class);
        let eq = |k: &SpanKey| {
            k.0.hash == h
                && k.service() == service
                && k.operator_name() == operator_name
                && k.operator_class() == operator_class
        };
        if let Some(k) = self.table.find(h, eq) {
            return k.clone();
        }
        let k = SpanKey::new(service, operator_name, operator_class);
        self.table.insert_unique(h, k.clone(), |k| k.0.hash);
        k
    }
}

/// One span (or anything shaped like one: a flight, a request).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    /// Event time, ms since the Unix epoch.
    pub event_time_ms: u64,
    /// (service, operator_name, operator_class).
    pub key: SpanKey,
    /// Duration in microseconds (integer so that sums are exact in any order;
    /// may be negative, e.g. a flight departing early).
    pub duration_us: i64,
    /// Whether the span failed.
    pub is_error: bool,
}
