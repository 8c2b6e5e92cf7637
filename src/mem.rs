//! Large output buffers backed by transparent huge pages where Linux offers them.
//!
//! A fresh 64 MiB buffer costs 16 384 page faults in 4 KiB pages, and on a virtual machine
//! each is expensive: measured here, that made writing int8 codes (¼ of the input) slower than
//! the whole quantization. numpy asks for huge pages on large arrays for the same reason. The
//! advice changes no contents and no semantics, only how the kernel backs the memory.

/// Buffers smaller than this are left alone.
const MIN_BYTES: usize = 8 << 20;

/// Asks for transparent huge pages on the spare capacity of `v` (Linux, buffers of 8 MiB and
/// more; a no-op elsewhere). Call it after reserving and before writing.
pub fn advise_huge_pages<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = v.capacity().saturating_mul(size_of::<T>());
        if bytes < MIN_BYTES {
            return;
        }
        let start = v.as_mut_ptr() as usize;
        let first = start.next_multiple_of(HUGE);
        let end = start.saturating_add(bytes) / HUGE * HUGE;
        if end > first {
            // SAFETY: [first, end) lies inside the allocation of `v` (its capacity); MADV_HUGEPAGE
            // only changes how the kernel backs those pages, never their contents. A failure
            // (no THP support) leaves the memory as it was, so the result is ignored.
            #[allow(unsafe_code)]
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// A vector of `len` zeros with huge pages advised before the zeros are written.
pub fn zeroed<T: Clone + Default>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    advise_huge_pages(&mut v);
    v.resize(len, T::default());
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn advice_keeps_contents_and_length() {
        let v: Vec<u32> = super::zeroed(5 << 20);
        assert_eq!(v.len(), 5 << 20);
        assert!(v.iter().all(|&x| x == 0));
        let mut w = vec![7u8; 3];
        w.reserve(16 << 20);
        super::advise_huge_pages(&mut w);
        assert_eq!(w, [7, 7, 7]);
    }
}
