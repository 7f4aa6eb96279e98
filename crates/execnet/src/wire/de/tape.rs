//! The tape: a loaded object laid out flat, a few vectors for the whole payload rather
//! than one per container (see the module doc of [`super`]), and how the stack machine
//! ([`super::machine`]) builds it.

use std::borrow::Cow;
use std::ops::Range;

use num_bigint::BigInt;

use super::machine::{self, Builder, Collection, Index};
use crate::error::Result;
use crate::wire::shared::{short_int_text, KeyRef, Num, PyKeyIn};

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
///
/// `repr(u64)` puts every field 8-aligned after a full-word tag, so that an item is
/// copied as three words: with the default layout (a bool right after a byte tag) items
/// were copied byte by byte and read back a word at a time, which stalled the CPU's store
/// forwarding and made the machine's loop twice as slow.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub(crate) enum Item<'a> {
    None,
    /// The bools are two items rather than one with a field, so that every field is a
    /// whole word (see above).
    True,
    False,
    Int(i64),
    /// An int outside the i64 range: its index in [`Oversized::bigs`].
    Big(usize),
    Float(f64),
    Complex(f64, f64),
    Str(&'a str),
    /// A PY2STRING that is not ASCII, decoded as Latin-1: its index in
    /// [`Oversized::strings`].
    Latin1(usize),
    Bytes(&'a [u8]),
    List(Span),
    Tuple(Span),
    /// On the machine's stack, while SETITEMs may still come, a placeholder (its
    /// entries are still being collected).
    Dict(Span),
    Set(Span),
    FrozenSet(Span),
    /// A channel id (an i32 on the wire), held as a whole word (see above).
    Channel(i64),
}

impl Item<'_> {
    /// The Python type name.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Item::None => "NoneType",
            Item::True | Item::False => "bool",
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
    oversized: Oversized,
}

/// The scalars that do not fit in an [`Item`], which names them by index: kept by each
/// builder until its items are made into objects.
#[derive(Default)]
pub(crate) struct Oversized {
    pub(crate) bigs: Vec<BigInt>,
    pub(crate) strings: Vec<String>,
}

impl Oversized {
    /// Keeps an int outside the i64 range; the item names it.
    pub(crate) fn big<'a>(&mut self, b: BigInt) -> Item<'a> {
        self.bigs.push(b);
        Item::Big(self.bigs.len() - 1)
    }

    /// Keeps a Latin-1 str; the item names it.
    pub(crate) fn latin1<'a>(&mut self, s: String) -> Item<'a> {
        self.strings.push(s);
        Item::Latin1(self.strings.len() - 1)
    }
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
        &self.oversized.bigs[index]
    }

    pub(crate) fn string(&self, index: usize) -> &str {
        &self.oversized.strings[index]
    }
}

impl<'a> PyKeyIn<Tape<'a>> for Item<'a> {
    fn key_ref_in<'k>(&'k self, tape: &'k Tape<'a>) -> KeyRef<'k, Self> {
        match *self {
            Item::None => KeyRef::None,
            Item::True => KeyRef::Num(Num::I(1)),
            Item::False => KeyRef::Num(Num::I(0)),
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
            Item::Channel(id) => KeyRef::Channel(None, id as i32),
        }
    }
}

/// Runs the stack machine over `payload`: the object it holds, and the tape its
/// containers point into.
pub(crate) fn load(payload: &[u8]) -> Result<(Tape<'_>, Item<'_>)> {
    machine::run(payload, Tape::default())
}

impl<'a> Builder<'a> for Tape<'a> {
    type Obj = Item<'a>;
    type Ctx = Tape<'a>;

    fn ctx(&self) -> &Tape<'a> {
        self
    }

    #[inline(always)]
    fn scalar(&mut self, item: Item<'a>) -> Item<'a> {
        item
    }

    fn big(&mut self, b: BigInt) -> Item<'a> {
        self.oversized.big(b)
    }

    fn latin1(&mut self, s: String) -> Item<'a> {
        self.oversized.latin1(s)
    }

    /// A list's items get their places on the tape when it is announced.
    fn list(&mut self, n: usize) -> Item<'a> {
        let start = self.items.len();
        self.items.resize(start + n, Item::None);
        Item::List(Span { start, len: n })
    }

    #[inline(always)]
    fn set_list_item(&mut self, list: &mut Item<'a>, i: usize, value: Item<'a>) {
        if let Item::List(span) = *list {
            self.items[span.start + i] = value;
        }
    }

    fn open_dict(&mut self) -> Item<'a> {
        Item::Dict(Span { start: 0, len: 0 })
    }

    fn close_dict(&mut self, entries: std::vec::Drain<'_, (Item<'a>, Item<'a>)>) -> Item<'a> {
        let start = self.entries.len();
        self.entries.extend(entries);
        Item::Dict(Span { start, len: self.entries.len() - start })
    }

    fn collection(&mut self, kind: Collection, members: impl ExactSizeIterator<Item = Item<'a>>) -> Item<'a> {
        let start = self.items.len();
        self.items.extend(members);
        let span = Span { start, len: self.items.len() - start };
        match kind {
            Collection::Tuple => Item::Tuple(span),
            Collection::Set => Item::Set(span),
            Collection::FrozenSet => Item::FrozenSet(span),
        }
    }

    fn index(&self, key: &Item<'a>) -> Index {
        match *key {
            Item::Int(i) => Index::Small(i),
            Item::True => Index::Small(1),
            Item::False => Index::Small(0),
            Item::Big(b) => Index::Big(short_int_text(self.big(b))),
            ref other => Index::NotInt(other.type_name()),
        }
    }

    fn type_name(obj: &Item<'a>) -> &'static str {
        obj.type_name()
    }
}
