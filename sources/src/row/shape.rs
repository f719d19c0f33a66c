//! Shape-predicted decoding of flat JSON records.
//!
//! The records of one source almost always share one layout: the same keys
//! in the same order, with the same separators (`{"ts":1,"service":"cart"}`
//! or Python's `{"ts": 1, "service": "cart"}`). A [`Shape`] is that layout,
//! learned from a record the JSON parser accepted: the bytes between the
//! values (`{"ts":`, `,"service":`, …, `}`) and the column of each key.
//! Decoding with it compares those bytes and converts each value straight
//! from its text, without a parser's per-token dispatch.
//!
//! It accepts only what it is sure of, with the values the reference path
//! gives: strings without escapes, JSON numbers by the grammar of RFC 8259
//! §6, `true`/`false`/`null`, scalars only. Anything else — another layout,
//! an escape, a nested value, a value its column does not take as is —
//! returns `None`, and the record goes through the JSON parser (which gives
//! the exact reason when it is bad). So a record decodes to the same row,
//! or the same dead letter, whichever path takes it.

use super::{ColumnType, Row, Schema, StrCache, Value};

/// The column of a field the schema does not read.
const IGNORED: u16 = u16::MAX;

/// A learned record layout: separators and the column of each field.
#[derive(Clone, Debug)]
pub(super) struct Shape {
    /// The separators back to back: the bytes before each value
    /// (`{"ts":`, `,"service":`), then the closing bytes (`}`).
    bytes: Box<[u8]>,
    /// Per field, in record order: the end of its separator in `bytes`
    /// and its column ([`IGNORED`]: not read).
    fields: Box<[(u32, u16)]>,
    /// Bit `i`: the layout has a field of column `i`.
    pub(super) seen: u64,
}

/// JSON whitespace (RFC 8259 §2).
#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(b: &[u8], mut q: usize) -> usize {
    while b.get(q).copied().is_some_and(is_ws) {
        q += 1;
    }
    q
}

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_le_bytes([1; 8]);

/// The high bit of every byte of `w` (8 bytes of text, little-endian)
/// that is `"`, `\\`, a control character or not ASCII. Only the lowest
/// set bit is exact (a borrow may mark bytes above it): enough to find the
/// first such byte (the classic zero-byte test, Hacker's Delight §6-1).
#[inline]
fn special_bytes(w: u64) -> u64 {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (quote | backslash | control | w) & (ONES << 7)
}

/// The closing quote of a string whose text starts at `q`, when it has no
/// escape and no control character, and whether the text is all ASCII
/// (else it is still to be checked as UTF-8). Eight bytes at a time.
#[inline]
fn string_end(b: &[u8], mut q: usize) -> Option<(usize, bool)> {
    let mut ascii = true;
    loop {
        while let Some(word) = b.get(q..q + 8) {
            let m = special_bytes(u64::from_le_bytes(word.try_into().ok()?));
            if m != 0 {
                q += (m.trailing_zeros() / 8) as usize;
                break;
            }
            q += 8;
        }
        match *b.get(q)? {
            b'"' => return Some((q, ascii)),
            b'\\' | 0..=0x1f => return None,
            0x80.. => ascii = false,
            _ => {}
        }
        q += 1;
    }
}

/// `a == b` for the short separators of a layout, without a call.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
    let half = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or([0; 4]));
    let n = a.len();
    n == b.len()
        && match n {
            8..=16 => word(&a[..8]) == word(&b[..8]) && word(&a[n - 8..]) == word(&b[n - 8..]),
            4..=7 => half(&a[..4]) == half(&b[..4]) && half(&a[n - 4..]) == half(&b[n - 4..]),
            _ => a == b,
        }
}

/// The end of the JSON number at `p` (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`).
#[inline]
fn number_end(b: &[u8], p: usize) -> Option<usize> {
    let digits = |mut q: usize| {
        while b.get(q).is_some_and(u8::is_ascii_digit) {
            q += 1;
        }
        q
    };
    let mut q = p + usize::from(b.get(p) == Some(&b'-'));
    match *b.get(q)? {
        b'0' => q += 1,
        b'1'..=b'9' => q = digits(q + 1),
        _ => return None,
    }
    if b.get(q) == Some(&b'.') {
        let d = digits(q + 1);
        if d == q + 1 {
            return None;
        }
        q = d;
    }
    if matches!(b.get(q), Some(b'e' | b'E')) {
        q += 1;
        q += usize::from(matches!(b.get(q), Some(b'+' | b'-')));
        let d = digits(q);
        if d == q {
            return None;
        }
        q = d;
    }
    Some(q)
}

/// The end of the scalar at `p` (a field not read: only its extent and
/// validity matter).
fn skip_scalar(b: &[u8], p: usize) -> Option<usize> {
    match *b.get(p)? {
        b'"' => {
            let (end, ascii) = string_end(b, p + 1)?;
            if !ascii {
                std::str::from_utf8(&b[p + 1..end]).ok()?;
            }
            Some(end + 1)
        }
        b't' => b[p..].starts_with(b"true").then_some(p + 4),
        b'f' => b[p..].starts_with(b"false").then_some(p + 5),
        b'n' => b[p..].starts_with(b"null").then_some(p + 4),
        _ => number_end(b, p),
    }
}

/// Reads the value at `p` as column `i` into `slot`; the end of the value.
#[inline]
fn read_value(
    b: &[u8],
    p: usize,
    schema: &Schema,
    i: usize,
    strings: &mut StrCache,
    slot: &mut Value,
) -> Option<usize> {
    let ty = schema.columns[i].ty;
    match *b.get(p)? {
        b'"' if ty == ColumnType::String => {
            let (end, _) = string_end(b, p + 1)?;
            *slot = Value::Str(strings.intern_bytes(&b[p + 1..end])?);
            Some(end + 1)
        }
        b't' if ty == ColumnType::Bool && b[p..].starts_with(b"true") => {
            *slot = Value::Bool(true);
            Some(p + 4)
        }
        b'f' if ty == ColumnType::Bool && b[p..].starts_with(b"false") => {
            *slot = Value::Bool(false);
            Some(p + 5)
        }
        b'n' if schema.columns[i].nullable && b[p..].starts_with(b"null") => {
            *slot = Value::Null;
            Some(p + 4)
        }
        b'-' | b'0'..=b'9' => {
            let end = number_end(b, p)?;
            // ASCII by the grammar.
            let text = std::str::from_utf8(&b[p..end]).ok()?;
            *slot = match ty {
                // `parse` takes no fraction or exponent.
                ColumnType::Int | ColumnType::Timestamp => {
                    super::int_value(schema, i, text.parse::<i64>().ok()?)?
                }
                ColumnType::Float | ColumnType::Decimal => {
                    schema.parse_json(i, text, strings).ok()?
                }
                _ => return None,
            };
            Some(end)
        }
        _ => None,
    }
}

impl Shape {
    /// The layout of `b`, a record the JSON parser accepted: `None` when
    /// it is not a flat object of plain keys and scalars, repeats a key,
    /// or has a column beyond the 64th.
    pub(super) fn learn(b: &[u8], schema: &Schema) -> Option<Shape> {
        let mut bytes = Vec::new();
        let mut fields = Vec::new();
        let mut seen = 0u64;
        let mut q = skip_ws(b, 0);
        if b.get(q) != Some(&b'{') {
            return None;
        }
        q = skip_ws(b, q + 1);
        let mut start = 0;
        loop {
            if b.get(q) != Some(&b'"') {
                return None;
            }
            let (key_end, _) = string_end(b, q + 1)?;
            let key = std::str::from_utf8(&b[q + 1..key_end]).ok()?;
            q = skip_ws(b, key_end + 1);
            if b.get(q) != Some(&b':') {
                return None;
            }
            q = skip_ws(b, q + 1);
            bytes.extend_from_slice(&b[start..q]);
            let column = match schema.column_of_field(key) {
                // A repeated key (the last one counts): not a layout.
                Some(c) if c < 64 && seen & (1 << c) == 0 => {
                    seen |= 1 << c;
                    c as u16
                }
                Some(_) => return None,
                None => IGNORED,
            };
            fields.push((u32::try_from(bytes.len()).ok()?, column));
            q = skip_scalar(b, q)?;
            start = q;
            q = skip_ws(b, q);
            match *b.get(q)? {
                b',' => q = skip_ws(b, q + 1),
                b'}' => {
                    bytes.extend_from_slice(&b[start..=q]);
                    if !b[q + 1..].iter().all(|&c| is_ws(c)) {
                        return None;
                    }
                    return Some(Shape {
                        bytes: bytes.into(),
                        fields: fields.into(),
                        seen,
                    });
                }
                _ => return None,
            }
        }
    }

    /// Decodes `b` into `row` (a row of nulls, one per column) when it has
    /// this layout and every value fits its column as is; `None` otherwise
    /// (`row` is then partly written).
    #[inline]
    pub(super) fn decode(
        &self,
        b: &[u8],
        schema: &Schema,
        strings: &mut [StrCache],
        row: &mut Row,
    ) -> Option<()> {
        let mut p = 0;
        let mut s = 0;
        for &(end, column) in self.fields.iter() {
            let sep = &self.bytes[s..end as usize];
            s = end as usize;
            if !same(b.get(p..p + sep.len())?, sep) {
                return None;
            }
            p += sep.len();
            p = if column == IGNORED {
                skip_scalar(b, p)?
            } else {
                let i = column as usize;
                read_value(b, p, schema, i, &mut strings[i], &mut row[i])?
            };
        }
        let tail = &self.bytes[s..];
        if !same(b.get(p..p + tail.len())?, tail) {
            return None;
        }
        b[p + tail.len()..].iter().all(|&c| is_ws(c)).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-at-a-time reading of [`string_end`].
    fn string_end_naive(b: &[u8], q: usize) -> Option<(usize, bool)> {
        let end = q + b
            .get(q..)?
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        (b[end] == b'"').then(|| (end, b[q..end].is_ascii()))
    }

    proptest! {
        /// Word at a time, the first quote, escape or control character
        /// is found where a byte-at-a-time scan finds it, from any start.
        #[test]
        fn string_end_agrees_with_a_byte_scan(
            b in proptest::collection::vec(prop_oneof![
                4 => 0x20u8..0x7f, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20, 1 => 0x80u8..=0xff,
            ], 0..40),
            q in 0usize..40,
        ) {
            prop_assert_eq!(string_end(&b, q), string_end_naive(&b, q));
        }

        /// [`same`] is `==` on short slices.
        #[test]
        fn same_is_equality(a in proptest::collection::vec(0u8..3, 0..20),
                            b in proptest::collection::vec(0u8..3, 0..20)) {
            prop_assert_eq!(same(&a, &b), a == b);
            prop_assert!(same(&a, &a));
        }
    }
}
