//! Unit tests of Value, Int, Dict, to_value and from_value.

use std::collections::{BTreeMap, HashMap};

use num_bigint::BigInt;
use serde::{Deserialize, Serialize};

use super::*;
use crate::wire::{dumps, loads};

fn big(s: &str) -> Int {
    s.parse().unwrap()
}

#[test]
fn int_is_canonical() {
    assert_eq!(Int::from(5u128), Int::from(5i8));
    assert_eq!(Int::from(BigInt::from(-7)), Int::from(-7));
    assert!(matches!(Int::from(u64::MAX).0, IntRepr::Big(_)));
    assert!(matches!(Int::from(i64::MIN as i128).0, IntRepr::Small(_)));
    assert_eq!(big("-9223372036854775808").as_i64(), Some(i64::MIN));
    assert_eq!(big("9223372036854775808").as_i64(), None);
    assert_eq!(big("9223372036854775808").as_u64(), Some(1 << 63));
    assert_eq!(big("-1").as_u64(), None);
    assert_eq!(Int::from(u128::MAX).as_u128(), Some(u128::MAX));
    assert_eq!(Int::from(i128::MIN).as_i128(), Some(i128::MIN));
    assert_eq!(Int::from(i128::MIN).to_string(), i128::MIN.to_string());
    assert_eq!(
        big("123456789012345678901234567890").to_bigint().to_string(),
        "123456789012345678901234567890"
    );
    assert!("12x".parse::<Int>().is_err());
}

#[test]
fn int_orders_numerically() {
    let mut v = [
        Int::from(5),
        big("-99999999999999999999"),
        Int::from(0),
        big("99999999999999999999"),
        Int::from(-5),
    ];
    v.sort();
    let s: Vec<String> = v.iter().map(|i| i.to_string()).collect();
    assert_eq!(s, ["-99999999999999999999", "-5", "0", "5", "99999999999999999999"]);
}

#[test]
fn dict_semantics() {
    let mut d = Dict::new();
    assert!(d.is_empty());
    assert_eq!(d.insert("a", 1), None);
    assert_eq!(d.insert(1, "one"), None);
    assert_eq!(d.insert("b", 2), None);
    // Python equality: True == 1 == 1.0.
    assert_eq!(d.insert(true, "true"), Some(Value::from("one")));
    assert_eq!(d.insert(1.0, "float"), Some(Value::from("true")));
    assert_eq!(d.len(), 3);
    assert_eq!(d.entries()[1], (Value::from(1), Value::from("float")));
    assert_eq!(d.get(&Value::from(1.0)), Some(&Value::from("float")));
    assert_eq!(d.get_str("b"), Some(&Value::from(2)));
    assert!(d.contains_key(&Value::Complex(Complex::new(1.0, 0.0))));
    assert!(!d.contains_key(&Value::from("c")));
    // Tuple and frozenset keys.
    d.insert(Value::tuple([1, 2]), "t");
    d.insert(Value::frozenset([1, 2]), "fs");
    assert_eq!(d.get(&Value::tuple([1.0, 2.0])), Some(&Value::from("t")));
    assert_eq!(d.get(&Value::frozenset([2, 1])), Some(&Value::from("fs")));
    assert_eq!(d.remove(&Value::from("a")), Some(Value::from(1)));
    let keys: Vec<String> = d.keys().map(|k| k.to_string()).collect();
    assert_eq!(keys, ["1", "'b'", "(1, 2)", "frozenset({1, 2})"]);
    // FromIterator merges duplicates with the later value, first position.
    let d: Dict = (0..50).map(|i| (i % 10, i)).collect();
    assert_eq!(d.len(), 10);
    assert_eq!(d.entries()[3], (Value::from(3), Value::from(43)));
    let collected: Vec<(Value, Value)> = d.clone().into_iter().collect();
    assert_eq!(collected.len(), 10);
    assert_eq!((&d).into_iter().count(), 10);
    let mut e = Dict::new();
    e.extend([("x", 1), ("x", 2)]);
    assert_eq!(e.len(), 1);
    assert_eq!(e.to_string(), "{'x': 2}");
    // nan keys never match, as between distinct nan objects in Python.
    let mut n = Dict::new();
    n.insert(f64::NAN, 1);
    n.insert(f64::NAN, 2);
    assert_eq!(n.len(), 2);
}

#[test]
fn display_is_the_python_literal() {
    let cases: Vec<(Value, &str)> = vec![
        (Value::None, "None"),
        (true.into(), "True"),
        (false.into(), "False"),
        ((-3).into(), "-3"),
        (big("-123456789012345678901234567890").into(), "-123456789012345678901234567890"),
        (1.0.into(), "1.0"),
        (1e100.into(), "1e+100"),
        (f64::INFINITY.into(), "inf"),
        (f64::NAN.into(), "nan"),
        ((-0.0).into(), "-0.0"),
        (Complex::new(1.0, 2.0).into(), "(1+2j)"),
        ("it's".into(), "\"it's\""),
        (Value::bytes(*b"a'\x00"), "b\"a'\\x00\""),
        (Value::list([1, 2]), "[1, 2]"),
        (Value::list(Vec::<i32>::new()), "[]"),
        (Value::tuple([1]), "(1,)"),
        (Value::tuple(Vec::<i32>::new()), "()"),
        (Value::tuple([1, 2]), "(1, 2)"),
        (Value::dict([("a", 1)]), "{'a': 1}"),
        (Value::Dict(Dict::new()), "{}"),
        (Value::set([1, 2]), "{1, 2}"),
        (Value::set(Vec::<i32>::new()), "set()"),
        (Value::frozenset([1]), "frozenset({1})"),
        (Value::frozenset(Vec::<i32>::new()), "frozenset()"),
        (Value::Channel(crate::gateway::detached_channel(3)), "<Channel id=3>"),
        (Value::list([Value::tuple(["x"]), Value::None]), "[('x',), None]"),
    ];
    for (v, want) in cases {
        assert_eq!(v.to_string(), want);
    }
    assert_eq!(Int::from(7).to_string(), "7");
    assert_eq!(Complex::new(0.0, 1.0).to_string(), "1j");
}

#[test]
fn conversions() {
    assert_eq!(Value::from(vec![1u8, 2]), Value::List(vec![1.into(), 2.into()]));
    assert_eq!(Value::bytes(vec![1u8, 2]), Value::Bytes(vec![1, 2]));
    assert_eq!(Value::from(Some("x")), Value::from("x"));
    assert_eq!(Value::from(None::<i32>), Value::None);
    assert_eq!(Value::from(()), Value::None);
    assert_eq!(Value::from('c'), "c");
    assert_eq!(Value::from(3u64), 3);
    assert_eq!(Value::from(true), true);
    assert_eq!(Value::from(2.5f32), 2.5);
    let v: Value = (1..=3).collect();
    assert_eq!(v.as_list().map(|l| l.len()), Some(3));
    assert_eq!(Value::set([1, 1, 2]).as_set().map(|s| s.len()), Some(2));
    assert_eq!(Value::from(2).as_f64(), Some(2.0));
    assert_eq!(Value::from("x").as_i64(), None);
    assert_eq!(Value::tuple([1]).as_items().map(|s| s.len()), Some(1));
    assert!(Value::tuple([1]).is_hashable());
    assert!(!Value::tuple([Value::list([1])]).is_hashable());
    assert_eq!(Value::Float(1.0).type_name(), "float");
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Inner {
    name: String,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    raw: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Point,
    Circle(f64),
    Rect(u32, u32),
    Named { inner: Inner, tags: Option<Vec<String>> },
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Outer {
    id: u128,
    neg: i64,
    shapes: Vec<Shape>,
    map: BTreeMap<i32, (bool, char)>,
    opt: Option<Box<Outer>>,
    set: Set<Vec<i32>>,
    tuple: Tuple<Vec<String>>,
    c: Complex,
    i: Int,
}

fn sample() -> Outer {
    Outer {
        id: u128::MAX,
        neg: i64::MIN,
        shapes: vec![
            Shape::Point,
            Shape::Circle(1.5),
            Shape::Rect(3, 4),
            Shape::Named {
                inner: Inner { name: "n".into(), blob: vec![0, 255], raw: vec![1, 2] },
                tags: Some(vec!["t".into()]),
            },
        ],
        map: BTreeMap::from([(1, (true, 'x')), (-2, (false, '\u{1f600}'))]),
        opt: None,
        set: Set(vec![3, 1]),
        tuple: Tuple(vec!["a".into()]),
        c: Complex::new(1.0, -2.0),
        i: big("-340282366920938463463374607431768211457"),
    }
}

#[test]
fn typed_round_trips() {
    let o = sample();
    let b = dumps(&o).unwrap();
    assert_eq!(loads::<Outer>(&b).unwrap(), o);
    let v = to_value(&o).unwrap();
    assert_eq!(from_value::<Outer>(v.clone()).unwrap(), o);
    // The Value of the typed data, through the wire, is the same Value.
    assert_eq!(loads::<Value>(&b).unwrap(), v);
    assert_eq!(dumps(&v).unwrap(), b);
    let shapes = v.as_dict().unwrap().get_str("shapes").unwrap().to_string();
    assert_eq!(
        shapes,
        "['Point', {'Circle': 1.5}, {'Rect': (3, 4)}, {'Named': {'inner': {'name': 'n', \
         'blob': b'\\x00\\xff', 'raw': [1, 2]}, 'tags': ['t']}}]"
    );
    assert_eq!(v.as_dict().unwrap().get_str("set").unwrap(), &Value::Set(vec![3.into(), 1.into()]));
    assert_eq!(v.as_dict().unwrap().get_str("tuple").unwrap(), &Value::tuple(["a"]));
    let o2: Outer = from_value(Value::deserialize(v).unwrap()).unwrap();
    assert_eq!(o2, o);
}

#[test]
fn value_round_trips_through_every_path() {
    let v = Value::list([
        Value::None,
        Value::Bool(true),
        big("123456789012345678901234567890").into(),
        Value::Float(-0.0),
        Value::Complex(Complex::new(f64::INFINITY, 2.0)),
        Value::from("s"),
        Value::bytes(*b"b"),
        Value::tuple([Value::tuple(Vec::<Value>::new())]),
        Value::dict([(Value::tuple([1, 2]), Value::set(["x"])), (Value::frozenset([1]), Value::None)]),
        Value::frozenset([Value::tuple(["a"])]),
    ]);
    assert_eq!(loads::<Value>(&dumps(&v).unwrap()).unwrap(), v);
    assert_eq!(to_value(&v).unwrap(), v);
    assert_eq!(from_value::<Value>(v.clone()).unwrap(), v);
}

#[test]
fn other_formats_see_natural_forms() {
    let v = Value::list([
        Value::tuple([1, 2]),
        Value::set([3]),
        Value::bytes(*b"z"),
        big("-99999999999999999999999999999999999999999").into(),
    ]);
    let j = serde_json::to_string(&v).unwrap();
    assert_eq!(j, "[[1,2],[3],[122],\"-99999999999999999999999999999999999999999\"]");
    let back: Value = serde_json::from_str(&j).unwrap();
    assert_eq!(back.as_list().unwrap()[0], Value::list([1, 2]));
    // serde_json::Value from our data: tuples and sets become arrays.
    let jv: serde_json::Value = loads(&dumps(&Value::tuple([Value::set([1])])).unwrap()).unwrap();
    assert_eq!(jv, serde_json::json!([[1]]));
    let hm: HashMap<String, Value> = serde_json::from_str("{\"a\": [1, 2.5, null, true]}").unwrap();
    assert_eq!(hm["a"].to_string(), "[1, 2.5, None, True]");
}

#[test]
fn from_value_errors_are_clear() {
    let e = from_value::<i32>(Value::from("x")).unwrap_err().to_string();
    assert!(e.contains("invalid type: string \"x\", expected i32"), "{e}");
    let e = from_value::<u8>(Value::from(256)).unwrap_err().to_string();
    assert!(e.contains("expected u8"), "{e}");
    let e = from_value::<i64>(big("1".repeat(45).as_str()).into()).unwrap_err().to_string();
    assert!(e.contains("does not fit in i64"), "{e}");
    let e = from_value::<Shape>(Value::list([1])).unwrap_err().to_string();
    assert!(e.contains("enum Shape"), "{e}");
}

#[test]
fn to_value_keeps_channels() {
    let ch = crate::gateway::detached_channel(3);
    assert_eq!(to_value(&ch).unwrap(), Value::Channel(ch.clone()));
    assert!(to_value(&Set(5)).unwrap_err().to_string().contains("must wrap a sequence"));
}
