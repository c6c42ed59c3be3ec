//! Page-aligned buffers for direct disk I/O, and a bounded pool of them for big frames: a
//! frame read into one is not zeroed first (a page is zeroed once, when the pool first grows
//! it), and the file bytes it carries can go to the disk without a copy when they start on a
//! page boundary (see `receive::direct::DirectWriter`).

use std::sync::Mutex;

/// Bytes in a page: the alignment of direct reads and writes, which covers the logical block
/// size of any disk up to 4 KiB.
pub const PAGE: usize = 4096;

/// Frame buffers kept for reuse, at most: about as many as big frames are in flight on a
/// receive (its read window), so a steady transfer takes none from the allocator.
const POOLED: usize = 32;

/// A page of memory, so a `Vec` of them is aligned for direct I/O.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct Page([u8; PAGE]);

impl Page {
    pub const ZERO: Page = Page([0; PAGE]);
}

/// `pages` as bytes.
pub fn bytes(pages: &[Page]) -> &[u8] {
    // SAFETY: a page is PAGE initialised bytes without padding, so the slice is
    // `pages.len() * PAGE` initialised bytes, borrowed as long as `pages`.
    unsafe { std::slice::from_raw_parts(pages.as_ptr().cast::<u8>(), pages.len() * PAGE) }
}

/// `pages` as mutable bytes.
pub fn bytes_mut(pages: &mut [Page]) -> &mut [u8] {
    // SAFETY: as in `bytes`, borrowed mutably and exclusively as long as `pages`.
    unsafe { std::slice::from_raw_parts_mut(pages.as_mut_ptr().cast::<u8>(), pages.len() * PAGE) }
}

/// Reads and writes of at least this many bytes that are all zero are runs of zeros: the
/// sender answers them with their count (`Response.zeros`), the receiver makes them a hole.
pub const ZERO_RUN: usize = 64 * 1024;

/// Whether `b` holds only zero bytes (a run of zeros answered by its length, a hole on the
/// disk). Stops at the first 256 bytes that are not all zero, so data costs next to nothing.
pub fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(256);
    chunks.all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
        && chunks.remainder().iter().all(|&x| x == 0)
}

/// Zeros for the longest read (`proto::MAX_READ`), shared: a read answered with its count of
/// zeros is a slice of these, no allocation.
static ZEROS: [Page; crate::proto::MAX_READ as usize / PAGE] =
    [Page::ZERO; crate::proto::MAX_READ as usize / PAGE];

/// `n` zero bytes (`n <= proto::MAX_READ`).
pub fn zeros(n: usize) -> bytes::Bytes {
    let all: &'static [u8] = bytes(&ZEROS);
    bytes::Bytes::from_static(&all[..n])
}

/// Whether `b` is a slice of [`zeros`]: bytes a sender sent as their count.
pub fn is_counted_zeros(b: &[u8]) -> bool {
    let all = bytes(&ZEROS);
    let (start, p) = (all.as_ptr() as usize, b.as_ptr() as usize);
    !b.is_empty() && p >= start && p + b.len() <= start + all.len()
}

static POOL: Mutex<Vec<Vec<Page>>> = Mutex::new(Vec::new());

/// Pages for `len` bytes from the pool (grown with zeroed pages where short), or new ones.
pub fn take(len: usize) -> Vec<Page> {
    let mut pages = POOL.lock().expect("lock").pop().unwrap_or_default();
    let n = len.div_ceil(PAGE);
    if pages.len() < n {
        pages.resize(n, Page::ZERO);
    }
    pages
}

/// A frame's bytes `start..end` in pooled pages, which go back to the pool when the last
/// `Bytes` made of it ([`bytes::Bytes::from_owner`]) is dropped.
pub struct Pooled {
    pub pages: Vec<Page>,
    pub start: usize,
    pub end: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &bytes(&self.pages)[self.start..self.end]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let pages = std::mem::take(&mut self.pages);
        let mut pool = POOL.lock().expect("lock");
        if pool.len() < POOLED {
            pool.push(pages);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_pages_come_back_aligned_and_keep_their_bytes() {
        // Other tests share the pool: pages from it may be more than asked for.
        let mut p = take(3 * PAGE + 1);
        assert!(p.len() >= 4);
        assert!((p.as_ptr() as usize).is_multiple_of(PAGE));
        bytes_mut(&mut p)[PAGE..PAGE + 3].copy_from_slice(b"abc");
        let b = bytes::Bytes::from_owner(Pooled {
            pages: p,
            start: PAGE,
            end: PAGE + 3,
        });
        assert_eq!(&b[..], b"abc");
        let slice = b.slice(1..);
        drop(b);
        assert_eq!(&slice[..], b"bc");
        drop(slice);
        // Back in the pool: a later take may get these very pages, not zeroed again.
        let again = take(PAGE);
        assert!(!again.is_empty() && (again.as_ptr() as usize).is_multiple_of(PAGE));
    }
}
