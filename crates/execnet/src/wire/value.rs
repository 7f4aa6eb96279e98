//! [`Value`]: any Python value the wire format carries, like `serde_json::Value` for JSON.
//!
//! HELPER-OWNED: the wire helper implements Serialize/Deserialize, to_value/from_value,
//! Int, Dict and the accessors here. The type definitions below are the agreed contract.

use crate::Channel;

/// An integer of any size (Python `int`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    pub re: f64,
    pub im: f64,
}

/// A Python dict: entries in insertion order, keys of any hashable Python type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dict {
    pub(crate) entries: Vec<(Value, Value)>,
}

/// Any Python value the wire format carries.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    None,
    Bool(bool),
    Int(Int),
    Float(f64),
    Complex(Complex),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Dict),
    Set(Vec<Value>),
    FrozenSet(Vec<Value>),
    Channel(Channel),
}

/// TEMPORARY stub until the wire helper's work is merged.
pub fn to_value<T: serde::Serialize + ?Sized>(_v: &T) -> crate::Result<Value> {
    todo!()
}
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl Dict {
    pub fn iter(&self) -> impl Iterator<Item = (&Value, &Value)> {
        self.entries.iter().map(|(a, b)| (a, b))
    }
}
impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        todo!()
    }
}
impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(_d: D) -> Result<Self, D::Error> {
        todo!()
    }
}
