//! Shared by the fuzz targets: the limits every input must keep.
//!
//! A global allocator that aborts the process (which libFuzzer reports as a crash,
//! with the input saved) when one allocation asks for more than `ALLOC_CEILING`
//! bytes. Inputs are at most `MAX_INPUT` bytes (`-max_len`), so an allocation that
//! large can only come from a length or count taken from the input without a check.
//! Sanitizer-independent, unlike libFuzzer's `-malloc_limit_mb`.

use std::alloc::{GlobalAlloc, Layout, System};

/// The frame parser's maximum message size in the targets.
#[allow(dead_code)] // not every target reads frames
pub const MAX_MESSAGE: usize = 1 << 20;
/// No single allocation may be larger than this.
pub const ALLOC_CEILING: usize = 16 << 20;

pub struct Ceiling;

fn check(size: usize) {
    if size > ALLOC_CEILING {
        // No formatting here: it would allocate inside the allocator.
        let msg = b"execnet-fuzz: one allocation above the 16 MiB ceiling\n";
        unsafe {
            libc_write(msg);
        }
        std::process::abort();
    }
}

unsafe fn libc_write(msg: &[u8]) {
    extern "C" {
        fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    }
    write(2, msg.as_ptr(), msg.len());
}

unsafe impl GlobalAlloc for Ceiling {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }
}
