//! The frame parser (`wire::frame::read_frame`) on a stream of bytes, as the host's
//! reader sees the worker's output: frames one after another until an error or the
//! end, each payload then given to the loader, as the gateway does.
#![no_main]

use execnet::wire::{de, frame};
use execnet::Value;
use libfuzzer_sys::fuzz_target;

#[path = "limits.rs"]
mod limits;

#[global_allocator]
static GLOBAL: limits::Ceiling = limits::Ceiling;

fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    while let Ok(Some((header, payload))) = frame::read_frame(&mut stream, limits::MAX_MESSAGE) {
        assert!(
            header.len <= limits::MAX_MESSAGE,
            "a header above the maximum was accepted"
        );
        assert_eq!(
            payload.len(),
            header.len,
            "the payload is not as long as the header says"
        );
        let _ = de::from_payload::<Value>(&payload);
    }
});
