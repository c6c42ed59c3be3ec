//! The mount's block cache and the fetches that fill it. The unit is a page ([`BLOCK`]), so a
//! random 4 KiB read moves 4 KiB; misses are fetched in runs of up to one request ([`RUN`]
//! blocks). A block keeps the whole answer it came in (shared, not copied), and answers are
//! counted until their last block is gone, so the cache is bounded by the memory it really
//! holds. Blocks being fetched are in an in-flight table that every reader of them shares;
//! bytes in flight are bounded too.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use lru::LruCache;
use tokio::sync::Semaphore;

use super::Errno;
use crate::error::Error;
use crate::fetch::FileSource;
use crate::proto::MAX_READ;

/// Cache unit: a page, so a random 4 KiB read moves 4 KiB; fetches batch many blocks.
pub const BLOCK: u64 = 4096;
/// Unit of the in-flight byte budget.
const PERMIT: u64 = 32 * 1024;
/// Blocks per request (1 MiB, the protocol's largest read).
pub(crate) const RUN: u64 = MAX_READ as u64 / BLOCK;
/// Bytes of requests in flight at once (prefetch included), at most; a small cache gets less
/// (half of it, and at least one full request).
const INFLIGHT_BYTES: u64 = 32 * 1024 * 1024;

/// One request's answer (a run of blocks), shared by everyone waiting on any of its blocks.
pub(crate) type SharedRun = Shared<BoxFuture<'static, Result<Bytes, Arc<Error>>>>;

/// A cached block: the whole answer it came in (shared, not copied) and that answer's first
/// block.
#[derive(Clone)]
pub(crate) struct Block {
    run: Bytes,
    start: u64,
}

/// A block a read needs: cached, or to come with the run starting at the given block.
pub(crate) enum Part {
    Ready(Block),
    Wait(u64, SharedRun),
}

/// An answer's bytes, counted in a byte total while any block of it is alive.
struct Pinned {
    data: Bytes,
    total: Arc<AtomicU64>,
}

impl Pinned {
    fn wrap(data: Bytes, total: &Arc<AtomicU64>) -> Bytes {
        total.fetch_add(data.len() as u64, Ordering::Relaxed);
        Bytes::from_owner(Pinned {
            data,
            total: total.clone(),
        })
    }
}

impl AsRef<[u8]> for Pinned {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.total
            .fetch_sub(self.data.len() as u64, Ordering::Relaxed);
    }
}

/// Evicts least recently used entries until `held()` (bytes of answers still alive, which
/// dropping blocks lowers) is at most `limit`, or the cache is empty.
pub(crate) fn evict<K: std::hash::Hash + Eq, V>(
    cache: &mut LruCache<K, V>,
    held: impl Fn() -> u64,
    limit: u64,
) {
    while held() > limit && cache.pop_lru().is_some() {}
}

type Inflight = HashMap<(u64, u64), (u64, SharedRun)>;

/// Cached blocks, blocks in flight, and the source they come from.
pub(crate) struct Blocks<S> {
    src: S,
    cache: Mutex<LruCache<(u64, u64), Block>>,
    /// Bytes of fetched answers still alive (in the cache, or being replied); the cache evicts
    /// while this exceeds `cache_bytes`.
    pinned: Arc<AtomicU64>,
    cache_bytes: u64,
    inflight: Mutex<Inflight>,
    /// Bytes of requests in flight, in [`PERMIT`]s.
    budget: Arc<Semaphore>,
}

impl<S: FileSource> Blocks<S> {
    /// A cache of about `cache_bytes` (at least 64 blocks).
    pub(crate) fn new(src: S, cache_bytes: u64) -> Blocks<S> {
        let blocks = (cache_bytes / BLOCK).max(64) as usize;
        let cache_bytes = blocks as u64 * BLOCK;
        let inflight = (cache_bytes / 2).clamp(MAX_READ as u64, INFLIGHT_BYTES);
        Blocks {
            src,
            cache: Mutex::new(LruCache::new(blocks.try_into().expect("nonzero"))),
            pinned: Arc::new(AtomicU64::new(0)),
            cache_bytes,
            inflight: Mutex::new(HashMap::new()),
            budget: Arc::new(Semaphore::new(inflight.div_ceil(PERMIT) as usize)),
        }
    }

    pub(crate) fn source(&self) -> &S {
        &self.src
    }

    /// The cache's size in bytes.
    pub(crate) fn capacity(&self) -> u64 {
        self.cache_bytes
    }

    /// Bytes of answers held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Blocks `range` of file `id`: cached, already in flight, or fetched now by spawned tasks
    /// (which fill the cache even if every waiter gives up), in runs of up to one request. When
    /// `want` is false nothing is returned (read-ahead, prefetch).
    pub(crate) fn ensure(
        self: &Arc<Self>,
        id: u64,
        fsize: u64,
        range: Range<u64>,
        want: bool,
    ) -> Vec<Part> {
        let mut out = Vec::with_capacity(if want {
            (range.end - range.start) as usize
        } else {
            0
        });
        let mut spawn: Vec<SharedRun> = Vec::new();
        {
            let mut cache = self.cache.lock().expect("lock");
            let mut inflight = self.inflight.lock().expect("lock");
            let mut missing: Option<(u64, u64)> = None;
            let mut flush =
                |missing: &mut Option<(u64, u64)>, inflight: &mut Inflight, out: &mut Vec<Part>| {
                    let Some((start, n)) = missing.take() else {
                        return;
                    };
                    let run = self.clone().fetch_run(id, fsize, start, n);
                    for b in start..start + n {
                        inflight.insert((id, b), (start, run.clone()));
                        if want {
                            out.push(Part::Wait(start, run.clone()));
                        }
                    }
                    spawn.push(run);
                };
            for b in range {
                // Some(block) for a read, Some(None) for a cached block read-ahead can skip.
                let hit = if want {
                    cache.get(&(id, b)).cloned().map(Some)
                } else {
                    cache.contains(&(id, b)).then_some(None)
                };
                if let Some(block) = hit {
                    flush(&mut missing, &mut inflight, &mut out);
                    if let Some(block) = block {
                        out.push(Part::Ready(block));
                    }
                } else if let Some((start, run)) = inflight.get(&(id, b)) {
                    let part = Part::Wait(*start, run.clone());
                    flush(&mut missing, &mut inflight, &mut out);
                    if want {
                        out.push(part);
                    }
                } else {
                    match &mut missing {
                        // Runs end at request-size boundaries, so that an aligned 1 MiB read
                        // (the kernel's) is one answer, replied without copying.
                        Some((_, n)) if *n < RUN && b % RUN != 0 => *n += 1,
                        _ => {
                            flush(&mut missing, &mut inflight, &mut out);
                            missing = Some((b, 1));
                        }
                    }
                }
            }
            flush(&mut missing, &mut inflight, &mut out);
        }
        // Start the fetches only now, after their blocks are registered as in flight.
        for run in spawn {
            tokio::spawn(run);
        }
        out
    }

    /// One request for blocks `start..start+n`; splits the answer into the cache.
    fn fetch_run(self: Arc<Self>, id: u64, fsize: u64, start: u64, n: u64) -> SharedRun {
        async move {
            let result = self.fetch(id, fsize, start, n).await;
            // Cache first, then forget the in-flight entries (one lock at a time: `ensure` takes
            // both in the other order), so a block is never in neither place while it is good.
            if let Ok(run) = &result {
                let mut cache = self.cache.lock().expect("lock");
                for b in start..start + n {
                    let block = Block {
                        run: run.clone(),
                        start,
                    };
                    cache.put((id, b), block);
                }
                // Blocks share their answer's memory: evict until what is really held fits.
                evict(
                    &mut cache,
                    || self.pinned.load(Ordering::Relaxed),
                    self.cache_bytes,
                );
            }
            {
                let mut inflight = self.inflight.lock().expect("lock");
                for b in start..start + n {
                    inflight.remove(&(id, b));
                }
            }
            result.map_err(Arc::new)
        }
        .boxed()
        .shared()
    }

    /// Asks the source for blocks `start..start+n` within the in-flight budget.
    async fn fetch(&self, id: u64, fsize: u64, start: u64, n: u64) -> Result<Bytes, Error> {
        let off = start * BLOCK;
        let len = ((start + n) * BLOCK).min(fsize) - off;
        let _permit = self
            .budget
            .clone()
            .acquire_many_owned(len.div_ceil(PERMIT) as u32)
            .await
            .map_err(|_| Error::ConnectionLost("closing".into()))?;
        // A source that may stall (the network) bounds its own waits; the reader's wait is
        // bounded by `MountFs` whatever the source does.
        let (data, _) = self.src.read(id, off, len as u32).await?;
        if data.len() as u64 != len {
            return Err(Error::Protocol(format!(
                "sender returned {} bytes of {len}",
                data.len()
            )));
        }
        Ok(Pinned::wrap(data, &self.pinned))
    }
}

/// A read's bytes `offset..end` from its blocks (from block `first` on): cached ones and those
/// of the runs `got` (each by its first block). A read within one answer is a slice of it (no
/// copy: the kernel's aligned 1 MiB reads are); others are copied together.
pub(crate) fn assemble(
    parts: Vec<Part>,
    got: &[(u64, Bytes)],
    first: u64,
    offset: u64,
    end: u64,
) -> Result<Bytes, Errno> {
    // Borrowed, not cloned: a 1 MiB read has 256 parts.
    fn run_of<'a>(p: &'a Part, got: &'a [(u64, Bytes)]) -> Option<(u64, &'a Bytes)> {
        match p {
            Part::Ready(b) => Some((b.start, &b.run)),
            Part::Wait(start, _) => {
                let (_, run) = got.iter().find(|(s, _)| s == start)?;
                Some((*start, run))
            }
        }
    }
    // Bytes `lo..hi` of the file out of the answer starting at block `start`.
    let cut = |start: u64, run: &Bytes, lo: u64, hi: u64| -> Option<Bytes> {
        let base = start * BLOCK;
        let (lo, hi) = ((lo - base) as usize, (hi - base) as usize);
        (hi <= run.len()).then(|| run.slice(lo..hi))
    };
    let runs = parts
        .iter()
        .map(|p| run_of(p, got))
        .collect::<Option<Vec<_>>>();
    let runs = runs.filter(|r| !r.is_empty()).ok_or(libc::EIO)?;
    let (s0, r0) = &runs[0];
    if runs[1..]
        .iter()
        .all(|(s, r)| s == s0 && r.as_ptr() == r0.as_ptr())
    {
        return cut(*s0, r0, offset, end).ok_or(libc::EIO);
    }
    let mut out = BytesMut::with_capacity((end - offset) as usize);
    for (i, (start, run)) in runs.iter().enumerate() {
        let b = first + i as u64;
        let lo = (b * BLOCK).max(offset);
        let hi = ((b + 1) * BLOCK).min(end);
        out.extend_from_slice(&cut(*start, run, lo, hi).ok_or(libc::EIO)?);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_stops_once_what_is_held_fits() {
        let total = Arc::new(AtomicU64::new(0));
        let mut cache: LruCache<u64, Bytes> = LruCache::new(100.try_into().unwrap());
        // Two answers of 8 KiB, each split into two 4 KiB blocks sharing its memory.
        for a in 0..2u64 {
            let run = Pinned::wrap(Bytes::from(vec![a as u8; 8192]), &total);
            cache.put(2 * a, run.slice(..4096));
            cache.put(2 * a + 1, run.slice(4096..));
        }
        assert_eq!(total.load(Ordering::Relaxed), 16384);
        // Fits already: nothing goes.
        evict(&mut cache, || total.load(Ordering::Relaxed), 16384);
        assert_eq!(cache.len(), 4);
        // One answer too many: its two blocks (the least recently used) go, and only they.
        evict(&mut cache, || total.load(Ordering::Relaxed), 8192);
        assert_eq!(cache.len(), 2);
        assert_eq!(total.load(Ordering::Relaxed), 8192);
        // A block kept alive elsewhere keeps its whole answer held: eviction empties the cache.
        let kept = cache.get(&2).cloned().unwrap();
        evict(&mut cache, || total.load(Ordering::Relaxed), 0);
        assert!(cache.is_empty());
        assert_eq!(total.load(Ordering::Relaxed), 8192);
        drop(kept);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }
}
