//! Phase 1 of loading: the stack machine, which checks a payload and lays the object out
//! as a [`Tape`] (see the module doc of [`super`]).

use std::borrow::Cow;
use std::ops::Range;

use num_bigint::BigInt;
use num_traits::ToPrimitive;

use super::MAX_INT_DIGITS;
use crate::error::{Error, Result};
use crate::wire::shared::{short_int_text, Dedup, KeyRef, Num, PyKeyIn};
use crate::wire::MAX_DEPTH;

/// Where the children of a container are: `len` items of [`Tape::items`] (list, tuple,
/// set, frozenset) or `len` entries of [`Tape::entries`] (dict), from `start`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    start: usize,
    len: usize,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start..self.start + self.len
    }
}

/// One loaded object; containers point at their children on the tape.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Item<'a> {
    None,
    Bool(bool),
    Int(i64),
    /// An int outside the i64 range: its index in [`Tape::bigs`].
    Big(usize),
    Float(f64),
    Complex(f64, f64),
    Str(&'a str),
    /// A PY2STRING that is not ASCII, decoded as Latin-1: its index in [`Tape::strings`].
    Latin1(usize),
    Bytes(&'a [u8]),
    List(Span),
    Tuple(Span),
    /// On the machine's stack, while SETITEMs may still come, `start` is where the
    /// dict's entries begin on [`Parser::open`] and `len` is 0.
    Dict(Span),
    Set(Span),
    FrozenSet(Span),
    Channel(i32),
}

impl Item<'_> {
    /// The Python type name.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Item::None => "NoneType",
            Item::Bool(_) => "bool",
            Item::Int(_) | Item::Big(_) => "int",
            Item::Float(_) => "float",
            Item::Complex(..) => "complex",
            Item::Str(_) | Item::Latin1(_) => "str",
            Item::Bytes(_) => "bytes",
            Item::List(_) => "list",
            Item::Tuple(_) => "tuple",
            Item::Dict(_) => "dict",
            Item::Set(_) => "set",
            Item::FrozenSet(_) => "frozenset",
            Item::Channel(_) => "channel",
        }
    }
}

/// A loaded payload: the children of all its containers, each container's contiguous,
/// and the values that do not fit in an [`Item`]. Strs and bytes borrow from the payload.
#[derive(Default)]
pub(crate) struct Tape<'a> {
    items: Vec<Item<'a>>,
    entries: Vec<(Item<'a>, Item<'a>)>,
    bigs: Vec<BigInt>,
    strings: Vec<String>,
}

impl<'a> Tape<'a> {
    /// The items of a list, tuple, set or frozenset.
    pub(crate) fn items(&self, span: Span) -> &[Item<'a>] {
        &self.items[span.range()]
    }

    /// The entries of a dict.
    pub(crate) fn entries(&self, span: Span) -> &[(Item<'a>, Item<'a>)] {
        &self.entries[span.range()]
    }

    pub(crate) fn big(&self, index: usize) -> &BigInt {
        &self.bigs[index]
    }

    pub(crate) fn string(&self, index: usize) -> &str {
        &self.strings[index]
    }
}

impl<'a> PyKeyIn<Tape<'a>> for Item<'a> {
    fn key_ref_in<'k>(&'k self, tape: &'k Tape<'a>) -> KeyRef<'k, Self> {
        match *self {
            Item::None => KeyRef::None,
            Item::Bool(b) => KeyRef::Num(Num::I(b as i64)),
            Item::Int(i) => KeyRef::Num(Num::I(i)),
            Item::Big(i) => KeyRef::Num(Num::B(Cow::Borrowed(tape.big(i)))),
            Item::Float(f) => KeyRef::Num(Num::float(f)),
            Item::Complex(re, im) => KeyRef::Num(Num::complex(re, im)),
            Item::Str(s) => KeyRef::Str(s),
            Item::Latin1(i) => KeyRef::Str(tape.string(i)),
            Item::Bytes(b) => KeyRef::Bytes(b),
            Item::List(s) => KeyRef::List(tape.items(s)),
            Item::Tuple(s) => KeyRef::Tuple(tape.items(s)),
            Item::Dict(s) => KeyRef::Dict(tape.entries(s)),
            Item::Set(s) => KeyRef::Set(tape.items(s)),
            Item::FrozenSet(s) => KeyRef::FrozenSet(tape.items(s)),
            Item::Channel(id) => KeyRef::Channel(None, id),
        }
    }
}

/// Runs the stack machine over `payload`: the object it holds, and the tape its
/// containers point into.
pub(crate) fn load(payload: &[u8]) -> Result<(Tape<'_>, Item<'_>)> {
    Parser::new(payload).run()
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

/// The opcodes of scalars (see [`Parser::scalar`]).
fn is_scalar_op(op: u8) -> bool {
    matches!(op, b'A' | b'B' | b'C' | b'D' | b'F' | b'G' | b'H' | b'I' | b'L' | b'M' | b'N' | b'R' | b'S' | b'T')
}

fn check_depth(depth: u32, at: usize) -> Result<()> {
    if depth as usize > MAX_DEPTH {
        return err(format!("containers nested deeper than the limit of {MAX_DEPTH} levels"), at);
    }
    Ok(())
}

/// An entry of the machine's stack: the object, its nesting depth (0 for scalars) and
/// whether Python could hash it.
#[derive(Clone, Copy)]
struct Slot<'a> {
    item: Item<'a>,
    depth: u32,
    hashable: bool,
}

impl<'a> Slot<'a> {
    fn scalar(item: Item<'a>) -> Self {
        Slot { item, depth: 0, hashable: true }
    }
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    tape: Tape<'a>,
    stack: Vec<Slot<'a>>,
    /// The entries of the dicts on the stack, which SETITEM may still add to: each dict's
    /// are contiguous, in the order of the dicts on the stack. Only the topmost dict
    /// takes entries (anything above it is the key and value being set), and a dict
    /// leaves the stack only once the dicts above it have, so a dict leaving the stack
    /// finds its entries at the end here. They are merged and moved to the tape then.
    open: Vec<(Item<'a>, Item<'a>)>,
    dedup: Dedup,
    /// List slots that the NEWLISTs seen so far may still announce: filling a slot takes
    /// several bytes, so all lists of a payload together have fewer items than it has
    /// bytes. This bounds the memory a payload can make the loader allocate.
    list_budget: usize,
}

impl<'a> Parser<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Parser {
            buf,
            pos: 0,
            tape: Tape::default(),
            stack: Vec::new(),
            open: Vec::new(),
            dedup: Dedup::default(),
            list_budget: buf.len(),
        }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` operand bytes of the opcode at `at`.
    #[inline(always)]
    fn take(&mut self, n: usize, at: usize) -> Result<&'a [u8]> {
        if self.left() < n {
            return self.truncated(n, at);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[cold]
    fn truncated<T>(&self, n: usize, at: usize) -> Result<T> {
        let op = op_name(self.buf[at]);
        err(format!("truncated input: {op} at byte {at} needs {n} operand bytes, only {} left", self.left()), self.pos)
    }

    #[inline(always)]
    fn read_i32(&mut self, at: usize) -> Result<i32> {
        let b = self.take(4, at)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length operand: not negative and not beyond the bytes left.
    #[inline(always)]
    fn read_len(&mut self, at: usize) -> Result<usize> {
        let n = self.read_i32(at)?;
        if n < 0 || n as usize > self.left() {
            return self.bad_len(n, at);
        }
        Ok(n as usize)
    }

    #[cold]
    fn bad_len<T>(&self, n: i32, at: usize) -> Result<T> {
        let op = op_name(self.buf[at]);
        if n < 0 {
            return err(format!("negative length {n} in {op} at byte {at}"), at + 1);
        }
        err(format!("{op} at byte {at} announces {n} bytes, more than the {} bytes left", self.left()), at + 1)
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

    /// An object leaving the stack for a container (or for good, at STOP): a dict takes
    /// no more entries, so its entries are merged and moved to the tape.
    #[inline(always)]
    fn close(&mut self, item: Item<'a>) -> Item<'a> {
        match item {
            Item::Dict(open) => self.close_dict(open),
            _ => item,
        }
    }

    fn close_dict(&mut self, open: Span) -> Item<'a> {
        let entries = &mut self.open[open.start..];
        let kept = self.dedup.dict_in(entries, &self.tape);
        let start = self.tape.entries.len();
        self.tape.entries.extend_from_slice(&entries[..kept]);
        self.open.truncate(open.start);
        Item::Dict(Span { start, len: kept })
    }

    fn run(mut self) -> Result<(Tape<'a>, Item<'a>)> {
        loop {
            let at = self.pos;
            let Some(&op) = self.buf.get(at) else {
                return err(format!("truncated input: the object ended after {at} bytes without STOP"), at);
            };
            self.pos += 1;
            match op {
                b'J' => {
                    let open = Span { start: self.open.len(), len: 0 };
                    self.stack.push(Slot { item: Item::Dict(open), depth: 1, hashable: false });
                }
                b'K' => self.newlist(at)?,
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
                    let root = self.close(slot.item);
                    return Ok((self.tape, root));
                }
                _ => {
                    let item = self.scalar(op, at)?;
                    self.place_scalar(item)?;
                }
            }
        }
    }

    /// The object of a scalar opcode (or the error of an unknown one).
    #[inline(always)]
    fn scalar(&mut self, op: u8, at: usize) -> Result<Item<'a>> {
        Ok(match op {
            b'L' => Item::None,
            b'R' => Item::Bool(true),
            b'C' => Item::Bool(false),
            b'F' | b'G' => Item::Int(self.read_i32(at)? as i64),
            b'H' | b'I' => {
                let n = self.read_len(at)?;
                let text = self.take(n, at)?;
                match parse_int_text(text, at)? {
                    Ok(i) => Item::Int(i),
                    Err(big) => {
                        self.tape.bigs.push(big);
                        Item::Big(self.tape.bigs.len() - 1)
                    }
                }
            }
            b'D' => Item::Float(f64::from_be_bytes(self.take(8, at)?.try_into().expect("8 bytes"))),
            b'T' => {
                let b = self.take(16, at)?;
                let re = f64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
                let im = f64::from_be_bytes(b[8..].try_into().expect("8 bytes"));
                Item::Complex(re, im)
            }
            b'N' | b'S' => {
                let n = self.read_len(at)?;
                let start = self.pos;
                let b = self.take(n, at)?;
                Item::Str(std::str::from_utf8(b).map_err(|e| {
                    Error::data_format(
                        format!("invalid UTF-8 in the {} at byte {at}", op_name(op)),
                        Some(start + e.valid_up_to()),
                    )
                })?)
            }
            b'M' => {
                let n = self.read_len(at)?;
                let b = self.take(n, at)?;
                if b.is_ascii() {
                    Item::Str(std::str::from_utf8(b).expect("ASCII"))
                } else {
                    self.tape.strings.push(b.iter().map(|&c| c as char).collect());
                    Item::Latin1(self.tape.strings.len() - 1)
                }
            }
            b'A' => {
                let n = self.read_len(at)?;
                Item::Bytes(self.take(n, at)?)
            }
            b'B' => Item::Channel(self.read_i32(at)?),
            _ => {
                let shown = if op.is_ascii_graphic() { format!(" ({:?})", op as char) } else { String::new() };
                return err(format!("unknown opcode 0x{op:02x}{shown} at byte {at}"), at);
            }
        })
    }

    /// Puts a scalar just read where the general loop would, taking shortcuts in the
    /// common cases of SETITEM: a scalar value followed by it, with the container and a
    /// scalar key on the stack, or a scalar key and value followed by it, with the
    /// container on the stack, go into the container without the stack. Whenever a
    /// shortcut does not apply (including every case SETITEM would fail on), the
    /// scalars are pushed as the general loop would push them, and [`Parser::setitem`]
    /// does the work (or finds the error).
    #[inline(always)]
    fn place_scalar(&mut self, item: Item<'a>) -> Result<()> {
        let next = self.buf.get(self.pos).copied();
        if next == Some(b'P') {
            if let [.., target, key] = &self.stack[..] {
                if key.depth == 0 && self.set_item(target.item, key.item, item) {
                    self.stack.pop();
                    self.pos += 1;
                    return Ok(());
                }
            }
        } else if let (Some(op), Some(target)) = (next, self.stack.last()) {
            if is_scalar_op(op) && matches!(target.item, Item::List(_) | Item::Dict(_)) {
                let target = target.item;
                let at = self.pos;
                self.pos += 1;
                let value = self.scalar(op, at)?;
                if self.buf.get(self.pos) == Some(&b'P') && self.set_item(target, item, value) {
                    self.pos += 1;
                    return Ok(());
                }
                self.stack.push(Slot::scalar(item));
                self.stack.push(Slot::scalar(value));
                return Ok(());
            }
        }
        self.stack.push(Slot::scalar(item));
        Ok(())
    }

    /// `target[key] = value` for a list or dict target and a scalar key and value, if
    /// SETITEM would succeed; says whether it did. The target's depth stays as it is.
    #[inline(always)]
    fn set_item(&mut self, target: Item<'a>, key: Item<'a>, value: Item<'a>) -> bool {
        match target {
            Item::List(list) => {
                let i = match key {
                    Item::Int(i) => i,
                    Item::Bool(b) => b as i64,
                    _ => return false,
                };
                let i = if i < 0 { i + list.len as i64 } else { i };
                if !(0..list.len as i64).contains(&i) {
                    return false;
                }
                self.tape.items[list.start + i as usize] = value;
            }
            // A scalar key is hashable.
            Item::Dict(_) => self.open.push((key, value)),
            _ => return false,
        }
        true
    }

    fn newlist(&mut self, at: usize) -> Result<()> {
        let n = self.read_i32(at)?;
        if n < 0 {
            return err(format!("negative list length {n} in NEWLIST at byte {at}"), at + 1);
        }
        let n = n as usize;
        // Every item of a real list takes bytes to set, so a length beyond the bytes left
        // is a lie; this also bounds the allocation.
        if n > self.left() {
            return err(
                format!("NEWLIST at byte {at} announces {n} items, more than the {} bytes left", self.left()),
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
        // A list's length is fixed, so its items can have their place on the tape now;
        // the ones no SETITEM sets stay None.
        let start = self.tape.items.len();
        self.tape.items.resize(start + n, Item::None);
        self.stack.push(Slot { item: Item::List(Span { start, len: n }), depth: 1, hashable: false });
        Ok(())
    }

    fn setitem(&mut self, at: usize) -> Result<()> {
        let len = self.stack.len();
        if len < 3 {
            return err(
                format!("SETITEM at byte {at} needs a container, a key and a value on the stack, found {len} items"),
                at,
            );
        }
        let value = self.stack[len - 1];
        let key = self.stack[len - 2];
        let target = self.stack[len - 3];
        self.stack.truncate(len - 2);
        let depth = target.depth.max(1 + key.depth.max(value.depth));
        match target.item {
            Item::List(list) => {
                let index = match key.item {
                    Item::Int(i) => Some(i),
                    Item::Bool(b) => Some(b as i64),
                    Item::Big(_) => None,
                    other => {
                        return err(
                            format!("SETITEM at byte {at}: list index must be an int, not {}", other.type_name()),
                            at,
                        )
                    }
                };
                let slot = index.and_then(|i| {
                    let i = if i < 0 { i.checked_add(list.len as i64)? } else { i };
                    (0..list.len as i64).contains(&i).then_some(i as usize)
                });
                let Some(slot) = slot else {
                    let shown = match key.item {
                        Item::Big(b) => short_int_text(self.tape.big(b)),
                        _ => index.unwrap_or_default().to_string(),
                    };
                    return err(
                        format!(
                            "SETITEM at byte {at}: list index {shown} out of range for a list of {} items",
                            list.len
                        ),
                        at,
                    );
                };
                let value = self.close(value.item);
                self.tape.items[list.start + slot] = value;
            }
            Item::Dict(_) => {
                if !key.hashable {
                    return err(
                        format!("SETITEM at byte {at}: unhashable dict key of type {}", key.item.type_name()),
                        at,
                    );
                }
                // The key is hashable, so not a dict: only the value may need closing.
                let value = self.close(value.item);
                self.open.push((key.item, value));
            }
            other => {
                return err(
                    format!("SETITEM at byte {at} on a {}: only a list or a dict takes items", other.type_name()),
                    at,
                )
            }
        }
        check_depth(depth, at)?;
        self.stack[len - 3].depth = depth;
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
                        format!("{} at byte {at}: unhashable member of type {}", op_name(op), slot.item.type_name()),
                        at,
                    );
                }
                hashable = false;
            }
        }
        let depth = depth + 1;
        check_depth(depth, at)?;
        // The topmost dict's entries are at the end of `open`, so close from the top.
        for i in (start..self.stack.len()).rev() {
            self.stack[i].item = self.close(self.stack[i].item);
        }
        let members = &mut self.stack[start..];
        let kept = match op {
            b'@' => members.len(),
            _ => self.dedup.set_by(members, |s| &s.item, &self.tape),
        };
        let span = Span { start: self.tape.items.len(), len: kept };
        self.tape.items.extend(members[..kept].iter().map(|s| s.item));
        self.stack.truncate(start);
        let (item, hashable) = match op {
            b'@' => (Item::Tuple(span), hashable),
            b'O' => (Item::Set(span), false),
            _ => (Item::FrozenSet(span), true),
        };
        self.stack.push(Slot { item, depth, hashable });
        Ok(())
    }
}

/// Parses the text of a LONGINT as Python's `int(bytes)` does: surrounding ASCII
/// whitespace, an optional sign, digits with single underscores between them. An int
/// outside the i64 range comes back as `Ok(Err(big))`.
fn parse_int_text(text: &[u8], at: usize) -> Result<std::result::Result<i64, BigInt>> {
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
        return Ok(Ok(i));
    }
    let b: BigInt = s.parse().map_err(|_| bad())?;
    Ok(match b.to_i64() {
        Some(i) => Ok(i),
        None => Err(b),
    })
}
