//! Read-ahead policy, kept apart from the fetching it drives: a sequential reader gets a window
//! that doubles while it stays sequential (up to a quarter of the cache, so what comes in is
//! still cached when the reader gets there), a random reader gets none, and a reader going
//! through a folder's small files gets the next ones prefetched in batches. The window math is
//! pure ([`advance`], [`folder_batch`]) and unit-tested.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use lru::LruCache;

use super::cache::{BLOCK, RUN};
use crate::proto::MAX_READ;

/// Files up to this size are fetched whole on first read.
pub const SMALL_FILE: u64 = 256 * 1024;
const RA_MIN: u64 = 512 * 1024;
const RA_MAX: u64 = 16 * 1024 * 1024;
/// Small files of a folder prefetched ahead of a reader going through it, at most ...
pub(crate) const DIR_PREFETCH: usize = 1024;
/// ... and about this many bytes of them (a batch stops once it reaches it).
pub(crate) const DIR_PREFETCH_BYTES: u64 = 8 << 20;
/// Read-ahead state is kept for this many files.
const TRACKED_FILES: usize = 1024;

/// A file's sequential-reading state.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SeqState {
    /// Where the reader is expected next.
    next: u64,
    /// Read-ahead window, bytes.
    window: u64,
    /// Blocks before this one were asked for (or cached) by read-ahead.
    asked: u64,
}

/// Updates `st` for a read of bytes `offset..end` of a file of `fsize` bytes (larger than
/// [`SMALL_FILE`]) and returns the blocks to fetch ahead now: none for random reads; for
/// sequential ones the part of a window (doubling up to `ra_max`) not yet asked for, in pieces
/// of at least one full request.
pub(crate) fn advance(
    st: &mut SeqState,
    offset: u64,
    end: u64,
    fsize: u64,
    ra_max: u64,
) -> Range<u64> {
    let nblocks = fsize.div_ceil(BLOCK);
    if offset == 0 {
        // A reader (re)starting at the top: a fresh window.
        *st = SeqState::default();
    }
    // The kernel issues read-ahead in parallel, so "sequential" allows some reordering.
    let sequential = offset == 0 || offset.abs_diff(st.next) <= MAX_READ as u64;
    if !sequential {
        *st = SeqState {
            next: end,
            ..SeqState::default()
        };
        return 0..0;
    }
    st.window = (st.window * 2).clamp(RA_MIN.min(ra_max), ra_max);
    st.next = st.next.max(end);
    let from = st.asked.max(end.div_ceil(BLOCK));
    let to = (end + st.window).min(fsize).div_ceil(BLOCK).min(nblocks);
    // Ask in pieces of full requests once the window is large (fewer, bigger messages).
    let piece = if st.window >= 4 * MAX_READ as u64 {
        RUN
    } else {
        RA_MIN / BLOCK
    };
    if to <= from || (to - from < piece && to < nblocks) {
        return 0..0;
    }
    st.asked = to;
    from..to
}

/// For a reader at position `pos` of a folder whose siblings up to `*upto` were prefetched:
/// the positions to prefetch now (a batch once the reader is half-way through the last one).
pub(crate) fn folder_batch(upto: &mut usize, pos: usize) -> Option<Range<usize>> {
    if *upto > pos + DIR_PREFETCH / 2 {
        return None;
    }
    *upto = pos + 1 + DIR_PREFETCH;
    Some(pos + 1..pos + 1 + DIR_PREFETCH)
}

/// Read-ahead state of the files and folders being read.
pub(crate) struct ReadAhead {
    seq: Mutex<LruCache<u64, SeqState>>,
    dir_prefetched: Mutex<HashMap<u64, usize>>,
    /// Largest window.
    ra_max: u64,
}

impl ReadAhead {
    /// A policy for a cache of `cache_bytes`: windows of at most a quarter of it.
    pub(crate) fn new(cache_bytes: u64) -> ReadAhead {
        ReadAhead {
            seq: Mutex::new(LruCache::new(TRACKED_FILES.try_into().expect("nonzero"))),
            dir_prefetched: Mutex::new(HashMap::new()),
            ra_max: (cache_bytes / 4).min(RA_MAX),
        }
    }

    /// Blocks of file `id` to fetch ahead of a read of `offset..end` (none for small files,
    /// which the read fetches whole).
    pub(crate) fn window(&self, id: u64, offset: u64, end: u64, fsize: u64) -> Range<u64> {
        if fsize <= SMALL_FILE {
            return 0..0;
        }
        let mut seq = self.seq.lock().expect("lock");
        let st = seq.get_or_insert_mut(id, SeqState::default);
        advance(st, offset, end, fsize, self.ra_max)
    }

    /// The last batch of `parent` stopped short, before position `upto` (its byte budget).
    pub(crate) fn folder_upto(&self, parent: u64, upto: usize) {
        self.dir_prefetched
            .lock()
            .expect("lock")
            .insert(parent, upto);
    }

    /// Positions among the children of `parent` to prefetch after a read of the one at `pos`.
    pub(crate) fn folder(&self, parent: u64, pos: usize) -> Option<Range<usize>> {
        let mut done = self.dir_prefetched.lock().expect("lock");
        folder_batch(done.entry(parent).or_insert(0), pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_sequential_reader_gets_a_doubling_window() {
        let mut st = SeqState::default();
        let fsize = 64 * MIB;
        let first = advance(&mut st, 0, 128 << 10, fsize, 16 * MIB);
        assert_eq!(first, 32..(128 * 1024 + RA_MIN) / BLOCK);
        let mut windows = vec![st.window];
        let mut off = 128 << 10;
        while off < 8 * MIB {
            advance(&mut st, off, off + (128 << 10), fsize, 16 * MIB);
            windows.push(st.window);
            off += 128 << 10;
        }
        assert!(windows.windows(2).all(|w| w[1] >= w[0]), "{windows:?}");
        assert_eq!(*windows.last().unwrap(), 16 * MIB);
    }

    #[test]
    fn the_window_never_exceeds_its_bound_and_nothing_is_asked_twice() {
        let mut st = SeqState::default();
        let fsize = 32 * MIB;
        let mut asked = Vec::new();
        let mut off = 0;
        while off < fsize {
            let r = advance(&mut st, off, off + MIB, fsize, 2 * MIB);
            assert!(st.window <= 2 * MIB);
            if !r.is_empty() {
                asked.push(r);
            }
            off += MIB;
        }
        for w in asked.windows(2) {
            assert!(w[0].end <= w[1].start, "{asked:?}");
        }
        assert_eq!(asked.last().unwrap().end, fsize / BLOCK);
    }

    #[test]
    fn a_random_reader_gets_no_read_ahead() {
        let mut st = SeqState::default();
        let fsize = 64 * MIB;
        assert!(advance(&mut st, 40 * MIB, 40 * MIB + 4096, fsize, 16 * MIB).is_empty());
        assert!(advance(&mut st, 7 * MIB, 7 * MIB + 4096, fsize, 16 * MIB).is_empty());
        assert!(advance(&mut st, 50 * MIB, 50 * MIB + 4096, fsize, 16 * MIB).is_empty());
    }

    #[test]
    fn folders_are_prefetched_a_batch_at_a_time() {
        let mut upto = 0;
        assert_eq!(folder_batch(&mut upto, 0), Some(1..1 + DIR_PREFETCH));
        // Reading the next files of the batch asks for nothing until half-way through it.
        for pos in 1..=DIR_PREFETCH / 2 {
            assert_eq!(folder_batch(&mut upto, pos), None, "{pos}");
        }
        let pos = DIR_PREFETCH / 2 + 1;
        assert_eq!(
            folder_batch(&mut upto, pos),
            Some(pos + 1..pos + 1 + DIR_PREFETCH)
        );
    }
}
