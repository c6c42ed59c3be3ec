//! The mount's filesystem, independent of FUSE so it is testable without a mount: the tree
//! (`tree`: no network for lookup, stat, readdir, readlink) and reads served from the block
//! cache (`cache`), which the read-ahead policy (`readahead`) fills ahead of sequential readers
//! and folder walkers. Every wait is bounded by the timeout; see `SEMANTICS.md` beside this file.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};

use super::cache::{assemble, Blocks, Part, SharedRun, BLOCK};
use super::extents::Extents;
use super::readahead::{ReadAhead, DIR_PREFETCH_BYTES, SMALL_FILE};
use super::tree::{Attr, Tree};
use super::Errno;
use crate::error::Error;
use crate::fetch::FileSource;
use crate::manifest::Manifest;
use crate::proto::{Entry, Kind};

/// An `lseek` started by [`MountFs::begin_seek`]: the offset found.
pub enum Seeking {
    Done(Result<u64, Errno>),
    Wait(BoxFuture<'static, Result<u64, Errno>>),
}

/// A read started by [`MountFs::begin_read`].
pub enum Reading {
    /// Answered from the cache (or refused) at once.
    Done(Result<Bytes, Errno>),
    /// Waits for the sender (bounded by the timeout).
    Wait(BoxFuture<'static, Result<Bytes, Errno>>),
}

pub struct MountFs<S: FileSource> {
    tree: Tree,
    blocks: Arc<Blocks<S>>,
    readahead: ReadAhead,
    timeout: Duration,
    failures: Arc<Failures>,
    /// What the sender said of sparse files' extents, for the last [`EXTENT_FILES`] files
    /// sought in.
    extents: Arc<Mutex<lru::LruCache<u64, Extents>>>,
}

/// How many files' [`Extents`] the mount keeps (each at most ~0.5 KiB).
const EXTENT_FILES: usize = 64;

/// How much of the data after a `SEEK_DATA` answer is fetched ahead of the reader that asked.
pub const SEEK_PREFETCH_BYTES: u64 = 8 << 20;

/// Reads that failed, said once per change: while the sender is away every read fails the
/// same way, and a `cp -r` or a file manager would otherwise print one warning per read.
/// A repeat is counted and said with the next different failure, or after [`Failures::QUIET`].
#[derive(Default)]
struct Failures(Mutex<Option<(String, Instant, u64)>>);

impl Failures {
    const QUIET: Duration = Duration::from_secs(60);

    fn eio(&self, why: String) -> Errno {
        let mut last = self.0.lock().expect("lock");
        match &mut *last {
            Some((said, at, more)) if *said == why && at.elapsed() < Self::QUIET => *more += 1,
            _ => {
                if let Some((_, _, more @ 1..)) = *last {
                    tracing::warn!("{more} more reads failed the same way");
                }
                tracing::warn!("{why}");
                *last = Some((why, Instant::now(), 0));
            }
        }
        libc::EIO
    }
}

impl<S: FileSource> MountFs<S> {
    /// `cache_bytes` bounds the block cache; `timeout` every wait for the sender.
    pub fn new(manifest: Arc<Manifest>, src: S, cache_bytes: u64, timeout: Duration) -> Arc<Self> {
        let blocks = Blocks::new(src, cache_bytes);
        let readahead = ReadAhead::new(blocks.capacity());
        Arc::new(MountFs {
            tree: Tree::new(manifest),
            blocks: Arc::new(blocks),
            readahead,
            timeout,
            failures: Arc::default(),
            extents: Arc::new(Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(EXTENT_FILES).expect("not zero"),
            ))),
        })
    }

    pub fn source(&self) -> &S {
        self.blocks.source()
    }

    /// Right after mounting the link is idle: fetches the first small files of the tree (in
    /// manifest order, so folder by folder) up to about `budget` bytes, in one burst of
    /// pipelined requests. Across a long path a `cp -r` or a file manager then finds them
    /// cached or on their way instead of paying a round trip per batch, and the connection's
    /// congestion window has grown by the time bigger reads come. At most `max_files` files:
    /// a tree of tiny files would otherwise send a request for each of a great many files no
    /// one may read, and keep both peers' CPUs busy while the user's first `find` or `ls -lR`
    /// runs. Returns the bytes asked for.
    pub fn prefetch_small_files(&self, budget: u64, max_files: usize) -> u64 {
        let mut bytes = 0;
        let mut files = 0;
        for e in self.tree.manifest().entries() {
            if bytes >= budget || files >= max_files {
                break;
            }
            if e.kind == Kind::File as i32 && e.size > 0 && e.size <= SMALL_FILE {
                self.blocks
                    .ensure(e.id, e.size, 0..e.size.div_ceil(BLOCK), false);
                bytes += e.size;
                files += 1;
            }
        }
        bytes
    }

    pub fn manifest(&self) -> &Arc<Manifest> {
        self.tree.manifest()
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        self.tree.getattr(ino)
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        self.tree.lookup(parent, name)
    }

    /// Entries of a directory from `offset` on: (ino, kind, name). Offsets count "." and "..".
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
    ) -> Result<impl Iterator<Item = (u64, Kind, &[u8])> + '_, Errno> {
        self.tree.readdir(ino, offset)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        self.tree.readlink(ino)
    }

    /// Total bytes and entries, for statfs.
    pub fn totals(&self) -> (u64, u64) {
        self.tree.totals()
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
        let e = match self.tree.entry(ino) {
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
        let ahead = self.readahead.window(id, offset, end, fsize);
        let parts = self.blocks.ensure(id, fsize, first..last + 1, true);
        if !ahead.is_empty() {
            self.blocks.ensure(id, fsize, ahead, false);
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
        Reading::Wait(
            wait_for(
                runs,
                parts,
                self.timeout,
                self.failures.clone(),
                (first, offset, end),
            )
            .boxed(),
        )
    }

    /// `lseek(2)` with `SEEK_DATA` or `SEEK_HOLE` (`hole`) from `offset` in file `ino`. A
    /// file the sender said has no holes is all data, answered here; a sparse one is asked of
    /// the sender (within the timeout) unless its last answer about the file covers `offset`
    /// (one answer tells up to 64 extents). Any answer it cannot give or that is out of range
    /// counts the file as all data, which `lseek` allows. `ENXIO`: no data after `offset`, or
    /// `offset` at or past the end.
    pub fn begin_seek(&self, ino: u64, offset: i64, hole: bool) -> Seeking {
        let e = match self.tree.entry(ino) {
            Err(e) => return Seeking::Done(Err(e)),
            Ok(Some(e)) if e.kind == Kind::File as i32 => e,
            Ok(_) => return Seeking::Done(Err(libc::EINVAL)),
        };
        let (id, size) = (e.id, e.size);
        let Ok(offset) = u64::try_from(offset) else {
            return Seeking::Done(Err(libc::ENXIO));
        };
        if offset >= size {
            return Seeking::Done(Err(libc::ENXIO));
        }
        let all_data = if hole { size } else { offset };
        if !e.sparse() {
            return Seeking::Done(Ok(all_data));
        }
        let said = move |p| match p {
            p if p == size && !hole => Err(libc::ENXIO),
            p => Ok(p),
        };
        let known = self.extents.lock().expect("lock").get(&id).cloned();
        if let Some((x, p)) = known.and_then(|x| x.answer(offset, hole).map(|p| (x, p))) {
            Self::prefetch_data(&self.blocks, id, size, &x, hole, p);
            return Seeking::Done(said(p));
        }
        let (src, timeout) = (self.source().clone(), self.timeout);
        let (extents, blocks) = (self.extents.clone(), self.blocks.clone());
        Seeking::Wait(
            async move {
                let found = match tokio::time::timeout(timeout, src.seek(id, offset, hole)).await {
                    Ok(Ok(Some(a))) => match Extents::from_answer(offset, hole, size, &a) {
                        Some(x) => {
                            let p = x.answer(offset, hole).unwrap_or(all_data);
                            Self::prefetch_data(&blocks, id, size, &x, hole, p);
                            extents.lock().expect("lock").put(id, x);
                            p
                        }
                        None => {
                            tracing::debug!(
                                "seek answered out of range ({}); all data",
                                a.position
                            );
                            all_data
                        }
                    },
                    Ok(Ok(None)) => all_data,
                    Ok(Err(e)) => {
                        tracing::debug!("seek failed ({e}); all data");
                        all_data
                    }
                    Err(_) => all_data,
                };
                said(found)
            }
            .boxed(),
        )
    }

    /// After `SEEK_DATA` found data at `at`: a reader walking a sparse file's extents (`cp`,
    /// `tar --sparse`) reads each next, and between them asks where they are, so the data
    /// spans the sender told of from `at` on are fetched now, up to [`SEEK_PREFETCH_BYTES`]
    /// (an eighth of the cache at most), in pipelined requests. Each `SEEK_DATA` moves the
    /// window; what is cached or on its way is not asked for again.
    fn prefetch_data(
        blocks: &Arc<Blocks<S>>,
        id: u64,
        size: u64,
        x: &Extents,
        hole: bool,
        at: u64,
    ) {
        if hole || at >= size {
            return;
        }
        let mut budget = (blocks.capacity() / 8).min(SEEK_PREFETCH_BYTES);
        for span in x.data_from(at) {
            if budget == 0 {
                break;
            }
            let end = span.end.min(span.start + budget);
            budget -= end - span.start;
            blocks.ensure(id, size, span.start / BLOCK..end.div_ceil(BLOCK), false);
        }
    }

    /// A read by file id through the cache, for copy-out.
    pub async fn read_file(
        self: &Arc<Self>,
        id: u64,
        offset: u64,
        len: u32,
    ) -> crate::Result<(Bytes, Option<[u8; 32]>)> {
        let data = self
            .read(self.tree.ino_of(id), offset, len)
            .await
            .map_err(|e| {
                Error::io(
                    "reading through the mount cache",
                    std::io::Error::from_raw_os_error(e),
                )
            })?;
        Ok((data, None))
    }

    /// When a small file is read, fetch the next small files of its folder in the background
    /// (what `cp -r` and file managers read next), a batch at a time.
    fn prefetch_folder(&self, e: &Entry) {
        let manifest = self.tree.manifest();
        let siblings = manifest.children(e.parent);
        let Some(pos) = siblings.iter().position(|&c| c == e.id) else {
            return;
        };
        let Some(batch) = self.readahead.folder(e.parent, pos) else {
            return;
        };
        // All of a batch's requests go out at once and pipeline on the data streams, so a
        // folder of small files costs about one round trip per batch: a batch is as many
        // files as fit a byte budget, not a fixed few.
        let mut bytes = 0;
        for (pos, &c) in siblings
            .iter()
            .enumerate()
            .skip(batch.start)
            .take(batch.len())
        {
            if bytes >= DIR_PREFETCH_BYTES {
                self.readahead.folder_upto(e.parent, pos);
                break;
            }
            if let Some(s) = manifest.get(c) {
                if s.kind == Kind::File as i32 && s.size > 0 && s.size <= SMALL_FILE {
                    self.blocks
                        .ensure(c, s.size, 0..s.size.div_ceil(BLOCK), false);
                    bytes += s.size;
                }
            }
        }
    }
}

/// Waits (at most `timeout`) for the runs a read needs, then assembles its bytes (of the
/// blocks from `first`, the range `offset..end`).
async fn wait_for(
    runs: Vec<(u64, SharedRun)>,
    parts: Vec<Part>,
    timeout: Duration,
    failures: Arc<Failures>,
    (first, offset, end): (u64, u64, u64),
) -> Result<Bytes, Errno> {
    let waits = futures::future::join_all(runs.iter().map(|(_, r)| r.clone()));
    let done = tokio::time::timeout(timeout, waits).await.map_err(|_| {
        failures.eio(format!(
            "a read waited {timeout:?} for the sender and failed with EIO"
        ))
    })?;
    let mut got = Vec::with_capacity(runs.len());
    for ((start, _), r) in runs.iter().zip(done) {
        got.push((
            *start,
            r.map_err(|e| failures.eio(format!("read failed: {e}")))?,
        ));
    }
    assemble(parts, &got, first, offset, end)
}

#[cfg(test)]
mod tests;
