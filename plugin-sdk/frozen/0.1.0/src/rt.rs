//! What the generated bindings call at run time (`__rt` in them): running the
//! module's static constructors before the first export, and scratch memory for
//! values the canonical ABI lowers. On `wasm32-wasip2` the standard library itself
//! exports `cabi_realloc`, the allocator the host uses to hand data in.
#![allow(unsafe_code, reason = "the canonical ABI's memory handling, as the generated bindings need it")]

use std::alloc::Layout;
use std::ptr::NonNull;

/// Run the static constructors once, before the first export does anything (the
/// module asks to run them itself rather than around every export).
pub fn run_ctors_once() {
    #[cfg(target_arch = "wasm32")]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static DONE: AtomicBool = AtomicBool::new(false);
        unsafe extern "C" {
            /// Synthesised by wasm-ld: every static constructor of the module.
            fn __wasm_call_ctors();
        }
        if !DONE.swap(true, Ordering::Relaxed) {
            // SAFETY: called once, before any export reads state the constructors set.
            unsafe { __wasm_call_ctors() };
        }
    }
}

/// Nothing to do here: on `wasm32-wasip2`, `std` provides and exports `cabi_realloc`.
pub fn maybe_link_cabi_realloc() {}

/// A block of memory a lowered value is written into, freed when dropped.
pub struct Cleanup {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Cleanup {
    /// Allocate `layout`: the pointer (null for a zero size, with nothing to free)
    /// and the guard that frees it.
    pub fn new(layout: Layout) -> (*mut u8, Option<Cleanup>) {
        if layout.size() == 0 {
            return (std::ptr::null_mut(), None);
        }
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) };
        match NonNull::new(raw) {
            Some(ptr) => (raw, Some(Cleanup { ptr, layout })),
            None => std::alloc::handle_alloc_error(layout),
        }
    }

    /// Give up the block without freeing it (its ownership moved elsewhere).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout, and freed only here.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_allocates_what_is_asked_and_nothing_for_zero() {
        let (ptr, guard) = Cleanup::new(Layout::from_size_align(24, 8).expect("layout"));
        assert!(!ptr.is_null() && (ptr as usize).is_multiple_of(8) && guard.is_some());
        drop(guard);
        let (ptr, guard) = Cleanup::new(Layout::from_size_align(0, 4).expect("layout"));
        assert!(ptr.is_null() && guard.is_none());
    }
}
