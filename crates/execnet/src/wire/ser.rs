//! serde Serializer writing the opcode format (PROTOCOL.md section 3). HELPER-OWNED.
//!
//! | serde | Python | opcodes |
//! |---|---|---|
//! | bool | bool | `R` / `C` |
//! | i8 … i128, u8 … u128 | int | `F` i32 when it fits, else `H` decimal text |
//! | f32, f64 | float | `D` |
//! | char, str | str | `N` |
//! | bytes (`serde_bytes`) | bytes | `A` |
//! | None, unit, unit struct | None | `L` |
//! | Some(x), newtype struct | x | |
//! | unit variant | its name, a str | `N` |
//! | newtype / tuple / struct variant | `{name: value}` | `J` … `P` |
//! | seq | list | `K` n, then `F` i, item, `P` per item |
//! | tuple, tuple struct | tuple | items, `@` n |
//! | map, struct | dict | `J`, then key, value, `P` per entry |
//!
//! Newtype structs with the magic names of [`super`] write sets (`O`), frozensets
//! (`E`), tuples of any length (`@`), complex numbers (`T`), big ints (`H`) and channels
//! (`B`). Dict keys and set members must be hashable in Python: a list, dict or set
//! there is refused here rather than by the peer.

use std::io::Write as _;

use serde::ser::{self, Serialize, Serializer};

use super::value::{to_value, Int, Value};
use super::{
    current_gateway, BIGINT_TOKEN, CHANNEL_TOKEN, COMPLEX_TOKEN, FROZENSET_TOKEN, MAX_DEPTH, SET_TOKEN,
    TUPLE_TOKEN,
};
use crate::wire::opcode as op;
use crate::error::{Error, Result};

/// Appends the serialized object (opcodes, ending with STOP) to `out`. On error, `out`
/// is left as it was.
pub fn to_payload<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    let mut ser = PayloadSer { out, depth: 0, key_mode: 0 };
    match value.serialize(&mut ser) {
        Ok(()) => {
            out.push(op::STOP);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// The serialized object as a new buffer (see [`to_payload`]).
pub fn to_payload_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    to_payload(value, &mut out)?;
    Ok(out)
}

fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::data_format(msg, None))
}

fn len_i32(len: usize, what: &str) -> Result<[u8; 4]> {
    match i32::try_from(len) {
        Ok(n) => Ok(n.to_be_bytes()),
        Err(_) => fail(format!("{what} of {len} is too large for the wire format (at most 2**31-1)")),
    }
}

struct PayloadSer<'o> {
    out: &'o mut Vec<u8>,
    depth: usize,
    /// Greater than zero while writing a dict key or a set member.
    key_mode: u32,
}

impl PayloadSer<'_> {
    fn enter(&mut self, python_type: &str, hashable: bool) -> Result<()> {
        if !hashable && self.key_mode > 0 {
            return fail(format!("unhashable dict key or set member: a {python_type} cannot be one"));
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return fail(format!("containers nested deeper than the limit of {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn write_i64(&mut self, v: i64) {
        match i32::try_from(v) {
            Ok(i) => {
                self.out.push(op::INT);
                self.out.extend_from_slice(&i.to_be_bytes());
            }
            Err(_) => self.write_long_text(v),
        }
    }

    fn write_long_text(&mut self, v: impl std::fmt::Display) {
        self.out.push(op::LONGINT);
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        write!(self.out, "{v}").expect("writing to a Vec cannot fail");
        let n = (self.out.len() - at - 4) as i32;
        self.out[at..at + 4].copy_from_slice(&n.to_be_bytes());
    }

    fn write_int(&mut self, v: &Int) {
        match v.as_i64() {
            Some(i) => self.write_i64(i),
            None => self.write_long_text(v),
        }
    }

    fn write_str(&mut self, s: &str) -> Result<()> {
        let len = len_i32(s.len(), "a str")?;
        self.out.push(op::PY3STRING);
        self.out.extend_from_slice(&len);
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn write_op_count(&mut self, op: u8, n: usize, what: &str) -> Result<()> {
        let len = len_i32(n, what)?;
        self.out.push(op);
        self.out.extend_from_slice(&len);
        Ok(())
    }

    fn write_channel(&mut self, inner: Value) -> Result<()> {
        let pair = match &inner {
            Value::Tuple(items) | Value::List(items) if items.len() == 2 => {
                items[0].as_u64().zip(items[1].as_i64().and_then(|i| i32::try_from(i).ok()))
            }
            _ => None,
        };
        let Some((uid, id)) = pair else {
            return fail(format!("the channel token must wrap (gateway uid: u64, id: i32), found {inner}"));
        };
        match current_gateway() {
            Some(g) if g == uid => {
                self.out.push(op::CHANNEL);
                self.out.extend_from_slice(&id.to_be_bytes());
                Ok(())
            }
            Some(_) => {
                fail(format!("channel {id} belongs to another gateway: it cannot be sent on this one"))
            }
            None => fail(format!(
                "cannot serialize a channel outside a gateway (channel {id}): channels can only be \
                 sent through their own gateway"
            )),
        }
    }

    fn write_complex(&mut self, inner: Value) -> Result<()> {
        let pair = match &inner {
            Value::Tuple(items) | Value::List(items) if items.len() == 2 => {
                items[0].as_f64().zip(items[1].as_f64())
            }
            _ => None,
        };
        let Some((re, im)) = pair else {
            return fail(format!("the complex token must wrap (re: f64, im: f64), found {inner}"));
        };
        self.out.push(op::COMPLEX);
        self.out.extend_from_slice(&re.to_bits().to_be_bytes());
        self.out.extend_from_slice(&im.to_bits().to_be_bytes());
        Ok(())
    }

    fn write_bigint(&mut self, inner: Value) -> Result<()> {
        let parsed = match &inner {
            Value::Str(s) => s.parse::<Int>().ok(),
            Value::Int(i) => Some(i.clone()),
            _ => None,
        };
        match parsed {
            Some(i) => {
                self.write_int(&i);
                Ok(())
            }
            None => fail(format!("the big-int token must wrap decimal digits, found {inner}")),
        }
    }
}

impl<'a, 'o> Serializer for &'a mut PayloadSer<'o> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ListSer<'a, 'o>;
    type SerializeTuple = TupleSer<'a, 'o>;
    type SerializeTupleStruct = TupleSer<'a, 'o>;
    type SerializeTupleVariant = TupleSer<'a, 'o>;
    type SerializeMap = MapSer<'a, 'o>;
    type SerializeStruct = MapSer<'a, 'o>;
    type SerializeStructVariant = MapSer<'a, 'o>;

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out.push(if v { op::TRUE } else { op::FALSE });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.write_i64(v as i64);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.write_i64(v as i64);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.write_i64(v as i64);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.write_i64(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        match i64::try_from(v) {
            Ok(i) => self.write_i64(i),
            Err(_) => self.write_long_text(v),
        }
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.write_i64(v as i64);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.write_i64(v as i64);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.write_i64(v as i64);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        match i64::try_from(v) {
            Ok(i) => self.write_i64(i),
            Err(_) => self.write_long_text(v),
        }
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        match i64::try_from(v) {
            Ok(i) => self.write_i64(i),
            Err(_) => self.write_long_text(v),
        }
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        self.serialize_f64(v as f64)
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        self.out.push(op::FLOAT);
        self.out.extend_from_slice(&v.to_bits().to_be_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        self.write_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        self.write_str(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        let len = len_i32(v.len(), "a bytes object")?;
        self.out.push(op::BYTES);
        self.out.extend_from_slice(&len);
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<()> {
        self.out.push(op::NONE);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_none()
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result<()> {
        self.write_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, v: &T) -> Result<()> {
        match name {
            CHANNEL_TOKEN => self.write_channel(to_value(v)?),
            COMPLEX_TOKEN => self.write_complex(to_value(v)?),
            BIGINT_TOKEN => self.write_bigint(to_value(v)?),
            TUPLE_TOKEN => v.serialize(CollSer { ser: self, op: op::BUILDTUPLE }),
            SET_TOKEN => v.serialize(CollSer { ser: self, op: op::SET }),
            FROZENSET_TOKEN => v.serialize(CollSer { ser: self, op: op::FROZENSET }),
            _ => v.serialize(self),
        }
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<()> {
        self.enter("dict", false)?;
        self.out.push(op::NEWDICT);
        self.write_str(variant)?;
        v.serialize(&mut *self)?;
        self.out.push(op::SETITEM);
        self.leave();
        Ok(())
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<ListSer<'a, 'o>> {
        self.enter("list", false)?;
        if let Some(n) = len {
            len_i32(n, "a list")?;
        }
        self.out.push(op::NEWLIST);
        let count_at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        Ok(ListSer { ser: self, count: 0, count_at })
    }

    fn serialize_tuple(self, _len: usize) -> Result<TupleSer<'a, 'o>> {
        self.enter("tuple", true)?;
        Ok(TupleSer { ser: self, count: 0, op: op::BUILDTUPLE, variant: false })
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<TupleSer<'a, 'o>> {
        self.serialize_tuple(len)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<TupleSer<'a, 'o>> {
        self.enter("dict", false)?;
        self.out.push(op::NEWDICT);
        self.write_str(variant)?;
        self.enter("tuple", true)?;
        Ok(TupleSer { ser: self, count: 0, op: op::BUILDTUPLE, variant: true })
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<MapSer<'a, 'o>> {
        self.enter("dict", false)?;
        self.out.push(op::NEWDICT);
        Ok(MapSer { ser: self, variant: false })
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapSer<'a, 'o>> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<MapSer<'a, 'o>> {
        self.enter("dict", false)?;
        self.out.push(op::NEWDICT);
        self.write_str(variant)?;
        self.enter("dict", false)?;
        self.out.push(op::NEWDICT);
        Ok(MapSer { ser: self, variant: true })
    }

    fn is_human_readable(&self) -> bool {
        true
    }
}

/// A list being written: `K n` (n patched at the end), then `F i`, item, `P` per item.
pub(crate) struct ListSer<'a, 'o> {
    ser: &'a mut PayloadSer<'o>,
    count: usize,
    count_at: usize,
}

impl ser::SerializeSeq for ListSer<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        let i = len_i32(self.count, "a list")?;
        self.ser.out.push(op::INT);
        self.ser.out.extend_from_slice(&i);
        v.serialize(&mut *self.ser)?;
        self.ser.out.push(op::SETITEM);
        self.count += 1;
        Ok(())
    }

    fn end(self) -> Result<()> {
        let n = len_i32(self.count, "a list")?;
        self.ser.out[self.count_at..self.count_at + 4].copy_from_slice(&n);
        self.ser.leave();
        Ok(())
    }
}

/// A tuple, set or frozenset being written: the items, then `@`/`O`/`E` n. As the value
/// of a tuple variant, also closes the `{name: tuple}` dict.
pub(crate) struct TupleSer<'a, 'o> {
    ser: &'a mut PayloadSer<'o>,
    count: usize,
    op: u8,
    variant: bool,
}

impl TupleSer<'_, '_> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        v.serialize(&mut *self.ser)?;
        self.count += 1;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let what = match self.op {
            op::BUILDTUPLE => "a tuple",
            op::SET => "a set",
            _ => "a frozenset",
        };
        self.ser.write_op_count(self.op, self.count, what)?;
        if self.op != op::BUILDTUPLE {
            self.ser.key_mode -= 1;
        }
        self.ser.leave();
        if self.variant {
            self.ser.out.push(op::SETITEM);
            self.ser.leave();
        }
        Ok(())
    }
}

impl ser::SerializeTuple for TupleSer<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.element(v)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for TupleSer<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.element(v)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for TupleSer<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.element(v)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeSeq for TupleSer<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.element(v)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

/// A dict being written: `J`, then key, value, `P` per entry. As the value of a struct
/// variant, also closes the `{name: dict}` dict.
pub(crate) struct MapSer<'a, 'o> {
    ser: &'a mut PayloadSer<'o>,
    variant: bool,
}

impl MapSer<'_, '_> {
    fn finish(self) -> Result<()> {
        self.ser.leave();
        if self.variant {
            self.ser.out.push(op::SETITEM);
            self.ser.leave();
        }
        Ok(())
    }
}

impl ser::SerializeMap for MapSer<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<()> {
        self.ser.key_mode += 1;
        let r = k.serialize(&mut *self.ser);
        self.ser.key_mode -= 1;
        r
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        v.serialize(&mut *self.ser)?;
        self.ser.out.push(op::SETITEM);
        Ok(())
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeStruct for MapSer<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        self.ser.write_str(key)?;
        v.serialize(&mut *self.ser)?;
        self.ser.out.push(op::SETITEM);
        Ok(())
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for MapSer<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        ser::SerializeStruct::serialize_field(self, key, v)
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

/// Writes the sequence wrapped by a Tuple, Set or FrozenSet magic newtype.
struct CollSer<'a, 'o> {
    ser: &'a mut PayloadSer<'o>,
    op: u8,
}

impl<'a, 'o> CollSer<'a, 'o> {
    fn type_name(&self) -> &'static str {
        match self.op {
            op::BUILDTUPLE => "tuple",
            op::SET => "set",
            _ => "frozenset",
        }
    }

    fn start(self) -> Result<TupleSer<'a, 'o>> {
        let name = self.type_name();
        self.ser.enter(name, self.op != op::SET)?;
        if self.op != op::BUILDTUPLE {
            // Set members must be hashable.
            self.ser.key_mode += 1;
        }
        Ok(TupleSer { ser: self.ser, count: 0, op: self.op, variant: false })
    }

    fn wrong<T>(self, found: &str) -> Result<T> {
        fail(format!("a {} must wrap a sequence, found {found}", self.type_name()))
    }
}

macro_rules! coll_reject {
    ($($method:ident($($arg:ty),*) $found:literal;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<()> {
            self.wrong($found)
        }
    )*};
}

impl<'a, 'o> Serializer for CollSer<'a, 'o> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = TupleSer<'a, 'o>;
    type SerializeTuple = TupleSer<'a, 'o>;
    type SerializeTupleStruct = TupleSer<'a, 'o>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    coll_reject! {
        serialize_bool(bool) "a bool";
        serialize_i8(i8) "an int";
        serialize_i16(i16) "an int";
        serialize_i32(i32) "an int";
        serialize_i64(i64) "an int";
        serialize_i128(i128) "an int";
        serialize_u8(u8) "an int";
        serialize_u16(u16) "an int";
        serialize_u32(u32) "an int";
        serialize_u64(u64) "an int";
        serialize_u128(u128) "an int";
        serialize_f32(f32) "a float";
        serialize_f64(f64) "a float";
        serialize_char(char) "a str";
        serialize_str(&str) "a str";
        serialize_bytes(&[u8]) "bytes";
        serialize_none() "None";
        serialize_unit() "None";
        serialize_unit_struct(&'static str) "None";
        serialize_unit_variant(&'static str, u32, &'static str) "an enum";
    }

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<()> {
        v.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, v: &T) -> Result<()> {
        v.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _v: &T,
    ) -> Result<()> {
        self.wrong("an enum")
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<TupleSer<'a, 'o>> {
        self.start()
    }

    fn serialize_tuple(self, _len: usize) -> Result<TupleSer<'a, 'o>> {
        self.start()
    }

    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<TupleSer<'a, 'o>> {
        self.start()
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        self.wrong("an enum")
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
        self.wrong("a map")
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self::SerializeStruct> {
        self.wrong("a struct")
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        self.wrong("an enum")
    }

    fn is_human_readable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::Serialize;

    use super::*;
    use crate::wire::value::{FrozenSet, Set, Tuple};

    fn hex(v: &impl Serialize) -> String {
        let b = to_payload_vec(v).unwrap();
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn err(v: &impl Serialize) -> String {
        to_payload_vec(v).unwrap_err().to_string()
    }

    #[test]
    fn worked_example() {
        // PROTOCOL.md: dumps([1, "a"]), without the version byte.
        #[derive(Serialize)]
        #[serde(untagged)]
        enum E {
            I(i32),
            S(&'static str),
        }
        assert_eq!(
            hex(&vec![E::I(1), E::S("a")]),
            "4b00000002460000000046000000015046000000014e000000016150".to_owned() + "51"
        );
    }

    #[test]
    fn scalars() {
        assert_eq!(hex(&true), "5251");
        assert_eq!(hex(&false), "4351");
        assert_eq!(hex(&()), "4c51");
        assert_eq!(hex(&None::<i32>), "4c51");
        assert_eq!(hex(&Some(5u8)), "460000000551");
        assert_eq!(hex(&-1i64), "46ffffffff51");
        assert_eq!(hex(&i32::MIN), "468000000051");
        // 2**31 does not fit i32: LONGINT "2147483648".
        assert_eq!(hex(&(1u64 << 31)), "480000000a".to_owned() + "32313437343833363438" + "51");
        assert_eq!(hex(&-2147483649i64), "480000000b2d32313437343833363439".to_owned() + "51");
        assert_eq!(hex(&1.5f64), "443ff800000000000051");
        assert_eq!(hex(&1.5f32), "443ff800000000000051");
        assert_eq!(hex(&'é'), "4e00000002c3a951");
        assert_eq!(hex(&serde_bytes::Bytes::new(b"ab")), "4100000002616251");
        assert_eq!(hex(&u128::MAX), format!("4800000027{}51", hex_of(&u128::MAX.to_string())));
    }

    fn hex_of(s: &str) -> String {
        s.bytes().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn containers() {
        assert_eq!(hex(&(1,)), "4600000001400000000151");
        assert_eq!(hex(&()), "4c51");
        assert_eq!(hex(&Tuple(Vec::<i32>::new())), "400000000051");
        assert_eq!(hex(&Vec::<u8>::new()), "4b0000000051");
        let mut m = BTreeMap::new();
        m.insert("a", 1);
        assert_eq!(hex(&m), "4a4e00000001614600000001505".to_owned() + "1");
        assert_eq!(hex(&Set(BTreeSet::from([1, 2]))), "46000000014600000002".to_owned() + "4f0000000251");
        assert_eq!(hex(&FrozenSet(Vec::<i32>::new())), "450000000051");
    }

    #[test]
    fn enums_and_structs() {
        #[derive(Serialize)]
        enum E {
            Unit,
            New(i32),
            Tup(i32, i32),
            St { a: i32 },
        }
        #[derive(Serialize)]
        struct S {
            x: bool,
        }
        #[derive(Serialize)]
        struct Unit;
        #[derive(Serialize)]
        struct NewT(i32);
        assert_eq!(hex(&E::Unit), "4e00000004556e697451");
        assert_eq!(hex(&E::New(1)), "4a4e000000034e6577460000000150".to_owned() + "51");
        assert_eq!(
            hex(&E::Tup(1, 2)),
            "4a4e00000003547570460000000146000000024000000002".to_owned() + "5051"
        );
        assert_eq!(hex(&E::St { a: 1 }), "4a4e0000000253744a4e00000001614600000001505051");
        assert_eq!(hex(&S { x: true }), "4a4e00000001785250".to_owned() + "51");
        assert_eq!(hex(&Unit), "4c51");
        assert_eq!(hex(&NewT(7)), "460000000751");
    }

    #[test]
    fn unhashable_keys_are_refused() {
        let mut m = BTreeMap::new();
        m.insert(vec![1], 1);
        assert!(err(&m).contains("unhashable"), "{}", err(&m));
        let mut m = BTreeMap::new();
        m.insert((1, vec![2]), 1);
        assert!(err(&m).contains("unhashable"));
        assert!(err(&Set(vec![vec![1]])).contains("unhashable"));
        assert!(err(&FrozenSet(vec![Set(vec![1])])).contains("unhashable"));
        // Tuples and frozensets are fine as keys.
        let mut m = BTreeMap::new();
        m.insert((1, "a"), 1);
        assert!(to_payload_vec(&m).is_ok());
        assert!(to_payload_vec(&Set(vec![FrozenSet(vec![1])])).is_ok());
        assert!(err(&Set(5)).contains("must wrap a sequence"));
    }

    #[test]
    fn error_leaves_buffer_untouched() {
        let mut out = vec![9, 9];
        let mut m = BTreeMap::new();
        m.insert(vec![1], 1);
        assert!(to_payload(&vec![m], &mut out).is_err());
        assert_eq!(out, vec![9, 9]);
    }

    #[test]
    fn depth_limit() {
        let mut v = crate::Value::None;
        for _ in 0..MAX_DEPTH {
            v = crate::Value::List(vec![v]);
        }
        assert!(to_payload_vec(&v).is_ok());
        let v = crate::Value::List(vec![v]);
        assert!(err(&v).contains("nested deeper"));
    }

    #[test]
    fn channels_need_their_gateway() {
        let ch = crate::gateway::detached_channel(3);
        let uid = ch.gateway_uid();
        assert!(err(&ch).contains("outside a gateway"), "{}", err(&ch));
        let e = crate::wire::with_gateway(uid + 1000, || err(&ch));
        assert!(e.contains("channel 3 belongs to another gateway"), "{e}");
        let h = crate::wire::with_gateway(uid, || hex(&vec![ch.clone()]));
        assert_eq!(h, "4b00000001460000000042000000035051");
    }
}
