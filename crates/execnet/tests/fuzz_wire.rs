//! A bounded, in-process, mutation-based fuzz loop over the frame parser
//! (`wire::frame::read_frame`) and the deserializer (`loads`, `de::from_payload`, into
//! `Value` and into typed data), seeded with real worker traffic from
//! `tests/fuzz/corpus` (recorded by `tests/fuzz/record_corpus.py`).
//!
//! Checked for every input: no panic, and no single allocation larger than
//! `ALLOC_CEILING` (lengths are checked against the maximum message size and the bytes
//! actually present before anything is allocated). A counting global allocator in this
//! test binary records the largest allocation.
//!
//! CI runs it for `EXECNET_FUZZ_SECONDS` (default 15) seconds; a longer run:
//! `EXECNET_FUZZ_SECONDS=3600 cargo test --release -p execnet --test fuzz_wire -- --nocapture`
//! (`EXECNET_FUZZ_SEED=N` repeats a run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use execnet::wire::{de, frame};
use execnet::Value;

/// The frame parser's maximum message size in this loop.
const MAX_MESSAGE: usize = 1 << 20;
/// No input of at most MAX_INPUT bytes may make one allocation larger than this.
const ALLOC_CEILING: usize = 16 << 20;
const MAX_INPUT: usize = 64 * 1024;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
static WATCHING: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCHING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if WATCHING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let corpus: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(corpus.len() >= 20, "the corpus in {} is missing", dir.display());
    corpus
}

/// Interesting values for 32-bit length and count fields.
const INTERESTING: [u32; 10] =
    [0, 1, 0x7f, 0xff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x4000_0000, 0x0010_0001, 0xffff];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(len - i + 1);
                input.drain(i..i + n);
            }
            4 if len >= 4 => {
                let i = rng.below(len - 3);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                input[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            5 => {
                // splice in a piece of another corpus entry
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                let n = rng.below(other.len() - from + 1);
                let at = rng.below(len + 1);
                let piece: Vec<u8> = other[from..from + n].to_vec();
                input.splice(at..at, piece);
            }
            6 if len > 0 => input.truncate(rng.below(len)),
            7 if len > 0 => {
                // repeat a chunk (nesting, long runs of opcodes)
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                let chunk = input[i..i + n].to_vec();
                for _ in 0..rng.below(64) {
                    input.splice(i..i, chunk.iter().copied());
                }
            }
            _ => {
                let i = rng.below(len + 1);
                input.insert(i, b"NPQJKLMBCDEFGHIRST@ABXYZ"[rng.below(24)]);
            }
        }
    }
    input.truncate(MAX_INPUT);
}

/// Every entry point on one input.
fn exercise(input: &[u8]) {
    // A stream of frames.
    let mut r = input;
    for _ in 0..1000 {
        match frame::read_frame(&mut r, MAX_MESSAGE) {
            Ok(Some((_, payload))) => {
                let _ = de::from_payload::<Value>(&payload);
            }
            Ok(None) | Err(_) => break,
        }
    }
    // The payload loader on the raw bytes, into Value and into typed data.
    let _ = de::from_payload::<Value>(input);
    let _ = de::from_payload::<(String, Option<String>, Option<String>, Value)>(input);
    let _ = de::from_payload::<Vec<i64>>(input);
    let _ = de::from_payload::<std::collections::HashMap<String, Value>>(input);
    // The public form: version byte 2, then the object.
    let mut versioned = Vec::with_capacity(input.len() + 1);
    versioned.push(2);
    versioned.extend_from_slice(input);
    let _ = execnet::loads::<Value>(&versioned);
    let _ = execnet::loads::<Value>(input);
}

#[test]
fn fuzz_frames_and_loader() {
    let seconds: u64 = std::env::var("EXECNET_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let seed: u64 = std::env::var("EXECNET_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    eprintln!("fuzz_wire: seed {seed} (EXECNET_FUZZ_SEED={seed} repeats this run), {seconds} s");
    let corpus = corpus();
    // The corpus itself must parse: it is real traffic.
    for entry in &corpus {
        let mut r = &entry[..];
        while let Some((_, payload)) = frame::read_frame(&mut r, MAX_MESSAGE).expect("corpus frame") {
            if !payload.is_empty() {
                de::from_payload::<Value>(&payload).expect("corpus payload");
            }
        }
    }
    // The allocation watch works: a real frame's payload is seen.
    LARGEST.store(0, Ordering::Relaxed);
    WATCHING.store(true, Ordering::Relaxed);
    exercise(&corpus[corpus.len() - 1]);
    WATCHING.store(false, Ordering::Relaxed);
    assert!(LARGEST.load(Ordering::Relaxed) > 0);
    let mut rng = Rng(seed);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    std::panic::set_hook(Box::new(|_| {}));
    while Instant::now() < end {
        for _ in 0..100 {
            let mut input = corpus[rng.below(corpus.len())].clone();
            mutate(&mut rng, &corpus, &mut input);
            LARGEST.store(0, Ordering::Relaxed);
            WATCHING.store(true, Ordering::Relaxed);
            let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&input)));
            WATCHING.store(false, Ordering::Relaxed);
            let largest = LARGEST.load(Ordering::Relaxed);
            if outcome.is_err() || largest > ALLOC_CEILING {
                let _ = std::panic::take_hook();
                let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
                panic!(
                    "input {hex} {}",
                    if outcome.is_err() { "panicked".to_string() } else { format!("allocated {largest} bytes at once") }
                );
            }
            runs += 1;
        }
    }
    let _ = std::panic::take_hook();
    eprintln!("fuzz_wire: {runs} inputs, no panic, no allocation above {ALLOC_CEILING} bytes");
    assert!(runs > 1000, "only {runs} inputs in {seconds} s");
}
