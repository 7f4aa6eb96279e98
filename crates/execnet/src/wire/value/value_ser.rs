//! [`to_value`]: a serde Serializer producing [`Value`], with the mapping of the wire
//! format (see [`crate::wire::ser`]).

use serde::ser::{self, Serialize, Serializer};

use super::{Complex, Dict, Int, Value};
use crate::error::{Error, Result};
use crate::wire::shared::Dedup;
use crate::wire::{BIGINT_TOKEN, CHANNEL_TOKEN, COMPLEX_TOKEN, FROZENSET_TOKEN, SET_TOKEN, TUPLE_TOKEN};

/// Converts any `Serialize` into a [`Value`], as it would travel over the wire
/// (a channel goes through the gateway's channel table).
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    value.serialize(ValueSer)
}

fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::data_format(msg, None))
}

struct ValueSer;

fn items_of(v: Value, what: &str) -> Result<Vec<Value>> {
    match v {
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => Ok(items),
        other => fail(format!("a {what} must wrap a sequence, found {}", other.type_name())),
    }
}

impl Serializer for ValueSer {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = SeqSer;
    type SerializeTuple = SeqSer;
    type SerializeTupleStruct = SeqSer;
    type SerializeTupleVariant = VariantSer<SeqSer>;
    type SerializeMap = MapSer;
    type SerializeStruct = MapSer;
    type SerializeStructVariant = VariantSer<MapSer>;

    fn serialize_bool(self, v: bool) -> Result<Value> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_i128(self, v: i128) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_u8(self, v: u8) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_u128(self, v: u128) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_f32(self, v: f32) -> Result<Value> {
        Ok(Value::Float(v as f64))
    }
    fn serialize_f64(self, v: f64) -> Result<Value> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value> {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value> {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value> {
        Ok(Value::None)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value> {
        Ok(Value::None)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value> {
        Ok(Value::Str(variant.to_owned()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, v: &T) -> Result<Value> {
        match name {
            CHANNEL_TOKEN => {
                let inner = v.serialize(ValueSer)?;
                let pair = match &inner {
                    Value::Tuple(items) | Value::List(items) if items.len() == 2 => {
                        items[0].as_u64().zip(items[1].as_i64().and_then(|i| i32::try_from(i).ok()))
                    }
                    _ => None,
                };
                let Some((uid, id)) = pair else {
                    return fail(format!(
                        "the channel token must wrap (gateway uid: u64, id: i32), found {inner}"
                    ));
                };
                Ok(Value::Channel(crate::wire::resolve_channel(uid, id)?))
            }
            COMPLEX_TOKEN => {
                let inner = v.serialize(ValueSer)?;
                let pair = match &inner {
                    Value::Tuple(items) | Value::List(items) if items.len() == 2 => {
                        items[0].as_f64().zip(items[1].as_f64())
                    }
                    _ => None,
                };
                match pair {
                    Some((re, im)) => Ok(Value::Complex(Complex::new(re, im))),
                    None => fail(format!("the complex token must wrap (re: f64, im: f64), found {inner}")),
                }
            }
            BIGINT_TOKEN => match v.serialize(ValueSer)? {
                Value::Str(s) => match s.parse::<Int>() {
                    Ok(i) => Ok(Value::Int(i)),
                    Err(_) => fail(format!("the big-int token must wrap decimal digits, found {s:?}")),
                },
                Value::Int(i) => Ok(Value::Int(i)),
                other => fail(format!("the big-int token must wrap decimal digits, found {other}")),
            },
            TUPLE_TOKEN => Ok(Value::Tuple(items_of(v.serialize(ValueSer)?, "tuple")?)),
            SET_TOKEN => {
                let mut items = items_of(v.serialize(ValueSer)?, "set")?;
                Dedup::default().set(&mut items);
                Ok(Value::Set(items))
            }
            FROZENSET_TOKEN => {
                let mut items = items_of(v.serialize(ValueSer)?, "frozenset")?;
                Dedup::default().set(&mut items);
                Ok(Value::FrozenSet(items))
            }
            _ => v.serialize(self),
        }
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Value> {
        let inner = v.serialize(ValueSer)?;
        Ok(Value::Dict(Dict { entries: vec![(Value::Str(variant.to_owned()), inner)] }))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer> {
        Ok(SeqSer { items: Vec::with_capacity(len.unwrap_or(0).min(4096)), tuple: false })
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqSer> {
        Ok(SeqSer { items: Vec::with_capacity(len.min(4096)), tuple: true })
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqSer> {
        self.serialize_tuple(len)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSer<SeqSer>> {
        Ok(VariantSer { variant, inner: self.serialize_tuple(len)? })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<MapSer> {
        Ok(MapSer { entries: Vec::with_capacity(len.unwrap_or(0).min(4096)), key: None, dedup: true })
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapSer> {
        Ok(MapSer { entries: Vec::with_capacity(len.min(4096)), key: None, dedup: false })
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSer<MapSer>> {
        Ok(VariantSer { variant, inner: self.serialize_struct("", len)? })
    }

    fn is_human_readable(&self) -> bool {
        true
    }
}

pub(crate) struct SeqSer {
    items: Vec<Value>,
    tuple: bool,
}

impl SeqSer {
    fn finish(self) -> Value {
        if self.tuple {
            Value::Tuple(self.items)
        } else {
            Value::List(self.items)
        }
    }
}

impl ser::SerializeSeq for SeqSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.items.push(v.serialize(ValueSer)?);
        Ok(())
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

pub(crate) struct MapSer {
    entries: Vec<(Value, Value)>,
    key: Option<Value>,
    /// Maps may repeat equal keys (by Python equality); struct fields cannot.
    dedup: bool,
}

impl MapSer {
    fn finish(self) -> Value {
        if self.dedup {
            Value::Dict(Dict::from_entries(self.entries))
        } else {
            Value::Dict(Dict { entries: self.entries })
        }
    }
}

impl ser::SerializeMap for MapSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<()> {
        self.key = Some(k.serialize(ValueSer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        let Some(k) = self.key.take() else {
            return fail("a map value was serialized before its key");
        };
        self.entries.push((k, v.serialize(ValueSer)?));
        Ok(())
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for MapSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        self.entries.push((Value::Str(key.to_owned()), v.serialize(ValueSer)?));
        Ok(())
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

/// The value of a tuple or struct variant, wrapped as `{variant: value}` at the end.
pub(crate) struct VariantSer<S> {
    variant: &'static str,
    inner: S,
}

impl<S> VariantSer<S> {
    fn wrap(variant: &'static str, v: Value) -> Value {
        Value::Dict(Dict { entries: vec![(Value::Str(variant.to_owned()), v)] })
    }
}

impl ser::SerializeTupleVariant for VariantSer<SeqSer> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        ser::SerializeSeq::serialize_element(&mut self.inner, v)
    }
    fn end(self) -> Result<Value> {
        Ok(Self::wrap(self.variant, self.inner.finish()))
    }
}

impl ser::SerializeStructVariant for VariantSer<MapSer> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        ser::SerializeStruct::serialize_field(&mut self.inner, key, v)
    }
    fn end(self) -> Result<Value> {
        Ok(Self::wrap(self.variant, self.inner.finish()))
    }
}
