//! The loader into the dynamic `Value`: `de::from_payload` (a frame's payload) and the
//! public, versioned `execnet::loads`. The corpus holds whole frames, so the bytes after
//! a 9-byte header are tried as a payload too.
#![no_main]

use execnet::wire::{de, frame};
use execnet::Value;
use libfuzzer_sys::fuzz_target;

#[path = "limits.rs"]
mod limits;

#[global_allocator]
static GLOBAL: limits::Ceiling = limits::Ceiling;

/// The two ways a payload becomes a `Value` agree: the stack machine building it
/// directly (a whole-payload `Value`), and the tape (a `Value` inside another type, here
/// an `Option`, which loads `None` as `None` and anything else as `Some`): the same value,
/// or the same error.
fn check_both_paths(payload: &[u8]) {
    let direct = de::from_payload::<Value>(payload);
    let via_tape = de::from_payload_tape::<Option<Value>>(payload).map(|v| v.unwrap_or(Value::None));
    match (&direct, &via_tape) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "direct and tape loads differ"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "direct and tape loads fail differently"),
        _ => panic!("one way of loading failed and the other did not: {direct:?} / {via_tape:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check_both_paths(data);
    if data.len() >= frame::HEADER_LEN {
        let payload = &data[frame::HEADER_LEN..];
        check_both_paths(payload);
        if let Ok(value) = de::from_payload::<Value>(payload) {
            // What dumps writes of a loaded value loads again as the same value.
            if let Ok(again) = execnet::dumps(&value) {
                let back: Value = execnet::loads(&again).expect("loads of dumps");
                assert_eq!(
                    format!("{back:?}"),
                    format!("{value:?}"),
                    "dumps/loads changed a value"
                );
            }
        }
    }
    // The public form: a version byte, then the object.
    let _ = execnet::loads::<Value>(data);
});
