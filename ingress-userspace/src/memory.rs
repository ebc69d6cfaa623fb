//! The heap: mimalloc as the daemon's allocator (the request path allocates
//! and frees a few dozen small blocks per request; glibc's and above all
//! musl's malloc, which the image links, cost more there), and giving freed
//! memory back after a reload.

/// The allocator the daemon installs with `#[global_allocator]`.
pub type Allocator = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_e` (mimalloc.h).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc give memory back as glibc's malloc does: arenas
/// committed as they are used rather than whole, and freed pages returned
/// at once rather than after a delay. Without this the start-up peak (the
/// XDP object's parse) was 36 MiB instead of 27. Call it first in `main`.
pub fn configure() {
    // SAFETY: setting an option is a store; the options are read as arenas
    // are reserved and pages purged.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

/// Building from thousands of objects frees far more than it keeps, and
/// allocators hold freed memory until asked (at 10,000 Ingresses glibc kept
/// 130 MiB resident instead of 35 MiB): give it back after each reload.
pub fn release_freed_memory() {
    // SAFETY: mi_collect only frees pages mimalloc no longer uses; with
    // another global allocator (the tests) its heap is empty.
    unsafe { libmimalloc_sys::mi_collect(true) };
    // C libraries (aws-lc) still use the C library's malloc.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
