//! Page-aligned buffers for direct disk I/O, and a bounded pool of them for big frames: a
//! frame read into one is not zeroed first (a page is zeroed once, when the pool first grows
//! it), and the file bytes it carries can go to the disk without a copy when they start on a
//! page boundary (see `receive::disk::DirectWriter`).

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
