//! [`Value`]: any Python value the wire format carries, like `serde_json::Value` for JSON.
//!
//! HELPER-OWNED: the wire helper implements Serialize/Deserialize, to_value/from_value,
//! Int, Dict and the accessors here. The type definitions below are the agreed contract.
//!
//! * [`to_value`] turns any `Serialize` into a `Value`, [`from_value`] any `Value` into a
//!   `DeserializeOwned` (with the same mapping as the wire format, see [`super::ser`] and
//!   [`super::de`]).
//! * `Display` prints the Python literal (`repr`) of a value.
//! * Dict keys and set members follow Python's equality: `1`, `1.0`, `True` and `1+0j` are
//!   the same key, `frozenset` compares as a set.
//! * `Vec<u8>` converts (and serializes) to a **list** of ints, as serde does; use
//!   [`Value::bytes`], `Value::Bytes` or `serde_bytes` for Python `bytes`.
//! * [`Tuple`], [`Set`] and [`FrozenSet`] wrap a Rust sequence so that it is sent as a
//!   Python tuple (of any length), set or frozenset.

mod value_ser;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use num_bigint::BigInt;
use num_traits::ToPrimitive;
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

pub use self::value_ser::to_value;
use super::de::TreeDe;
use super::pyrepr;
use super::shared::{Dedup, KeyRef, Kind, Num, PyKey, Tree};
use super::{
    BIGINT_TOKEN, CHANNEL_TOKEN, COMPLEX_TOKEN, DICT_TOKEN, FROZENSET_TOKEN, MAGIC_PREFIX, SET_TOKEN,
    TUPLE_TOKEN, VALUE_TOKEN,
};
use crate::error::{Error, Result};
use crate::Channel;

/// An integer of any size (Python `int`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Int(pub(crate) IntRepr);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum IntRepr {
    /// Every value that fits an i64 is stored here (the representation is canonical).
    Small(i64),
    Big(num_bigint::BigInt),
}

/// A Python complex number.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Complex {
    /// The real part.
    pub re: f64,
    /// The imaginary part.
    pub im: f64,
}

/// A Python dict: entries in insertion order, keys of any hashable Python type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dict {
    pub(crate) entries: Vec<(Value, Value)>,
}

/// Any Python value the wire format carries.
///
/// Build one from Rust values with `From`/`Into`; it displays as the Python literal, and
/// goes through [`dumps`](crate::dumps) and [`loads`](crate::loads) unchanged.
///
/// ```
/// use execnet::{Dict, Value};
///
/// let mut dict = Dict::new();
/// dict.insert("name", "gw0");
/// dict.insert("ports", vec![8888, 8889]);
/// let value = Value::from(dict);
/// assert_eq!(value.to_string(), "{'name': 'gw0', 'ports': [8888, 8889]}");
///
/// let back: Value = execnet::loads(&execnet::dumps(&value)?)?;
/// assert_eq!(back, value);
/// let name = back.as_dict().and_then(|d| d.get(&Value::from("name")));
/// assert_eq!(name.and_then(Value::as_str), Some("gw0"));
/// # Ok::<(), execnet::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `None` (the default).
    #[default]
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An `int` of any size.
    Int(Int),
    /// A `float`.
    Float(f64),
    /// A `complex`.
    Complex(Complex),
    /// A `str` (Python 2 `str` and `unicode` load as this too).
    Str(String),
    /// A `bytes` object.
    Bytes(Vec<u8>),
    /// A `list`.
    List(Vec<Value>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A `dict`.
    Dict(Dict),
    /// A `set`, its members in the order they were written.
    Set(Vec<Value>),
    /// A `frozenset`, its members in the order they were written.
    FrozenSet(Vec<Value>),
    /// A channel of the gateway the value was received from (or is to be sent on).
    Channel(Channel),
}

// ---------------------------------------------------------------------------------------
// Int
// ---------------------------------------------------------------------------------------

impl Int {
    pub(crate) fn from_big(b: BigInt) -> Int {
        match b.to_i64() {
            Some(i) => Int(IntRepr::Small(i)),
            None => Int(IntRepr::Big(b)),
        }
    }

    /// The value as an i64, when it fits.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.0 {
            IntRepr::Small(i) => Some(*i),
            IntRepr::Big(_) => None,
        }
    }

    /// The value as a u64, when it fits.
    pub fn as_u64(&self) -> Option<u64> {
        match &self.0 {
            IntRepr::Small(i) => u64::try_from(*i).ok(),
            IntRepr::Big(b) => b.to_u64(),
        }
    }

    /// The value as an i128, when it fits.
    pub fn as_i128(&self) -> Option<i128> {
        match &self.0 {
            IntRepr::Small(i) => Some(*i as i128),
            IntRepr::Big(b) => b.to_i128(),
        }
    }

    /// The value as a u128, when it fits.
    pub fn as_u128(&self) -> Option<u128> {
        match &self.0 {
            IntRepr::Small(i) => u128::try_from(*i).ok(),
            IntRepr::Big(b) => b.to_u128(),
        }
    }

    /// The value as a big integer.
    pub fn to_bigint(&self) -> BigInt {
        match &self.0 {
            IntRepr::Small(i) => BigInt::from(*i),
            IntRepr::Big(b) => b.clone(),
        }
    }

    /// The nearest float (as Python's `float(i)`, but infinite instead of an
    /// OverflowError for huge values).
    pub fn to_f64(&self) -> f64 {
        match &self.0 {
            IntRepr::Small(i) => *i as f64,
            IntRepr::Big(b) => b.to_f64().unwrap_or(f64::NAN),
        }
    }
}

macro_rules! int_from_small {
    ($($t:ty)*) => {$(
        impl From<$t> for Int {
            fn from(v: $t) -> Int {
                Int(IntRepr::Small(v as i64))
            }
        }
    )*};
}
int_from_small!(i8 i16 i32 i64 u8 u16 u32);

macro_rules! int_from_wide {
    ($($t:ty)*) => {$(
        impl From<$t> for Int {
            fn from(v: $t) -> Int {
                match i64::try_from(v) {
                    Ok(i) => Int(IntRepr::Small(i)),
                    Err(_) => Int(IntRepr::Big(BigInt::from(v))),
                }
            }
        }
    )*};
}
int_from_wide!(u64 i128 u128 isize usize);

impl From<BigInt> for Int {
    fn from(b: BigInt) -> Int {
        Int::from_big(b)
    }
}

impl From<&BigInt> for Int {
    fn from(b: &BigInt) -> Int {
        match b.to_i64() {
            Some(i) => Int(IntRepr::Small(i)),
            None => Int(IntRepr::Big(b.clone())),
        }
    }
}

impl From<Int> for BigInt {
    fn from(i: Int) -> BigInt {
        match i.0 {
            IntRepr::Small(i) => BigInt::from(i),
            IntRepr::Big(b) => b,
        }
    }
}

impl PartialOrd for Int {
    fn partial_cmp(&self, other: &Int) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Numeric order.
impl Ord for Int {
    fn cmp(&self, other: &Int) -> Ordering {
        match (&self.0, &other.0) {
            (IntRepr::Small(a), IntRepr::Small(b)) => a.cmp(b),
            (IntRepr::Big(a), IntRepr::Big(b)) => a.cmp(b),
            // A big value lies outside the i64 range: its sign decides.
            (IntRepr::Small(_), IntRepr::Big(b)) => {
                if b.sign() == num_bigint::Sign::Minus {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (IntRepr::Big(_), IntRepr::Small(_)) => other.cmp(self).reverse(),
        }
    }
}

impl fmt::Display for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            IntRepr::Small(i) => fmt::Display::fmt(i, f),
            IntRepr::Big(b) => fmt::Display::fmt(b, f),
        }
    }
}

/// Parses decimal text: an optional sign, then digits.
impl FromStr for Int {
    type Err = num_bigint::ParseBigIntError;

    fn from_str(s: &str) -> std::result::Result<Int, Self::Err> {
        if let Ok(i) = s.parse::<i64>() {
            return Ok(Int(IntRepr::Small(i)));
        }
        s.parse::<BigInt>().map(Int::from_big)
    }
}

impl Serialize for Int {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.0 {
            IntRepr::Small(i) => s.serialize_i64(*i),
            IntRepr::Big(b) => s.serialize_newtype_struct(BIGINT_TOKEN, &b.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Int, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Int, E> {
                Ok(v.into())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Int, E> {
                Ok(v.into())
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> std::result::Result<Int, E> {
                Ok(v.into())
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> std::result::Result<Int, E> {
                Ok(v.into())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Int, E> {
                v.parse().map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Int, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Int, A::Error> {
                let key: Option<String> = map.next_key()?;
                if key.as_deref() != Some(BIGINT_TOKEN) {
                    return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
                }
                let text: String = map.next_value()?;
                end_magic(&mut map)?;
                text.parse().map_err(|_| de::Error::invalid_value(de::Unexpected::Str(&text), &self))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------
// Complex
// ---------------------------------------------------------------------------------------

impl Complex {
    /// The complex number `re + im*j`.
    pub fn new(re: f64, im: f64) -> Complex {
        Complex { re, im }
    }
}

impl fmt::Display for Complex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&pyrepr::py_complex_repr(self.re, self.im))
    }
}

impl Serialize for Complex {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(COMPLEX_TOKEN, &(self.re, self.im))
    }
}

impl<'de> Deserialize<'de> for Complex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Complex, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Complex;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a complex number (or a real number, or a pair (re, im))")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Complex, E> {
                Ok(Complex::new(v, 0.0))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Complex, E> {
                Ok(Complex::new(v as f64, 0.0))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Complex, E> {
                Ok(Complex::new(v as f64, 0.0))
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Complex, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Complex, A::Error> {
                let re = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let im = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                Ok(Complex::new(re, im))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Complex, A::Error> {
                let key: Option<String> = map.next_key()?;
                if key.as_deref() != Some(COMPLEX_TOKEN) {
                    return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
                }
                let (re, im): (f64, f64) = map.next_value()?;
                end_magic(&mut map)?;
                Ok(Complex::new(re, im))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------
// Tuple, Set, FrozenSet wrappers
// ---------------------------------------------------------------------------------------

/// Sends the wrapped sequence (a `Vec`, a slice, any serde sequence) as a Python tuple.
/// Rust tuples are sent as Python tuples already; this is for tuples of any length.
/// Receiving accepts any Python sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Tuple<T>(pub T);

/// Sends the wrapped sequence (such as a `HashSet` or `BTreeSet`) as a Python set.
/// Receiving accepts any Python sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Set<T>(pub T);

/// Sends the wrapped sequence as a Python frozenset (which, unlike a set, can be a dict
/// key). Receiving accepts any Python sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FrozenSet<T>(pub T);

macro_rules! wrapper_serde {
    ($($name:ident $token:ident),*) => {$(
        impl<T: Serialize> Serialize for $name<T> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_newtype_struct($token, &self.0)
            }
        }
        impl<'de, T: Deserialize<'de>> Deserialize<'de> for $name<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                T::deserialize(d).map($name)
            }
        }
    )*};
}
wrapper_serde!(Tuple TUPLE_TOKEN, Set SET_TOKEN, FrozenSet FROZENSET_TOKEN);

// ---------------------------------------------------------------------------------------
// Dict
// ---------------------------------------------------------------------------------------

/// The iterator of [`Dict::iter`].
pub type DictIter<'a> =
    std::iter::Map<std::slice::Iter<'a, (Value, Value)>, fn(&'a (Value, Value)) -> (&'a Value, &'a Value)>;

impl Dict {
    /// An empty dict.
    pub fn new() -> Dict {
        Dict { entries: Vec::new() }
    }

    /// An empty dict with room for `n` entries.
    pub fn with_capacity(n: usize) -> Dict {
        Dict { entries: Vec::with_capacity(n) }
    }

    /// A dict from entries, applied in order as `d[k] = v` does (a later equal key
    /// replaces the value and keeps the first key's place).
    pub fn from_entries(mut entries: Vec<(Value, Value)>) -> Dict {
        Dedup::default().dict(&mut entries);
        Dict { entries }
    }

    /// A dict from entries whose keys are already merged (all distinct).
    pub(crate) fn from_merged(entries: Vec<(Value, Value)>) -> Dict {
        Dict { entries }
    }

    fn position(&self, key: &Value) -> Option<usize> {
        self.entries.iter().position(|(k, _)| super::shared::py_eq(k, key))
    }

    /// `d[key] = value`: replaces the value of an equal key (Python equality, so `1` and
    /// `True` are the same key) and returns the old value, or appends a new entry.
    /// Takes linear time; [`FromIterator`] and [`Extend`] build big dicts faster.
    pub fn insert(&mut self, key: impl Into<Value>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// The value of the key equal to `key` (Python equality). Linear time.
    pub fn get(&self, key: &Value) -> Option<&Value> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    /// The value of the str key `key`. Linear time.
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// A mutable reference to the value of the key equal to `key`.
    pub fn get_mut(&mut self, key: &Value) -> Option<&mut Value> {
        self.position(key).map(move |i| &mut self.entries[i].1)
    }

    /// Whether a key equal to `key` is present.
    pub fn contains_key(&self, key: &Value) -> bool {
        self.position(key).is_some()
    }

    /// Removes the entry of the key equal to `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &Value) -> Option<Value> {
        self.position(key).map(|i| self.entries.remove(i).1)
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> DictIter<'_> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The keys in insertion order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator + '_ {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values in insertion order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator + '_ {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The entries as a slice.
    pub fn entries(&self) -> &[(Value, Value)] {
        &self.entries
    }

    /// The entries, by value.
    pub fn into_entries(self) -> Vec<(Value, Value)> {
        self.entries
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the dict has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Into<Value>, V: Into<Value>> FromIterator<(K, V)> for Dict {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Dict {
        Dict::from_entries(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<K: Into<Value>, V: Into<Value>> Extend<(K, V)> for Dict {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.extend(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
        *self = Dict::from_entries(entries);
    }
}

impl IntoIterator for Dict {
    type Item = (Value, Value);
    type IntoIter = std::vec::IntoIter<(Value, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Dict {
    type Item = (&'a Value, &'a Value);
    type IntoIter = DictIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Display for Dict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_dict(&mut s, &self.entries);
        f.write_str(&s)
    }
}

impl Serialize for Dict {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Dict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Dict, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dict;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a dict")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Dict, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some(e) = map.next_entry()? {
                    entries.push(e);
                }
                Ok(Dict::from_entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------------------
// Value: constructors, accessors, conversions
// ---------------------------------------------------------------------------------------

impl Value {
    /// A Python `bytes` value.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(b.into())
    }

    /// A Python list of the items.
    pub fn list<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
        Value::List(items.into_iter().map(Into::into).collect())
    }

    /// A Python tuple of the items.
    pub fn tuple<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
        Value::Tuple(items.into_iter().map(Into::into).collect())
    }

    /// A Python set of the items (duplicates, by Python equality, are dropped).
    pub fn set<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
        let mut v: Vec<Value> = items.into_iter().map(Into::into).collect();
        Dedup::default().set(&mut v);
        Value::Set(v)
    }

    /// A Python frozenset of the items (duplicates, by Python equality, are dropped).
    pub fn frozenset<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
        let mut v: Vec<Value> = items.into_iter().map(Into::into).collect();
        Dedup::default().set(&mut v);
        Value::FrozenSet(v)
    }

    /// A Python dict of the entries (see [`Dict::from_entries`]).
    pub fn dict<K: Into<Value>, V: Into<Value>>(entries: impl IntoIterator<Item = (K, V)>) -> Value {
        Value::Dict(entries.into_iter().collect())
    }

    /// The Python type name: `NoneType`, `bool`, `int`, `float`, `complex`, `str`,
    /// `bytes`, `list`, `tuple`, `dict`, `set`, `frozenset` or `channel`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Complex(_) => "complex",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Channel(_) => "channel",
        }
    }

    /// True for `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// Whether Python could use the value as a dict key or set member.
    pub fn is_hashable(&self) -> bool {
        super::shared::py_hashable(self)
    }

    /// A bool; None for any other kind of value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An int; None for any other kind of value.
    pub fn as_int(&self) -> Option<&Int> {
        match self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// An int that fits i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_int().and_then(Int::as_i64)
    }

    /// An int that fits u64.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(Int::as_u64)
    }

    /// A float, or an int converted to float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(i.to_f64()),
            _ => None,
        }
    }

    /// A complex; None for any other kind of value.
    pub fn as_complex(&self) -> Option<Complex> {
        match self {
            Value::Complex(c) => Some(*c),
            _ => None,
        }
    }

    /// A str; None for any other kind of value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A bytes object; None for any other kind of value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The items of a list; None for any other kind of value.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// The items of a list, mutably; None for any other kind of value.
    pub fn as_list_mut(&mut self) -> Option<&mut Vec<Value>> {
        match self {
            Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// The items of a tuple; None for any other kind of value.
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The members of a set; None for any other kind of value.
    pub fn as_set(&self) -> Option<&[Value]> {
        match self {
            Value::Set(v) => Some(v),
            _ => None,
        }
    }

    /// The members of a frozenset; None for any other kind of value.
    pub fn as_frozenset(&self) -> Option<&[Value]> {
        match self {
            Value::FrozenSet(v) => Some(v),
            _ => None,
        }
    }

    /// The items of a list, tuple, set or frozenset.
    pub fn as_items(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => Some(v),
            _ => None,
        }
    }

    /// A dict; None for any other kind of value.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// A dict, mutably; None for any other kind of value.
    pub fn as_dict_mut(&mut self) -> Option<&mut Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// A channel; None for any other kind of value.
    pub fn as_channel(&self) -> Option<&Channel> {
        match self {
            Value::Channel(c) => Some(c),
            _ => None,
        }
    }

    /// The Python literal of the value (same as `to_string()`).
    pub fn to_python_literal(&self) -> String {
        let mut s = String::new();
        write_repr(&mut s, self);
        s
    }
}

macro_rules! value_from_int {
    ($($t:ty)*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Int(Int::from(v))
            }
        }
    )*};
}
value_from_int!(i8 i16 i32 i64 i128 isize u8 u16 u32 u64 u128 usize BigInt);

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<Int> for Value {
    fn from(v: Int) -> Value {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::Float(v as f64)
    }
}

impl From<Complex> for Value {
    fn from(v: Complex) -> Value {
        Value::Complex(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Str(v.clone())
    }
}

impl From<Cow<'_, str>> for Value {
    fn from(v: Cow<'_, str>) -> Value {
        Value::Str(v.into_owned())
    }
}

impl From<char> for Value {
    fn from(v: char) -> Value {
        Value::Str(v.to_string())
    }
}

impl From<()> for Value {
    fn from(_: ()) -> Value {
        Value::None
    }
}

impl From<Dict> for Value {
    fn from(v: Dict) -> Value {
        Value::Dict(v)
    }
}

impl From<Channel> for Value {
    fn from(v: Channel) -> Value {
        Value::Channel(v)
    }
}

/// A list (a `Vec<u8>` too becomes a list of ints: use [`Value::bytes`] for bytes).
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Value {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

/// `None` for `None`, else the value.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::None, Into::into)
    }
}

/// A list.
impl<T: Into<Value>> FromIterator<T> for Value {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Value {
        Value::list(iter)
    }
}

impl PartialEq<str> for Value {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for Value {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<i64> for Value {
    fn eq(&self, other: &i64) -> bool {
        self.as_i64() == Some(*other)
    }
}

impl PartialEq<bool> for Value {
    fn eq(&self, other: &bool) -> bool {
        self.as_bool() == Some(*other)
    }
}

impl PartialEq<f64> for Value {
    fn eq(&self, other: &f64) -> bool {
        matches!(self, Value::Float(f) if f == other)
    }
}

// ---------------------------------------------------------------------------------------
// Display: the Python literal
// ---------------------------------------------------------------------------------------

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_python_literal())
    }
}

fn write_items(out: &mut String, items: &[Value]) {
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(out, v);
    }
}

fn write_dict(out: &mut String, entries: &[(Value, Value)]) {
    out.push('{');
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(out, k);
        out.push_str(": ");
        write_repr(out, v);
    }
    out.push('}');
}

fn write_repr(out: &mut String, v: &Value) {
    match v {
        Value::None => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Int(i) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => pyrepr::write_float(out, *f, true, false),
        Value::Complex(c) => pyrepr::write_complex(out, c.re, c.im),
        Value::Str(s) => pyrepr::write_str_literal(out, s, false),
        Value::Bytes(b) => pyrepr::write_bytes_literal(out, b),
        Value::List(items) => {
            out.push('[');
            write_items(out, items);
            out.push(']');
        }
        Value::Tuple(items) => {
            out.push('(');
            write_items(out, items);
            if items.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        Value::Dict(d) => write_dict(out, &d.entries),
        Value::Set(items) if items.is_empty() => out.push_str("set()"),
        Value::Set(items) => {
            out.push('{');
            write_items(out, items);
            out.push('}');
        }
        Value::FrozenSet(items) if items.is_empty() => out.push_str("frozenset()"),
        Value::FrozenSet(items) => {
            out.push_str("frozenset({");
            write_items(out, items);
            out.push_str("})");
        }
        Value::Channel(c) => {
            use std::fmt::Write as _;
            let _ = write!(out, "<Channel id={}>", c.id());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Python equality of keys; the tree view for deserializing
// ---------------------------------------------------------------------------------------

impl PyKey for Value {
    fn key_ref(&self) -> KeyRef<'_, Self> {
        match self {
            Value::None => KeyRef::None,
            Value::Bool(b) => KeyRef::Num(Num::I(*b as i64)),
            Value::Int(Int(IntRepr::Small(i))) => KeyRef::Num(Num::I(*i)),
            Value::Int(Int(IntRepr::Big(b))) => KeyRef::Num(Num::B(Cow::Borrowed(b))),
            Value::Float(f) => KeyRef::Num(Num::float(*f)),
            Value::Complex(c) => KeyRef::Num(Num::complex(c.re, c.im)),
            Value::Str(s) => KeyRef::Str(s),
            Value::Bytes(b) => KeyRef::Bytes(b),
            Value::List(v) => KeyRef::List(v),
            Value::Tuple(v) => KeyRef::Tuple(v),
            Value::Dict(d) => KeyRef::Dict(&d.entries),
            Value::Set(v) => KeyRef::Set(v),
            Value::FrozenSet(v) => KeyRef::FrozenSet(v),
            Value::Channel(c) => KeyRef::Channel(Some(c.gateway_uid()), c.id()),
        }
    }
}

impl<'de> Tree<'de> for Value {
    fn into_kind(self) -> Kind<'de, Value> {
        match self {
            Value::None => Kind::None,
            Value::Bool(b) => Kind::Bool(b),
            Value::Int(Int(IntRepr::Small(i))) => Kind::Int(i),
            Value::Int(Int(IntRepr::Big(b))) => Kind::Big(Box::new(b)),
            Value::Float(f) => Kind::Float(f),
            Value::Complex(c) => Kind::Complex(c.re, c.im),
            Value::Str(s) => Kind::Str(Cow::Owned(s)),
            Value::Bytes(b) => Kind::Bytes(Cow::Owned(b)),
            Value::List(v) => Kind::List(v),
            Value::Tuple(v) => Kind::Tuple(v),
            Value::Dict(d) => Kind::Dict(d.entries),
            Value::Set(v) => Kind::Set(v),
            Value::FrozenSet(v) => Kind::FrozenSet(v),
            Value::Channel(c) => Kind::Channel(Some(c.gateway_uid()), c.id()),
        }
    }

    fn as_str_ref(&self) -> Option<&str> {
        self.as_str()
    }
}

// ---------------------------------------------------------------------------------------
// Serialize / Deserialize for Value
// ---------------------------------------------------------------------------------------

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Value::None => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => i.serialize(s),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Complex(c) => c.serialize(s),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Tuple(items) => {
                let mut t = s.serialize_tuple(items.len())?;
                for v in items {
                    t.serialize_element(v)?;
                }
                t.end()
            }
            Value::Dict(d) => d.serialize(s),
            Value::Set(items) => s.serialize_newtype_struct(SET_TOKEN, items),
            Value::FrozenSet(items) => s.serialize_newtype_struct(FROZENSET_TOKEN, items),
            Value::Channel(c) => c.serialize(s),
        }
    }
}

/// Checks that a magic single-entry map has no second entry.
fn end_magic<'de, A: MapAccess<'de>>(map: &mut A) -> std::result::Result<(), A::Error> {
    match map.next_key::<de::IgnoredAny>()? {
        None => Ok(()),
        Some(_) => Err(de::Error::custom("a magic execnet form has more than one entry")),
    }
}

thread_local! {
    /// A `Value` built directly by the loader ([`hand_over`]), waiting for the
    /// `ValueVisitor` that asked for it.
    static HANDED: std::cell::Cell<Option<Value>> = const { std::cell::Cell::new(None) };
}

/// Gives `value`, already built, to a visitor that asked for [`VALUE_TOKEN`]: serde
/// can only pass a visitor primitives and accessors, so the value waits in a
/// thread-local slot that `ValueVisitor::visit_newtype_struct` empties at once. Any
/// other visitor gets a deserializer that takes the value out of the slot and presents
/// it as `from_value` would. The slot is emptied afterwards in every case.
pub(crate) fn hand_over<'de, V: Visitor<'de>>(value: Value, v: V) -> Result<V::Value> {
    HANDED.with(|h| h.set(Some(value)));
    let out = v.visit_newtype_struct(Handed);
    HANDED.with(|h| h.take());
    out
}

/// The deserializer of [`hand_over`] for visitors other than `ValueVisitor`.
struct Handed;

impl Handed {
    fn take(self) -> Result<Value> {
        HANDED
            .with(|h| h.take())
            .ok_or_else(|| Error::data_format("a loaded value was asked for twice", None))
    }
}

/// Every `deserialize_*` method of a `Deserializer` that turns `self` into a `Value`
/// with `$to_value` (returning `Result<Value>`) and deserializes that as the wire would.
macro_rules! deserialize_as_value {
    ($to_value:expr) => {
        deserialize_as_value! { @each $to_value;
            deserialize_any() deserialize_bool() deserialize_i8() deserialize_i16() deserialize_i32()
            deserialize_i64() deserialize_i128() deserialize_u8() deserialize_u16() deserialize_u32()
            deserialize_u64() deserialize_u128() deserialize_f32() deserialize_f64() deserialize_char()
            deserialize_str() deserialize_string() deserialize_bytes() deserialize_byte_buf()
            deserialize_option() deserialize_unit() deserialize_unit_struct(name: &'static str)
            deserialize_newtype_struct(name: &'static str) deserialize_seq() deserialize_tuple(len: usize)
            deserialize_tuple_struct(name: &'static str, len: usize) deserialize_map()
            deserialize_struct(name: &'static str, fields: &'static [&'static str])
            deserialize_enum(name: &'static str, variants: &'static [&'static str])
            deserialize_identifier() deserialize_ignored_any()
        }
    };
    (@each $to_value:expr; $($method:ident($($arg:ident: $ty:ty),*))*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* v: V) -> Result<V::Value> {
            TreeDe::new(($to_value)(self)?).$method($($arg,)* v)
        }
    )*};
}

impl<'de> Deserializer<'de> for Handed {
    type Error = Error;

    deserialize_as_value!(Handed::take);

    fn is_human_readable(&self) -> bool {
        true
    }
}

pub(crate) struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any Python value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(v.into())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> std::result::Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> std::result::Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> std::result::Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> std::result::Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::None)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        if let Some(v) = HANDED.with(|h| h.take()) {
            return Ok(v);
        }
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let Some(first) = map.next_key::<Value>()? else {
            return Ok(Value::Dict(Dict::new()));
        };
        if let Value::Str(s) = &first {
            if s.starts_with(MAGIC_PREFIX) {
                let magic = match s.as_str() {
                    TUPLE_TOKEN => Some(Value::Tuple(map.next_value()?)),
                    SET_TOKEN => Some(Value::set(map.next_value::<Vec<Value>>()?)),
                    FROZENSET_TOKEN => Some(Value::frozenset(map.next_value::<Vec<Value>>()?)),
                    COMPLEX_TOKEN => {
                        let (re, im): (f64, f64) = map.next_value()?;
                        Some(Value::Complex(Complex::new(re, im)))
                    }
                    BIGINT_TOKEN => {
                        let text: String = map.next_value()?;
                        let i: Int = text.parse().map_err(|_| {
                            de::Error::custom(format!(
                                "invalid big-int text {:?}",
                                &text[..text.len().min(40)]
                            ))
                        })?;
                        Some(Value::Int(i))
                    }
                    CHANNEL_TOKEN => {
                        let (uid, id): (u64, i32) = map.next_value()?;
                        let ch = super::resolve_channel(uid, id).map_err(de::Error::custom)?;
                        Some(Value::Channel(ch))
                    }
                    DICT_TOKEN => Some(Value::Dict(map.next_value()?)),
                    _ => None,
                };
                if let Some(v) = magic {
                    end_magic(&mut map)?;
                    return Ok(v);
                }
            }
        }
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096) + 1);
        let v = map.next_value()?;
        entries.push((first, v));
        while let Some(e) = map.next_entry()? {
            entries.push(e);
        }
        Ok(Value::Dict(Dict::from_entries(entries)))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Value, D::Error> {
        // Our deserializers answer this name with tuples, sets and frozensets as magic
        // maps; others treat it as a plain newtype and present their own data model.
        d.deserialize_newtype_struct(VALUE_TOKEN, ValueVisitor)
    }
}

// ---------------------------------------------------------------------------------------
// from_value: Value as a Deserializer
// ---------------------------------------------------------------------------------------

/// Converts a [`Value`] into any `DeserializeOwned` type, with the same mapping as
/// loading from the wire.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T> {
    T::deserialize(TreeDe::new(value))
}


/// A `Value` deserializes into other types as the wire would (see [`from_value`]).
impl<'de> Deserializer<'de> for Value {
    type Error = Error;

    deserialize_as_value!(Ok::<Value, Error>);

    fn is_human_readable(&self) -> bool {
        true
    }
}

impl<'de> IntoDeserializer<'de, Error> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

#[cfg(test)]
mod tests;
