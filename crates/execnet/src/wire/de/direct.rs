//! Loading straight into a [`Value`]: the stack machine ([`super::machine`]) builds the
//! `Value` itself, with no tape and no second walk. `loads::<Value>` (and every receive
//! of a `Value`) takes this path; a `Value` nested in a typed result is built from the
//! tape instead (`build_value` in [`super`]), which makes the same value.

use num_bigint::BigInt;

use super::machine::{self, Builder, Collection, Index};
use super::tape::{Item, Oversized};
use crate::error::{Error, Result};
use crate::wire::shared::short_int_text;
use crate::wire::value::{Complex, Dict, Int, IntRepr, Value};

/// Loads one object from a payload as a `Value`.
pub(crate) fn load_value(payload: &[u8]) -> Result<Value> {
    let (builder, value) = machine::run(payload, ValueBuilder::default())?;
    match builder.channel_error {
        // A channel could not be looked up, but a later SETITEM may have replaced it (or
        // a later equal dict key its entry): the tape path decides, which looks up only
        // the channels the result holds. (Only data holding channels loaded outside a
        // gateway gets here.)
        Some(_) => super::value_from_tape(payload),
        None => Ok(value),
    }
}

#[derive(Default)]
struct ValueBuilder {
    /// The big ints and Latin-1 strs read so far, until their items are made values.
    oversized: Oversized,
    /// The first channel that could not be looked up. The machine goes on (the rest of
    /// the payload is still checked, as the tape path checks all of it before it looks
    /// channels up), and then [`load_value`] asks the tape path.
    channel_error: Option<Error>,
}

impl<'a> Builder<'a> for ValueBuilder {
    type Obj = Value;
    type Ctx = ();

    fn ctx(&self) -> &() {
        &()
    }

    #[inline(always)]
    fn scalar(&mut self, item: Item<'a>) -> Value {
        match item {
            Item::None => Value::None,
            Item::True => Value::Bool(true),
            Item::False => Value::Bool(false),
            Item::Int(i) => Value::Int(Int(IntRepr::Small(i))),
            Item::Float(f) => Value::Float(f),
            Item::Str(s) => Value::Str(s.to_owned()),
            Item::Bytes(b) => Value::Bytes(b.to_vec()),
            Item::Complex(re, im) => Value::Complex(Complex::new(re, im)),
            Item::Big(i) => Value::Int(Int::from_big(std::mem::take(&mut self.oversized.bigs[i]))),
            Item::Latin1(i) => Value::Str(std::mem::take(&mut self.oversized.strings[i])),
            Item::Channel(id) => self.channel(id as i32),
            Item::List(_) | Item::Tuple(_) | Item::Dict(_) | Item::Set(_) | Item::FrozenSet(_) => {
                unreachable!("the machine makes containers with the builder, never as scalar items")
            }
        }
    }

    fn big(&mut self, b: BigInt) -> Item<'a> {
        self.oversized.big(b)
    }

    fn latin1(&mut self, s: String) -> Item<'a> {
        self.oversized.latin1(s)
    }

    fn list(&mut self, n: usize) -> Value {
        let mut items = Vec::with_capacity(n);
        items.resize_with(n, || Value::None);
        Value::List(items)
    }

    #[inline(always)]
    fn set_list_item(&mut self, list: &mut Value, i: usize, value: Value) {
        if let Value::List(items) = list {
            store(&mut items[i], value);
        }
    }

    #[inline(always)]
    fn set_list_scalar(&mut self, list: &mut Value, i: usize, item: Item<'a>) {
        if let Value::List(items) = list {
            let value = self.scalar(item);
            store(&mut items[i], value);
        }
    }

    fn open_dict(&mut self) -> Value {
        Value::Dict(Dict::new())
    }

    fn close_dict(&mut self, entries: std::vec::Drain<'_, (Value, Value)>) -> Value {
        Value::Dict(Dict::from_merged(entries.collect()))
    }

    fn collection(&mut self, kind: Collection, members: impl ExactSizeIterator<Item = Value>) -> Value {
        let members = members.collect();
        match kind {
            Collection::Tuple => Value::Tuple(members),
            Collection::Set => Value::Set(members),
            Collection::FrozenSet => Value::FrozenSet(members),
        }
    }

    fn index(&self, key: &Value) -> Index {
        match key {
            Value::Int(Int(IntRepr::Small(i))) => Index::Small(*i),
            Value::Bool(b) => Index::Small(*b as i64),
            Value::Int(Int(IntRepr::Big(b))) => Index::Big(short_int_text(b)),
            other => Index::NotInt(other.type_name()),
        }
    }

    fn type_name(obj: &Value) -> &'static str {
        obj.type_name()
    }
}

impl ValueBuilder {
    fn channel(&mut self, id: i32) -> Value {
        if self.channel_error.is_some() {
            return Value::None;
        }
        match super::lookup_channel(id) {
            Ok(ch) => Value::Channel(ch),
            Err(e) => {
                self.channel_error = Some(e);
                Value::None
            }
        }
    }
}

/// Stores `value` in a list's place. The place nearly always holds the None the list
/// was made of, which needs no drop; an assignment still called `drop_in_place` on it
/// (about 30 instructions an item, 13% of loading 10,000 floats), so that None is
/// forgotten instead (it owns nothing).
#[inline(always)]
fn store(slot: &mut Value, value: Value) {
    match slot {
        Value::None => std::mem::forget(std::mem::replace(slot, value)),
        _ => *slot = value,
    }
}
