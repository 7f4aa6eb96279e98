//! The loader into typed data through serde: a struct (from a dict with string keys or
//! a sequence), an enum, integers of fixed width, strings, bytes, maps, options and
//! tuples, as application code receives them. Each load is made twice, on the
//! streaming path (with the tape behind it) and on the tape alone, and the two must
//! give the same result or the same error.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::convert::identity;

use execnet::wire::{de, frame};
use execnet::Value;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[path = "limits.rs"]
mod limits;

#[global_allocator]
static GLOBAL: limits::Ceiling = limits::Ceiling;

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
enum Kind {
    Plain,
    Sized(u32),
    Pair(i8, u64),
    Named { name: String, weight: f64 },
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
struct Record {
    name: String,
    id: i32,
    small: u8,
    big: i128,
    ratio: f32,
    flag: bool,
    tags: Vec<String>,
    #[serde(with = "serde_bytes_like")]
    blob: Vec<u8>,
    counts: BTreeMap<String, i64>,
    ordered: BTreeMap<i64, Option<String>>,
    kind: Kind,
    nested: Option<Box<Record>>,
    pair: (char, Value),
    #[serde(default)]
    extra: Option<Vec<(bool, u16)>>,
}

/// Bytes through serde's `deserialize_byte_buf`, as `serde_bytes` does.
mod serde_bytes_like {
    use serde::de::{Deserializer, Error, Visitor};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// The outcome of a load, comparable across the two paths.
fn outcome<T: std::fmt::Debug>(r: &execnet::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("error {e}"),
    }
}

/// Loads `payload` as a `T` both ways; they must agree. `norm` makes results comparable
/// (a HashMap's order differs from one map to another).
fn both<'a, T, U: std::fmt::Debug>(payload: &'a [u8], norm: impl Fn(T) -> U)
where
    T: Deserialize<'a>,
{
    let fast = de::from_payload_borrowed::<T>(payload).map(&norm);
    let tape = de::from_payload_tape::<T>(payload).map(&norm);
    assert_eq!(outcome(&fast), outcome(&tape), "the streaming path and the tape differ");
}

fn typed(payload: &[u8]) {
    both::<Record, _>(payload, identity);
    both::<Vec<Record>, _>(payload, identity);
    both::<Kind, _>(payload, identity);
    both::<(String, Option<String>, Option<String>, Value), _>(payload, identity);
    both::<Vec<i64>, _>(payload, identity);
    both::<HashMap<String, Vec<u8>>, _>(payload, |m| m.into_iter().collect::<BTreeMap<_, _>>());
    both::<(&str, &[u8]), _>(payload, identity);
}

fuzz_target!(|data: &[u8]| {
    typed(data);
    if data.len() >= frame::HEADER_LEN {
        typed(&data[frame::HEADER_LEN..]);
    }
    let _ = execnet::loads::<Record>(data);
});
