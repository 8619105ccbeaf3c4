//! Backing large, freshly allocated buffers with transparent huge pages.
//!
//! Owns only the `madvise` call. Touching a new buffer of many megabytes in
//! 4 KiB pages costs a page fault per page (each an expensive trap on a
//! virtual machine); in 2 MiB pages it costs a handful. Used for the
//! index's record chunks and for large read results.

/// Buffers at least this large are worth advising.
pub(crate) const WORTH_IT: usize = 4 * 1024 * 1024;

/// Ask the kernel to back the whole 2 MiB pages inside `ptr..ptr + bytes`
/// (memory this process allocated and has not written yet) with huge
/// pages. A hint: contents and validity are unaffected, and a kernel that
/// refuses leaves the pages as they were.
pub(crate) fn advise(ptr: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        let huge = 2 * 1024 * 1024;
        let start = ptr as usize;
        let aligned = start.saturating_add(huge - 1) & !(huge - 1);
        let end = start.saturating_add(bytes) & !(huge - 1);
        if end > aligned {
            // SAFETY: MADV_HUGEPAGE on whole pages inside an allocation the
            // caller owns only changes how the kernel backs them; no memory
            // is read, written or unmapped.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// An empty vector with room for `n` elements, advised for huge pages when
/// that room is large.
pub(crate) fn vec_with_capacity<T>(n: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(n);
    let bytes = v.capacity().saturating_mul(std::mem::size_of::<T>());
    if bytes >= WORTH_IT {
        advise(v.as_ptr().cast(), bytes);
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_advised_vector_is_an_ordinary_vector() {
        let mut v: Vec<u64> = super::vec_with_capacity(1 << 20);
        assert!(v.capacity() >= 1 << 20);
        v.extend(0..1 << 20);
        assert_eq!(v.iter().sum::<u64>(), (1u64 << 20) * ((1 << 20) - 1) / 2);
        let small: Vec<u8> = super::vec_with_capacity(10);
        assert!(small.capacity() >= 10);
    }
}
