//! Phase 1 of loading: the stack machine that runs a payload's opcodes once, checks
//! everything (see the module doc of [`super`]) and builds the object with a
//! [`Builder`]: onto a [`Tape`](super::tape::Tape) for serde's walk, or straight into a
//! [`Value`](crate::Value) ([`super::direct`]). The machine owns the checks, the stack
//! and the dicts being filled; a builder only says how objects are made and taken apart,
//! so both ways of loading accept and refuse exactly the same payloads, with the same
//! messages.

use num_bigint::BigInt;
use num_traits::ToPrimitive;

use super::tape::Item;
use super::MAX_INT_DIGITS;
use crate::error::{Error, Result};
use crate::wire::opcode as op;
use crate::wire::shared::{Dedup, PyKeyIn};
use crate::wire::MAX_DEPTH;

/// How a container is built from its members.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Collection {
    Tuple,
    Set,
    FrozenSet,
}

/// What SETITEM can do with an object on the stack; the machine keeps it next to each
/// object, so that a builder's objects need not say what they are.
#[derive(Clone, Copy)]
enum Shape {
    /// A list of this many items.
    List(usize),
    /// A dict: every dict on the stack is still open, taking entries.
    Dict,
    /// A channel, which a builder may not be able to make (outside a gateway the direct
    /// builder puts a placeholder in its place and fails the load at the end), so its
    /// type is known here for the messages.
    Channel,
    /// Anything else (SETITEM on it is an error).
    Other,
}

/// A key of SETITEM on a list.
pub(crate) enum Index {
    Small(i64),
    /// An int outside the i64 range, as shown in a message.
    Big(String),
    /// Not an int: the key's type name.
    NotInt(&'static str),
}

/// How the machine makes objects. `Obj` is what its stack holds. Scalars are read as
/// tape [`Item`]s (small and `Copy`) and made objects only where they are put; a list is
/// made when announced, filled in place and finished when it leaves the stack; a dict is
/// a placeholder on the stack until it leaves it, and then gets its (merged) entries.
pub(crate) trait Builder<'a> {
    type Obj;
    /// What dict keys and set members need to be compared (the tape their children are
    /// on, or nothing).
    type Ctx: ?Sized;

    fn ctx(&self) -> &Self::Ctx;

    /// The object of a scalar item (never a container).
    fn scalar(&mut self, item: Item<'a>) -> Self::Obj;
    /// Keeps an int outside the i64 range; the item names it.
    fn big(&mut self, b: BigInt) -> Item<'a>;
    /// Keeps a PY2STRING that is not ASCII, decoded as Latin-1; the item names it.
    fn latin1(&mut self, s: String) -> Item<'a>;
    /// A list of `n` items, all None until set.
    fn list(&mut self, n: usize) -> Self::Obj;
    /// `list[i] = value`, for a list of `n` items and `i < n`.
    fn set_list_item(&mut self, list: &mut Self::Obj, i: usize, value: Self::Obj);
    /// `list[i] = scalar`, as [`Builder::set_list_item`] of the scalar's object; a
    /// builder may make the object right where it goes.
    #[inline(always)]
    fn set_list_scalar(&mut self, list: &mut Self::Obj, i: usize, item: Item<'a>) {
        let value = self.scalar(item);
        self.set_list_item(list, i, value);
    }
    /// A list of `n` items leaving the stack: no more SETITEMs come.
    fn finish_list(&mut self, _list: &mut Self::Obj, _n: usize) {}
    /// The placeholder of a dict on the stack.
    fn open_dict(&mut self) -> Self::Obj;
    /// A dict leaving the stack, with its entries (merged: no two keys equal).
    fn close_dict(&mut self, entries: std::vec::Drain<'_, (Self::Obj, Self::Obj)>) -> Self::Obj;
    /// A tuple, set or frozenset of `members` (merged for sets).
    fn collection(&mut self, kind: Collection, members: impl ExactSizeIterator<Item = Self::Obj>) -> Self::Obj;

    /// The index a key of SETITEM on a list names.
    fn index(&self, key: &Self::Obj) -> Index;
    fn type_name(obj: &Self::Obj) -> &'static str;
}

/// Runs the machine over `payload` with `builder`: the object it holds, and the builder.
pub(crate) fn run<'a, B>(payload: &'a [u8], builder: B) -> Result<(B, B::Obj)>
where
    B: Builder<'a>,
    B::Obj: PyKeyIn<B::Ctx>,
{
    Machine::new(payload, builder).run().map_err(|e| *e)
}

/// What the machine's steps return: the error boxed, so that a step's result is small
/// (the machine's hot loop passes results through registers, not memory).
type Step<T> = std::result::Result<T, Box<Error>>;

#[cold]
fn err<T>(msg: String, offset: usize) -> Step<T> {
    Err(Box::new(Error::data_format(msg, Some(offset))))
}

/// The opcodes of scalars (see [`Machine::scalar`]).
fn is_scalar_op(op: u8) -> bool {
    matches!(
        op,
        op::BYTES
            | op::CHANNEL
            | op::FALSE
            | op::FLOAT
            | op::INT
            | op::LONG
            | op::LONGINT
            | op::LONGLONG
            | op::NONE
            | op::PY2STRING
            | op::PY3STRING
            | op::TRUE
            | op::UNICODE
            | op::COMPLEX
    )
}

fn check_depth(depth: u32, at: usize) -> Step<()> {
    if depth as usize > MAX_DEPTH {
        return err(format!("containers nested deeper than the limit of {MAX_DEPTH} levels"), at);
    }
    Ok(())
}

/// The str of valid UTF-8 bytes. An `Option<&str>` comes back in two registers, where
/// `from_utf8`'s `Result` comes back through memory and was then read with one wide load
/// across its two word stores, a store-forwarding stall on every str (15% of loading
/// records_100).
///
/// Short ASCII strs (dict keys, names, most strs a program sends) skip `from_utf8`,
/// whose set-up costs about 70 instructions a call however short the str: the ASCII
/// test is a few instructions, and ASCII is valid UTF-8 as it stands.
#[inline(never)]
pub(super) fn utf8(b: &[u8]) -> Option<&str> {
    if b.len() <= SHORT_STR && b.is_ascii() {
        // SAFETY: every byte is below 0x80, and a sequence of ASCII bytes is valid UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b).ok()
}

/// [`utf8`] of the `n` bytes of `buf` at `start` (in range), for the streaming path's
/// strs. One of up to 16 bytes is tested for ASCII in one 16-byte window, read inline:
/// the payload goes on after a str (its STOP at least), so the window is in `buf`
/// unless the str ends within 16 bytes of the payload's end. (Inlined into the stack
/// machine, this test made `Value` loads 0.5% slower, so the machine keeps `utf8`.)
#[inline(always)]
pub(super) fn utf8_at(buf: &[u8], start: usize, n: usize) -> Option<&str> {
    let b = &buf[start..start + n];
    if let (true, Some(window)) = (n <= 16, buf.get(start..start + 16)) {
        let word = u128::from_le_bytes(window.try_into().expect("16 bytes"));
        // The str's bytes are the window's low `n` bytes.
        let mine = if n == 16 { word } else { word & ((1u128 << (8 * n)) - 1) };
        if mine & u128::from_ne_bytes([0x80; 16]) == 0 {
            // SAFETY: every byte of `b` is below 0x80, and ASCII is valid UTF-8.
            return Some(unsafe { std::str::from_utf8_unchecked(b) });
        }
    }
    utf8(b)
}

/// The longest str that [`utf8`] tests for ASCII before it calls `from_utf8` (whose
/// word-at-a-time ASCII loop wins beyond a few words).
const SHORT_STR: usize = 32;

/// `i` as a place in a list of `len` items (negative counts from the end), if in range.
#[inline(always)]
fn list_slot(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { i.checked_add(len as i64)? } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

/// An entry of the machine's stack: the object, its shape, its nesting depth (0 for
/// scalars) and whether Python could hash it.
struct Slot<O> {
    obj: O,
    shape: Shape,
    depth: u32,
    hashable: bool,
}

impl<O> Slot<O> {
    fn scalar(obj: O, item: &Item<'_>) -> Self {
        let shape = if matches!(item, Item::Channel(_)) { Shape::Channel } else { Shape::Other };
        Slot { obj, shape, depth: 0, hashable: true }
    }
}

/// Where a SETITEM puts its value, when it can succeed.
enum Place {
    List(usize),
    Dict,
}

struct Machine<'a, B: Builder<'a>> {
    buf: &'a [u8],
    pos: usize,
    b: B,
    stack: Vec<Slot<B::Obj>>,
    /// The entries of the dicts on the stack, which SETITEM may still add to: each dict's
    /// are contiguous, in the order of the dicts on the stack, and `open_starts` says
    /// where each begins. Only the topmost dict takes entries (anything above it is the
    /// key and value being set), and a dict leaves the stack only once the dicts above it
    /// have, so a dict leaving the stack finds its entries at the end here. They are
    /// merged and handed to the builder then.
    open: Vec<(B::Obj, B::Obj)>,
    open_starts: Vec<usize>,
    dedup: Dedup,
    /// List slots that the NEWLISTs seen so far may still announce: filling a slot takes
    /// several bytes, so all lists of a payload together have fewer items than it has
    /// bytes. This bounds the memory a payload can make the loader allocate.
    list_budget: usize,
}

impl<'a, B> Machine<'a, B>
where
    B: Builder<'a>,
    B::Obj: PyKeyIn<B::Ctx>,
{
    fn new(buf: &'a [u8], b: B) -> Self {
        Machine {
            buf,
            pos: 0,
            b,
            stack: Vec::with_capacity(8),
            open: Vec::new(),
            open_starts: Vec::new(),
            dedup: Dedup::default(),
            list_budget: buf.len(),
        }
    }

    /// The Python type name of a stack entry.
    fn type_name(slot: &Slot<B::Obj>) -> &'static str {
        match slot.shape {
            Shape::Channel => "channel",
            _ => B::type_name(&slot.obj),
        }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` operand bytes of the opcode at `at`.
    #[inline(always)]
    fn take(&mut self, n: usize, at: usize) -> Step<&'a [u8]> {
        if self.left() < n {
            return self.truncated(n, at);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[cold]
    fn truncated<T>(&self, n: usize, at: usize) -> Step<T> {
        let op = op::name(self.buf[at]);
        err(format!("truncated input: {op} at byte {at} needs {n} operand bytes, only {} left", self.left()), self.pos)
    }

    #[inline(always)]
    fn read_i32(&mut self, at: usize) -> Step<i32> {
        let b = self.take(4, at)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length operand: not negative and not beyond the bytes left.
    #[inline(always)]
    fn read_len(&mut self, at: usize) -> Step<usize> {
        let n = self.read_i32(at)?;
        if n < 0 || n as usize > self.left() {
            return self.bad_len(n, at);
        }
        Ok(n as usize)
    }

    #[cold]
    fn bad_len<T>(&self, n: i32, at: usize) -> Step<T> {
        let op = op::name(self.buf[at]);
        if n < 0 {
            return err(format!("negative length {n} in {op} at byte {at}"), at + 1);
        }
        err(format!("{op} at byte {at} announces {n} bytes, more than the {} bytes left", self.left()), at + 1)
    }

    /// A count operand of BUILDTUPLE, SET, FROZENSET: not negative, not beyond the stack.
    fn read_count(&mut self, at: usize) -> Step<usize> {
        let n = self.read_i32(at)?;
        let op = op::name(self.buf[at]);
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

    /// An object leaving the stack for a container (or for good, at STOP): a list takes
    /// no more items and a dict no more entries (they are merged and handed to the
    /// builder).
    #[inline(always)]
    fn close(&mut self, slot: Slot<B::Obj>) -> B::Obj {
        let mut obj = slot.obj;
        match slot.shape {
            Shape::List(n) => self.b.finish_list(&mut obj, n),
            Shape::Dict => return self.close_dict(),
            Shape::Channel | Shape::Other => {}
        }
        obj
    }

    fn close_dict(&mut self) -> B::Obj {
        let start = self.open_starts.pop().expect("an open dict has its entries' start");
        let kept = self.dedup.dict_in(&mut self.open[start..], self.b.ctx());
        let dict = self.b.close_dict(self.open.drain(start..start + kept));
        self.open.truncate(start);
        dict
    }

    fn run(mut self) -> Step<(B, B::Obj)> {
        loop {
            let at = self.pos;
            let Some(&op) = self.buf.get(at) else {
                return err(format!("truncated input: the object ended after {at} bytes without STOP"), at);
            };
            self.pos += 1;
            match op {
                op::NEWDICT => {
                    self.open_starts.push(self.open.len());
                    let obj = self.b.open_dict();
                    self.stack.push(Slot { obj, shape: Shape::Dict, depth: 1, hashable: false });
                }
                op::NEWLIST => self.newlist(at)?,
                op::SETITEM => self.setitem(at)?,
                op::BUILDTUPLE => self.collection(Collection::Tuple, at)?,
                op::SET => self.collection(Collection::Set, at)?,
                op::FROZENSET => self.collection(Collection::FrozenSet, at)?,
                op::STOP => {
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
                    let root = self.close(slot);
                    return Ok((self.b, root));
                }
                _ => {
                    let mut item = self.scalar(op, at)?;
                    // A list of scalars fills here: after an item, its list's next index
                    // is read as this loop would read it, and its item placed.
                    while self.place_scalar(item)? && self.buf.get(self.pos) == Some(&op::INT) {
                        let at = self.pos;
                        self.pos += 1;
                        item = self.scalar(op::INT, at)?;
                    }
                }
            }
        }
    }

    /// The item of a scalar opcode (or the error of an unknown one).
    #[inline(always)]
    fn scalar(&mut self, op: u8, at: usize) -> Step<Item<'a>> {
        Ok(match op {
            op::NONE => Item::None,
            op::TRUE => Item::True,
            op::FALSE => Item::False,
            op::INT | op::LONG => Item::Int(self.read_i32(at)? as i64),
            op::LONGINT | op::LONGLONG => {
                let n = self.read_len(at)?;
                let text = self.take(n, at)?;
                match parse_int_text(text, at)? {
                    Ok(i) => Item::Int(i),
                    Err(big) => self.b.big(big),
                }
            }
            op::FLOAT => Item::Float(f64::from_be_bytes(self.take(8, at)?.try_into().expect("8 bytes"))),
            op::COMPLEX => {
                let b = self.take(16, at)?;
                let re = f64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
                let im = f64::from_be_bytes(b[8..].try_into().expect("8 bytes"));
                Item::Complex(re, im)
            }
            op::PY3STRING | op::UNICODE => {
                let n = self.read_len(at)?;
                let start = self.pos;
                let b = self.take(n, at)?;
                match utf8(b) {
                    Some(s) => Item::Str(s),
                    None => {
                        let valid = std::str::from_utf8(b).map_or_else(|e| e.valid_up_to(), |_| 0);
                        return err(format!("invalid UTF-8 in the {} at byte {at}", op::name(op)), start + valid);
                    }
                }
            }
            op::PY2STRING => {
                let n = self.read_len(at)?;
                let b = self.take(n, at)?;
                if b.is_ascii() {
                    Item::Str(std::str::from_utf8(b).expect("ASCII"))
                } else {
                    self.b.latin1(b.iter().map(|&c| c as char).collect())
                }
            }
            op::BYTES => {
                let n = self.read_len(at)?;
                Item::Bytes(self.take(n, at)?)
            }
            op::CHANNEL => Item::Channel(self.read_i32(at)? as i64),
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
    /// scalars are pushed as the general loop would push them, and [`Machine::setitem`]
    /// does the work (or finds the error). The target's depth stays as it is: it is at
    /// least 1, what a container of scalars has. True when the scalar was a list index
    /// and its item went into the list (the list's next index may follow).
    #[inline(always)]
    fn place_scalar(&mut self, item: Item<'a>) -> Step<bool> {
        let next = self.buf.get(self.pos).copied();
        if next == Some(op::SETITEM) {
            if let [.., target, key] = &self.stack[..] {
                if key.depth == 0 {
                    let place = match target.shape {
                        Shape::List(n) => match self.b.index(&key.obj) {
                            Index::Small(i) => list_slot(i, n).map(Place::List),
                            _ => None,
                        },
                        // A scalar key is hashable.
                        Shape::Dict => Some(Place::Dict),
                        Shape::Channel | Shape::Other => None,
                    };
                    if let Some(place) = place {
                        let key = self.stack.pop().expect("a key").obj;
                        let value = self.b.scalar(item);
                        self.put(place, key, value);
                        self.pos += 1;
                        return Ok(false);
                    }
                }
            }
        } else if let (Some(op), Some(target)) = (next, self.stack.last()) {
            let shape = target.shape;
            if is_scalar_op(op) && matches!(shape, Shape::List(_) | Shape::Dict) {
                let at = self.pos;
                self.pos += 1;
                let value = self.scalar(op, at)?;
                if self.buf.get(self.pos) == Some(&op::SETITEM) {
                    match shape {
                        Shape::List(n) => {
                            let slot = match item {
                                Item::Int(i) => list_slot(i, n),
                                Item::True => list_slot(1, n),
                                Item::False => list_slot(0, n),
                                _ => None,
                            };
                            if let Some(i) = slot {
                                let list = &mut self.stack.last_mut().expect("a list").obj;
                                self.b.set_list_scalar(list, i, value);
                                self.pos += 1;
                                return Ok(true);
                            }
                        }
                        _ => {
                            let entry = (self.b.scalar(item), self.b.scalar(value));
                            self.open.push(entry);
                            self.pos += 1;
                            return Ok(false);
                        }
                    }
                }
                let (key_obj, value_obj) = (self.b.scalar(item), self.b.scalar(value));
                self.stack.push(Slot::scalar(key_obj, &item));
                self.stack.push(Slot::scalar(value_obj, &value));
                return Ok(false);
            }
        }
        let obj = self.b.scalar(item);
        self.stack.push(Slot::scalar(obj, &item));
        Ok(false)
    }

    /// `target[key] = value` into the container on top of the stack, at a place found
    /// to be right for it.
    #[inline(always)]
    fn put(&mut self, place: Place, key: B::Obj, value: B::Obj) {
        match place {
            Place::List(i) => {
                let list = &mut self.stack.last_mut().expect("a list").obj;
                self.b.set_list_item(list, i, value);
            }
            Place::Dict => self.open.push((key, value)),
        }
    }

    fn newlist(&mut self, at: usize) -> Step<()> {
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
        let obj = self.b.list(n);
        self.stack.push(Slot { obj, shape: Shape::List(n), depth: 1, hashable: false });
        Ok(())
    }

    fn setitem(&mut self, at: usize) -> Step<()> {
        let len = self.stack.len();
        if len < 3 {
            return err(
                format!("SETITEM at byte {at} needs a container, a key and a value on the stack, found {len} items"),
                at,
            );
        }
        let (target, key, value) = (&self.stack[len - 3], &self.stack[len - 2], &self.stack[len - 1]);
        let depth = target.depth.max(1 + key.depth.max(value.depth));
        let place = match target.shape {
            Shape::List(n) => {
                let index = match key.shape {
                    Shape::Channel => Index::NotInt("channel"),
                    _ => self.b.index(&key.obj),
                };
                let shown = match index {
                    Index::Small(i) => match list_slot(i, n) {
                        Some(slot) => Ok(slot),
                        None => Err(i.to_string()),
                    },
                    Index::Big(shown) => Err(shown),
                    Index::NotInt(name) => {
                        return err(format!("SETITEM at byte {at}: list index must be an int, not {name}"), at)
                    }
                };
                match shown {
                    Ok(slot) => Place::List(slot),
                    Err(shown) => {
                        return err(
                            format!("SETITEM at byte {at}: list index {shown} out of range for a list of {n} items"),
                            at,
                        )
                    }
                }
            }
            Shape::Dict => {
                if !key.hashable {
                    return err(
                        format!("SETITEM at byte {at}: unhashable dict key of type {}", B::type_name(&key.obj)),
                        at,
                    );
                }
                Place::Dict
            }
            Shape::Channel | Shape::Other => {
                return err(
                    format!("SETITEM at byte {at} on a {}: only a list or a dict takes items", Self::type_name(target)),
                    at,
                )
            }
        };
        check_depth(depth, at)?;
        let value = self.stack.pop().expect("a value");
        let key = self.stack.pop().expect("a key").obj;
        // The key is hashable (a dict's) or an int (a list's), so not a container that
        // needs closing: only the value may.
        let value = self.close(value);
        self.put(place, key, value);
        self.stack[len - 3].depth = depth;
        Ok(())
    }

    fn collection(&mut self, kind: Collection, at: usize) -> Step<()> {
        let n = self.read_count(at)?;
        let start = self.stack.len() - n;
        let mut depth = 0;
        let mut hashable = true;
        for slot in &self.stack[start..] {
            depth = depth.max(slot.depth);
            if !slot.hashable {
                if kind != Collection::Tuple {
                    return err(
                        format!(
                            "{} at byte {at}: unhashable member of type {}",
                            op::name(self.buf[at]),
                            B::type_name(&slot.obj)
                        ),
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
            match self.stack[i].shape {
                Shape::List(n) => self.b.finish_list(&mut self.stack[i].obj, n),
                Shape::Dict => self.stack[i].obj = self.close_dict(),
                Shape::Channel | Shape::Other => {}
            }
            self.stack[i].shape = Shape::Other;
        }
        let members = &mut self.stack[start..];
        let kept = match kind {
            Collection::Tuple => members.len(),
            _ => self.dedup.set_by(members, |s| &s.obj, self.b.ctx()),
        };
        let obj = self.b.collection(kind, self.stack.drain(start..start + kept).map(|s| s.obj));
        self.stack.truncate(start);
        let hashable = match kind {
            Collection::Tuple => hashable,
            Collection::Set => false,
            Collection::FrozenSet => true,
        };
        self.stack.push(Slot { obj, shape: Shape::Other, depth, hashable });
        Ok(())
    }
}

/// Parses the text of a LONGINT as Python's `int(bytes)` does: surrounding ASCII
/// whitespace, an optional sign, digits with single underscores between them. An int
/// outside the i64 range comes back as `Ok(Err(big))`.
pub(super) fn parse_int_text(text: &[u8], at: usize) -> Step<std::result::Result<i64, BigInt>> {
    let bad = || {
        let shown: String = String::from_utf8_lossy(&text[..text.len().min(40)]).into_owned();
        Box::new(Error::data_format(
            format!("invalid LONGINT text {shown:?} at byte {at}: expected decimal digits"),
            Some(at + 5),
        ))
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// What `utf8` accepts, and the str it gives, is exactly what `from_utf8` does, on
    /// both sides of its short-ASCII shortcut (strs up to and past `SHORT_STR` bytes,
    /// mostly ASCII with a non-ASCII or invalid byte here and there).
    #[test]
    fn utf8_agrees_with_from_utf8() {
        let byte = prop_oneof![8 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(0xc3u8), 1 => Just(0xa9u8)];
        proptest!(ProptestConfig::with_cases(4000), |(b in proptest::collection::vec(byte, 0..super::SHORT_STR + 8))| {
            prop_assert_eq!(super::utf8(&b), std::str::from_utf8(&b).ok());
        });
        for b in [&b"name"[..], b"", "caf\u{e9}".as_bytes(), b"\xff", b"ab\xc3", &[b'a'; 32], &[b'a'; 33]] {
            assert_eq!(super::utf8(b), std::str::from_utf8(b).ok(), "{b:?}");
        }
    }

    proptest! {
        /// The windowed ASCII test gives what `from_utf8` gives, for strs anywhere in
        /// the buffer (the window past its end or not), of every length around 16.
        #[test]
        fn utf8_at_is_from_utf8(
            buf in proptest::collection::vec(prop_oneof![8 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(0xc3)], ..40),
            start in any::<usize>(),
            len in any::<usize>(),
        ) {
            let start = start % (buf.len() + 1);
            let n = len % (buf.len() - start + 1);
            prop_assert_eq!(super::utf8_at(&buf, start, n), std::str::from_utf8(&buf[start..start + n]).ok());
        }
    }
}
