//! The heap: mimalloc as the daemon's allocator (the request path allocates
//! and frees a few dozen small blocks per request; glibc's and above all
//! musl's malloc, which the image links, cost more there), and giving freed
//! memory back after a reload.

/// The allocator the daemon installs with `#[global_allocator]`.
pub type Allocator = mimalloc::MiMalloc;

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
