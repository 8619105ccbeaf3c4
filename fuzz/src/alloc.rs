//! The counting allocator: the global allocator of every binary that links
//! this crate. A transparent pass-through unless [`measure`] is active on the
//! calling thread; then it records, for that call, the largest single
//! request, the total requested and the peak of live bytes, so that a target
//! can hold a decoder to an allocation bound proportional to its input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// What one measured call asked of the allocator (on its own thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Largest single request (`alloc` size or `realloc` new size).
    pub largest: usize,
    /// Sum of all requests (a growing `realloc` counts its new size).
    pub total: usize,
    /// Highest value of (bytes allocated - bytes freed) during the call.
    pub peak_live: usize,
}

#[derive(Clone, Copy)]
struct State {
    active: bool,
    usage: Usage,
    live: isize,
}

const IDLE: State = State {
    active: false,
    usage: Usage {
        largest: 0,
        total: 0,
        peak_live: 0,
    },
    live: 0,
};

thread_local! {
    // Const-initialised plain data without a destructor: accessing it
    // never allocates and never registers a TLS destructor, so using it
    // inside the allocator cannot recurse.
    static STATE: Cell<State> = const { Cell::new(IDLE) };
}

#[inline]
fn note(request: usize, grow: usize, shrink: usize) {
    // `try_with`: during thread teardown the slot may be gone; then
    // nothing is counted (no measurement can be active then anyway).
    let _ = STATE.try_with(|s| {
        let mut st = s.get();
        if !st.active {
            return;
        }
        st.usage.largest = st.usage.largest.max(request);
        st.usage.total = st.usage.total.saturating_add(request);
        st.live = st
            .live
            .saturating_add(grow as isize)
            .saturating_sub(shrink as isize);
        st.usage.peak_live = st.usage.peak_live.max(st.live.max(0) as usize);
        s.set(st);
    });
}

pub struct Counting;

// SAFETY: every method forwards its arguments unchanged to `System`, so
// `System`'s guarantees are ours; the bookkeeping only reads and writes a
// thread-local `Cell` of integers, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), layout.size(), 0);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract,
        // which is the one `System.alloc` needs.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), layout.size(), 0);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, 0, layout.size());
        // SAFETY: the caller guarantees `ptr` came from this allocator
        // (that is, from `System`) with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr`/`layout` describe a live
        // block of this allocator (of `System`) and a valid `new_size`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            note(new_size, 0, 0);
        } else {
            note(new_size, new_size, layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Run `f`, counting what it allocates on this thread.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    struct Stop;
    impl Drop for Stop {
        fn drop(&mut self) {
            STATE.with(|s| s.set(IDLE));
        }
    }
    STATE.with(|s| {
        s.set(State {
            active: true,
            ..IDLE
        })
    });
    let stop = Stop;
    let r = f();
    let usage = STATE.with(|s| s.get().usage);
    drop(stop);
    (r, usage)
}
