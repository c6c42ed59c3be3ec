//! The mount's filesystem logic, independent of FUSE so it is testable without a mount: an
//! immutable tree from the manifest (no network for lookup, stat, readdir, readlink) and reads
//! served from a bounded LRU cache of page-size blocks. Misses are fetched with (id, offset,
//! length) requests; sequential readers get a read-ahead window that doubles while they stay
//! sequential, random readers fetch only the blocks they touch, small files are fetched whole
//! and reading a folder's small files one after another prefetches the next ones in batches.
//! Every wait is bounded by the timeout; see `doc/SEMANTICS.md`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use lru::LruCache;
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::manifest::Manifest;
use crate::receive::FileSource;
use crate::wire::{Entry, Kind, MAX_READ};

/// Cache unit: a page, so a random 4 KiB read moves 4 KiB; fetches batch many blocks.
pub const BLOCK: u64 = 4096;
/// Unit of the in-flight byte budget.
const PERMIT: u64 = 32 * 1024;
/// Blocks per request (1 MiB, the protocol's largest read).
const RUN: u64 = MAX_READ as u64 / BLOCK;
/// Files up to this size are fetched whole on first read.
pub const SMALL_FILE: u64 = 256 * 1024;
const RA_MIN: u64 = 512 * 1024;
const RA_MAX: u64 = 16 * 1024 * 1024;
/// Small files of a folder prefetched ahead of a reader going through it.
const DIR_PREFETCH: usize = 32;
/// Bytes of requests in flight at once (prefetch included), at most; a small cache gets less
/// (half of it, and at least one full request).
const INFLIGHT_BYTES: u64 = 32 * 1024 * 1024;
/// Read-ahead state is kept for this many files.
const TRACKED_FILES: usize = 1024;
/// The root's inode number (FUSE's).
pub const ROOT_INO: u64 = 1;

/// One request's answer (a run of blocks), shared by everyone waiting on any of its blocks.
type SharedRun = Shared<BoxFuture<'static, Result<Bytes, Arc<Error>>>>;

/// A cached block: the whole answer it came in (shared, not copied) and that answer's first
/// block. Answers are counted in [`MountFs::pinned`] until their last block is gone, so the
/// cache is bounded by the memory it really holds.
#[derive(Clone)]
struct Block {
    run: Bytes,
    start: u64,
}

/// A block a read needs: cached, or to come with the run starting at the given block.
enum Part {
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

/// A read started by [`MountFs::begin_read`].
pub enum Reading {
    /// Answered from the cache (or refused) at once.
    Done(Result<Bytes, Errno>),
    /// Waits for the sender (bounded by the timeout).
    Wait(BoxFuture<'static, Result<Bytes, Errno>>),
}

/// What `stat` shows for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub mtime: SystemTime,
    pub nlink: u32,
}

/// Why a filesystem call failed, as an errno.
pub type Errno = i32;

#[derive(Default, Clone, Copy)]
struct SeqState {
    /// Where the reader is expected next.
    next: u64,
    /// Read-ahead window, bytes.
    window: u64,
    /// Blocks before this one were asked for (or cached) by read-ahead.
    asked: u64,
}

pub struct MountFs<S: FileSource> {
    manifest: Arc<Manifest>,
    /// Entry shown at the mountpoint (0: the share root; or the single shared folder).
    root: u64,
    names: HashMap<(u64, Box<[u8]>), u64>,
    src: S,
    cache: Mutex<LruCache<(u64, u64), Block>>,
    /// Bytes of fetched answers still alive (in the cache, or being replied); the cache evicts
    /// while this exceeds `cache_bytes`.
    pinned: Arc<AtomicU64>,
    cache_bytes: u64,
    /// Largest read-ahead window: a quarter of the cache, so that what read-ahead brings in is
    /// still cached when the reader gets there.
    ra_max: u64,
    inflight: Mutex<HashMap<(u64, u64), (u64, SharedRun)>>,
    seq: Mutex<LruCache<u64, SeqState>>,
    dir_prefetched: Mutex<HashMap<u64, usize>>,
    window: Arc<Semaphore>,
    timeout: Duration,
    /// Shown as the times of a root that is not a shared folder (several paths, one file).
    mounted_at: SystemTime,
}

fn eio(e: &Error) -> Errno {
    tracing::warn!("read failed: {e}");
    libc::EIO
}

impl<S: FileSource> MountFs<S> {
    /// `cache_bytes` bounds the block cache.
    pub fn new(manifest: Arc<Manifest>, src: S, cache_bytes: u64, timeout: Duration) -> Arc<Self> {
        let roots = manifest.children(0);
        let root = match roots {
            [only] if manifest.kind(*only) == Kind::Dir => *only,
            _ => 0,
        };
        let names = manifest
            .entries()
            .iter()
            .map(|e| ((e.parent, e.name.clone().into_boxed_slice()), e.id))
            .collect();
        let blocks = (cache_bytes / BLOCK).max(64) as usize;
        let cache_bytes = blocks as u64 * BLOCK;
        let inflight = (cache_bytes / 2).clamp(MAX_READ as u64, INFLIGHT_BYTES);
        Arc::new(MountFs {
            manifest,
            root,
            names,
            src,
            cache: Mutex::new(LruCache::new(blocks.try_into().expect("nonzero"))),
            pinned: Arc::new(AtomicU64::new(0)),
            cache_bytes,
            ra_max: (cache_bytes / 4).min(RA_MAX),
            inflight: Mutex::new(HashMap::new()),
            seq: Mutex::new(LruCache::new(TRACKED_FILES.try_into().expect("nonzero"))),
            dir_prefetched: Mutex::new(HashMap::new()),
            window: Arc::new(Semaphore::new(inflight.div_ceil(PERMIT) as usize)),
            timeout,
            mounted_at: SystemTime::now(),
        })
    }

    pub fn source(&self) -> &S {
        &self.src
    }

    pub fn manifest(&self) -> &Arc<Manifest> {
        &self.manifest
    }

    fn id_of(&self, ino: u64) -> Option<u64> {
        match ino {
            ROOT_INO => Some(self.root),
            0 => None,
            n => {
                let id = n - 1;
                (id != self.root && self.manifest.get(id).is_some()).then_some(id)
            }
        }
    }

    fn ino_of(&self, id: u64) -> u64 {
        if id == self.root {
            ROOT_INO
        } else {
            id + 1
        }
    }

    fn entry(&self, ino: u64) -> Result<Option<&Entry>, Errno> {
        match self.id_of(ino) {
            None => Err(libc::ENOENT),
            Some(id) if id == self.root && id == 0 => Ok(None),
            Some(id) => Ok(self.manifest.get(id)),
        }
    }

    fn attr_of(&self, id: u64) -> Attr {
        let ino = self.ino_of(id);
        match self.manifest.get(id) {
            None => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                perm: 0o555,
                mtime: self.mounted_at,
                nlink: 2,
            },
            Some(e) => {
                let kind = Kind::try_from(e.kind).unwrap_or(Kind::File);
                Attr {
                    ino,
                    kind,
                    size: if kind == Kind::Symlink {
                        e.target.len() as u64
                    } else {
                        e.size
                    },
                    // Read-only: no write bits, whatever the sender had.
                    perm: (e.mode & 0o7555) as u16,
                    mtime: UNIX_EPOCH + Duration::new(e.mtime_sec.max(0) as u64, e.mtime_nsec),
                    nlink: if kind == Kind::Dir { 2 } else { 1 },
                }
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        self.entry(ino)?;
        Ok(self.attr_of(self.id_of(ino).expect("checked")))
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        let pid = self.id_of(parent).ok_or(libc::ENOENT)?;
        if pid != 0 && self.manifest.kind(pid) != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let id = *self.names.get(&(pid, name.into())).ok_or(libc::ENOENT)?;
        Ok(self.attr_of(id))
    }

    /// Entries of a directory from `offset` on: (ino, kind, name). Offsets count "." and "..".
    pub fn readdir(&self, ino: u64, offset: u64) -> Result<Vec<(u64, Kind, Vec<u8>)>, Errno> {
        let id = self.id_of(ino).ok_or(libc::ENOENT)?;
        if id != 0 && self.manifest.kind(id) != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let parent_ino = match self.manifest.get(id) {
            Some(e) if id != self.root => self.ino_of(e.parent),
            _ => ROOT_INO,
        };
        let mut out = Vec::new();
        let children = self.manifest.children(id);
        for i in offset as usize..children.len() + 2 {
            match i {
                0 => out.push((ino, Kind::Dir, b".".to_vec())),
                1 => out.push((parent_ino, Kind::Dir, b"..".to_vec())),
                _ => {
                    let c = children[i - 2];
                    let e = self.manifest.get(c).expect("child exists");
                    out.push((
                        self.ino_of(c),
                        Kind::try_from(e.kind).unwrap_or(Kind::File),
                        e.name.clone(),
                    ));
                }
            }
        }
        Ok(out)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        match self.entry(ino)? {
            Some(e) if e.kind == Kind::Symlink as i32 => Ok(e.target.clone()),
            _ => Err(libc::EINVAL),
        }
    }

    /// Total bytes and entries, for statfs.
    pub fn totals(&self) -> (u64, u64) {
        (self.manifest.totals().1, self.manifest.len() as u64)
    }

    /// Reads up to `size` bytes at `offset`. Fails with EIO when the data cannot be had within
    /// the timeout (sender away, file changed on the sender, ...).
    pub async fn read(self: &Arc<Self>, ino: u64, offset: u64, size: u32) -> Result<Bytes, Errno> {
        match self.begin_read(ino, offset, size) {
            Reading::Done(r) => r,
            Reading::Wait(f) => f.await,
        }
    }

    /// Starts a read: answered at once when every block it needs is cached (the caller replies
    /// from its own thread), else a future that waits for the fetches. Either way the read-ahead
    /// and folder prefetch it calls for are started (on the current tokio runtime).
    pub fn begin_read(self: &Arc<Self>, ino: u64, offset: u64, size: u32) -> Reading {
        let e = match self.entry(ino) {
            Err(e) => return Reading::Done(Err(e)),
            Ok(Some(e)) if e.kind == Kind::File as i32 => e,
            Ok(Some(e)) if e.kind == Kind::Dir as i32 => return Reading::Done(Err(libc::EISDIR)),
            Ok(None) => return Reading::Done(Err(libc::EISDIR)),
            Ok(_) => return Reading::Done(Err(libc::EINVAL)),
        };
        let (id, fsize) = (e.id, e.size);
        if offset >= fsize || size == 0 {
            return Reading::Done(Ok(Bytes::new()));
        }
        let end = (offset + size as u64).min(fsize);
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        let ahead = self.readahead(id, offset, end, fsize);
        let parts = self.ensure(id, fsize, first..last + 1, true);
        if !ahead.is_empty() {
            self.ensure(id, fsize, ahead, false);
        }
        if fsize <= SMALL_FILE {
            self.prefetch_folder(e);
        }
        let mut runs: Vec<(u64, SharedRun)> = Vec::new();
        for p in &parts {
            if let Part::Wait(start, run) = p {
                if !runs.iter().any(|(s, _)| s == start) {
                    runs.push((*start, run.clone()));
                }
            }
        }
        if runs.is_empty() {
            return Reading::Done(assemble(parts, &[], first, offset, end));
        }
        let timeout = self.timeout;
        Reading::Wait(
            async move {
                let waits = futures::future::join_all(runs.iter().map(|(_, r)| r.clone()));
                let done = tokio::time::timeout(timeout, waits).await.map_err(|_| {
                    tracing::warn!("a read waited {timeout:?} for the sender and failed with EIO");
                    libc::EIO
                })?;
                let mut got = Vec::with_capacity(runs.len());
                for ((start, _), r) in runs.iter().zip(done) {
                    got.push((*start, r.map_err(|e| eio(&e))?));
                }
                assemble(parts, &got, first, offset, end)
            }
            .boxed(),
        )
    }

    /// A read by file id through the cache, for copy-out.
    pub async fn read_file(
        self: &Arc<Self>,
        id: u64,
        offset: u64,
        len: u32,
    ) -> crate::Result<(Bytes, Option<[u8; 32]>)> {
        let data = self.read(self.ino_of(id), offset, len).await.map_err(|e| {
            Error::io(
                "reading through the mount cache",
                std::io::Error::from_raw_os_error(e),
            )
        })?;
        Ok((data, None))
    }

    /// Updates the file's sequential state and returns the blocks to fetch ahead now: none for
    /// random reads; for sequential ones the part of a window (doubling while the reader stays
    /// sequential) not yet asked for, in pieces of at least one full request.
    fn readahead(&self, id: u64, offset: u64, end: u64, fsize: u64) -> Range<u64> {
        if fsize <= SMALL_FILE {
            // Fetched whole by the read itself.
            return 0..0;
        }
        let nblocks = fsize.div_ceil(BLOCK);
        let mut seq = self.seq.lock().expect("lock");
        let st = seq.get_or_insert_mut(id, SeqState::default);
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
        st.window = (st.window * 2).clamp(RA_MIN.min(self.ra_max), self.ra_max);
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

    /// When a small file is read, fetch the next small files of its folder in the background
    /// (what `cp -r` and file managers read next), a batch at a time.
    fn prefetch_folder(self: &Arc<Self>, e: &Entry) {
        let siblings = self.manifest.children(e.parent);
        let Some(pos) = siblings.iter().position(|&c| c == e.id) else {
            return;
        };
        {
            let mut done = self.dir_prefetched.lock().expect("lock");
            let upto = done.entry(e.parent).or_insert(0);
            if *upto > pos + DIR_PREFETCH / 2 {
                return;
            }
            *upto = pos + 1 + DIR_PREFETCH;
        }
        for &c in siblings.iter().skip(pos + 1).take(DIR_PREFETCH) {
            if let Some(s) = self.manifest.get(c) {
                if s.kind == Kind::File as i32 && s.size > 0 && s.size <= SMALL_FILE {
                    self.ensure(c, s.size, 0..s.size.div_ceil(BLOCK), false);
                }
            }
        }
    }

    /// Blocks `range` of file `id`: cached, already in flight, or fetched now by spawned tasks
    /// (which fill the cache even if every waiter gives up), in runs of up to one request. When
    /// `want` is false nothing is returned (read-ahead, prefetch).
    fn ensure(self: &Arc<Self>, id: u64, fsize: u64, range: Range<u64>, want: bool) -> Vec<Part> {
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
            let mut flush = |missing: &mut Option<(u64, u64)>,
                             inflight: &mut HashMap<(u64, u64), (u64, SharedRun)>,
                             out: &mut Vec<Part>| {
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
            let off = start * BLOCK;
            let len = ((start + n) * BLOCK).min(fsize) - off;
            let result = async {
                let _permit = self
                    .window
                    .clone()
                    .acquire_many_owned(len.div_ceil(PERMIT) as u32)
                    .await
                    .map_err(|_| Error::ConnectionLost("closing".into()))?;
                let sent = std::time::Instant::now();
                let (data, _) =
                    match tokio::time::timeout(self.timeout, self.src.read(id, off, len as u32))
                        .await
                    {
                        Ok(r) => r?,
                        Err(_) => {
                            self.src.stalled(sent);
                            return Err(Error::Timeout(self.timeout, "the sender"));
                        }
                    };
                if data.len() as u64 != len {
                    return Err(Error::Protocol(format!(
                        "sender returned {} bytes of {len}",
                        data.len()
                    )));
                }
                Ok(Pinned::wrap(data, &self.pinned))
            }
            .await;
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
                while self.pinned.load(Ordering::Relaxed) > self.cache_bytes
                    && cache.pop_lru().is_some()
                {}
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
}

/// A read's bytes `offset..end` from its blocks (from block `first` on): cached ones and those
/// of the runs `got` (each by its first block). A read within one answer is a slice of it (no
/// copy: the kernel's aligned 1 MiB reads are); others are copied together.
fn assemble(
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
    //! The filesystem logic without FUSE or a network: a fake source that records requests.
    use super::*;
    use crate::wire::Entry;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Clone, Default)]
    struct Fake {
        files: Arc<HashMap<u64, Vec<u8>>>,
        log: Arc<Mutex<Vec<(u64, u64, u32)>>>,
        hangs: Arc<AtomicU64>,
    }

    impl FileSource for Fake {
        async fn read(
            &self,
            file: u64,
            offset: u64,
            len: u32,
        ) -> crate::Result<(Bytes, Option<[u8; 32]>)> {
            self.log.lock().unwrap().push((file, offset, len));
            // An answer comes later, as over a network: other tasks (spawned fetches) run.
            tokio::task::yield_now().await;
            if self.hangs.load(Ordering::SeqCst) == 1 {
                futures::future::pending::<()>().await;
            }
            let d = &self.files[&file];
            let lo = (offset as usize).min(d.len());
            let hi = (lo + len as usize).min(d.len());
            Ok((Bytes::copy_from_slice(&d[lo..hi]), None))
        }
        async fn hash(&self, file: u64) -> crate::Result<[u8; 32]> {
            Ok(*blake3::hash(&self.files[&file]).as_bytes())
        }
        async fn range_hash(&self, file: u64, offset: u64, len: u64) -> crate::Result<[u8; 32]> {
            let d = &self.files[&file];
            Ok(*blake3::hash(&d[offset as usize..(offset + len) as usize]).as_bytes())
        }
    }

    fn entry(id: u64, parent: u64, name: &str, kind: Kind, size: u64) -> Entry {
        crate::manifest::test_entry(id, parent, name.as_bytes(), kind, size)
    }

    /// A share of one folder `d` with a big file, a symlink, and 10 small files.
    fn setup(timeout: Duration) -> (Arc<MountFs<Fake>>, Fake, Vec<u8>) {
        setup_with_cache(timeout, 64 << 20)
    }

    fn setup_with_cache(timeout: Duration, cache: u64) -> (Arc<MountFs<Fake>>, Fake, Vec<u8>) {
        let big: Vec<u8> = (0..(8u64 << 20)).map(|i| (i * 31 % 251) as u8).collect();
        let mut entries = vec![
            entry(1, 0, "d", Kind::Dir, 0),
            entry(2, 1, "big", Kind::File, big.len() as u64),
            entry(3, 1, "link", Kind::Symlink, 0),
        ];
        let mut files = HashMap::from([(2, big.clone())]);
        for i in 0..10u64 {
            entries.push(entry(4 + i, 1, &format!("s{i}"), Kind::File, 1000 + i));
            files.insert(4 + i, vec![i as u8; 1000 + i as usize]);
        }
        let m = Arc::new(Manifest::validate(entries).unwrap());
        let fake = Fake {
            files: Arc::new(files),
            ..Default::default()
        };
        (MountFs::new(m, fake.clone(), cache, timeout), fake, big)
    }

    #[tokio::test]
    async fn tree_needs_no_requests() {
        let (fs, fake, _) = setup(Duration::from_secs(5));
        // The single shared folder is the root.
        let root = fs.getattr(ROOT_INO).unwrap();
        assert_eq!(root.kind, Kind::Dir);
        let big = fs.lookup(ROOT_INO, b"big").unwrap();
        assert_eq!((big.size, big.perm, big.kind), (8 << 20, 0o444, Kind::File));
        assert_eq!(big.mtime, UNIX_EPOCH + Duration::new(1_600_000_000, 5));
        assert_eq!(fs.lookup(ROOT_INO, b"nope"), Err(libc::ENOENT));
        assert_eq!(fs.lookup(big.ino, b"x"), Err(libc::ENOTDIR));
        let link = fs.lookup(ROOT_INO, b"link").unwrap();
        assert_eq!(fs.readlink(link.ino).unwrap(), b"big");
        let all = fs.readdir(ROOT_INO, 0).unwrap();
        assert_eq!(all.len(), 2 + 12);
        assert_eq!(all[0].2, b".");
        assert_eq!(all[1].2, b"..");
        // Offsets resume where the kernel left off.
        assert_eq!(fs.readdir(ROOT_INO, 5).unwrap(), all[5..].to_vec());
        assert_eq!(fs.read(ROOT_INO, 0, 10).await, Err(libc::EISDIR));
        assert!(fake.log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn random_reads_fetch_only_what_they_touch() {
        let (fs, fake, big) = setup(Duration::from_secs(5));
        let ino = fs.lookup(ROOT_INO, b"big").unwrap().ino;
        // Two reads far apart, neither at offset 0: one block each, no read-ahead.
        for off in [5_000_000u64, 1_234_567] {
            let got = fs.read(ino, off, 4096).await.unwrap();
            assert_eq!(&got[..], &big[off as usize..off as usize + 4096]);
        }
        let log = fake.log.lock().unwrap().clone();
        assert_eq!(log.len(), 2, "{log:?}");
        // A 4 KiB read not aligned to a page touches two pages, and gets just those.
        assert!(
            log.iter().all(|&(_, _, len)| len as u64 == 2 * BLOCK),
            "{log:?}"
        );
        // A read across a block boundary is assembled from two blocks.
        let off = 3 * BLOCK - 10;
        assert_eq!(
            &fs.read(ino, off, 20).await.unwrap()[..],
            &big[off as usize..off as usize + 20]
        );
        // Reads past the end are short or empty.
        let end = big.len() as u64;
        assert_eq!(fs.read(ino, end - 5, 100).await.unwrap().len(), 5);
        assert!(fs.read(ino, end + 5, 100).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn sequential_reads_grow_a_read_ahead_window() {
        // The default cache and caches smaller than the largest window (8 MiB file).
        for cache in [64 << 20, 4 << 20, 1 << 20, 256 << 10] {
            let (fs, fake, big) = setup_with_cache(Duration::from_secs(5), cache);
            let ino = fs.lookup(ROOT_INO, b"big").unwrap().ino;
            let mut off = 0u64;
            while off < big.len() as u64 {
                let got = fs.read(ino, off, 128 * 1024).await.unwrap();
                assert_eq!(&got[..], &big[off as usize..off as usize + got.len()]);
                off += got.len() as u64;
            }
            let log = fake.log.lock().unwrap().clone();
            // Each byte fetched once: read-ahead never brings in more than the cache keeps
            // until the reader gets there.
            let fetched: u64 = log.iter().map(|r| r.2 as u64).sum();
            assert_eq!(fetched, big.len() as u64, "cache {cache}: {log:?}");
            if cache >= 4 << 20 {
                // 8 MiB in far fewer requests than 128 KiB reads ...
                assert!(log.len() < 30, "cache {cache}: {} requests", log.len());
            }
            if cache >= 64 << 20 {
                // ... and with a window of 4 MiB or more, in full-size requests.
                assert!(
                    log.iter().filter(|r| r.2 == MAX_READ).count() >= 4,
                    "cache {cache}: {log:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn small_files_come_whole_and_their_neighbours_follow() {
        let (fs, fake, _) = setup(Duration::from_secs(5));
        let s0 = fs.lookup(ROOT_INO, b"s0").unwrap().ino;
        assert_eq!(&fs.read(s0, 0, 10).await.unwrap()[..], &[0u8; 10]);
        // Give the background prefetch a moment, then read the rest from the cache.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = fake.log.lock().unwrap().len();
        assert_eq!(before, 10, "s0 and its 9 neighbours, one request each");
        for i in 1..10u8 {
            let ino = fs.lookup(ROOT_INO, format!("s{i}").as_bytes()).unwrap().ino;
            let got = fs.read(ino, 0, 4096).await.unwrap();
            assert_eq!(got.len(), 1000 + i as usize);
            assert!(got.iter().all(|&b| b == i));
        }
        assert_eq!(
            fake.log.lock().unwrap().len(),
            before,
            "served from the cache"
        );
    }

    #[tokio::test]
    async fn cached_reads_are_answered_at_once() {
        let (fs, fake, big) = setup(Duration::from_secs(5));
        let ino = fs.lookup(ROOT_INO, b"big").unwrap().ino;
        // A miss has to wait for the sender ...
        let Reading::Wait(f) = fs.begin_read(ino, 1 << 20, 8192) else {
            panic!("a miss answered at once")
        };
        assert_eq!(&f.await.unwrap()[..], &big[1 << 20..(1 << 20) + 8192]);
        // ... a read of the same blocks (another slice of them) does not, nor asks anything.
        let asked = fake.log.lock().unwrap().len();
        let Reading::Done(Ok(got)) = fs.begin_read(ino, (1 << 20) + 100, 5000) else {
            panic!("a cached read waited")
        };
        assert_eq!(&got[..], &big[(1 << 20) + 100..(1 << 20) + 5100]);
        assert_eq!(fake.log.lock().unwrap().len(), asked);
        // Errors are immediate too.
        assert!(matches!(
            fs.begin_read(ROOT_INO, 0, 10),
            Reading::Done(Err(libc::EISDIR))
        ));
    }

    #[tokio::test]
    async fn aligned_reads_share_the_answer_and_memory_stays_bounded() {
        let (fs, _, big) = setup(Duration::from_secs(5));
        let ino = fs.lookup(ROOT_INO, b"big").unwrap().ino;
        // A 1 MiB read at a 1 MiB boundary is one answer: a slice of it, not a copy.
        let a = fs.read(ino, 2 << 20, MAX_READ).await.unwrap();
        let b = fs.read(ino, 2 << 20, MAX_READ).await.unwrap();
        assert_eq!(&a[..], &big[2 << 20..3 << 20]);
        assert_eq!(a.as_ptr(), b.as_ptr());
        drop((a, b));

        // A cache of 1 MiB holds at most 1 MiB of answers, whatever the reads keep of them.
        let m = fs.manifest().clone();
        let fake = fs.source().clone();
        let small = MountFs::new(m, fake, 1 << 20, Duration::from_secs(5));
        let ino = small.lookup(ROOT_INO, b"big").unwrap().ino;
        for round in 0..2 {
            for k in 0..big.len() as u64 / MAX_READ as u64 {
                let off = k * MAX_READ as u64;
                let got = small.read(ino, off, MAX_READ).await.unwrap();
                assert_eq!(&got[..], &big[off as usize..off as usize + got.len()]);
                drop(got);
                // Keep one page of every answer so far in use: the rest of them is not.
                for j in 0..=k {
                    let off = (j * MAX_READ as u64) as usize;
                    let page = small.read(ino, off as u64, 4096).await.unwrap();
                    assert_eq!(&page[..], &big[off..off + 4096], "{round}");
                }
            }
            // Let read-ahead still on its way land, then measure.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let held = small.pinned.load(Ordering::Relaxed);
            assert!(held <= 1 << 20, "{held} bytes held by a 1 MiB cache");
        }
    }

    #[tokio::test]
    async fn a_stalled_sender_gives_eio_within_the_timeout() {
        let (fs, fake, _) = setup(Duration::from_millis(300));
        fake.hangs.store(1, Ordering::SeqCst);
        let ino = fs.lookup(ROOT_INO, b"big").unwrap().ino;
        let r = tokio::time::timeout(Duration::from_secs(5), fs.read(ino, 0, 4096)).await;
        assert_eq!(r.expect("bounded"), Err(libc::EIO));
        // Metadata still answers.
        assert!(fs.getattr(ino).is_ok());
    }
}
