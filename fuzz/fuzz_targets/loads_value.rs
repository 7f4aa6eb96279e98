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

fuzz_target!(|data: &[u8]| {
    let _ = de::from_payload::<Value>(data);
    if data.len() >= frame::HEADER_LEN {
        let payload = &data[frame::HEADER_LEN..];
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
