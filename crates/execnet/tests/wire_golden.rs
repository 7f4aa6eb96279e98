//! Golden vectors checked against the real execnet package, both directions.
//!
//! For each (Python expression, Value) pair, one Python process with execnet installed
//! (env `EXECNET_PYTHON`) reports `execnet.dumps(eval(expr))`, whether
//! `execnet.loads(our dumps)` equals `eval(expr)`, and `repr(eval(expr))`. We check:
//! our bytes equal execnet's wherever execnet's encoding is deterministic; our loads of
//! execnet's bytes give the Value; execnet's loads of our bytes give the Python object;
//! our `Display` equals Python's `repr`.
//!
//! Without `EXECNET_PYTHON` the test is skipped (loudly), except under `CI=true`, where it
//! fails.

use std::io::Write;
use std::process::{Command, Stdio};

use execnet::{dumps, loads, Complex, Dict, Int, Value};

/// How a vector is compared.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Check {
    /// execnet's bytes are deterministic: ours must be identical.
    Exact,
    /// Iteration order of sets may differ: compare by loading on both sides.
    Unordered,
    /// execnet 2.1.2 cannot dump it (ints below -2**31): only its loads is checked.
    LoadOnly,
}
use Check::*;

fn int(s: &str) -> Value {
    Value::Int(s.parse::<Int>().unwrap())
}

fn s(x: &str) -> Value {
    Value::from(x)
}

#[allow(clippy::excessive_precision)]
fn vectors() -> Vec<(&'static str, Value, Check)> {
    vec![
        ("None", Value::None, Exact),
        ("True", Value::Bool(true), Exact),
        ("False", Value::Bool(false), Exact),
        ("0", 0.into(), Exact),
        ("1", 1.into(), Exact),
        ("-1", (-1).into(), Exact),
        ("2**31 - 1", i32::MAX.into(), Exact),
        ("-2**31", i32::MIN.into(), Exact),
        ("2**31", (1i64 << 31).into(), Exact),
        ("2**63 - 1", i64::MAX.into(), Exact),
        ("2**64", int("18446744073709551616"), Exact),
        ("10**40", int(&format!("1{}", "0".repeat(40))), Exact),
        ("-2**31 - 1", (i32::MIN as i64 - 1).into(), LoadOnly),
        ("-2**63", i64::MIN.into(), LoadOnly),
        ("-10**30", int(&format!("-1{}", "0".repeat(30))), LoadOnly),
        ("0.0", 0.0.into(), Exact),
        ("-0.0", (-0.0).into(), Exact),
        ("1.5", 1.5.into(), Exact),
        ("1e100", 1e100.into(), Exact),
        ("1e-05", 1e-5.into(), Exact),
        ("1e16", 1e16.into(), Exact),
        ("123456789.125", 123456789.125.into(), Exact),
        ("float('inf')", f64::INFINITY.into(), Exact),
        ("float('-inf')", f64::NEG_INFINITY.into(), Exact),
        ("float('nan')", f64::NAN.into(), Exact),
        ("5e-324", 5e-324.into(), Exact),
        ("-948.00421142578125", (-948.00421142578125).into(), Exact),
        ("0.1 + 0.2", (0.1f64 + 0.2).into(), Exact),
        ("1+2j", Complex::new(1.0, 2.0).into(), Exact),
        ("complex(0, -1)", Complex::new(0.0, -1.0).into(), Exact),
        ("complex(-0.0, 2.5)", Complex::new(-0.0, 2.5).into(), Exact),
        ("complex(float('inf'), 0)", Complex::new(f64::INFINITY, 0.0).into(), Exact),
        ("''", s(""), Exact),
        ("'a'", s("a"), Exact),
        ("\"it's\"", s("it's"), Exact),
        ("'\\'\"'", s("'\""), Exact),
        ("'\\xe9t\\xe9'", s("\u{e9}t\u{e9}"), Exact),
        ("'\\U0001f600'", s("\u{1f600}"), Exact),
        ("'a\\nb\\x00\\t\\\\'", s("a\nb\0\t\\"), Exact),
        ("'\\u2028\\x7f\\x85\\xa0\\xad'", s("\u{2028}\x7f\u{85}\u{a0}\u{ad}"), Exact),
        ("b''", Value::bytes(*b""), Exact),
        ("b'ab\\x00\\xff'", Value::bytes(*b"ab\0\xff"), Exact),
        ("b\"'\"", Value::bytes(*b"'"), Exact),
        ("bytes(range(256))", Value::bytes((0..=255u8).collect::<Vec<u8>>()), Exact),
        ("[]", Value::list(Vec::<Value>::new()), Exact),
        ("[1, 'a']", Value::list([Value::from(1), s("a")]), Exact),
        (
            "[[1], [2, [3]]]",
            Value::list([Value::list([1]), Value::list([Value::from(2), Value::list([3])])]),
            Exact,
        ),
        (
            "[None, True, 1.5, b'x']",
            Value::list([Value::None, true.into(), 1.5.into(), Value::bytes(*b"x")]),
            Exact,
        ),
        ("()", Value::tuple(Vec::<Value>::new()), Exact),
        ("(1,)", Value::tuple([1]), Exact),
        ("(1, 2, 'x')", Value::tuple([Value::from(1), 2.into(), s("x")]), Exact),
        ("((),)", Value::tuple([Value::tuple(Vec::<Value>::new())]), Exact),
        ("{}", Value::Dict(Dict::new()), Exact),
        ("{'a': 1}", Value::dict([("a", 1)]), Exact),
        ("{1: 'a', 2: 'b'}", Value::dict([(1, "a"), (2, "b")]), Exact),
        ("{(1, 2): None}", Value::dict([(Value::tuple([1, 2]), Value::None)]), Exact),
        ("{frozenset({1}): 1}", Value::dict([(Value::frozenset([1]), 1)]), Exact),
        (
            "{b'k': [1, (2,)], 2.5: {'x': 1j}}",
            Value::dict([
                (Value::bytes(*b"k"), Value::list([Value::from(1), Value::tuple([2])])),
                (2.5.into(), Value::dict([("x", Complex::new(0.0, 1.0))])),
            ]),
            Exact,
        ),
        (
            "{'nested': {'list': [1, 2], 'tuple': (3,), 'set': {4}, 'none': None}}",
            Value::dict([(
                "nested",
                Value::dict([
                    ("list", Value::list([1, 2])),
                    ("tuple", Value::tuple([3])),
                    ("set", Value::set([4])),
                    ("none", Value::None),
                ]),
            )]),
            Exact,
        ),
        ("set()", Value::set(Vec::<Value>::new()), Exact),
        ("{1}", Value::set([1]), Exact),
        ("{1, 2, 3}", Value::set([1, 2, 3]), Unordered),
        ("frozenset()", Value::frozenset(Vec::<Value>::new()), Exact),
        ("frozenset({'a'})", Value::frozenset(["a"]), Exact),
        ("{'a', 'b', 'c'}", Value::set(["a", "b", "c"]), Unordered),
        (
            "frozenset({(1, 'x'), (2, 'y')})",
            Value::frozenset([
                Value::tuple([Value::from(1), s("x")]),
                Value::tuple([Value::from(2), s("y")]),
            ]),
            Unordered,
        ),
        (
            "[{1: (2, frozenset({3}))}, -2**40]",
            Value::list([
                Value::dict([(1, Value::tuple([Value::from(2), Value::frozenset([3])]))]),
                (-(1i64 << 40)).into(),
            ]),
            LoadOnly,
        ),
    ]
}

/// A canonical text of a value for comparing: its Python literal, with the members of
/// sets and frozensets sorted (so iteration order does not matter).
fn canonical(v: &Value) -> String {
    fn norm(v: &Value) -> Value {
        let sorted = |items: &[Value]| {
            let mut items: Vec<Value> = items.iter().map(norm).collect();
            items.sort_by_key(|i| i.to_string());
            items
        };
        match v {
            Value::List(items) => Value::List(items.iter().map(norm).collect()),
            Value::Tuple(items) => Value::Tuple(items.iter().map(norm).collect()),
            Value::Set(items) => Value::Set(sorted(items)),
            Value::FrozenSet(items) => Value::FrozenSet(sorted(items)),
            Value::Dict(d) => {
                Value::Dict(Dict::from_entries(d.iter().map(|(k, v)| (norm(k), norm(v))).collect()))
            }
            other => other.clone(),
        }
    }
    norm(v).to_string()
}

const SCRIPT: &str = r#"
import json, math, sys
import execnet

def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b

for expr, ours in json.load(sys.stdin):
    obj = eval(expr)
    r = {"expr": expr, "repr": repr(obj)}
    try:
        r["theirs"] = execnet.dumps(obj).hex()
    except Exception as e:
        r["dump_error"] = "%s: %s" % (type(e).__name__, e)
    try:
        loaded = execnet.loads(bytes.fromhex(ours))
        r["same"] = same(loaded, obj)
        r["loaded_repr"] = repr(loaded)
    except Exception as e:
        r["load_error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(r), flush=True)
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn execnet_python() -> Option<String> {
    match std::env::var("EXECNET_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            let reason = "EXECNET_PYTHON is not set: it must name a Python interpreter with the \
                          execnet package installed (for example a venv's bin/python after \
                          `pip install execnet==2.1.2`)";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("wire golden vectors cannot run under CI: {reason}");
            }
            eprintln!("SKIPPED: wire golden vectors against execnet: {reason}");
            None
        }
    }
}

/// Runs `script` with `python`, feeding it `stdin`; returns its standard output.
fn run_python(python: &str, script: &str, stdin: &[u8]) -> String {
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run EXECNET_PYTHON={python}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{python} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every code point (but surrogates) in one str: our literal must evaluate back to it,
/// and its bytes must equal execnet's. Whether the literal equals this Python's repr
/// exactly depends on its Unicode version, so that is only reported.
#[test]
fn every_code_point_against_python() {
    let Some(python) = execnet_python() else { return };
    let all: String = (0u32..0x11_0000).filter_map(char::from_u32).collect();
    let literal = execnet::wire::pyrepr::py_str_literal(&all);
    assert!(!literal.contains('\n') && !literal.contains('\r'));
    let ours = hex(&dumps(&all).unwrap());
    let script = r#"
import sys, execnet
lit, ours = sys.stdin.buffer.read().decode("utf-8").split("\n")
s = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
print(eval(lit) == s, execnet.dumps(s).hex() == ours, execnet.loads(bytes.fromhex(ours)) == s, lit == repr(s))
"#;
    let out = run_python(&python, script, format!("{literal}\n{ours}").as_bytes());
    let flags: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(flags[..3], ["True", "True", "True"], "eval(literal), dumps, loads of every code point");
    eprintln!("every code point: our literal equals this Python's repr: {}", flags[3]);
}

#[test]
fn worked_example_of_protocol_md() {
    let v = Value::list([Value::from(1), Value::from("a")]);
    let want = "02 4B 00000002 46 00000000 46 00000001 50 46 00000001 4E 00000001 61 50 51";
    assert_eq!(hex(&dumps(&v).unwrap()), want.replace(' ', "").to_lowercase());
    assert_eq!(loads::<Value>(&unhex(&want.replace(' ', ""))).unwrap(), v);
}

#[test]
fn golden_vectors_against_execnet() {
    let Some(python) = execnet_python() else { return };
    let vectors = vectors();
    let input: Vec<(String, String)> =
        vectors.iter().map(|(expr, v, _)| (expr.to_string(), hex(&dumps(v).unwrap()))).collect();

    let out = run_python(&python, SCRIPT, serde_json::to_string(&input).unwrap().as_bytes());
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), vectors.len(), "one result per vector");

    let mut failures = Vec::new();
    let mut exact = 0;
    for ((expr, value, check), r) in vectors.iter().zip(&lines) {
        assert_eq!(r["expr"], *expr);
        let ours = dumps(value).unwrap();
        let mut fail = |what: String| failures.push(format!("{expr}: {what}"));

        // execnet.loads(our bytes) == eval(expr)
        match (&r["same"], &r["load_error"]) {
            (serde_json::Value::Bool(true), _) => {}
            (serde_json::Value::Bool(false), _) => {
                fail(format!("execnet loads our {} as {}", hex(&ours), r["loaded_repr"]))
            }
            (_, e) => fail(format!("execnet cannot load our {}: {e}", hex(&ours))),
        }

        let theirs = r["theirs"].as_str().map(unhex);
        match (check, &theirs) {
            (LoadOnly, None) => {}
            (_, None) => fail(format!("execnet cannot dump it: {}", r["dump_error"])),
            (_, Some(theirs)) => {
                if *check != Unordered {
                    if *theirs == ours {
                        exact += 1;
                    } else {
                        fail(format!("bytes differ: ours {} execnet {}", hex(&ours), hex(theirs)));
                    }
                }
                // Our loads of execnet's bytes gives the value.
                match loads::<Value>(theirs) {
                    Ok(v) if canonical(&v) == canonical(value) => {}
                    Ok(v) => fail(format!("we load execnet's bytes as {v}, expected {value}")),
                    Err(e) => fail(format!("we cannot load execnet's bytes {}: {e}", hex(theirs))),
                }
            }
        }

        // Our Display is Python's repr.
        let repr = r["repr"].as_str().unwrap();
        if *check == Unordered {
            let mut a: Vec<char> = value.to_string().chars().collect();
            let mut b: Vec<char> = repr.chars().collect();
            a.sort_unstable();
            b.sort_unstable();
            if a != b {
                fail(format!("Display {value} is not a reordering of repr {repr}"));
            }
        } else {
            let shown = value.to_string();
            if shown != repr {
                fail(format!("Display {shown} != repr {repr}"));
            }
        }
    }
    eprintln!(
        "wire golden vectors: {} checked against execnet ({} byte-identical encodings)",
        vectors.len(),
        exact
    );
    assert!(failures.is_empty(), "{} golden vector failures:\n{}", failures.len(), failures.join("\n"));
}
