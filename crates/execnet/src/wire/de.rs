//! serde Deserializer reading the opcode format (PROTOCOL.md section 3). HELPER-OWNED.
//!
//! Objects are postfix programs (a tuple's length comes after its items, while a list
//! or dict is announced first and filled by SETITEMs), so one stack machine
//! (`machine`) runs over the whole payload once and checks everything: opcodes,
//! lengths, stack shapes, hashability, UTF-8, nesting depth
//! ([`MAX_DEPTH`](super::MAX_DEPTH)), int sizes ([`MAX_INT_DIGITS`]), the memory lists
//! may announce; errors carry the byte offset. Duplicate dict keys and set members are
//! merged with Python's semantics (`1`, `1.0` and `True` are the same key) as each dict
//! and set is completed; list items, which cannot collide, cost no such work. The common
//! SETITEM of a scalar key and value goes into its list or dict directly, without the
//! stack (and whatever it cannot handle, errors included, takes the general path).
//!
//! The machine builds the object with a builder, in one of two ways:
//!
//! * into a [`Value`](super::value::Value) directly (`direct`), when the whole payload
//!   is loaded as a `Value` (`loads::<Value>`, a `Value` received from a channel, the
//!   bindings): no intermediate form at all;
//! * onto a `tape`, for every other type: the object laid out flat, a few vectors for
//!   the whole payload rather than one per container, with strs and bytes borrowed from
//!   the payload. The tape is then walked top-down and handed to serde visitors, one
//!   `Node` at a time; only big ints and non-ASCII PY2STRINGs are copied out. The same
//!   deserializer (`TreeDe`) presents `Value` trees (`Tree` nodes, for
//!   `from_value`), so that both take Python forms to serde alike, and a `Value` nested
//!   in a typed result is built from the tape in one step (`build_value`).
//!
//! Both builders get the same checks from the same machine, so both accept and refuse
//! the same payloads with the same messages (a property test and the `loads_value` fuzz
//! target hold them to it).
//!
//! Before all that, a load tries the streaming path (`stream`): for the layout every
//! dumper writes (lists and dicts announced first, scalars, str keys), serde's visitors
//! read the opcodes as they come, with no tape. It makes what the tape would, and gives
//! up at anything else and at any error; then the load starts again as above, so every
//! message still comes from the machine (a property test and the `loads_typed` fuzz
//! target compare the two paths).
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
    self, value::BorrowedStrDeserializer, value::StringDeserializer, DeserializeOwned, DeserializeSeed, Deserializer,
    EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::Deserialize;

use super::shared::{visit_big, KeyRef, Kind, MagicMap, PairDe, Tree};
use super::{
    current_gateway, CHANNEL_TOKEN, COMPLEX_TOKEN, DICT_TOKEN, FROZENSET_TOKEN, MAGIC_PREFIX, SET_TOKEN, TUPLE_TOKEN,
    VALUE_TOKEN,
};
use crate::error::{Error, Result};

mod direct;
mod machine;
mod stream;
mod tape;

use tape::{Item, Tape};

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
    if let Some(v) = stream::load(payload) {
        return Ok(v);
    }
    from_payload_tape(payload)
}

/// [`from_payload_borrowed`] without the streaming path: the stack machine, then the
/// tape (or the direct `Value`), which is what decides every load the streaming path
/// gives up on. Public for the fuzz targets, which hold both paths to the same results.
#[doc(hidden)]
pub fn from_payload_tape<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T> {
    T::deserialize(PayloadDe { payload })
}

/// The deserializer of a whole payload: a `Value` asks for [`VALUE_TOKEN`] first, and
/// gets one built by the stack machine itself (`direct`); every other type gets the
/// tape, walked by [`TreeDe`].
struct PayloadDe<'a> {
    payload: &'a [u8],
}

/// Deserializer methods of [`PayloadDe`] that load the tape and ask [`TreeDe`].
macro_rules! on_the_tape {
    ($($method:ident($($arg:ident: $ty:ty),*))*) => {$(
        fn $method<V: Visitor<'a>>(self, $($arg: $ty,)* v: V) -> Result<V::Value> {
            let (tape, root) = tape::load(self.payload)?;
            TreeDe::new(TapeNode { tape: &tape, item: &root }).$method($($arg,)* v)
        }
    )*};
}

impl<'a> Deserializer<'a> for PayloadDe<'a> {
    type Error = Error;

    fn deserialize_newtype_struct<V: Visitor<'a>>(self, name: &'static str, v: V) -> Result<V::Value> {
        if name == VALUE_TOKEN {
            return super::value::hand_over(direct::load_value(self.payload)?, v);
        }
        let (tape, root) = tape::load(self.payload)?;
        TreeDe::new(TapeNode { tape: &tape, item: &root }).deserialize_newtype_struct(name, v)
    }

    on_the_tape! {
        deserialize_any() deserialize_bool() deserialize_i8() deserialize_i16() deserialize_i32()
        deserialize_i64() deserialize_i128() deserialize_u8() deserialize_u16() deserialize_u32()
        deserialize_u64() deserialize_u128() deserialize_f32() deserialize_f64() deserialize_char()
        deserialize_str() deserialize_string() deserialize_bytes() deserialize_byte_buf()
        deserialize_option() deserialize_unit() deserialize_unit_struct(name: &'static str)
        deserialize_seq() deserialize_tuple(len: usize)
        deserialize_tuple_struct(name: &'static str, len: usize) deserialize_map()
        deserialize_struct(name: &'static str, fields: &'static [&'static str])
        deserialize_enum(name: &'static str, variants: &'static [&'static str])
        deserialize_identifier() deserialize_ignored_any()
    }
}

/// Checks that `payload` is one well-formed object (phase 1 only) and returns the Python
/// type name of that object.
pub fn validate_payload(payload: &[u8]) -> Result<&'static str> {
    let (_, root) = tape::load(payload)?;
    Ok(root.type_name())
}

// ---------------------------------------------------------------------------------------
// Phase 2: handing nodes to serde
// ---------------------------------------------------------------------------------------

/// A node that phase 2 can hand to serde visitors: one of a loaded tape ([`TapeNode`]),
/// or of a tree such as `Value` (any [`Tree`]).
pub(crate) trait Node<'de>: Sized {
    type Items: ExactSizeIterator<Item = Self>;
    type Entries: ExactSizeIterator<Item = (Self, Self)>;
    /// Takes the node apart.
    fn view(self) -> View<'de, Self>;
    fn is_none(&self) -> bool;
    /// The node built directly as a `Value`, when this kind of node can do so faster
    /// than serde's visitor (a loaded tape can); `None` to take the serde path.
    fn build_value(&self) -> Option<Result<super::value::Value>> {
        None
    }
}

/// A node taken apart: its Python form, containers with iterators over their children.
pub(crate) enum View<'de, N: Node<'de>> {
    None,
    Bool(bool),
    Int(i64),
    /// Only for values outside the i64 range.
    Big(BigInt),
    Float(f64),
    Complex(f64, f64),
    Str(Cow<'de, str>),
    Bytes(Cow<'de, [u8]>),
    List(N::Items),
    Tuple(N::Items),
    Set(N::Items),
    FrozenSet(N::Items),
    /// The entries, and whether the first key is a str starting with [`MAGIC_PREFIX`].
    Dict(N::Entries, bool),
    /// The gateway uid when known (a loaded payload leaves it to the gateway scope of
    /// the load), and the channel id.
    Channel(Option<u64>, i32),
}

impl<'de, N: Node<'de>> View<'de, N> {
    /// The Python type name.
    fn type_name(&self) -> &'static str {
        match self {
            View::None => "NoneType",
            View::Bool(_) => "bool",
            View::Int(_) | View::Big(_) => "int",
            View::Float(_) => "float",
            View::Complex(..) => "complex",
            View::Str(_) => "str",
            View::Bytes(_) => "bytes",
            View::List(_) => "list",
            View::Tuple(_) => "tuple",
            View::Dict(..) => "dict",
            View::Set(_) => "set",
            View::FrozenSet(_) => "frozenset",
            View::Channel(..) => "channel",
        }
    }
}

fn is_magic(key: Option<&str>) -> bool {
    key.is_some_and(|s| s.starts_with(MAGIC_PREFIX))
}

impl<'de, T: Tree<'de>> Node<'de> for T {
    type Items = std::vec::IntoIter<T>;
    type Entries = std::vec::IntoIter<(T, T)>;

    fn view(self) -> View<'de, T> {
        match self.into_kind() {
            Kind::None => View::None,
            Kind::Bool(b) => View::Bool(b),
            Kind::Int(i) => View::Int(i),
            Kind::Big(b) => View::Big(*b),
            Kind::Float(f) => View::Float(f),
            Kind::Complex(re, im) => View::Complex(re, im),
            Kind::Str(s) => View::Str(s),
            Kind::Bytes(b) => View::Bytes(b),
            Kind::List(items) => View::List(items.into_iter()),
            Kind::Tuple(items) => View::Tuple(items.into_iter()),
            Kind::Set(items) => View::Set(items.into_iter()),
            Kind::FrozenSet(items) => View::FrozenSet(items.into_iter()),
            Kind::Dict(entries) => {
                let magic = is_magic(entries.first().and_then(|(k, _)| k.as_str_ref()));
                View::Dict(entries.into_iter(), magic)
            }
            Kind::Channel(uid, id) => View::Channel(uid, id),
        }
    }

    fn is_none(&self) -> bool {
        matches!(self.key_ref(), KeyRef::None)
    }
}

/// A node of a loaded tape. Two pointers, so that it (and a [`TreeDe`] of it) is passed
/// in registers.
#[derive(Clone, Copy)]
pub(crate) struct TapeNode<'t, 'a> {
    tape: &'t Tape<'a>,
    item: &'t Item<'a>,
}

/// The children of a tape's list, tuple, set or frozenset.
pub(crate) struct TapeItems<'t, 'a> {
    tape: &'t Tape<'a>,
    iter: std::slice::Iter<'t, Item<'a>>,
}

impl<'t, 'a> Iterator for TapeItems<'t, 'a> {
    type Item = TapeNode<'t, 'a>;

    #[inline]
    fn next(&mut self) -> Option<TapeNode<'t, 'a>> {
        self.iter.next().map(|item| TapeNode { tape: self.tape, item })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}

impl ExactSizeIterator for TapeItems<'_, '_> {}

/// The entries of a tape's dict.
pub(crate) struct TapeEntries<'t, 'a> {
    tape: &'t Tape<'a>,
    iter: std::slice::Iter<'t, (Item<'a>, Item<'a>)>,
}

impl<'t, 'a> Iterator for TapeEntries<'t, 'a> {
    type Item = (TapeNode<'t, 'a>, TapeNode<'t, 'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let tape = self.tape;
        self.iter.next().map(|(k, v)| (TapeNode { tape, item: k }, TapeNode { tape, item: v }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}

impl ExactSizeIterator for TapeEntries<'_, '_> {}

impl<'t, 'a> Node<'a> for TapeNode<'t, 'a> {
    type Items = TapeItems<'t, 'a>;
    type Entries = TapeEntries<'t, 'a>;

    #[inline(always)]
    fn view(self) -> View<'a, Self> {
        let tape = self.tape;
        let items = |span| TapeItems { tape, iter: tape.items(span).iter() };
        match *self.item {
            Item::None => View::None,
            Item::True => View::Bool(true),
            Item::False => View::Bool(false),
            Item::Int(i) => View::Int(i),
            Item::Big(i) => View::Big(tape.big(i).clone()),
            Item::Float(f) => View::Float(f),
            Item::Complex(re, im) => View::Complex(re, im),
            Item::Str(s) => View::Str(Cow::Borrowed(s)),
            Item::Latin1(i) => View::Str(Cow::Owned(tape.string(i).to_owned())),
            Item::Bytes(b) => View::Bytes(Cow::Borrowed(b)),
            Item::List(span) => View::List(items(span)),
            Item::Tuple(span) => View::Tuple(items(span)),
            Item::Set(span) => View::Set(items(span)),
            Item::FrozenSet(span) => View::FrozenSet(items(span)),
            Item::Dict(span) => {
                let entries = tape.entries(span);
                let magic = is_magic(match entries.first() {
                    Some((Item::Str(s), _)) => Some(s),
                    Some((Item::Latin1(i), _)) => Some(tape.string(*i)),
                    _ => None,
                });
                View::Dict(TapeEntries { tape, iter: entries.iter() }, magic)
            }
            Item::Channel(id) => View::Channel(None, id as i32),
        }
    }

    fn is_none(&self) -> bool {
        matches!(self.item, Item::None)
    }

    fn build_value(&self) -> Option<Result<super::value::Value>> {
        Some(build_value(self.tape, self.item))
    }
}

/// Builds a `Value` straight from the tape, equal to what `ValueVisitor` makes of the
/// same node: the tape has already checked everything and merged dict keys and set
/// members, so containers are filled in place with their exact sizes.
fn build_value(tape: &Tape<'_>, item: &Item<'_>) -> Result<super::value::Value> {
    use super::value::{Complex, Dict, Value};
    let items = |span| -> Result<Vec<Value>> {
        let src = tape.items(span);
        let mut out = Vec::with_capacity(src.len());
        for it in src {
            out.push(build_value(tape, it)?);
        }
        Ok(out)
    };
    Ok(match *item {
        Item::None => Value::None,
        Item::True => Value::Bool(true),
        Item::False => Value::Bool(false),
        Item::Int(i) => Value::from(i),
        Item::Big(i) => Value::Int(super::value::Int::from_big(tape.big(i).clone())),
        Item::Float(f) => Value::Float(f),
        Item::Complex(re, im) => Value::Complex(Complex::new(re, im)),
        Item::Str(s) => Value::Str(s.to_owned()),
        Item::Latin1(i) => Value::Str(tape.string(i).to_owned()),
        Item::Bytes(b) => Value::Bytes(b.to_vec()),
        Item::List(span) => Value::List(items(span)?),
        Item::Tuple(span) => Value::Tuple(items(span)?),
        Item::Set(span) => Value::Set(items(span)?),
        Item::FrozenSet(span) => Value::FrozenSet(items(span)?),
        Item::Dict(span) => {
            let src = tape.entries(span);
            let mut entries = Vec::with_capacity(src.len());
            for (k, v) in src {
                entries.push((build_value(tape, k)?, build_value(tape, v)?));
            }
            Value::Dict(Dict::from_merged(entries))
        }
        Item::Channel(id) => Value::Channel(lookup_channel(id as i32)?),
    })
}

/// A whole payload as a `Value` built from the tape.
fn value_from_tape(payload: &[u8]) -> Result<super::value::Value> {
    let (tape, root) = tape::load(payload)?;
    build_value(&tape, &root)
}

/// The channel a loaded CHANNEL names, in the gateway the load runs for.
fn lookup_channel(id: i32) -> Result<crate::Channel> {
    let uid = channel_uid(None)?;
    super::resolve_channel(uid, id).map_err(<Error as de::Error>::custom)
}

/// A deserializer over one node (of a loaded tape or of a `Value`). When `TAGGED`, as
/// asked for by `Value`, tuples, sets and frozensets are presented as magic maps.
pub(crate) struct TreeDe<N, const TAGGED: bool = false> {
    node: N,
}

impl<N> TreeDe<N> {
    pub(crate) fn new(node: N) -> Self {
        TreeDe { node }
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

fn visit_items<'de, I, V>(items: I, v: V) -> Result<V::Value>
where
    I: ExactSizeIterator,
    I::Item: Node<'de>,
    V: Visitor<'de>,
{
    let len = items.len();
    let mut seq = SeqIter { iter: items };
    let out = v.visit_seq(&mut seq)?;
    let left = seq.iter.len();
    if left != 0 {
        return Err(de::Error::invalid_length(len, &format!("{} items", len - left).as_str()));
    }
    Ok(out)
}

fn visit_entries<'de, I, N, V>(entries: I, v: V) -> Result<V::Value>
where
    I: ExactSizeIterator<Item = (N, N)>,
    N: Node<'de>,
    V: Visitor<'de>,
{
    let len = entries.len();
    let mut map = MapIter { iter: entries, value: None };
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

/// The `deserialize_any` presentation of a node. Inlined, so that the caller's `view()`
/// and this match become one (a `View` written to memory and read back costs more than
/// the rest of loading a scalar).
#[inline(always)]
fn visit_view<'de, N: Node<'de>, V: Visitor<'de>>(view: View<'de, N>, tagged: bool, v: V) -> Result<V::Value> {
    match view {
        View::None => v.visit_unit(),
        View::Bool(b) => v.visit_bool(b),
        View::Int(i) => v.visit_i64(i),
        View::Big(b) => visit_big(b, v),
        View::Float(f) => v.visit_f64(f),
        View::Complex(re, im) => v.visit_map(MagicMap::new(COMPLEX_TOKEN, PairDe(re, im))),
        View::Str(s) => visit_str(s, v),
        View::Bytes(b) => visit_bytes(b, v),
        View::List(items) => visit_items(items, v),
        View::Tuple(items) if tagged => v.visit_map(MagicMap::new(TUPLE_TOKEN, SeqDe(items))),
        View::Set(items) if tagged => v.visit_map(MagicMap::new(SET_TOKEN, SeqDe(items))),
        View::FrozenSet(items) if tagged => v.visit_map(MagicMap::new(FROZENSET_TOKEN, SeqDe(items))),
        View::Tuple(items) | View::Set(items) | View::FrozenSet(items) => visit_items(items, v),
        View::Dict(entries, true) => v.visit_map(MagicMap::new(DICT_TOKEN, MapDe(entries))),
        View::Dict(entries, false) => visit_entries(entries, v),
        View::Channel(uid, id) => {
            let uid = channel_uid(uid)?;
            v.visit_map(MagicMap::new(CHANNEL_TOKEN, PairDe(uid, id)))
        }
    }
}

impl<'de, N: Node<'de>, const TAGGED: bool> TreeDe<N, TAGGED> {
    fn deserialize_int<V: Visitor<'de>>(self, ty: &str, v: V) -> Result<V::Value> {
        let view = self.node.view();
        if let View::Big(b) = &view {
            if b.to_i128().is_none() && b.to_u128().is_none() {
                return Err(Error::data_format(
                    format!("integer {} does not fit in {ty}", super::shared::short_int_text(b)),
                    None,
                ));
            }
        }
        visit_view(view, TAGGED, v)
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
            visit_view(self.node.view(), TAGGED, v)
        }
    )*};
}

impl<'de, N: Node<'de>, const TAGGED: bool> Deserializer<'de> for TreeDe<N, TAGGED> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        visit_view(self.node.view(), TAGGED, v)
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
        match self.node.view() {
            View::Str(Cow::Borrowed(s)) => v.visit_borrowed_bytes(s.as_bytes()),
            View::Str(Cow::Owned(s)) => v.visit_byte_buf(s.into_bytes()),
            view => visit_view(view, TAGGED, v),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        if self.node.is_none() {
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
            match self.node.view() {
                View::Channel(uid, id) => v.visit_newtype_struct(PairDe(channel_uid(uid)?, id)),
                view => Err(Error::data_format(format!("expected a channel, found {}", view.type_name()), None)),
            }
        } else if name == VALUE_TOKEN {
            match self.node.build_value() {
                Some(built) => super::value::hand_over(built?, v),
                None => v.visit_newtype_struct(TreeDe::<N, true> { node: self.node }),
            }
        } else {
            v.visit_newtype_struct(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.node.view() {
            View::List(items) | View::Tuple(items) | View::Set(items) | View::FrozenSet(items) => visit_items(items, v),
            View::Bytes(b) => de::value::SeqDeserializer::<_, Error>::new(b.iter().copied()).deserialize_any(v),
            view => visit_view(view, TAGGED, v),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _name: &'static str, _len: usize, v: V) -> Result<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.node.view() {
            View::Dict(entries, _) => visit_entries(entries, v),
            view => visit_view(view, TAGGED, v),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        match self.node.view() {
            View::Dict(entries, _) => visit_entries(entries, v),
            View::List(items) | View::Tuple(items) => visit_items(items, v),
            view => visit_view(view, TAGGED, v),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        match self.node.view() {
            View::Str(Cow::Borrowed(s)) => v.visit_enum(BorrowedStrDeserializer::<Error>::new(s)),
            View::Str(Cow::Owned(s)) => v.visit_enum(StringDeserializer::<Error>::new(s)),
            View::Dict(mut entries, _) if entries.len() == 1 => {
                let (key, value) = entries.next().expect("one entry");
                v.visit_enum(EnumDe { key, value })
            }
            View::Dict(entries, _) => Err(Error::data_format(
                format!(
                    "enum {name}: expected a str (unit variant) or a dict with one entry \
                     {{variant: value}}, found a dict with {} entries",
                    entries.len()
                ),
                None,
            )),
            view => Err(Error::data_format(
                format!(
                    "enum {name}: expected a str (unit variant) or a dict with one entry \
                     {{variant: value}}, found {}",
                    view.type_name()
                ),
                None,
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        drop(self.node);
        v.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        true
    }
}

struct SeqIter<I> {
    iter: I,
}

impl<'de, I> SeqAccess<'de> for SeqIter<I>
where
    I: ExactSizeIterator,
    I::Item: Node<'de>,
{
    type Error = Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>> {
        match self.iter.next() {
            Some(node) => seed.deserialize(TreeDe::new(node)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapIter<I, N> {
    iter: I,
    value: Option<N>,
}

impl<'de, I, N> MapAccess<'de> for MapIter<I, N>
where
    I: ExactSizeIterator<Item = (N, N)>,
    N: Node<'de>,
{
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
struct SeqDe<I>(I);

impl<'de, I> Deserializer<'de> for SeqDe<I>
where
    I: ExactSizeIterator,
    I::Item: Node<'de>,
{
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
struct MapDe<I>(I);

impl<'de, I, N> Deserializer<'de> for MapDe<I>
where
    I: ExactSizeIterator<Item = (N, N)>,
    N: Node<'de>,
{
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

struct EnumDe<N> {
    key: N,
    value: N,
}

impl<'de, N: Node<'de>> EnumAccess<'de> for EnumDe<N> {
    type Error = Error;
    type Variant = VariantDe<N>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, VariantDe<N>)> {
        let variant = seed.deserialize(TreeDe::new(self.key))?;
        Ok((variant, VariantDe(self.value)))
    }
}

struct VariantDe<N>(N);

impl<'de, N: Node<'de>> VariantAccess<'de> for VariantDe<N> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        match self.0.view() {
            View::None => Ok(()),
            view => Err(Error::data_format(
                format!("a unit variant takes no value (None), found {}", view.type_name()),
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
    use crate::wire::MAX_DEPTH;
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

    /// The serde path into `Value` (`ValueVisitor` over the tagged tape deserializer),
    /// which the direct builder replaced.
    fn load_via_serde(payload: &[u8]) -> Result<Value> {
        let (tape, root) = tape::load(payload)?;
        TreeDe::<_, true> { node: TapeNode { tape: &tape, item: &root } }.deserialize_any(crate::wire::value::ValueVisitor)
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (0u8..4).prop_map(|i| Value::from(i as i64)),
            any::<f64>().prop_map(Value::Float),
            (0u8..3).prop_map(|i| Value::Float(i as f64)),
            any::<u128>().prop_map(Value::from),
            any::<String>().prop_map(Value::Str),
            "[a-c]{0,2}".prop_map(Value::Str),
            Just(Value::Str(format!("{MAGIC_PREFIX}x"))),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                (0u8..4).prop_map(|i| Value::from(i as i64)),
                (0u8..3).prop_map(|i| Value::Float(i as f64)),
                any::<bool>().prop_map(Value::Bool),
                "[a-c]{0,2}".prop_map(Value::Str),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
                proptest::collection::vec(key.clone(), 0..6).prop_map(Value::set),
                proptest::collection::vec(key.clone(), 0..6).prop_map(Value::frozenset),
                proptest::collection::vec((key, inner), 0..6)
                    .prop_map(|e| Value::Dict(crate::wire::value::Dict::from_merged(e))),
            ]
        })
    }

    /// What a load made of a payload, comparable across the ways of loading.
    pub(super) fn outcome<T: std::fmt::Debug>(r: &Result<T>) -> String {
        match r {
            Ok(v) => format!("ok {v:?}"),
            Err(e) => format!("error {e}"),
        }
    }

    proptest::proptest! {
        /// The three ways into a Value make exactly the same value: the stack machine
        /// building it directly (a whole payload), the tape builder (a Value nested in a
        /// typed result) and the serde path (dicts written with duplicate keys included,
        /// which the loader merges).
        #[test]
        fn direct_value_builder_equals_serde_path(v in arb_value()) {
            let payload = to_payload_vec(&v).unwrap();
            let direct: Value = from_payload(&payload).unwrap();
            let serde = load_via_serde(&payload).unwrap();
            let tape = value_from_tape(&payload).unwrap();
            proptest::prop_assert_eq!(format!("{direct:?}"), format!("{serde:?}"));
            proptest::prop_assert_eq!(format!("{direct:?}"), format!("{tape:?}"));
        }

        /// Damaged payloads (bytes overwritten, the end cut off) are accepted or refused
        /// alike by the direct and the tape way, with the same message and offset.
        #[test]
        fn direct_and_tape_loads_refuse_alike(
            v in arb_value(),
            damage in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..4),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let mut payload = to_payload_vec(&v).unwrap();
            for (at, byte) in damage {
                let at = at % payload.len();
                payload[at] = byte;
            }
            if cut % 3 == 0 {
                payload.truncate(cut % (payload.len() + 1));
            }
            let direct = from_payload::<Value>(&payload);
            proptest::prop_assert_eq!(outcome(&direct), outcome(&value_from_tape(&payload)));
            // What the machine refuses, every way refuses the same (a well-formed payload
            // can still fail to load, when it holds a channel and no gateway is there).
            if let Err(e) = validate_payload(&payload) {
                proptest::prop_assert_eq!(outcome(&direct), format!("error {e}"));
            }
        }
    }

    #[test]
    fn direct_value_builder_errors_like_serde_path() {
        // a channel outside a gateway, nested
        let p = unhex("4B 00000001 46 00000000 42 00000007 50 51");
        let p = &p[..];
        let (a, b) = (from_payload::<Value>(p), load_via_serde(p));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        // A channel (outside a gateway) where SETITEM wants an int index or a container:
        // the direct builder cannot make the channel, and still names its type (the
        // loads_value fuzz target found it saying NoneType).
        for (h, what) in [
            ("4B 00000001 42 00000007 4C 50 51", "list index must be an int, not channel"),
            ("42 00000007 4C 4C 50 51", "SETITEM at byte 7 on a channel"),
            // the channel is replaced by a later SETITEM: nothing to look up, no error
            // (the CI fuzz run found the direct path failing it)
            ("4B 00000001 46 00000000 42 00000007 50 46 00000000 4C 50 51", "ok List([None])"),
        ] {
            let p = unhex(h);
            let direct = outcome(&from_payload::<Value>(&p));
            assert!(direct.contains(what), "{direct}");
            assert_eq!(direct, outcome(&value_from_tape(&p)));
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
        let p = to_payload_vec(&Value::dict([("a", Value::from(1)), ("b", Value::None), ("c", Value::bytes(*b"xy"))]))
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
                fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Token, D::Error> {
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

    /// A tiny assembler for payloads in tests.
    mod asm {
        pub fn int(i: i32) -> Vec<u8> {
            let mut v = vec![b'F'];
            v.extend(i.to_be_bytes());
            v
        }
        pub fn float(f: f64) -> Vec<u8> {
            let mut v = vec![b'D'];
            v.extend(f.to_be_bytes());
            v
        }
        pub fn text(op: u8, b: &[u8]) -> Vec<u8> {
            let mut v = vec![op];
            v.extend((b.len() as i32).to_be_bytes());
            v.extend(b);
            v
        }
        pub fn s(t: &str) -> Vec<u8> {
            text(b'N', t.as_bytes())
        }
        pub fn counted(op: u8, n: i32) -> Vec<u8> {
            let mut v = vec![op];
            v.extend(n.to_be_bytes());
            v
        }
        pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
            parts.concat()
        }
    }
    use asm::*;

    fn load_bytes(p: &[u8]) -> Value {
        from_payload(p).unwrap_or_else(|e| panic!("{e} loading {p:02x?}"))
    }

    #[test]
    fn dicts_leaving_the_stack_together_keep_their_own_entries() {
        // ({'a': 1, 'b': {'c': 2}}, {'d': 3}): two dicts with entries are tuple members,
        // and the first has a dict value completed while it was open.
        let d1 = cat(&[b"J", &s("a"), &int(1), b"P", &s("b"), b"J", &s("c"), &int(2), b"P", b"P"]);
        let d2 = cat(&[b"J", &s("d"), &int(3), b"P"]);
        let p = cat(&[&d1, &d2, &counted(b'@', 2), b"Q"]);
        let want = Value::tuple([
            Value::dict([("a", Value::from(1)), ("b", Value::dict([("c", 2)]))]),
            Value::dict([("d", 3)]),
        ]);
        assert_eq!(load_bytes(&p), want);
        // The same dicts as a list's items, the inner one set while the outer is open.
        let p = cat(&[&counted(b'K', 2), &int(1), &d2, b"P", &int(0), &d1, b"P", b"Q"]);
        let want = Value::list([
            Value::dict([("a", Value::from(1)), ("b", Value::dict([("c", 2)]))]),
            Value::dict([("d", 3)]),
        ]);
        assert_eq!(load_bytes(&p), want);
        // A dict as the value of a dict that is itself the value of a dict.
        let p = cat(&[b"J", &s("x"), b"J", &s("y"), &d2, b"P", &s("z"), &int(4), b"P", b"P", b"Q"]);
        let v = load_bytes(&p);
        let want = Value::dict([("x", Value::dict([("y", Value::dict([("d", 3)])), ("z", Value::from(4))]))]);
        assert_eq!(v, want);
    }

    #[test]
    fn merging_like_python_on_the_tape() {
        // {1: {'a': 1}, True: {'b': 2}, 1.0: 3, 'k': 4}: the first key stays, with the
        // last value, in the first key's place.
        let p = cat(&[
            b"J",
            &int(1),
            b"J",
            &s("a"),
            &int(1),
            b"P",
            b"P",
            b"R",
            b"J",
            &s("b"),
            &int(2),
            b"P",
            b"P",
            &float(1.0),
            &int(3),
            b"P",
            &s("k"),
            &int(4),
            b"P",
            b"Q",
        ]);
        let v = load_bytes(&p);
        let d = v.as_dict().unwrap();
        assert_eq!(d.entries(), &[(Value::from(1), Value::from(3)), (Value::from("k"), Value::from(4))]);
        assert_eq!(from_payload::<HashMap<i64, i64>>(&cat(&[&p[..p.len() - 13], b"Q"])).unwrap(), [(1, 3)].into());
        // A PY2STRING (Latin-1) key equals the same text as a PY3STRING key.
        let p = cat(&[b"J", &text(b'M', b"\xe9"), &int(1), b"P", &s("\u{e9}"), &int(2), b"P", b"Q"]);
        assert_eq!(load_bytes(&p), Value::dict([("\u{e9}", 2)]));
        // 2**64 as LONGINT and as a float are the same key.
        let p = cat(&[
            b"J",
            &text(b'H', b"18446744073709551616"),
            &int(1),
            b"P",
            &float(2f64.powi(64)),
            &int(2),
            b"P",
            b"Q",
        ]);
        let v = load_bytes(&p);
        assert_eq!(v.as_dict().unwrap().len(), 1);
        // More than a handful of keys take the hashed path: (0, 0) .. (9, 0), then
        // (0.0, False) again.
        let mut p = vec![b'J'];
        for i in 0..10 {
            p.extend(cat(&[&int(i), &int(0), &counted(b'@', 2), &int(i), b"P"]));
        }
        p.extend(cat(&[&float(0.0), b"C", &counted(b'@', 2), &s("last"), b"P", b"Q"]));
        let v = load_bytes(&p);
        let d = v.as_dict().unwrap();
        assert_eq!(d.len(), 10);
        assert_eq!(d.entries()[0], (Value::tuple([0, 0]), Value::from("last")));
    }

    #[test]
    fn sets_of_tuples_and_frozensets_merge_like_python() {
        // {(1, 2), (1.0, 2), (True, 2.0), (2, 1)} == {(1, 2), (2, 1)}
        let t = |a: &[u8], b: &[u8]| cat(&[a, b, &counted(b'@', 2)]);
        let p = cat(&[
            &t(&int(1), &int(2)),
            &t(&float(1.0), &int(2)),
            &t(b"R", &float(2.0)),
            &t(&int(2), &int(1)),
            &counted(b'O', 4),
            b"Q",
        ]);
        assert_eq!(load_bytes(&p), Value::Set(vec![Value::tuple([1, 2]), Value::tuple([2, 1])]));
        // frozenset({1, 2}) and frozenset({2, 1}) are one dict key.
        let fs = |a: i32, b: i32| cat(&[&int(a), &int(b), &counted(b'E', 2)]);
        let p = cat(&[b"J", &fs(1, 2), &s("a"), b"P", &fs(2, 1), &s("b"), b"P", b"Q"]);
        let v = load_bytes(&p);
        assert_eq!(v.as_dict().unwrap().entries(), &[(Value::frozenset([1, 2]), Value::from("b"))]);
        // A set member may not be a dict, even an empty one.
        let p = cat(&[b"J", &counted(b'O', 1), b"Q"]);
        let (msg, off) = match from_payload::<Value>(&p).unwrap_err() {
            Error::DataFormat { message, offset } => (message, offset),
            e => panic!("{e}"),
        };
        assert!(msg.contains("unhashable member of type dict"), "{msg}");
        assert_eq!(off, Some(1));
    }

    #[test]
    fn setitem_shortcuts_fall_back_to_the_general_errors() {
        let err_of = |p: &[u8]| match from_payload::<Value>(p).unwrap_err() {
            Error::DataFormat { message, offset } => (message, offset),
            e => panic!("{e}"),
        };
        // Scalar key and value after the list: index out of range, then a str index.
        let (m, o) = err_of(&cat(&[&counted(b'K', 1), &int(-2), b"L", b"P", b"Q"]));
        assert!(m.contains("list index -2 out of range for a list of 1 items"), "{m}");
        assert_eq!(o, Some(11));
        let (m, o) = err_of(&cat(&[&counted(b'K', 1), &s("i"), b"L", b"P", b"Q"]));
        assert!(m.contains("list index must be an int, not str"), "{m}");
        assert_eq!(o, Some(12));
        // A bad value right after a key: its own error and offset.
        let (m, o) = err_of(&cat(&[b"J", &s("k"), &text(b'N', b"\xff"), b"P", b"Q"]));
        assert!(m.contains("invalid UTF-8 in the PY3STRING at byte 7"), "{m}");
        assert_eq!(o, Some(12));
        let (m, o) = err_of(&cat(&[b"J", &s("k"), b"F\0\0"]));
        assert!(m.contains("INT at byte 7 needs 4 operand bytes, only 2 left"), "{m}");
        assert_eq!(o, Some(8));
        // A key and value without SETITEM stay on the stack.
        let (m, o) = err_of(&cat(&[b"J", &s("k"), &int(1), b"Q"]));
        assert!(m.contains("STOP at byte 12 with 3 items"), "{m}");
        assert_eq!(o, Some(12));
        // SETITEM on a scalar, found after the key and value.
        let (m, _) = err_of(&cat(&[&int(0), &int(1), &int(2), b"P", b"Q"]));
        assert!(m.contains("SETITEM at byte 15 on a int"), "{m}");
        // The shortcuts and the general path build the same list: negative and bool
        // indices, a later SETITEM replacing an earlier one, a tuple value.
        let p = cat(&[
            &counted(b'K', 3),
            &int(-1),
            &s("c"),
            b"P",
            b"R",
            &s("b"),
            b"P",
            &int(0),
            &s("x"),
            b"P",
            &int(0),
            &int(7),
            &int(8),
            &counted(b'@', 2),
            b"P",
            b"Q",
        ]);
        assert_eq!(load_bytes(&p), Value::list([Value::tuple([7, 8]), "b".into(), "c".into()]));
        // A dict key that is a tuple of scalars.
        let p = cat(&[b"J", &int(1), &int(2), &counted(b'@', 2), &s("v"), b"P", b"Q"]);
        assert_eq!(load_bytes(&p), Value::dict([(Value::tuple([1, 2]), Value::from("v"))]));
    }

    #[test]
    fn depth_limit_counts_dicts_and_mixed_containers() {
        let nested = |levels: usize| {
            let mut p = Vec::new();
            for i in 0..levels {
                if i % 2 == 0 {
                    p.extend(cat(&[b"J", &s("k")]));
                } else {
                    p.extend(cat(&[&counted(b'K', 1), &int(0)]));
                }
            }
            p.push(b'L');
            p.resize(p.len() + levels, b'P');
            p.push(b'Q');
            p
        };
        let ok = nested(MAX_DEPTH);
        // Dicts take more stack than lists; a debug build needs more than 2 MiB here (as
        // it did before the tape).
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || {
                let v: Value = from_payload(&ok).unwrap();
                assert_eq!(to_payload_vec(&v).unwrap(), ok);
            })
            .unwrap()
            .join()
            .unwrap();
        let deep = nested(MAX_DEPTH + 1);
        match from_payload::<Value>(&deep).unwrap_err() {
            Error::DataFormat { message, offset } => {
                assert!(message.contains("nested deeper than the limit"), "{message}");
                // The SETITEM that makes the outermost container one level too deep.
                assert_eq!(offset, Some(deep.len() - 2));
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn typed_loads_agree_with_loading_a_value_first() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct R {
            name: String,
            n: Option<i64>,
            t: (u8, String),
            set: Vec<i32>,
        }
        let r = Value::dict([
            ("name", Value::from("x")),
            ("n", Value::None),
            ("t", Value::tuple([Value::from(1), "y".into()])),
            ("set", Value::set([3, 1])),
        ]);
        let p = to_payload_vec(&Value::list([r.clone(), r])).unwrap();
        let direct: Vec<R> = from_payload(&p).unwrap();
        let via: Vec<R> = crate::wire::value::from_value(from_payload::<Value>(&p).unwrap()).unwrap();
        assert_eq!(direct, via);
        fn same<T: serde::de::DeserializeOwned + std::fmt::Debug>(p: &[u8]) {
            let direct = from_payload::<T>(p).map_err(|e| e.to_string());
            let via = from_payload::<Value>(p)
                .map_err(|e| e.to_string())
                .and_then(|v| crate::wire::value::from_value::<T>(v).map_err(|e| e.to_string()));
            assert_eq!(format!("{direct:?}"), format!("{via:?}"), "{p:02x?}");
        }
        let payloads = [
            Value::list([Value::from(1), Value::from(-2)]),
            Value::tuple([Value::from("a"), Value::bytes(*b"b")]),
            Value::dict([("Sized", 5)]),
            Value::dict([(crate::wire::CHANNEL_TOKEN, Value::tuple([1, 2]))]),
            Value::frozenset([Value::from(2.5)]),
            "1".repeat(60).parse::<crate::Int>().unwrap().into(),
            Value::Complex(crate::wire::value::Complex::new(1.0, 2.0)),
        ];
        for v in payloads {
            let p = to_payload_vec(&v).unwrap();
            same::<Vec<i64>>(&p);
            same::<(String, serde_bytes::ByteBuf)>(&p);
            same::<HashMap<String, i64>>(&p);
            same::<Option<Vec<f64>>>(&p);
            same::<u128>(&p);
            same::<Value>(&p);
            same::<(f64, f64)>(&p);
        }
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
