//! Counting live heap bytes: a global allocator that forwards to `System` and keeps a
//! process-wide count of the bytes allocated and not yet freed. Shared by the memory tests of
//! wsx-proto and wsx (`#[path]`-included: each test binary gets its own allocator and count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;

/// Bytes allocated and not yet freed, by anyone in this process.
pub(crate) fn live() -> isize {
    LIVE.load(Ordering::SeqCst)
}

/// The count is process-wide: the tests of one binary take turns, so that one's allocations do
/// not show in another's figure.
pub(crate) fn alone() -> std::sync::MutexGuard<'static, ()> {
    static ALONE: Mutex<()> = Mutex::new(());
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting live bytes in [`LIVE`].
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// A global allocator cannot be written without `unsafe`: this one only forwards every call to
// `System` unchanged, with the same arguments, and counts sizes on the side.
#[allow(unsafe_code)]
// SAFETY: each method forwards to `System`'s, which upholds the `GlobalAlloc` contract; the
// counter never touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are passed on as they are.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller vouches for `new_size`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        new
    }
}
