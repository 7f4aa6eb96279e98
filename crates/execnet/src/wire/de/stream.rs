//! The streaming fast path of typed loads: serde visitors read the opcodes directly,
//! with no tape, for payloads in the layout every dumper writes.
//!
//! A dumper writes a list as `NEWLIST n` and then `INT i, item, SETITEM` for `i` in
//! `0..n`, and a dict as `NEWDICT` and then `key, value, SETITEM` per entry. Read in
//! that order, such a payload is a prefix form that serde can walk as it reads: no
//! object waits for a later opcode. This path takes exactly that layout, with scalars
//! and str keys, and hands every node to the visitor as [`TreeDe`](super::TreeDe)
//! would hand the same node of the tape.
//!
//! It gives up (and the load starts again on the tape, which is the authority) at the
//! first thing outside that layout or that needs more than a glance: tuples, sets and
//! other postfix forms, channels, complex numbers, big ints, Latin-1 strs, non-str dict
//! keys, a dict key seen twice in one dict or more than [`MAX_KEYS`] keys that are not
//! the fields of the struct being read, a magic first key, a list filled out of order,
//! `IgnoredAny`, a nested `Value`, and every error at all, the visitor's included. So a
//! typed load returns from here only when every check of the stack machine would pass
//! and the tape would give the same result, and every error and every message still
//! comes from the tape. A failed attempt costs the part of the payload read until then.

use serde::de::{self, value::BorrowedStrDeserializer, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::machine::parse_int_text;
use crate::wire::opcode as op;
use crate::wire::{CHANNEL_TOKEN, MAGIC_PREFIX, MAX_DEPTH, VALUE_TOKEN};

/// The most keys a dict may have on this path besides the fields of the struct it is
/// read as; a bigger one goes to the tape (such keys are checked for duplicates one
/// against another here, a struct's fields by a bit each).
pub(crate) const MAX_KEYS: usize = 32;

/// Loads `payload` as a `T` on the streaming path: `None` when it gives up.
pub(crate) fn load<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Option<T> {
    // An object that ends in BUILDTUPLE, SET or FROZENSET (and a count) is postfix at
    // its top: this path would read its first member and give up, paying for a
    // visitor's error message. The byte may also be an operand's; then the tape loads a
    // payload this path could have, which is only slower.
    if let [.., last, _, _, _, _, op::STOP] = payload {
        if matches!(*last, op::BUILDTUPLE | op::SET | op::FROZENSET) {
            return None;
        }
    }
    let mut s = Stream { buf: payload, pos: 0, budget: payload.len(), depth: 0, keys: Vec::new(), last_str: None, gave_up: false };
    let out = T::deserialize(StreamDe { s: &mut s });
    // The object must be all of the payload: STOP, and nothing after it.
    let whole = s.pos + 1 == payload.len() && payload[s.pos] == op::STOP;
    match out {
        Ok(v) if whole && !s.gave_up => Some(v),
        _ => None,
    }
}

/// The reading position and what the checks need to know.
struct Stream<'a> {
    buf: &'a [u8],
    pos: usize,
    /// List slots still allowed (the machine's `list_budget`).
    budget: usize,
    /// Containers open around the position.
    depth: usize,
    /// The keys of the dicts being read, each dict's after its parents', with their
    /// [`fingerprint`]s.
    keys: Vec<(u64, &'a str)>,
    /// The str read last and where its opcode was (a dict key's, for the checks after
    /// its visitor saw it).
    last_str: Option<(usize, &'a str)>,
    /// Set at the first reason to give up, and at any error: nothing read after it is
    /// trusted, even if a visitor swallowed the error.
    gave_up: bool,
}

/// The error of this path: the attempt ends and the tape loads the payload (and words
/// any error). It carries nothing, so results stay small and visitors' messages are
/// never formatted.
#[derive(Debug)]
struct LeftToTape;

impl std::fmt::Display for LeftToTape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("left to the tape")
    }
}

impl std::error::Error for LeftToTape {}

impl de::Error for LeftToTape {
    #[cold]
    fn custom<M: std::fmt::Display>(_message: M) -> Self {
        LeftToTape
    }
}

type Result<T> = std::result::Result<T, LeftToTape>;

impl<'a> Stream<'a> {
    /// Ends the attempt: nothing read from here on is trusted.
    #[cold]
    fn give_up<T>(&mut self) -> Result<T> {
        self.gave_up = true;
        Err(LeftToTape)
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    #[inline(always)]
    fn i32(&mut self) -> Option<i32> {
        let b = self.take(4)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The bytes of a counted operand (BYTES, a LONGINT's text): a length, not negative
    /// and not beyond the bytes left, and that many bytes.
    #[inline(always)]
    fn counted(&mut self) -> Option<&'a [u8]> {
        let rest = self.buf.get(self.pos..)?;
        let n = usize::try_from(i32::from_be_bytes(rest.get(..4)?.try_into().expect("4 bytes"))).ok()?;
        // 4 + n does not overflow: n is below 2**31.
        let b = rest.get(4..4 + n)?;
        self.pos += 4 + n;
        Some(b)
    }

    /// The str at the position, consumed, when a str opcode comes next; `None` when
    /// another node does.
    #[inline(always)]
    fn str_node(&mut self) -> Result<Option<&'a str>> {
        match self.peek() {
            Some(op) if is_str_op(op) && !self.gave_up => {
                self.pos += 1;
                match self.str_of(op) {
                    Some(s) => Ok(Some(s)),
                    None => self.give_up(),
                }
            }
            _ => Ok(None),
        }
    }

    /// Consumes `op` if it comes next.
    #[inline(always)]
    fn eat(&mut self, op: u8) -> Option<()> {
        (self.peek()? == op).then(|| self.pos += 1)
    }

    /// The str of a str opcode (already consumed): UTF-8 checked, or ASCII for PY2STRING.
    #[inline(always)]
    fn str_of(&mut self, op: u8) -> Option<&'a str> {
        let at = self.pos - 1;
        let b = self.counted()?;
        let s = if op == op::PY2STRING {
            if !b.is_ascii() {
                return None;
            }
            std::str::from_utf8(b).ok()?
        } else {
            super::machine::utf8_at(self.buf, self.pos - b.len(), b.len())?
        };
        self.last_str = Some((at, s));
        Some(s)
    }
}

/// A key's length and first seven bytes in one word: two keys of fewer than eight bytes
/// are equal exactly when their fingerprints are (each length fills its own range of
/// values), so the duplicate check of struct-like dicts compares words, not strs.
#[inline(always)]
fn fingerprint(key: &str) -> u64 {
    let b = key.as_bytes();
    b[..b.len().min(7)].iter().fold(b.len() as u64 & 0xff, |x, &c| x << 8 | c as u64)
}

fn is_str_op(op: u8) -> bool {
    matches!(op, op::PY3STRING | op::UNICODE | op::PY2STRING)
}

/// A deserializer of the node at the stream's position.
struct StreamDe<'s, 'a> {
    s: &'s mut Stream<'a>,
}

impl<'s, 'a> StreamDe<'s, 'a> {
    /// `r`, having given up if it is an error.
    #[inline(always)]
    fn watch<T>(s: &mut Stream<'a>, r: Result<T>) -> Result<T> {
        if r.is_err() {
            s.gave_up = true;
        }
        r
    }

    /// The node as [`TreeDe`](super::TreeDe)'s `deserialize_any` presents it.
    #[inline(always)]
    fn any<V: Visitor<'a>>(self, v: V) -> Result<V::Value> {
        if self.s.gave_up {
            return Err(LeftToTape);
        }
        let Some(op) = self.s.peek() else { return self.s.give_up() };
        self.node(op, v)
    }

    /// [`any`](Self::any), testing first for `LIKELY`, the opcode the visitor's type is
    /// sent as: that node is read with one compare instead of a jump through the table
    /// of every opcode.
    #[inline(always)]
    fn likely<const LIKELY: u8, V: Visitor<'a>>(self, v: V) -> Result<V::Value> {
        match self.s.peek() {
            Some(op) if op == LIKELY && !self.s.gave_up => self.node(LIKELY, v),
            _ => self.any(v),
        }
    }

    /// The node of `op`, the opcode at the position (not yet consumed), for `any`.
    #[inline(always)]
    fn node<V: Visitor<'a>>(self, op: u8, v: V) -> Result<V::Value> {
        self.s.pos += 1;
        let r = match op {
            op::NONE => v.visit_unit(),
            op::TRUE => v.visit_bool(true),
            op::FALSE => v.visit_bool(false),
            op::INT | op::LONG => match self.s.i32() {
                Some(i) => v.visit_i64(i as i64),
                None => return self.s.give_up(),
            },
            op::LONGINT | op::LONGLONG => {
                let at = self.s.pos - 1;
                let text = match self.s.counted() {
                    Some(t) => t,
                    None => return self.s.give_up(),
                };
                match parse_int_text(text, at) {
                    Ok(Ok(i)) => v.visit_i64(i),
                    _ => return self.s.give_up(),
                }
            }
            op::FLOAT => match self.s.take(8) {
                Some(b) => v.visit_f64(f64::from_be_bytes(b.try_into().expect("8 bytes"))),
                None => return self.s.give_up(),
            },
            op::PY3STRING | op::UNICODE | op::PY2STRING => match self.s.str_of(op) {
                Some(s) => v.visit_borrowed_str(s),
                None => return self.s.give_up(),
            },
            op::BYTES => match self.s.counted() {
                Some(b) => v.visit_borrowed_bytes(b),
                None => return self.s.give_up(),
            },
            op::NEWLIST => return self.list(v),
            op::NEWDICT => return self.dict(v, &[]),
            _ => return self.s.give_up(),
        };
        Self::watch(self.s, r)
    }

    /// A list, NEWLIST (consumed) and its count first.
    #[inline(always)]
    fn list<V: Visitor<'a>>(self, v: V) -> Result<V::Value> {
        let s = self.s;
        let n = match s.i32().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n <= s.buf.len() - s.pos && n <= s.budget && s.depth < MAX_DEPTH => n,
            _ => {
                return s.give_up();
            }
        };
        s.budget -= n;
        s.depth += 1;
        let mut items = Items { s, next: 0, len: n };
        let r = v.visit_seq(&mut items);
        let left = items.len - items.next;
        let s = items.s;
        s.depth -= 1;
        if left != 0 {
            s.gave_up = true;
        }
        Self::watch(s, r)
    }

    /// A dict, NEWDICT consumed; `fields` are the names of the struct it becomes (empty
    /// for any other type).
    #[inline(always)]
    fn dict<V: Visitor<'a>>(self, v: V, fields: &'static [&'static str]) -> Result<V::Value> {
        let s = self.s;
        if s.depth >= MAX_DEPTH {
            return s.give_up();
        }
        s.depth += 1;
        let start = s.keys.len();
        let mut entries = Entries { s, start, fields, seen: 0, next_field: 0 };
        let r = v.visit_map(&mut entries);
        let s = entries.s;
        s.depth -= 1;
        s.keys.truncate(start);
        // The visitor may stop before the end: then entries are left, which the tape
        // would report.
        if !matches!(s.peek(), Some(op::SETITEM | op::STOP)) {
            s.gave_up = true;
        }
        Self::watch(s, r)
    }
}

/// The items of a list being read.
struct Items<'s, 'a> {
    s: &'s mut Stream<'a>,
    next: usize,
    len: usize,
}

impl<'a> SeqAccess<'a> for Items<'_, 'a> {
    type Error = LeftToTape;

    #[inline(always)]
    fn next_element_seed<S: DeserializeSeed<'a>>(&mut self, seed: S) -> Result<Option<S::Value>> {
        if self.next == self.len {
            return Ok(None);
        }
        let s = &mut *self.s;
        // `INT i` with `i` the next index, in order.
        if s.gave_up || s.eat(op::INT).is_none() || s.i32().and_then(|i| usize::try_from(i).ok()) != Some(self.next) {
            return s.give_up();
        }
        let item = seed.deserialize(StreamDe { s: &mut *s });
        let item = StreamDe::watch(s, item)?;
        if s.eat(op::SETITEM).is_none() {
            return s.give_up();
        }
        self.next += 1;
        Ok(Some(item))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len - self.next)
    }
}

/// The entries of a dict being read.
struct Entries<'s, 'a> {
    s: &'s mut Stream<'a>,
    /// Where this dict's keys begin in [`Stream::keys`] (the keys that are not fields).
    start: usize,
    /// The field names of the struct being read (at most 64; else empty).
    fields: &'static [&'static str],
    /// The fields seen so far, one bit each: a key that is a field is checked for
    /// duplicates here instead of in [`Stream::keys`].
    seen: u64,
    /// The field expected next: dumpers write a struct's fields in their order.
    next_field: usize,
}

/// The index of the field named by `key`'s bytes, trying `next` first.
#[inline(always)]
fn field(fields: &[&str], next: usize, key: &[u8]) -> Option<usize> {
    match fields.get(next) {
        Some(f) if same_bytes(f.as_bytes(), key) => Some(next),
        _ => fields.iter().position(|f| same_bytes(f.as_bytes(), key)),
    }
}

/// `a == b`, comparing up to 16 bytes inline: field names are short, and the call to
/// the C library's `bcmp` that `==` makes costs more than such a compare.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Two words, one at each end, cover every byte (they overlap when n is short of 2 words).
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        8..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        _ => a == b,
    }
}

/// The `N` bytes of `x` from `at` on.
#[inline(always)]
fn word<const N: usize>(x: &[u8], at: usize) -> [u8; N] {
    x[at..at + N].try_into().expect("N bytes")
}

impl<'a> MapAccess<'a> for Entries<'_, 'a> {
    type Error = LeftToTape;

    #[inline(always)]
    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let s = &mut *self.s;
        match s.peek() {
            // The dict ends where its container's SETITEM, or STOP, comes.
            Some(op::SETITEM | op::STOP) if !s.gave_up => return Ok(None),
            Some(op) if is_str_op(op) && !s.gave_up => {}
            _ => {
                return s.give_up();
            }
        }
        let at = s.pos;
        // A key that is one of the struct's fields: its bytes equal a valid str, so it
        // needs no UTF-8 check, and a bit tells whether it came before.
        if !self.fields.is_empty() && s.buf[at] != op::PY2STRING {
            s.pos += 1;
            match s.counted().and_then(|k| field(self.fields, self.next_field, k)) {
                Some(i) => {
                    let name = self.fields[i];
                    let bit = 1u64 << i;
                    let first = self.seen == 0 && s.keys.len() == self.start;
                    if self.seen & bit != 0 || (first && name.starts_with(MAGIC_PREFIX)) {
                        return s.give_up();
                    }
                    self.seen |= bit;
                    self.next_field = i + 1;
                    let key = seed.deserialize(BorrowedStrDeserializer::<LeftToTape>::new(name));
                    return StreamDe::watch(s, key).map(Some);
                }
                None => s.pos = at,
            }
        }
        let key = seed.deserialize(StreamDe { s: &mut *s });
        let key = StreamDe::watch(s, key)?;
        // The key's visitor must have read the key (a seed may not read at all).
        let name = match s.last_str.take() {
            Some((read_at, name)) if read_at == at => name,
            _ => {
                return s.give_up();
            }
        };
        let mine = &s.keys[self.start..];
        let first_magic = mine.is_empty() && self.seen == 0 && name.starts_with(MAGIC_PREFIX);
        let print = fingerprint(name);
        let seen = mine.iter().any(|&(p, k)| p == print && (name.len() < 8 || k == name));
        if first_magic || mine.len() == MAX_KEYS || seen {
            return s.give_up();
        }
        s.keys.push((print, name));
        Ok(Some(key))
    }

    #[inline(always)]
    fn next_value_seed<S: DeserializeSeed<'a>>(&mut self, seed: S) -> Result<S::Value> {
        let s = &mut *self.s;
        let value = seed.deserialize(StreamDe { s: &mut *s });
        let value = StreamDe::watch(s, value)?;
        if s.eat(op::SETITEM).is_none() {
            return s.give_up();
        }
        Ok(value)
    }
}

macro_rules! as_any {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'a>>(self, v: V) -> Result<V::Value> {
            self.any(v)
        }
    )*};
}

macro_rules! as_likely {
    ($($op:path => $($method:ident)*;)*) => {$($(
        fn $method<V: Visitor<'a>>(self, v: V) -> Result<V::Value> {
            self.likely::<{ $op }, V>(v)
        }
    )*)*};
}

/// Each method does what [`TreeDe`](super::TreeDe)'s does with the same node, or gives
/// up.
impl<'a> Deserializer<'a> for StreamDe<'_, 'a> {
    type Error = LeftToTape;

    as_any! { deserialize_any deserialize_i128 deserialize_u128 deserialize_unit deserialize_map }

    as_likely! {
        op::INT => deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
                   deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64;
        op::FLOAT => deserialize_f32 deserialize_f64;
        op::PY3STRING => deserialize_char deserialize_str deserialize_string deserialize_identifier;
    }

    fn deserialize_bool<V: Visitor<'a>>(self, v: V) -> Result<V::Value> {
        match self.s.peek() {
            // Either opcode, without a branch on which.
            Some(b @ (op::TRUE | op::FALSE)) if !self.s.gave_up => {
                self.s.pos += 1;
                let r = v.visit_bool(b == op::TRUE);
                Self::watch(self.s, r)
            }
            _ => self.any(v),
        }
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, v: V) -> Result<V::Value> {
        match self.s.str_node()? {
            Some(s) => {
                let r = v.visit_borrowed_bytes(s.as_bytes());
                Self::watch(self.s, r)
            }
            None => self.any(v),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, v: V) -> Result<V::Value> {
        self.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'a>>(self, v: V) -> Result<V::Value> {
        if self.s.peek() == Some(op::NONE) && !self.s.gave_up {
            self.s.pos += 1;
            let r = v.visit_none();
            return Self::watch(self.s, r);
        }
        v.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(self, _name: &'static str, v: V) -> Result<V::Value> {
        self.any(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(self, name: &'static str, v: V) -> Result<V::Value> {
        // A whole payload loaded as a `Value` is built by the stack machine directly
        // (as `PayloadDe` does), so `loads::<Value>` pays nothing for this path.
        if name == VALUE_TOKEN && self.s.pos == 0 && !self.s.gave_up {
            let r = super::direct::load_value(self.s.buf)
                .and_then(|value| crate::wire::value::hand_over(value, v))
                .map_err(|_| LeftToTape);
            self.s.pos = self.s.buf.len().saturating_sub(1);
            return Self::watch(self.s, r);
        }
        if name == CHANNEL_TOKEN || name == VALUE_TOKEN {
            return self.s.give_up();
        }
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, v: V) -> Result<V::Value> {
        match self.s.peek() {
            Some(op::BYTES) if !self.s.gave_up => {
                self.s.pos += 1;
                match self.s.counted() {
                    Some(b) => {
                        let r = de::value::SeqDeserializer::<_, LeftToTape>::new(b.iter().copied()).deserialize_any(v);
                        Self::watch(self.s, r)
                    }
                    None => self.s.give_up(),
                }
            }
            _ => self.any(v),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(self, _len: usize, v: V) -> Result<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(self, _name: &'static str, _len: usize, v: V) -> Result<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        if self.s.peek() == Some(op::NEWDICT) && !self.s.gave_up {
            self.s.pos += 1;
            return self.dict(v, if fields.len() <= 64 { fields } else { &[] });
        }
        self.any(v)
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        match self.s.str_node()? {
            Some(s) => {
                let r = v.visit_enum(BorrowedStrDeserializer::<LeftToTape>::new(s));
                Self::watch(self.s, r)
            }
            None => self.s.give_up(),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, _v: V) -> Result<V::Value> {
        self.s.give_up()
    }

    fn is_human_readable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::load;
    use crate::wire::de::tests::outcome;
    use crate::wire::de::{from_payload, from_payload_borrowed, from_payload_tape};
    use crate::wire::opcode as op;
    use crate::wire::ser::to_payload_vec;
    use crate::wire::MAGIC_PREFIX;
    use crate::Value;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Plain,
        Sized(u32),
        Named { a: String },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        size: i64,
        ratio: f64,
        tags: Vec<String>,
        ok: bool,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        counts: BTreeMap<String, u32>,
        kind: Kind,
        note: Option<String>,
        next: Option<Box<Rec>>,
    }

    fn arb_kind(plain_only: bool) -> BoxedStrategy<Kind> {
        if plain_only {
            Just(Kind::Plain).boxed()
        } else {
            prop_oneof![Just(Kind::Plain), any::<u32>().prop_map(Kind::Sized), ".{0,3}".prop_map(|a| Kind::Named { a })]
                .boxed()
        }
    }

    /// Records; with `plain_only`, none holds an enum variant with data (a one-entry
    /// dict `{variant: value}`, which the streaming path leaves to the tape).
    fn arb_rec(plain_only: bool) -> impl Strategy<Value = Rec> {
        let leaf = (
            ".{0,6}",
            any::<i64>(),
            -1e9f64..1e9,
            proptest::collection::vec("[a-z]{0,3}", 0..4),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..5),
            proptest::collection::btree_map("[a-f]{1,2}", any::<u32>(), 0..4),
            arb_kind(plain_only),
            proptest::option::of("[a-z]{0,3}"),
        )
            .prop_map(|(name, size, ratio, tags, ok, blob, counts, kind, note)| Rec {
                name,
                size,
                ratio,
                tags,
                ok,
                blob,
                counts,
                kind,
                note,
                next: None,
            });
        leaf.prop_recursive(3, 8, 1, |inner| {
            (inner.clone(), proptest::option::of(inner)).prop_map(|(mut r, next)| {
                r.next = next.map(Box::new);
                r
            })
        })
    }

    /// Both paths load `payload` as a `T` alike (result or message).
    fn same_both_ways<'a, T: Deserialize<'a> + std::fmt::Debug>(payload: &'a [u8]) -> std::result::Result<(), TestCaseError> {
        let fast = from_payload_borrowed::<T>(payload);
        let tape = from_payload_tape::<T>(payload);
        prop_assert_eq!(outcome(&fast), outcome(&tape));
        Ok(())
    }

    /// A map that compares alike whatever its hash order.
    fn sorted<K: Ord, V>(m: HashMap<K, V>) -> BTreeMap<K, V> {
        m.into_iter().collect()
    }

    proptest! {
        /// The inline compare of field names is `==`: strs of every length it takes
        /// apart and past them, equal or one byte or one length away.
        #[test]
        fn same_bytes_is_equality(
            a in proptest::collection::vec(0u8..3, 0..20),
            flip in proptest::option::of(any::<usize>()),
            cut in 0usize..2,
        ) {
            let mut b = a.clone();
            if let (Some(i), false) = (flip, b.is_empty()) {
                let i = i % b.len();
                b[i] ^= 1;
            }
            b.truncate(b.len().saturating_sub(cut));
            prop_assert_eq!(super::same_bytes(&a, &b), a == b);
            prop_assert_eq!(super::same_bytes(&b, &a), a == b);
        }

        /// Records as a dumper writes them load on the streaming path, as what was sent
        /// and as the tape loads them.
        #[test]
        fn dumped_records_take_the_streaming_path(recs in proptest::collection::vec(arb_rec(true), 0..6)) {
            let payload = to_payload_vec(&recs).unwrap();
            let fast = load::<Vec<Rec>>(&payload);
            prop_assert_eq!(fast.as_ref(), Some(&recs));
            prop_assert_eq!(from_payload_tape::<Vec<Rec>>(&payload).unwrap(), recs);
        }

        /// Whatever path a load takes, it equals the tape's; an enum with data gives up.
        #[test]
        fn streaming_path_equals_the_tape(recs in proptest::collection::vec(arb_rec(false), 0..6)) {
            let payload = to_payload_vec(&recs).unwrap();
            prop_assert_eq!(from_payload::<Vec<Rec>>(&payload).unwrap(), recs.clone());
            same_both_ways::<Vec<Rec>>(&payload)?;
            same_both_ways::<serde_json::Value>(&payload)?;
            same_both_ways::<Value>(&payload)?;
            if recs.iter().any(|r| r.kind != Kind::Plain) {
                prop_assert!(load::<Vec<Rec>>(&payload).is_none());
            }
        }

        /// Damaged payloads (bytes overwritten, the end cut off) load or fail the same
        /// on both paths, into several types.
        #[test]
        fn damaged_payloads_fail_alike(
            recs in proptest::collection::vec(arb_rec(false), 1..4),
            damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut payload = to_payload_vec(&recs).unwrap();
            for (at, byte) in damage {
                let at = at % payload.len();
                payload[at] = byte;
            }
            if cut % 3 == 0 {
                payload.truncate(cut % (payload.len() + 1));
            }
            same_both_ways::<Vec<Rec>>(&payload)?;
            same_both_ways::<Rec>(&payload)?;
            same_both_ways::<serde_json::Value>(&payload)?;
            same_both_ways::<Vec<(String, i64)>>(&payload)?;
            same_both_ways::<Option<Vec<Option<String>>>>(&payload)?;
            let fast = from_payload::<HashMap<String, serde_json::Value>>(&payload).map(sorted);
            let tape = from_payload_tape::<HashMap<String, serde_json::Value>>(&payload).map(sorted);
            prop_assert_eq!(outcome(&fast), outcome(&tape));
        }
    }

    fn s(t: &str) -> Vec<u8> {
        let mut v = vec![op::PY3STRING];
        v.extend((t.len() as i32).to_be_bytes());
        v.extend(t.as_bytes());
        v
    }

    fn int(i: i32) -> Vec<u8> {
        let mut v = vec![op::INT];
        v.extend(i.to_be_bytes());
        v
    }

    /// A dict payload of these entries, in the dumper's layout.
    fn dict(entries: &[(&str, i32)]) -> Vec<u8> {
        let mut p = vec![op::NEWDICT];
        for (k, v) in entries {
            p.extend(s(k));
            p.extend(int(*v));
            p.push(op::SETITEM);
        }
        p.push(op::STOP);
        p
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct AB {
        a: i32,
        b: i32,
    }

    #[test]
    fn what_the_streaming_path_leaves_to_the_tape() {
        // A key twice: Python keeps the last value; serde would see both.
        let p = dict(&[("a", 1), ("b", 2), ("a", 3)]);
        assert!(load::<HashMap<String, i32>>(&p).is_none());
        assert!(load::<AB>(&p).is_none(), "a struct's field twice");
        assert_eq!(load::<AB>(&dict(&[("b", 2), ("a", 1)])), Some(AB { a: 1, b: 2 }), "fields in another order");
        assert_eq!(from_payload::<AB>(&p).unwrap(), AB { a: 3, b: 2 });
        assert_eq!(from_payload::<HashMap<String, i32>>(&p).unwrap(), HashMap::from([("a".into(), 3), ("b".into(), 2)]));
        // A field the struct does not have (IgnoredAny).
        let p = dict(&[("a", 1), ("zz", 9), ("b", 2)]);
        assert!(load::<AB>(&p).is_none());
        assert_eq!(from_payload::<AB>(&p).unwrap(), AB { a: 1, b: 2 });
        // More keys than the duplicate check takes.
        let keys: Vec<String> = (0..=super::MAX_KEYS).map(|i| format!("k{i}")).collect();
        let p = dict(&keys.iter().map(|k| (k.as_str(), 1)).collect::<Vec<_>>());
        assert!(load::<HashMap<String, i32>>(&p).is_none());
        assert_eq!(from_payload::<HashMap<String, i32>>(&p).unwrap().len(), keys.len());
        let p = dict(&keys[1..].iter().map(|k| (k.as_str(), 1)).collect::<Vec<_>>());
        assert_eq!(load::<HashMap<String, i32>>(&p).unwrap().len(), super::MAX_KEYS);
        // A magic first key (the wrapped dict form of deserialize_any).
        let magic = format!("{MAGIC_PREFIX}x");
        let p = dict(&[(magic.as_str(), 1)]);
        assert!(load::<serde_json::Value>(&p).is_none());
        assert_eq!(outcome(&from_payload::<serde_json::Value>(&p)), outcome(&from_payload_tape::<serde_json::Value>(&p)));
        // ... also when it is the name of a struct's field, first or not.
        #[derive(Debug, PartialEq, Deserialize)]
        struct Magic {
            #[serde(rename = "$execnet::private::x")]
            x: i32,
            y: i32,
        }
        let p = dict(&[(magic.as_str(), 1), ("y", 2)]);
        assert!(load::<Magic>(&p).is_none());
        assert_eq!(outcome(&from_payload::<Magic>(&p)), outcome(&from_payload_tape::<Magic>(&p)));
        let p = dict(&[("y", 2), (magic.as_str(), 1)]);
        assert_eq!(load::<Magic>(&p), Some(Magic { x: 1, y: 2 }));
        assert_eq!(from_payload_tape::<Magic>(&p).unwrap(), Magic { x: 1, y: 2 });
        // A list filled out of order, and one with an item left None.
        let mut p = vec![op::NEWLIST, 0, 0, 0, 2];
        p.extend(int(1));
        p.extend(int(7));
        p.push(op::SETITEM);
        p.extend(int(0));
        p.extend(int(6));
        p.extend([op::SETITEM, op::STOP]);
        assert!(load::<Vec<i32>>(&p).is_none());
        assert_eq!(from_payload::<Vec<i32>>(&p).unwrap(), [6, 7]);
        let p = [&[op::NEWLIST, 0, 0, 0, 1][..], &[op::STOP]].concat();
        assert!(load::<Vec<Option<i32>>>(&p).is_none());
        assert_eq!(from_payload::<Vec<Option<i32>>>(&p).unwrap(), [None]);
        // A tuple (postfix): its first member looks like a plain value.
        let p = to_payload_vec(&(1, "x")).unwrap();
        assert!(load::<Vec<Value>>(&p).is_none());
        assert_eq!(from_payload::<(i32, String)>(&p).unwrap(), (1, "x".to_string()));
        // A visitor error: the tape's message, not the streaming path's.
        let p = dict(&[("a", 1)]);
        let e = from_payload::<AB>(&p).unwrap_err().to_string();
        assert!(e.contains("missing field `b`"), "{e}");
        assert_eq!(e, from_payload_tape::<AB>(&p).unwrap_err().to_string());
    }

    #[test]
    fn a_visitor_that_swallows_an_error_does_not_hide_it() {
        // `Lenient` turns any error of its field into a default, as serde_with's
        // DefaultOnError does: the streaming path must not go on from a broken position.
        #[derive(Debug, PartialEq, Default)]
        struct Lenient(Option<AB>);
        impl<'de> Deserialize<'de> for Lenient {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok(Lenient(AB::deserialize(d).ok()))
            }
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct Outer {
            x: Lenient,
            y: i32,
        }
        // x = {"a": 1, "c": 5} fails in the middle (unknown field c is fine for serde,
        // but the streaming path gives up on it), y = 2.
        let mut p = vec![op::NEWDICT];
        p.extend(s("x"));
        p.push(op::NEWDICT);
        for (k, v) in [("a", 1), ("c", 5)] {
            p.extend(s(k));
            p.extend(int(v));
            p.push(op::SETITEM);
        }
        p.push(op::SETITEM);
        p.extend(s("y"));
        p.extend(int(2));
        p.extend([op::SETITEM, op::STOP]);
        assert!(load::<Outer>(&p).is_none());
        let got = from_payload::<Outer>(&p).unwrap();
        assert_eq!(got, from_payload_tape::<Outer>(&p).unwrap());
        assert_eq!(got, Outer { x: Lenient(None), y: 2 });
        // The same with the visitor's own error: x = {"a": "oops", "b": 1}.
        let mut p = vec![op::NEWDICT];
        p.extend(s("x"));
        p.push(op::NEWDICT);
        p.extend(s("a"));
        p.extend(s("oops"));
        p.push(op::SETITEM);
        p.extend(s("b"));
        p.extend(int(1));
        p.extend([op::SETITEM, op::SETITEM]);
        p.extend(s("y"));
        p.extend(int(2));
        p.extend([op::SETITEM, op::STOP]);
        assert!(load::<Outer>(&p).is_none());
        assert_eq!(from_payload::<Outer>(&p).unwrap(), Outer { x: Lenient(None), y: 2 });
    }

    /// What execnet 2.1.2's `dumps` writes of a record (the worker's `dumps` writes the
    /// same bytes after the version byte), taken from `execnet.dumps({"name": "f",
    /// "size": 3000000000, "tags": ["a"], "ok": True})` (a LONGINT, a list, a bool),
    /// loads on the streaming path.
    #[test]
    fn python_dumped_records_take_the_streaming_path() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct R {
            name: String,
            size: i64,
            tags: Vec<String>,
            ok: bool,
        }
        let hex = PYTHON_RECORD_HEX;
        let p: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let want = R { name: "f".into(), size: 3_000_000_000, tags: vec!["a".into()], ok: true };
        assert_eq!(load::<R>(&p[1..]), Some(want));
    }

    const PYTHON_RECORD_HEX: &str = "024a4e000000046e616d654e0000000166504e0000000473697a65480000000a333030\
        30303030303030504e00000004746167734b0000000146000000004e000000016150504e000000026f6b525051";
}
