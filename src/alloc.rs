//! Process-wide allocator settings that pay on the CPU path.
//!
//! candle allocates a fresh buffer for every intermediate tensor (a 32 × 128 batch of
//! all-MiniLM-L6-v2 makes ~25 MB ones). glibc's malloc serves buffers that large with `mmap` and
//! gives them back with `munmap` or trims them off the heap, so every forward pass pays the
//! kernel to fault in and zero the same pages again: 15% of a 32 × 128 forward here. Raising
//! the mmap and trim thresholds keeps freed buffers in the heap for the next batch, at the cost
//! of keeping the process at its peak working set.
//!
//! A library should not change its host's allocator on its own, so nothing here runs unless
//! called: the `tremble` binary, the benchmarks and the peer comparison call it, and a serving
//! stack may too (or set `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…:glibc.malloc.trim_threshold=…`).

/// Heap allocations up to this size stay out of `mmap`.
pub const MMAP_THRESHOLD: usize = 256 << 20;
/// Free memory at the top of the heap up to this size is kept.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Keeps freed tensor buffers for reuse (see the module docs). Returns whether the settings
/// were applied: only with glibc on Linux; elsewhere it does nothing and returns `false`.
pub fn keep_freed_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; both values are in range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_buffers());
    }
}
