//! Property tests of the wire format: every Value survives dumps/loads and the other
//! conversion paths; typed data survives too; no byte string makes the loader panic.

use std::collections::{BTreeMap, HashMap};

use execnet::wire::de::from_payload;
use execnet::wire::ser::to_payload;
use execnet::{dumps, from_value, loads, to_value, Complex, Dict, Int, Value};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// Structural equality in which floats compare by bits (so nan equals nan, -0.0 does not
/// equal 0.0).
fn same(a: &Value, b: &Value) -> bool {
    fn all(a: &[Value], b: &[Value]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
    }
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Complex(x), Value::Complex(y)) => {
            x.re.to_bits() == y.re.to_bits() && x.im.to_bits() == y.im.to_bits()
        }
        (Value::List(x), Value::List(y))
        | (Value::Tuple(x), Value::Tuple(y))
        | (Value::Set(x), Value::Set(y))
        | (Value::FrozenSet(x), Value::FrozenSet(y)) => all(x, y),
        (Value::Dict(x), Value::Dict(y)) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
        }
        _ => a == b,
    }
}

fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => proptest::num::f64::ANY,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(0.0),
        1 => (-1000i32..1000).prop_map(|i| i as f64),
    ]
}

fn any_int() -> impl Strategy<Value = Int> {
    prop_oneof![
        any::<i32>().prop_map(Int::from),
        any::<i64>().prop_map(Int::from),
        prop::sample::select(vec![
            i64::MIN,
            i64::MAX,
            i32::MIN as i64,
            i32::MAX as i64,
            i32::MIN as i64 - 1,
            i32::MAX as i64 + 1,
            0,
            -1,
        ])
        .prop_map(Int::from),
        any::<u128>().prop_map(Int::from),
        any::<i128>().prop_map(Int::from),
        (any::<bool>(), "[1-9][0-9]{0,80}").prop_map(|(neg, digits)| {
            let text = if neg { format!("-{digits}") } else { digits };
            text.parse::<Int>().unwrap()
        }),
    ]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z]{0,8}", Just("\u{1f600}\u{10ffff}\u{0}\n'\"\\".to_owned()),]
}

/// Values Python can hash: scalars, and tuples/frozensets of hashables.
fn hashable() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any_int().prop_map(Value::Int),
        any_float().prop_map(Value::Float),
        (any_float(), any_float()).prop_map(|(re, im)| Value::Complex(Complex::new(re, im))),
        any_text().prop_map(Value::Str),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Tuple),
            prop::collection::vec(inner, 0..4).prop_map(Value::frozenset),
        ]
    })
}

/// Any Value but channels. Dicts and sets are built through the constructors that merge
/// equal keys as Python does, so that the value is one Python could hold.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => hashable(),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            prop::collection::vec((hashable(), inner), 0..6)
                .prop_map(|entries| Value::Dict(Dict::from_entries(entries))),
            prop::collection::vec(hashable(), 0..6).prop_map(Value::set),
            prop::collection::vec(hashable(), 0..6).prop_map(Value::frozenset),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn value_round_trips(v in any_value()) {
        let bytes = dumps(&v).unwrap();
        let back: Value = loads(&bytes).unwrap();
        prop_assert!(same(&back, &v), "{} != {}", back, v);

        let mut payload = Vec::new();
        to_payload(&v, &mut payload).unwrap();
        prop_assert_eq!(&payload[..], &bytes[1..]);
        let back: Value = from_payload(&payload).unwrap();
        prop_assert!(same(&back, &v));

        // The re-serialization is byte-identical.
        prop_assert_eq!(dumps(&back).unwrap(), bytes);

        let tv = to_value(&v).unwrap();
        prop_assert!(same(&tv, &v));
        let fv: Value = from_value(v.clone()).unwrap();
        prop_assert!(same(&fv, &v));

        // Display never panics and is one line.
        let lit = v.to_string();
        prop_assert!(!lit.contains('\n'));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = from_payload::<Value>(&bytes);
        let _ = from_payload::<Vec<i32>>(&bytes);
        let _ = loads::<Value>(&bytes);
    }

    #[test]
    fn opcode_soup_never_panics(ops in prop::collection::vec(
        prop_oneof![
            prop::sample::select(b"@ABCDEFGHIJKLMNOPQRST".to_vec()).prop_map(|b| vec![b]),
            any::<i32>().prop_map(|i| i.to_be_bytes().to_vec()),
            (0i32..4).prop_map(|i| i.to_be_bytes().to_vec()),
            Just(b"K\0\0\0\x02".to_vec()),
            Just(b"F\0\0\0\x01".to_vec()),
        ],
        0..40,
    )) {
        let bytes: Vec<u8> = ops.concat();
        let _ = from_payload::<Value>(&bytes);
        let mut with_stop = bytes.clone();
        with_stop.push(b'Q');
        let _ = from_payload::<Value>(&with_stop);
        let _ = from_payload::<HashMap<String, Vec<i64>>>(&with_stop);
    }

    #[test]
    fn mutated_payloads_never_panic(
        v in any_value(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = Vec::new();
        to_payload(&v, &mut bytes).unwrap();
        for (at, byte, how) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
        }
        if let Ok(back) = from_payload::<Value>(&bytes) {
            // Whatever loads can be written again.
            let _ = to_payload(&back, &mut Vec::new());
        }
        let _ = from_payload::<BTreeMap<String, Value>>(&bytes);
    }
}

// ---------------------------------------------------------------------------------------
// Typed round trips
// ---------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Event {
    Start,
    Progress(u8),
    Moved(i32, i32),
    Message { text: String, tags: Vec<String> },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Record {
    id: u128,
    delta: i64,
    small: i8,
    ratio: f32,
    name: String,
    letter: char,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    raw: Vec<u8>,
    maybe: Option<bool>,
    pair: (u16, String),
    counts: HashMap<String, i64>,
    by_id: BTreeMap<i32, Vec<Event>>,
    events: Vec<Event>,
    child: Option<Box<Record>>,
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Start),
        any::<u8>().prop_map(Event::Progress),
        (any::<i32>(), any::<i32>()).prop_map(|(a, b)| Event::Moved(a, b)),
        (any::<String>(), prop::collection::vec("[a-z]{0,4}", 0..3))
            .prop_map(|(text, tags)| Event::Message { text, tags }),
    ]
}

fn any_record() -> impl Strategy<Value = Record> {
    let head = (
        any::<u128>(),
        any::<i64>(),
        any::<i8>(),
        any::<f32>().prop_filter("nan", |f| !f.is_nan()),
        any::<String>(),
        any::<char>(),
        prop::collection::vec(any::<u8>(), 0..32),
        prop::collection::vec(any::<u8>(), 0..8),
        any::<Option<bool>>(),
        (any::<u16>(), any::<String>()),
    );
    let tail = (
        prop::collection::hash_map("[a-z]{0,6}", any::<i64>(), 0..4),
        prop::collection::btree_map(any::<i32>(), prop::collection::vec(any_event(), 0..3), 0..3),
        prop::collection::vec(any_event(), 0..4),
    );
    (head, tail).prop_map(|(h, t)| Record {
        id: h.0,
        delta: h.1,
        small: h.2,
        ratio: h.3,
        name: h.4,
        letter: h.5,
        blob: h.6,
        raw: h.7,
        maybe: h.8,
        pair: h.9,
        counts: t.0,
        by_id: t.1,
        events: t.2,
        child: None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn typed_round_trips(r in any_record(), c in any_record()) {
        let mut r = r;
        r.child = Some(Box::new(c));
        let bytes = dumps(&r).unwrap();
        let back: Record = loads(&bytes).unwrap();
        prop_assert_eq!(&back, &r);
        // Through Value and back.
        let v: Value = loads(&bytes).unwrap();
        let via_value: Record = from_value(v.clone()).unwrap();
        prop_assert_eq!(&via_value, &r);
        prop_assert!(same(&to_value(&r).unwrap(), &v));
        prop_assert_eq!(dumps(&v).unwrap(), bytes);
    }

    #[test]
    fn ints_use_the_smallest_form(i in any::<i128>()) {
        let b = dumps(&i).unwrap();
        if i32::try_from(i).is_ok() {
            prop_assert_eq!(b[1], b'F');
            prop_assert_eq!(b.len(), 7);
        } else {
            prop_assert_eq!(b[1], b'H');
            let text = i.to_string();
            prop_assert_eq!(&b[6..b.len() - 1], text.as_bytes());
        }
        prop_assert_eq!(loads::<i128>(&b).unwrap(), i);
        prop_assert_eq!(loads::<Value>(&b).unwrap(), Value::from(i));
    }
}

#[test]
fn vec_u8_is_a_list_and_byte_buf_is_bytes() {
    let list = dumps(&vec![1u8, 2]).unwrap();
    assert_eq!(list[1], b'K');
    let bytes = dumps(&serde_bytes::ByteBuf::from(vec![1u8, 2])).unwrap();
    assert_eq!(bytes, b"\x02A\x00\x00\x00\x02\x01\x02Q");
    // Either reads back into either.
    assert_eq!(loads::<Vec<u8>>(&bytes).unwrap(), vec![1, 2]);
    assert_eq!(loads::<serde_bytes::ByteBuf>(&list).unwrap().into_vec(), vec![1, 2]);
    assert_eq!(loads::<Value>(&bytes).unwrap(), Value::bytes([1u8, 2]));
}

#[test]
fn tuple_set_frozenset_wrappers() {
    use execnet::{FrozenSet, Set, Tuple};
    let b = dumps(&(Tuple(vec![1, 2, 3]), Set(vec!["a"]), FrozenSet(Vec::<i32>::new()))).unwrap();
    let v: Value = loads(&b).unwrap();
    assert_eq!(v.to_string(), "((1, 2, 3), {'a'}, frozenset())");
    type Three = (Tuple<Vec<i32>>, Set<Vec<String>>, FrozenSet<Vec<i32>>);
    let (t, s, f): Three = loads(&b).unwrap();
    assert_eq!(t.0, vec![1, 2, 3]);
    assert_eq!(s.0, vec!["a"]);
    assert!(f.0.is_empty());
}

#[test]
fn versioned_form() {
    assert!(loads::<Value>(b"").unwrap_err().to_string().contains("empty input"));
    assert!(loads::<Value>(b"\x03LQ").unwrap_err().to_string().contains("unsupported dump format version 3"));
    assert_eq!(loads::<Value>(b"\x02LQ").unwrap(), Value::None);
}
