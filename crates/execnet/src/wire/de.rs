//! serde Deserializer reading the opcode format (PROTOCOL.md section 3). HELPER-OWNED.
//!
//! Objects are postfix programs (a tuple's length comes after its items), so loading
//! runs in two phases:
//!
//! 1. The stack machine runs over the whole payload and builds a compact tree whose
//!    strs and bytes borrow from the payload. Everything is checked here: opcodes,
//!    lengths, stack shapes, hashability, UTF-8, nesting depth; errors carry the byte
//!    offset. Duplicate dict keys and set members are merged with Python's semantics
//!    (`1`, `1.0` and `True` are the same key).
//! 2. The tree is handed to serde visitors, node by node, by value.
//!
//! ## How Python types meet serde
//!
//! `deserialize_any` presents None as unit, bool, int (i64, else u64, i128, u128),
//! float, str, bytes, list/tuple/set/frozenset as sequences and dict as a map. Forms
//! serde has no type for are single-entry maps keyed by a magic name:
//! `{COMPLEX_TOKEN: (re, im)}`, `{BIGINT_TOKEN: "digits"}` for ints beyond 128 bits,
//! `{CHANNEL_TOKEN: (gateway uid, id)}`; a genuine dict whose first key is a str
//! starting with `$execnet::private::` is wrapped as `{DICT_TOKEN: dict}`. When a
//! visitor asks for the newtype struct [`VALUE_TOKEN`], as
//! [`Value`](super::value::Value) does, tuples, sets and frozensets are also presented
//! as `{TUPLE_TOKEN: [...]}`, `{SET_TOKEN: [...]}` and `{FROZENSET_TOKEN: [...]}`.
//!
//! Typed hints are lenient where Python has no distinct type: a sequence hint takes a
//! list, tuple, set, frozenset or bytes (as its byte values); a bytes hint takes bytes or
//! str (its UTF-8); a struct takes a dict with str keys (or a list/tuple of the fields);
//! an enum takes a str (unit variant) or a one-entry dict `{variant: value}`.

use std::borrow::Cow;

use num_bigint::BigInt;
use num_traits::ToPrimitive;
use serde::de::{
    self, value::BorrowedStrDeserializer, value::StringDeserializer, DeserializeOwned, DeserializeSeed,
    Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::Deserialize;

use super::shared::{visit_big, Dedup, KeyRef, Kind, MagicMap, Num, PairDe, PyKey, Tree};
use super::{
    current_gateway, CHANNEL_TOKEN, COMPLEX_TOKEN, DICT_TOKEN, FROZENSET_TOKEN, MAGIC_PREFIX, MAX_DEPTH,
    SET_TOKEN, TUPLE_TOKEN, VALUE_TOKEN,
};
use crate::error::{Error, Result};

/// The longest decimal text accepted for a LONGINT: Python's default limit for `int(text)`
/// (`sys.get_int_max_str_digits()`), which also bounds the (quadratic) parsing time.
pub const MAX_INT_DIGITS: usize = 4300;

/// Loads one object from an internal payload (no version byte).
pub fn from_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    from_payload_borrowed(payload)
}

/// Like [`from_payload`], but the result may borrow strs and bytes from the payload
/// (`&str`, `&[u8]` with `#[serde(borrow)]`, `Cow`).
pub fn from_payload_borrowed<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T> {
    let node = Parser::new(payload).run()?;
    T::deserialize(TreeDe::new(node))
}

/// Checks that `payload` is one well-formed object (phase 1 only) and returns the Python
/// type name of that object.
pub fn validate_payload(payload: &[u8]) -> Result<&'static str> {
    let node = Parser::new(payload).run()?;
    Ok(node.0.type_name())
}

// ---------------------------------------------------------------------------------------
// Phase 1: the stack machine
// ---------------------------------------------------------------------------------------

/// A node of the loaded tree.
pub(crate) struct Node<'a>(Kind<'a, Node<'a>>);

impl<'a> Tree<'a> for Node<'a> {
    fn into_kind(self) -> Kind<'a, Node<'a>> {
        self.0
    }
    fn as_str_ref(&self) -> Option<&str> {
        match &self.0 {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl PyKey for Node<'_> {
    fn key_ref(&self) -> KeyRef<'_, Self> {
        match &self.0 {
            Kind::None => KeyRef::None,
            Kind::Bool(b) => KeyRef::Num(Num::I(*b as i64)),
            Kind::Int(i) => KeyRef::Num(Num::I(*i)),
            Kind::Big(b) => KeyRef::Num(Num::B(Cow::Borrowed(b))),
            Kind::Float(f) => KeyRef::Num(Num::float(*f)),
            Kind::Complex(re, im) => KeyRef::Num(Num::complex(*re, *im)),
            Kind::Str(s) => KeyRef::Str(s),
            Kind::Bytes(b) => KeyRef::Bytes(b),
            Kind::List(v) => KeyRef::List(v),
            Kind::Tuple(v) => KeyRef::Tuple(v),
            Kind::Dict(e) => KeyRef::Dict(e),
            Kind::Set(v) => KeyRef::Set(v),
            Kind::FrozenSet(v) => KeyRef::FrozenSet(v),
            Kind::Channel(u, i) => KeyRef::Channel(*u, *i),
        }
    }
}

/// An entry of the machine's stack: the node, its nesting depth (0 for scalars) and
/// whether Python could hash it.
struct Slot<'a> {
    kind: Kind<'a, Node<'a>>,
    depth: u32,
    hashable: bool,
}

impl<'a> Slot<'a> {
    fn scalar(kind: Kind<'a, Node<'a>>) -> Self {
        Slot { kind, depth: 0, hashable: true }
    }
}

fn op_name(op: u8) -> &'static str {
    match op {
        b'@' => "BUILDTUPLE",
        b'A' => "BYTES",
        b'B' => "CHANNEL",
        b'C' => "FALSE",
        b'D' => "FLOAT",
        b'E' => "FROZENSET",
        b'F' => "INT",
        b'G' => "LONG",
        b'H' => "LONGINT",
        b'I' => "LONGLONG",
        b'J' => "NEWDICT",
        b'K' => "NEWLIST",
        b'L' => "NONE",
        b'M' => "PY2STRING",
        b'N' => "PY3STRING",
        b'O' => "SET",
        b'P' => "SETITEM",
        b'Q' => "STOP",
        b'R' => "TRUE",
        b'S' => "UNICODE",
        b'T' => "COMPLEX",
        _ => "unknown",
    }
}

fn err<T>(msg: String, offset: usize) -> Result<T> {
    Err(Error::data_format(msg, Some(offset)))
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    stack: Vec<Slot<'a>>,
    dedup: Dedup,
    /// List slots that the NEWLISTs seen so far may still announce: filling a slot takes
    /// several bytes, so all lists of a payload together have fewer items than it has
    /// bytes. This bounds the memory a payload can make the loader allocate.
    list_budget: usize,
}

/// Turns a finished stack slot into a tree node; a dict's duplicate keys are merged
/// now that nothing can add to it any more.
fn finish<'a>(dedup: &mut Dedup, slot: Slot<'a>) -> Node<'a> {
    match slot.kind {
        Kind::Dict(mut entries) => {
            dedup.dict(&mut entries);
            Node(Kind::Dict(entries))
        }
        k => Node(k),
    }
}

fn check_depth(depth: u32, at: usize) -> Result<()> {
    if depth as usize > MAX_DEPTH {
        return err(format!("containers nested deeper than the limit of {MAX_DEPTH} levels"), at);
    }
    Ok(())
}

impl<'a> Parser<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Parser { buf, pos: 0, stack: Vec::new(), dedup: Dedup::default(), list_budget: buf.len() }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` operand bytes of the opcode at `at`.
    fn take(&mut self, n: usize, at: usize) -> Result<&'a [u8]> {
        if self.left() < n {
            let op = self.buf[at];
            return err(
                format!(
                    "truncated input: {} at byte {at} needs {n} operand bytes, only {} left",
                    op_name(op),
                    self.left()
                ),
                self.pos,
            );
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn read_i32(&mut self, at: usize) -> Result<i32> {
        let b = self.take(4, at)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length operand: not negative and not beyond the bytes left.
    fn read_len(&mut self, at: usize) -> Result<usize> {
        let n = self.read_i32(at)?;
        let op = op_name(self.buf[at]);
        if n < 0 {
            return err(format!("negative length {n} in {op} at byte {at}"), at + 1);
        }
        let n = n as usize;
        if n > self.left() {
            return err(
                format!("{op} at byte {at} announces {n} bytes, more than the {} bytes left", self.left()),
                at + 1,
            );
        }
        Ok(n)
    }

    /// A count operand of BUILDTUPLE, SET, FROZENSET: not negative, not beyond the stack.
    fn read_count(&mut self, at: usize) -> Result<usize> {
        let n = self.read_i32(at)?;
        let op = op_name(self.buf[at]);
        if n < 0 {
            return err(format!("negative item count {n} in {op} at byte {at}"), at + 1);
        }
        let n = n as usize;
        if n > self.stack.len() {
            return err(
                format!("{op} at byte {at} takes {n} items, but the stack holds only {}", self.stack.len()),
                at,
            );
        }
        Ok(n)
    }

    fn push(&mut self, slot: Slot<'a>) {
        self.stack.push(slot);
    }

    fn run(mut self) -> Result<Node<'a>> {
        loop {
            let at = self.pos;
            let Some(&op) = self.buf.get(at) else {
                return err(format!("truncated input: the object ended after {at} bytes without STOP"), at);
            };
            self.pos += 1;
            match op {
                b'L' => self.push(Slot::scalar(Kind::None)),
                b'R' => self.push(Slot::scalar(Kind::Bool(true))),
                b'C' => self.push(Slot::scalar(Kind::Bool(false))),
                b'F' | b'G' => {
                    let i = self.read_i32(at)?;
                    self.push(Slot::scalar(Kind::Int(i as i64)));
                }
                b'H' | b'I' => {
                    let n = self.read_len(at)?;
                    let text = self.take(n, at)?;
                    let kind = parse_int_text(text, at)?;
                    self.push(Slot::scalar(kind));
                }
                b'D' => {
                    let b = self.take(8, at)?;
                    let f = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.push(Slot::scalar(Kind::Float(f)));
                }
                b'T' => {
                    let b = self.take(16, at)?;
                    let re = f64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
                    let im = f64::from_be_bytes(b[8..].try_into().expect("8 bytes"));
                    self.push(Slot::scalar(Kind::Complex(re, im)));
                }
                b'N' | b'S' => {
                    let n = self.read_len(at)?;
                    let start = self.pos;
                    let b = self.take(n, at)?;
                    let s = std::str::from_utf8(b).map_err(|e| {
                        Error::data_format(
                            format!("invalid UTF-8 in the {} at byte {at}", op_name(op)),
                            Some(start + e.valid_up_to()),
                        )
                    })?;
                    self.push(Slot::scalar(Kind::Str(Cow::Borrowed(s))));
                }
                b'M' => {
                    let n = self.read_len(at)?;
                    let b = self.take(n, at)?;
                    let s = match std::str::from_utf8(b) {
                        Ok(s) if b.is_ascii() => Cow::Borrowed(s),
                        _ => Cow::Owned(b.iter().map(|&c| c as char).collect()),
                    };
                    self.push(Slot::scalar(Kind::Str(s)));
                }
                b'A' => {
                    let n = self.read_len(at)?;
                    let b = self.take(n, at)?;
                    self.push(Slot::scalar(Kind::Bytes(Cow::Borrowed(b))));
                }
                b'B' => {
                    let id = self.read_i32(at)?;
                    self.push(Slot::scalar(Kind::Channel(None, id)));
                }
                b'J' => self.push(Slot { kind: Kind::Dict(Vec::new()), depth: 1, hashable: false }),
                b'K' => {
                    let n = self.read_i32(at)?;
                    if n < 0 {
                        return err(format!("negative list length {n} in NEWLIST at byte {at}"), at + 1);
                    }
                    let n = n as usize;
                    // Every item of a real list takes bytes to set, so a length beyond
                    // the bytes left is a lie; this also bounds the allocation.
                    if n > self.left() {
                        return err(
                            format!(
                                "NEWLIST at byte {at} announces {n} items, more than the {} bytes left",
                                self.left()
                            ),
                            at + 1,
                        );
                    }
                    if n > self.list_budget {
                        return err(
                            format!(
                                "NEWLIST at byte {at} announces {n} items: the lists of this payload \
                                 announce more items than its {} bytes could fill",
                                self.buf.len()
                            ),
                            at + 1,
                        );
                    }
                    self.list_budget -= n;
                    let mut items = Vec::new();
                    items.resize_with(n, || Node(Kind::None));
                    self.push(Slot { kind: Kind::List(items), depth: 1, hashable: false });
                }
                b'P' => self.setitem(at)?,
                b'@' | b'O' | b'E' => self.collection(op, at)?,
                b'Q' => {
                    if self.stack.len() != 1 {
                        return err(
                            format!(
                                "STOP at byte {at} with {} items on the stack (expected exactly one)",
                                self.stack.len()
                            ),
                            at,
                        );
                    }
                    if self.pos != self.buf.len() {
                        return err(
                            format!("{} trailing bytes after STOP at byte {at}", self.buf.len() - self.pos),
                            self.pos,
                        );
                    }
                    let slot = self.stack.pop().expect("one item");
                    return Ok(finish(&mut self.dedup, slot));
                }
                _ => {
                    let shown =
                        if op.is_ascii_graphic() { format!(" ({:?})", op as char) } else { String::new() };
                    return err(format!("unknown opcode 0x{op:02x}{shown} at byte {at}"), at);
                }
            }
        }
    }

    fn setitem(&mut self, at: usize) -> Result<()> {
        if self.stack.len() < 3 {
            return err(
                format!(
                    "SETITEM at byte {at} needs a container, a key and a value on the stack, found {} items",
                    self.stack.len()
                ),
                at,
            );
        }
        let value = self.stack.pop().expect("3 items");
        let key = self.stack.pop().expect("3 items");
        let dedup = &mut self.dedup;
        let top = self.stack.last_mut().expect("3 items");
        let depth = top.depth.max(1 + key.depth.max(value.depth));
        match &mut top.kind {
            Kind::List(items) => {
                let len = items.len();
                let index = match &key.kind {
                    Kind::Int(i) => Some(*i),
                    Kind::Bool(b) => Some(*b as i64),
                    Kind::Big(_) => None,
                    other => {
                        return err(
                            format!(
                                "SETITEM at byte {at}: list index must be an int, not {}",
                                other.type_name()
                            ),
                            at,
                        )
                    }
                };
                let slot = index.and_then(|i| {
                    let i = if i < 0 { i.checked_add(len as i64)? } else { i };
                    (0..len as i64).contains(&i).then_some(i as usize)
                });
                let Some(slot) = slot else {
                    let shown = match &key.kind {
                        Kind::Big(b) => super::shared::short_int_text(b),
                        Kind::Int(i) => i.to_string(),
                        Kind::Bool(b) => (*b as i64).to_string(),
                        _ => String::new(),
                    };
                    return err(
                        format!(
                            "SETITEM at byte {at}: list index {shown} out of range for a list of {len} items"
                        ),
                        at,
                    );
                };
                items[slot] = finish(dedup, value);
            }
            Kind::Dict(entries) => {
                if !key.hashable {
                    return err(
                        format!("SETITEM at byte {at}: unhashable dict key of type {}", key.kind.type_name()),
                        at,
                    );
                }
                entries.push((Node(key.kind), finish(dedup, value)));
            }
            other => {
                return err(
                    format!(
                        "SETITEM at byte {at} on a {}: only a list or a dict takes items",
                        other.type_name()
                    ),
                    at,
                )
            }
        }
        check_depth(depth, at)?;
        top.depth = depth;
        Ok(())
    }

    fn collection(&mut self, op: u8, at: usize) -> Result<()> {
        let n = self.read_count(at)?;
        let start = self.stack.len() - n;
        let mut depth = 0;
        let mut hashable = true;
        for slot in &self.stack[start..] {
            depth = depth.max(slot.depth);
            if !slot.hashable {
                if op != b'@' {
                    return err(
                        format!(
                            "{} at byte {at}: unhashable member of type {}",
                            op_name(op),
                            slot.kind.type_name()
                        ),
                        at,
                    );
                }
                hashable = false;
            }
        }
        let depth = depth + 1;
        check_depth(depth, at)?;
        let dedup = &mut self.dedup;
        let mut items: Vec<Node<'a>> = self.stack.drain(start..).map(|s| finish(dedup, s)).collect();
        let (kind, hashable) = match op {
            b'@' => (Kind::Tuple(items), hashable),
            b'O' => {
                dedup.set(&mut items);
                (Kind::Set(items), false)
            }
            _ => {
                dedup.set(&mut items);
                (Kind::FrozenSet(items), true)
            }
        };
        self.push(Slot { kind, depth, hashable });
        Ok(())
    }
}

/// Parses the text of a LONGINT as Python's `int(bytes)` does: surrounding ASCII
/// whitespace, an optional sign, digits with single underscores between them.
fn parse_int_text<'a>(text: &[u8], at: usize) -> Result<Kind<'a, Node<'a>>> {
    let bad = || {
        let shown: String = String::from_utf8_lossy(&text[..text.len().min(40)]).into_owned();
        Error::data_format(
            format!("invalid LONGINT text {shown:?} at byte {at}: expected decimal digits"),
            Some(at + 5),
        )
    };
    let mut t = text;
    while let [first, rest @ ..] = t {
        if !first.is_ascii_whitespace() {
            break;
        }
        t = rest;
    }
    while let [rest @ .., last] = t {
        if !last.is_ascii_whitespace() {
            break;
        }
        t = rest;
    }
    let (neg, body) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if body.is_empty() || !body[0].is_ascii_digit() || !body[body.len() - 1].is_ascii_digit() {
        return Err(bad());
    }
    let mut digits = Vec::with_capacity(body.len() + 1);
    if neg {
        digits.push(b'-');
    }
    let mut prev_underscore = false;
    for &c in body {
        match c {
            b'0'..=b'9' => {
                digits.push(c);
                prev_underscore = false;
            }
            b'_' if !prev_underscore => prev_underscore = true,
            _ => return Err(bad()),
        }
    }
    let ndigits = digits.len() - neg as usize;
    if ndigits > MAX_INT_DIGITS {
        return err(
            format!("LONGINT at byte {at} has {ndigits} digits, more than the limit of {MAX_INT_DIGITS}"),
            at + 5,
        );
    }
    let s = std::str::from_utf8(&digits).expect("ASCII");
    if let Ok(i) = s.parse::<i64>() {
        return Ok(Kind::Int(i));
    }
    let b: BigInt = s.parse().map_err(|_| bad())?;
    Ok(match b.to_i64() {
        Some(i) => Kind::Int(i),
        None => Kind::Big(Box::new(b)),
    })
}

// ---------------------------------------------------------------------------------------
// Phase 2: handing a tree to serde (shared with `Value`)
// ---------------------------------------------------------------------------------------

/// A deserializer over one tree node (a loaded payload node or a `Value`).
pub(crate) struct TreeDe<T> {
    tree: T,
    /// Present tuples, sets and frozensets as magic maps (asked for by `Value`).
    tagged: bool,
}

impl<T> TreeDe<T> {
    pub(crate) fn new(tree: T) -> Self {
        TreeDe { tree, tagged: false }
    }
}

fn channel_uid(uid: Option<u64>) -> Result<u64> {
    match uid {
        Some(u) => Ok(u),
        None => current_gateway().ok_or_else(|| {
            Error::data_format(
                "a channel arrived outside a gateway: data holding channels must be received \
                 through a gateway",
                None,
            )
        }),
    }
}

fn visit_items<'de, T: Tree<'de>, V: Visitor<'de>>(items: Vec<T>, v: V) -> Result<V::Value> {
    let len = items.len();
    let mut seq = SeqIter { iter: items.into_iter() };
    let out = v.visit_seq(&mut seq)?;
    let left = seq.iter.len();
    if left != 0 {
        return Err(de::Error::invalid_length(len, &format!("{} items", len - left).as_str()));
    }
    Ok(out)
}

fn visit_entries<'de, T: Tree<'de>, V: Visitor<'de>>(entries: Vec<(T, T)>, v: V) -> Result<V::Value> {
    let len = entries.len();
    let mut map = MapIter { iter: entries.into_iter(), value: None };
    let out = v.visit_map(&mut map)?;
    let left = map.iter.len();
    if left != 0 {
        return Err(de::Error::invalid_length(len, &format!("{} entries", len - left).as_str()));
    }
    Ok(out)
}

fn visit_bytes<'de, V: Visitor<'de>>(b: Cow<'de, [u8]>, v: V) -> Result<V::Value> {
    match b {
        Cow::Borrowed(b) => v.visit_borrowed_bytes(b),
        Cow::Owned(b) => v.visit_byte_buf(b),
    }
}

fn visit_str<'de, V: Visitor<'de>>(s: Cow<'de, str>, v: V) -> Result<V::Value> {
    match s {
        Cow::Borrowed(s) => v.visit_borrowed_str(s),
        Cow::Owned(s) => v.visit_string(s),
    }
}

/// The `deserialize_any` presentation of a node.
fn visit_kind<'de, T: Tree<'de>, V: Visitor<'de>>(
    kind: Kind<'de, T>,
    tagged: bool,
    v: V,
) -> Result<V::Value> {
    match kind {
        Kind::None => v.visit_unit(),
        Kind::Bool(b) => v.visit_bool(b),
        Kind::Int(i) => v.visit_i64(i),
        Kind::Big(b) => visit_big(*b, v),
        Kind::Float(f) => v.visit_f64(f),
        Kind::Complex(re, im) => v.visit_map(MagicMap::new(COMPLEX_TOKEN, PairDe(re, im))),
        Kind::Str(s) => visit_str(s, v),
        Kind::Bytes(b) => visit_bytes(b, v),
        Kind::List(items) => visit_items(items, v),
        Kind::Tuple(items) if tagged => v.visit_map(MagicMap::new(TUPLE_TOKEN, SeqDe(items))),
        Kind::Set(items) if tagged => v.visit_map(MagicMap::new(SET_TOKEN, SeqDe(items))),
        Kind::FrozenSet(items) if tagged => v.visit_map(MagicMap::new(FROZENSET_TOKEN, SeqDe(items))),
        Kind::Tuple(items) | Kind::Set(items) | Kind::FrozenSet(items) => visit_items(items, v),
        Kind::Dict(entries) => {
            let magic_first = entries
                .first()
                .and_then(|(k, _)| k.as_str_ref())
                .is_some_and(|s| s.starts_with(MAGIC_PREFIX));
            if magic_first {
                v.visit_map(MagicMap::new(DICT_TOKEN, MapDe(entries)))
            } else {
                visit_entries(entries, v)
            }
        }
        Kind::Channel(uid, id) => {
            let uid = channel_uid(uid)?;
            v.visit_map(MagicMap::new(CHANNEL_TOKEN, PairDe(uid, id)))
        }
    }
}

impl<'de, T: Tree<'de>> TreeDe<T> {
    fn deserialize_int<V: Visitor<'de>>(self, ty: &str, v: V) -> Result<V::Value> {
        match self.tree.into_kind() {
            Kind::Big(b) if b.to_i128().is_none() && b.to_u128().is_none() => Err(Error::data_format(
                format!("integer {} does not fit in {ty}", super::shared::short_int_text(&b)),
                None,
            )),
            k => visit_kind(k, self.tagged, v),
        }
    }
}

macro_rules! int_methods {
    ($($method:ident $ty:literal)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
            self.deserialize_int($ty, v)
        }
    )*};
}

macro_rules! any_methods {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
            self.deserialize_any(v)
        }
    )*};
}

impl<'de, T: Tree<'de>> Deserializer<'de> for TreeDe<T> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        visit_kind(self.tree.into_kind(), self.tagged, v)
    }

    int_methods! {
        deserialize_i8 "i8" deserialize_i16 "i16" deserialize_i32 "i32" deserialize_i64 "i64"
        deserialize_i128 "i128" deserialize_u8 "u8" deserialize_u16 "u16" deserialize_u32 "u32"
        deserialize_u64 "u64" deserialize_u128 "u128"
    }

    any_methods! {
        deserialize_bool deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_identifier deserialize_unit
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.tree.into_kind() {
            Kind::Str(Cow::Borrowed(s)) => v.visit_borrowed_bytes(s.as_bytes()),
            Kind::Str(Cow::Owned(s)) => v.visit_byte_buf(s.into_bytes()),
            k => visit_kind(k, self.tagged, v),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        if matches!(self.tree.key_ref(), KeyRef::None) {
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, v: V) -> Result<V::Value> {
        self.deserialize_any(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, v: V) -> Result<V::Value> {
        if name == CHANNEL_TOKEN {
            match self.tree.into_kind() {
                Kind::Channel(uid, id) => v.visit_newtype_struct(PairDe(channel_uid(uid)?, id)),
                k => Err(Error::data_format(format!("expected a channel, found {}", k.type_name()), None)),
            }
        } else if name == VALUE_TOKEN {
            v.visit_newtype_struct(TreeDe { tree: self.tree, tagged: true })
        } else {
            v.visit_newtype_struct(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.tree.into_kind() {
            Kind::List(items) | Kind::Tuple(items) | Kind::Set(items) | Kind::FrozenSet(items) => {
                visit_items(items, v)
            }
            Kind::Bytes(b) => {
                de::value::SeqDeserializer::<_, Error>::new(b.iter().copied()).deserialize_any(v)
            }
            k => visit_kind(k, self.tagged, v),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.tree.into_kind() {
            Kind::Dict(entries) => visit_entries(entries, v),
            k => visit_kind(k, self.tagged, v),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        match self.tree.into_kind() {
            Kind::Dict(entries) => visit_entries(entries, v),
            Kind::List(items) | Kind::Tuple(items) => visit_items(items, v),
            k => visit_kind(k, self.tagged, v),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        match self.tree.into_kind() {
            Kind::Str(Cow::Borrowed(s)) => v.visit_enum(BorrowedStrDeserializer::<Error>::new(s)),
            Kind::Str(Cow::Owned(s)) => v.visit_enum(StringDeserializer::<Error>::new(s)),
            Kind::Dict(entries) if entries.len() == 1 => {
                let (key, value) = entries.into_iter().next().expect("one entry");
                v.visit_enum(EnumDe { key, value })
            }
            Kind::Dict(entries) => Err(Error::data_format(
                format!(
                    "enum {name}: expected a str (unit variant) or a dict with one entry \
                     {{variant: value}}, found a dict with {} entries",
                    entries.len()
                ),
                None,
            )),
            k => Err(Error::data_format(
                format!(
                    "enum {name}: expected a str (unit variant) or a dict with one entry \
                     {{variant: value}}, found {}",
                    k.type_name()
                ),
                None,
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        drop(self.tree);
        v.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        true
    }
}

struct SeqIter<T> {
    iter: std::vec::IntoIter<T>,
}

impl<'de, T: Tree<'de>> SeqAccess<'de> for SeqIter<T> {
    type Error = Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>> {
        match self.iter.next() {
            Some(t) => seed.deserialize(TreeDe::new(t)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapIter<T> {
    iter: std::vec::IntoIter<(T, T)>,
    value: Option<T>,
}

impl<'de, T: Tree<'de>> MapAccess<'de> for MapIter<T> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(TreeDe::new(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value> {
        match self.value.take() {
            Some(v) => seed.deserialize(TreeDe::new(v)),
            None => Err(Error::data_format("map value asked for before its key", None)),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// The items of a tuple, set or frozenset, as a plain sequence.
pub(crate) struct SeqDe<T>(pub(crate) Vec<T>);

impl<'de, T: Tree<'de>> Deserializer<'de> for SeqDe<T> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        visit_items(self.0, v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// The entries of a dict, as a plain map.
pub(crate) struct MapDe<T>(pub(crate) Vec<(T, T)>);

impl<'de, T: Tree<'de>> Deserializer<'de> for MapDe<T> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        visit_entries(self.0, v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct EnumDe<T> {
    key: T,
    value: T,
}

impl<'de, T: Tree<'de>> EnumAccess<'de> for EnumDe<T> {
    type Error = Error;
    type Variant = VariantDe<T>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, VariantDe<T>)> {
        let variant = seed.deserialize(TreeDe::new(self.key))?;
        Ok((variant, VariantDe(self.value)))
    }
}

struct VariantDe<T>(T);

impl<'de, T: Tree<'de>> VariantAccess<'de> for VariantDe<T> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        match self.0.into_kind() {
            Kind::None => Ok(()),
            k => Err(Error::data_format(
                format!("a unit variant takes no value (None), found {}", k.type_name()),
                None,
            )),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value> {
        seed.deserialize(TreeDe::new(self.0))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value> {
        TreeDe::new(self.0).deserialize_tuple(len, v)
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], v: V) -> Result<V::Value> {
        TreeDe::new(self.0).deserialize_struct("", fields, v)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;
    use crate::wire::ser::to_payload_vec;
    use crate::Value;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn load(h: &str) -> Result<Value> {
        from_payload(&unhex(h))
    }

    fn load_err(h: &str) -> (String, Option<usize>) {
        match load(h).unwrap_err() {
            Error::DataFormat { message, offset } => (message, offset),
            e => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn worked_example() {
        let v = load("4B 00000002 46 00000000 46 00000001 50 46 00000001 4E 00000001 61 50 51").unwrap();
        assert_eq!(v, Value::List(vec![1.into(), "a".into()]));
    }

    #[test]
    fn legacy_opcodes() {
        assert_eq!(load("47 00000005 51").unwrap(), Value::from(5));
        assert_eq!(load("49 00000002 3132 51").unwrap(), Value::from(12));
        assert_eq!(load("4D 00000002 41E9 51").unwrap(), Value::from("A\u{e9}"));
        assert_eq!(load("53 00000002 C3A9 51").unwrap(), Value::from("\u{e9}"));
        // Python's int() leniency.
        assert_eq!(load("48 00000006 202b315f3020 51").unwrap(), Value::from(10));
        assert_eq!(load("48 00000003 303037 51").unwrap(), Value::from(7));
    }

    #[test]
    fn errors_name_the_problem_and_offset() {
        let cases: &[(&str, &str, usize)] = &[
            ("", "without STOP", 0),
            ("4C", "without STOP", 1),
            ("5A 51", "unknown opcode 0x5a ('Z')", 0),
            ("46 0000", "truncated input: INT at byte 0 needs 4 operand bytes, only 2 left", 1),
            ("4E FFFFFFFF 51", "negative length -1", 1),
            ("4E 00000009 6161 51", "announces 9 bytes, more than the 3 bytes left", 1),
            ("4B 7FFFFFFF 51", "announces 2147483647 items", 1),
            ("4B0000000A 4B0000000A 4B0000000C 4C4C4C4C4C4C4C 4C4C4C4C4C4C4C 51", "could fill", 11),
            ("4B FFFFFFFF 51", "negative list length", 1),
            ("4C 4C 50 51", "SETITEM at byte 2 needs a container", 2),
            ("4C 40 00000002 51", "takes 2 items, but the stack holds only 1", 1),
            ("40 FFFFFFFF 51", "negative item count", 1),
            ("4C 4C 51", "STOP at byte 2 with 2 items", 2),
            ("51", "STOP at byte 0 with 0 items", 0),
            ("4C 51 4C", "1 trailing bytes after STOP", 2),
            ("4E 00000002 C328 51", "invalid UTF-8", 5),
            ("4E 00000002 61FF 51", "invalid UTF-8", 6),
            ("4A 4B00000000 4C 50 51", "unhashable dict key of type list", 7),
            (
                "4A 4B00000000 400000001 4C 50 51".replace("400000001", "4000000001").leak(),
                "unhashable dict key of type tuple",
                12,
            ),
            ("4B00000000 4F00000001 51", "SET at byte 5: unhashable member of type list", 5),
            ("4C 40000000 00 46000000 00 4C 50 51", "SETITEM at byte 12 on a tuple", 12),
            ("4B00000001 46000000 01 4C 50 51", "list index 1 out of range for a list of 1 items", 11),
            ("4B00000001 4E00000001 61 4C 50 51", "list index must be an int, not str", 12),
            ("48 00000002 2d2d 51", "invalid LONGINT text", 5),
            ("48 00000000 51", "invalid LONGINT text", 5),
            ("44 3ff0", "FLOAT at byte 0 needs 8 operand bytes", 1),
        ];
        for (h, want, off) in cases {
            let (msg, offset) = load_err(h);
            assert!(msg.contains(want), "{h}: {msg:?} does not contain {want:?}");
            assert_eq!(offset, Some(*off), "{h}: {msg}");
        }
    }

    #[test]
    fn negative_list_index_like_python() {
        let v = load("4B00000002 46FFFFFFFF 4E00000001 61 50 51").unwrap();
        assert_eq!(v, Value::List(vec![Value::None, "a".into()]));
        let v = load("4B00000002 52 4E00000001 61 50 51").unwrap();
        assert_eq!(v, Value::List(vec![Value::None, "a".into()]));
    }

    #[test]
    fn dict_keys_merge_like_python() {
        // {1: 'a', True: 'b', 1.0: 'c', 2: 'd'} == {1: 'c', 2: 'd'}
        let p = unhex(
            "4A 4600000001 4E0000000161 50 52 4E0000000162 50 443ff0000000000000 4E0000000163 50 \
             4600000002 4E0000000164 50 51",
        );
        let v: Value = from_payload(&p).unwrap();
        let d = v.as_dict().unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.entries()[0], (Value::from(1), Value::from("c")));
        // set {1, 1.0, True, 2} == {1, 2}
        let v = load("4600000001 443ff0000000000000 52 4600000002 4F00000004 51").unwrap();
        assert_eq!(v, Value::Set(vec![1.into(), 2.into()]));
        // Many keys go through the hashed path.
        let mut m: Vec<(i64, i64)> = (0..100).map(|i| (i, i)).collect();
        m.push((5, 500));
        let mut p = vec![b'J'];
        for (k, v) in &m {
            p.extend(&to_payload_vec(k).unwrap()[..5]);
            p.extend(&to_payload_vec(v).unwrap()[..5]);
            p.push(b'P');
        }
        p.push(b'Q');
        let v: Value = from_payload(&p).unwrap();
        let d = v.as_dict().unwrap();
        assert_eq!(d.len(), 100);
        assert_eq!(d.get(&5.into()), Some(&Value::from(500)));
        assert_eq!(d.entries()[5].0, Value::from(5));
    }

    #[test]
    fn depth_limit() {
        let mut p = Vec::new();
        for _ in 0..MAX_DEPTH {
            p.extend(b"K\0\0\0\x01F\0\0\0\0");
        }
        p.push(b'L');
        let mut ok = p.clone();
        ok.resize(ok.len() + MAX_DEPTH, b'P');
        ok.push(b'Q');
        // Load and drop deep values on a thread with a 2 MiB stack, as gateway threads have.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let v: Value = from_payload(&ok).unwrap();
                let mut depth = 0;
                let mut cur = &v;
                while let Value::List(items) = cur {
                    depth += 1;
                    cur = &items[0];
                }
                assert_eq!(depth, MAX_DEPTH);
                let back = to_payload_vec(&v).unwrap();
                assert_eq!(back, ok);
                assert!(v.to_string().starts_with("[[[["));
            })
            .unwrap()
            .join()
            .unwrap();
        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            deep.extend(b"K\0\0\0\x01F\0\0\0\0");
        }
        deep.push(b'L');
        deep.resize(deep.len() + MAX_DEPTH + 1, b'P');
        deep.push(b'Q');
        let e = from_payload::<Value>(&deep).unwrap_err().to_string();
        assert!(e.contains("nested deeper than the limit"), "{e}");
        // Tuples too.
        let mut deep = vec![b'L'];
        for _ in 0..=MAX_DEPTH {
            deep.extend(b"@\0\0\0\x01");
        }
        deep.push(b'Q');
        assert!(from_payload::<Value>(&deep).unwrap_err().to_string().contains("nested deeper"));
    }

    #[test]
    fn typed_hints() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct S {
            a: i32,
            b: Option<String>,
            c: Vec<u8>,
        }
        let p = to_payload_vec(&Value::dict([
            ("a", Value::from(1)),
            ("b", Value::None),
            ("c", Value::bytes(*b"xy")),
        ]))
        .unwrap();
        let s: S = from_payload(&p).unwrap();
        assert_eq!(s, S { a: 1, b: None, c: b"xy".to_vec() });
        // Sequences accept tuple, set, frozenset.
        for v in [Value::tuple([1, 2]), Value::set([1, 2]), Value::frozenset([1, 2]), Value::list([1, 2])] {
            let p = to_payload_vec(&v).unwrap();
            assert_eq!(from_payload::<Vec<i64>>(&p).unwrap(), vec![1, 2]);
            assert_eq!(from_payload::<(u8, i8)>(&p).unwrap(), (1, 2));
        }
        let p = to_payload_vec(&Value::tuple([1, 2, 3])).unwrap();
        let e = from_payload::<(i32, i32)>(&p).unwrap_err().to_string();
        assert!(e.contains("invalid length 3"), "{e}");
        // Bytes hint takes str.
        let p = to_payload_vec(&"hé").unwrap();
        let b: serde_bytes::ByteBuf = from_payload(&p).unwrap();
        assert_eq!(b.as_slice(), "hé".as_bytes());
        // Borrowing.
        let s: &str = from_payload_borrowed(&p).unwrap();
        assert_eq!(s, "hé");
        // Ints out of range.
        let p = to_payload_vec(&300).unwrap();
        assert!(from_payload::<u8>(&p).unwrap_err().to_string().contains("expected u8"));
        let big: Value = "1".repeat(50).parse::<crate::Int>().unwrap().into();
        let p = to_payload_vec(&big).unwrap();
        let e = from_payload::<u128>(&p).unwrap_err().to_string();
        assert!(e.contains("does not fit in u128"), "{e}");
        let p = to_payload_vec(&u128::MAX).unwrap();
        assert_eq!(from_payload::<u128>(&p).unwrap(), u128::MAX);
        let p = to_payload_vec(&i128::MIN).unwrap();
        assert_eq!(from_payload::<i128>(&p).unwrap(), i128::MIN);
        // HashMap with int keys.
        let p = to_payload_vec(&Value::dict([(1, "a"), (2, "b")])).unwrap();
        let m: HashMap<i32, String> = from_payload(&p).unwrap();
        assert_eq!(m[&2], "b");
    }

    #[test]
    fn enums() {
        #[derive(Deserialize, Debug, PartialEq)]
        enum E {
            Unit,
            New(i32),
            Tup(i32, String),
            St { a: i32 },
        }
        let cases = [
            (Value::from("Unit"), E::Unit),
            (Value::dict([("Unit", Value::None)]), E::Unit),
            (Value::dict([("New", 5)]), E::New(5)),
            (Value::dict([("Tup", Value::tuple([Value::from(1), "x".into()]))]), E::Tup(1, "x".into())),
            (Value::dict([("Tup", Value::list([Value::from(1), "x".into()]))]), E::Tup(1, "x".into())),
            (Value::dict([("St", Value::dict([("a", 3)]))]), E::St { a: 3 }),
        ];
        for (v, want) in cases {
            let p = to_payload_vec(&v).unwrap();
            assert_eq!(from_payload::<E>(&p).unwrap(), want, "{v}");
        }
        let p = to_payload_vec(&Value::dict([("New", 1), ("Unit", 2)])).unwrap();
        let e = from_payload::<E>(&p).unwrap_err().to_string();
        assert!(e.contains("found a dict with 2 entries"), "{e}");
        let p = to_payload_vec(&3).unwrap();
        let e = from_payload::<E>(&p).unwrap_err().to_string();
        assert!(e.contains("found int"), "{e}");
        let p = to_payload_vec(&Value::dict([("Unit", 1)])).unwrap();
        assert!(from_payload::<E>(&p).unwrap_err().to_string().contains("unit variant takes no value"));
    }

    /// Captures what a channel token deserializes to.
    #[derive(Debug, PartialEq)]
    struct Token(u64, i32);

    impl<'de> Deserialize<'de> for Token {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Token;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a channel")
                }
                fn visit_newtype_struct<D: Deserializer<'de>>(
                    self,
                    d: D,
                ) -> std::result::Result<Token, D::Error> {
                    let (u, i) = <(u64, i32)>::deserialize(d)?;
                    Ok(Token(u, i))
                }
            }
            d.deserialize_newtype_struct(CHANNEL_TOKEN, V)
        }
    }

    #[test]
    fn channels() {
        let p = unhex("4B00000001 4600000000 42 00000005 50 51");
        let e = from_payload::<Vec<Token>>(&p).unwrap_err().to_string();
        assert!(e.contains("a channel arrived outside a gateway"), "{e}");
        let t: Vec<Token> = crate::wire::with_gateway(42, || from_payload(&p)).unwrap();
        assert_eq!(t, vec![Token(42, 5)]);
        // A tuple is not a channel: a peer cannot forge references.
        let p = to_payload_vec(&(42u64, 5i32)).unwrap();
        let e = crate::wire::with_gateway(42, || from_payload::<Token>(&p)).unwrap_err().to_string();
        assert!(e.contains("expected a channel, found tuple"), "{e}");
        // Value goes through lookup_channel: a channel with that id, or its error.
        let p = unhex("42 00000005 51");
        match crate::wire::with_gateway(u64::MAX, || from_payload::<Value>(&p)) {
            Ok(Value::Channel(c)) => assert_eq!(c.id(), 5),
            Ok(v) => panic!("a channel loaded as {v}"),
            Err(_) => {}
        }
        assert!(validate_payload(&p).is_ok());
    }

    #[test]
    fn untyped_consumers_see_natural_forms() {
        // A Python tuple into serde's own untyped buffer (untagged enum) is a sequence.
        #[derive(Deserialize, Debug, PartialEq)]
        #[serde(untagged)]
        enum U {
            Seq(Vec<i32>),
            Text(String),
        }
        let p = to_payload_vec(&Value::tuple([1, 2])).unwrap();
        assert_eq!(from_payload::<U>(&p).unwrap(), U::Seq(vec![1, 2]));
        let p = to_payload_vec(&Value::set([3])).unwrap();
        assert_eq!(from_payload::<U>(&p).unwrap(), U::Seq(vec![3]));
    }

    #[test]
    fn magic_looking_dicts_stay_dicts() {
        let v = Value::dict([(crate::wire::TUPLE_TOKEN, Value::list([1]))]);
        let p = to_payload_vec(&v).unwrap();
        assert_eq!(from_payload::<Value>(&p).unwrap(), v);
        let v = Value::dict([(crate::wire::CHANNEL_TOKEN, Value::tuple([1, 2]))]);
        let p = to_payload_vec(&v).unwrap();
        assert_eq!(from_payload::<Value>(&p).unwrap(), v);
    }
}
