//! JSON lines for `execnet run --json`.

use execnet::Value;

/// JSON form of a Python value: tuples, sets and frozensets become arrays, dicts with
/// string keys objects (other dicts arrays of [key, value] pairs), bytes
/// `{"bytes_hex": ...}`, complex `{"real": .., "imag": ..}`, big ints strings.
pub(crate) fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => match i.as_i64() {
            Some(n) => J::from(n),
            None => J::String(i.to_string()),
        },
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or_else(|| J::String(f.to_string()), J::Number),
        Value::Complex(c) => serde_json::json!({"real": c.re, "imag": c.im}),
        Value::Str(s) => J::String(s.clone()),
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            serde_json::json!({ "bytes_hex": hex })
        }
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => {
            J::Array(items.iter().map(to_json).collect())
        }
        Value::Dict(d) => {
            if d.iter().all(|(k, _)| matches!(k, Value::Str(_))) {
                J::Object(
                    d.iter()
                        .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), to_json(v)))
                        .collect(),
                )
            } else {
                J::Array(d.iter().map(|(k, v)| J::Array(vec![to_json(k), to_json(v)])).collect())
            }
        }
        Value::Channel(ch) => serde_json::json!({ "channel": ch.id() }),
    }
}

