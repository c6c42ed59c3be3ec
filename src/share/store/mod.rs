//! What is shared and how its bytes are read: the scanned tree, a bounded set of open files,
//! positioned reads (from the page cache without a thread hand-off when it holds them), and
//! BLAKE3 hashes computed on demand (or for free when a read covers a whole file, or put
//! together from the reads a receive makes, [`super::tree_hash`]) and kept, so a huge share
//! starts serving at once. Every read is checked against the manifest so a file
//! that changed is refused. Knows nothing of sessions or streams; a read's answer only leaves
//! room around its bytes for the record layer's header and tag, so it is sealed in place.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::OnceCell;

use super::tree_hash::TreeHash;

mod direct;
mod hash;
mod holes;

use crate::crypto::{DATA_ROOM, TAG};
use crate::manifest::{LocalTree, Source};
use crate::proto::{request, ErrorCode, Failure, Kind, Offer, Request, Response, MAX_READ};

/// Files kept open at once.
const OPEN_FILES: usize = 64;
/// Files whose hash is being put together from the reads that serve them, at most.
const TREE_HASHES: usize = 64;
type HashCell = Arc<OnceCell<[u8; 32]>>;

/// The files being shared and the state needed to serve them.
pub struct Share {
    tree: LocalTree,
    open: Mutex<LruCache<u64, Arc<File>>>,
    /// The same files opened for direct reads (`None`: the filesystem refuses `O_DIRECT`).
    direct: Mutex<LruCache<u64, Option<Arc<File>>>>,
    hashes: Mutex<HashMap<u64, HashCell>>,
    /// `pcp send --no-compress`: reads asked for compressed go as they are.
    no_compress: std::sync::atomic::AtomicBool,
    /// Files whose reads did not compress, with a count of reads since (see [`Share::pack`]).
    unpacked: Mutex<LruCache<u64, u32>>,
    /// Files found changed since the share started (at most one per file of the share).
    changed: Mutex<std::collections::HashSet<u64>>,
    /// Hashes being put together from served reads (`Read.hash`), by file.
    trees: Mutex<LruCache<u64, TreeHash>>,
    served: AtomicU64,
    /// Polling after answers, for the reader that asks again at once (one per process).
    linger: Arc<crate::linger::Linger>,
}

/// Reads up to this size wait for the disk on the serving task instead of the blocking pool.
const INLINE_READ: u32 = 64 * 1024;

/// How long such a read polls the page cache for its pages before it sleeps on the disk: an
/// SSD answers a 4 KiB read in well under this, and a thread that slept must be woken.
const POLL_READ: std::time::Duration = std::time::Duration::from_micros(300);

/// What [`Share::answer`] sends back.
pub(crate) enum Answer {
    /// A read's bytes, `buf[at..]`, to be sealed in place by `SecureWriter::send_data` (with
    /// room for the record's header before them: `at >= DATA_ROOM`).
    Data { id: u64, buf: Vec<u8>, at: usize },
    /// Any other response.
    Other(Response),
}

impl Answer {
    /// File bytes it carries (a run of zeros sent as its count included, compressed bytes
    /// counted as they were before).
    pub(crate) fn data_len(&self) -> usize {
        match self {
            Answer::Data { buf, at, .. } => buf.len() - at,
            Answer::Other(r) if r.compressed > 0 => r.compressed as usize,
            Answer::Other(r) => r.data.len() + r.zeros as usize,
        }
    }

    /// Of [`data_len`](Self::data_len), zeros sent as their count.
    pub(crate) fn zeros(&self) -> usize {
        match self {
            Answer::Data { .. } => 0,
            Answer::Other(r) => r.zeros as usize,
        }
    }

    /// Whether its bytes go compressed.
    pub(crate) fn packed(&self) -> bool {
        matches!(self, Answer::Other(r) if r.compressed > 0)
    }

    /// File bytes that cross the wire (a run of zeros sent as its count: none).
    pub(crate) fn wire_len(&self) -> usize {
        match self {
            Answer::Data { buf, at, .. } => buf.len() - at,
            Answer::Other(r) => r.data.len(),
        }
    }
}

/// A read's buffer (the bytes after the room before them) and, when it covered the whole file,
/// the file's hash.
type ReadBytes = (Vec<u8>, Option<[u8; 32]>);

/// Why [`Share::read`] returned no data.
#[derive(Debug)]
pub enum ReadError {
    /// A read asked not to wait, and some of the range is not in the page cache; what it
    /// got before that (to go on from with [`Share::read_into`]), and whether the rest is on
    /// its way from the disk (`EAGAIN`; false: the filesystem cannot read without waiting).
    WouldBlock(Vec<u8>, bool),
    Failed(Failure),
}

impl From<Failure> for ReadError {
    fn from(f: Failure) -> Self {
        ReadError::Failed(f)
    }
}

/// Where a read puts the bytes: after `before` bytes that the caller fills in later, with
/// capacity for `after` more behind them, so a record's header and tag fit around the data
/// without a copy (see `SecureWriter::send_data`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Room {
    pub before: usize,
    pub after: usize,
}

/// One `preadv2` at `offset` into `buf`'s spare room, until `buf` is `end` bytes long (no
/// zeroing first); `flags` 0 waits for the disk, `RWF_NOWAIT` takes only what the page cache
/// holds (EAGAIN otherwise, or EOPNOTSUPP where the kernel or filesystem cannot tell).
fn pread_append(
    f: &File,
    buf: &mut Vec<u8>,
    end: usize,
    offset: u64,
    flags: libc::c_int,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(end.saturating_sub(buf.len()));
    let room = end
        .saturating_sub(buf.len())
        .min(buf.spare_capacity_mut().len());
    let iov = libc::iovec {
        iov_base: buf.spare_capacity_mut().as_mut_ptr().cast(),
        iov_len: room,
    };
    let offset = i64::try_from(offset).map_err(std::io::Error::other)?;
    // SAFETY: one iovec over `room` bytes of `buf`'s spare capacity, which stays allocated and
    // unaliased during the call; the fd is open for `f`'s lifetime.
    let n = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, offset, flags) };
    let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
    // SAFETY: the kernel initialised the first `n <= room` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code: code as i32,
        message: message.into(),
    }
}

impl Share {
    pub fn new(tree: LocalTree) -> Share {
        Share {
            tree,
            open: Mutex::new(LruCache::new(OPEN_FILES.try_into().expect("nonzero"))),
            direct: Mutex::new(LruCache::new(OPEN_FILES.try_into().expect("nonzero"))),
            hashes: Mutex::new(HashMap::new()),
            changed: Mutex::default(),
            no_compress: Default::default(),
            unpacked: Mutex::new(LruCache::new(OPEN_FILES.try_into().expect("nonzero"))),
            trees: Mutex::new(LruCache::new(TREE_HASHES.try_into().expect("nonzero"))),
            served: AtomicU64::new(0),
            linger: crate::linger::Linger::new(),
        }
    }

    /// An answer went out: the runtime polls a while for the next request before sleeping.
    pub(crate) fn answered(&self) {
        self.linger.answered();
    }

    pub fn tree(&self) -> &LocalTree {
        &self.tree
    }

    /// File bytes sent so far, over all sessions.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub fn offer(&self) -> Offer {
        let (files, bytes) = self.tree.totals();
        Offer {
            text: self.tree.text,
            entries: self.tree.entries.len() as u64,
            files,
            bytes,
            roots: self
                .tree
                .entries
                .iter()
                .filter(|e| e.parent == 0)
                .map(|e| {
                    let mut n = e.name.clone();
                    if e.kind == Kind::Dir as i32 {
                        n.push(b'/');
                    }
                    n
                })
                .collect(),
        }
    }

    fn source(&self, id: u64) -> std::result::Result<&Source, Failure> {
        id.checked_sub(1)
            .and_then(|i| self.tree.sources.get(i as usize))
            .and_then(|s| s.as_ref())
            .ok_or_else(|| fail(ErrorCode::NoSuchFile, format!("no file with id {id}")))
    }

    /// An open handle to file `id`, checked against the manifest so a changed file is refused.
    fn file(&self, id: u64) -> std::result::Result<Arc<File>, Failure> {
        let src = self.source(id)?;
        if let Some(f) = self.open.lock().expect("lock").get(&id) {
            return Ok(f.clone());
        }
        let f =
            File::open(&src.path).map_err(|e| fail(ErrorCode::Io, format!("cannot open: {e}")))?;
        let f = Arc::new(f);
        self.open.lock().expect("lock").put(id, f.clone());
        Ok(f)
    }

    /// The manifest entry of file `id` (its source found first).
    fn entry(&self, id: u64) -> Option<&crate::proto::Entry> {
        self.tree.entries.get(id.checked_sub(1)? as usize)
    }

    /// After a read of `want` bytes at `offset` into `buf[at..]`: refused if the file changed
    /// meanwhile (checked after reading, so bytes of a file that changed are never sent) or
    /// came up short; counted; with the file's hash when it covers the whole file.
    fn finish_read(
        &self,
        id: u64,
        f: &File,
        buf: Vec<u8>,
        at: usize,
        offset: u64,
        want: usize,
    ) -> std::result::Result<ReadBytes, ReadError> {
        let got = buf.len() - at;
        self.check_unchanged(id, f)?;
        if got < want {
            return Err(fail(ErrorCode::Changed, "file shrank on the sender").into());
        }
        self.served.fetch_add(got as u64, Ordering::Relaxed);
        let whole = offset == 0 && want as u64 == self.source(id)?.size;
        let hash = whole.then(|| {
            let h: [u8; 32] = blake3::hash(&buf[at..]).into();
            let _ = self.cell(id).set(h);
            h
        });
        Ok((buf, hash))
    }

    fn check_unchanged(&self, id: u64, f: &File) -> std::result::Result<(), Failure> {
        let src = self.source(id)?;
        let m = f
            .metadata()
            .map_err(|e| fail(ErrorCode::Io, format!("cannot stat: {e}")))?;
        if !src.unchanged(&m) {
            self.open.lock().expect("lock").pop(&id);
            self.direct.lock().expect("lock").pop(&id);
            // Said once per file: a reader asks for many pieces of it.
            if self.changed.lock().expect("lock").insert(id) {
                tracing::warn!(
                    "{}: changed since the share started; refusing to serve it",
                    src.path.display()
                );
            }
            return Err(fail(
                ErrorCode::Changed,
                "file changed on the sender since the share started",
            ));
        }
        Ok(())
    }

    /// Positioned read of up to `len` bytes at `offset`: blocking (call from a blocking thread),
    /// or with `nowait` only from the page cache (fails with [`ReadError::WouldBlock`] if any
    /// of it is not there). The bytes are `buf[room.before..]` of the buffer returned. A read
    /// covering the whole file also yields its hash.
    pub fn read(
        &self,
        id: u64,
        offset: u64,
        len: u32,
        room: Room,
        nowait: bool,
    ) -> std::result::Result<ReadBytes, ReadError> {
        self.read_into(id, offset, len, room, Vec::new(), nowait)
    }

    /// [`read`](Self::read), going on from `buf`: what a no-wait read already got (from
    /// [`ReadError::WouldBlock`]), so a fallback to the disk reads only the rest.
    pub fn read_into(
        &self,
        id: u64,
        offset: u64,
        len: u32,
        room: Room,
        mut buf: Vec<u8>,
        nowait: bool,
    ) -> std::result::Result<ReadBytes, ReadError> {
        let src = self.source(id)?;
        if len > MAX_READ {
            return Err(fail(
                ErrorCode::BadRange,
                format!("length {len} exceeds {MAX_READ}"),
            )
            .into());
        }
        if offset > src.size {
            return Err(fail(
                ErrorCode::BadRange,
                format!("offset {offset} is past the end"),
            )
            .into());
        }
        let want = (src.size - offset).min(len as u64) as usize;
        let f = self.file(id)?;
        let end = room.before + want;
        if buf.len() > end || buf.len() < room.before {
            buf.clear();
            buf.resize(room.before, 0);
        }
        buf.reserve_exact(end + room.after - buf.len());
        // No-wait: only what the page cache holds (EAGAIN at the first page it lacks; where the
        // filesystem cannot tell, EOPNOTSUPP); the caller then goes on from there, blocking.
        let flags = if nowait { libc::RWF_NOWAIT } else { 0 };
        while buf.len() < end {
            let at = offset + (buf.len() - room.before) as u64;
            match pread_append(&f, &mut buf, end, at, flags) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if nowait => {
                    let coming = e.raw_os_error() == Some(libc::EAGAIN);
                    return Err(ReadError::WouldBlock(buf, coming));
                }
                Err(e) => return Err(fail(ErrorCode::Io, format!("read failed: {e}")).into()),
            }
        }
        self.finish_read(id, &f, buf, room.before, offset, want)
    }

    /// A read from the page cache right here when it holds the range (no hand-off to the
    /// blocking pool, which costs a thread wake-up per request), else from the disk; with
    /// its part of the file's hash (see [`hashed`](Self::hashed)).
    async fn read_cached_or_not(
        self: &Arc<Self>,
        r: crate::proto::Read,
        room: Room,
    ) -> std::result::Result<ReadBytes, ReadError> {
        let read = match self.read(r.file, r.offset, r.len, room, true) {
            // A small read from the disk waits less than the two thread hand-offs the
            // pool costs (~0.1 ms against ~0.1 ms on a 2-core VM): read it right here.
            Err(ReadError::WouldBlock(got, true)) if r.len <= INLINE_READ => {
                self.read_polling(&r, room, got)
            }
            Err(ReadError::WouldBlock(got, false)) if r.len <= INLINE_READ => {
                self.read_into(r.file, r.offset, r.len, room, got, false)
            }
            Err(ReadError::WouldBlock(got, _)) => {
                let me = self.clone();
                return tokio::task::spawn_blocking(move || {
                    let read = me.read_into(r.file, r.offset, r.len, room, got, false)?;
                    Ok(me.hashed(&r, room.before, read))
                })
                .await
                .unwrap_or_else(|e| Err(fail(ErrorCode::Io, e.to_string()).into()));
            }
            other => other,
        };
        Ok(self.hashed(&r, room.before, read?))
    }

    /// A small read whose pages are on their way from the disk (the first no-wait try started
    /// that): the page cache polled for them for up to [`POLL_READ`], then a read that sleeps.
    /// Sleeping on the disk costs a wake-up once it answers (on a VM a halted vCPU's, ~30-45
    /// µs); polling, the thread is running when the pages land and goes on to send them.
    fn read_polling(
        &self,
        r: &crate::proto::Read,
        room: Room,
        mut got: Vec<u8>,
    ) -> std::result::Result<ReadBytes, ReadError> {
        let start = std::time::Instant::now();
        let mut polling = self.linger.may_poll();
        while polling && start.elapsed() < POLL_READ {
            // Between tries the CPU goes to whoever else is ready to run (a microsecond or so
            // when nobody is), so a read is not a storm of system calls and does not hold up
            // the peer or the reader sharing this CPU; a CPU busy with other work ends the
            // polling (see `Linger::turn`).
            polling = self.linger.turn();
            match self.read_into(r.file, r.offset, r.len, room, got, true) {
                Err(ReadError::WouldBlock(back, true)) => got = back,
                Err(ReadError::WouldBlock(back, false)) => {
                    return self.read_into(r.file, r.offset, r.len, room, back, false)
                }
                done => return done,
            }
        }
        self.read_into(r.file, r.offset, r.len, room, got, false)
    }

    /// A read's bytes (`buf[at..]`) and the file's hash if it brought it: a receive's reads
    /// (`Read.hash`) also put the hash together, on the thread that read them (the disk's
    /// blocking one for a big read, so the serving task only seals and sends).
    fn hashed(&self, r: &crate::proto::Read, at: usize, (buf, whole): ReadBytes) -> ReadBytes {
        let hash = match whole {
            None if r.hash => self.toward_hash(r.file, r.offset, &buf[at..]),
            whole => whole,
        };
        (buf, hash)
    }

    /// Answers every read with its bytes as they are, even when asked for them compressed.
    pub fn refuse_compression(&self) {
        self.no_compress.store(true, Ordering::Relaxed);
    }

    /// `raw` (a read of `file`) compressed, if that saves enough. A file whose reads did not
    /// compress twice in a row (media, archives) is tried again only every 16th read.
    fn pack(&self, file: u64, raw: &[u8]) -> Option<Vec<u8>> {
        const TRY_EVERY: u32 = 16;
        // Per file: its misses in a row, and once there are two, the reads since.
        {
            let mut unpacked = self.unpacked.lock().expect("lock");
            if let Some(n @ 2..) = unpacked.get_mut(&file) {
                *n += 1;
                if *n % TRY_EVERY != 0 {
                    return None;
                }
            }
        }
        let packed = crate::pack::compress(raw);
        let mut unpacked = self.unpacked.lock().expect("lock");
        if packed.is_some() {
            unpacked.pop(&file);
        } else {
            // Past two misses this read is counted already.
            let n = unpacked.get_or_insert_mut(file, || 0);
            if *n < 2 {
                *n += 1;
            }
        }
        packed
    }

    pub(crate) async fn answer(self: Arc<Self>, req: Request) -> Answer {
        // A read's bytes land after room for the record's header and before room for its
        // tag, so the answer is sealed where it was read (`SecureWriter::send_data`).
        let room = Room {
            before: DATA_ROOM,
            after: TAG,
        };
        let mut resp = Response {
            id: req.id,
            ..Default::default()
        };
        let result = match req.op {
            Some(request::Op::Read(r)) => {
                let (zeros_ok, file) = (r.zeros, r.file);
                let compress_ok = r.compress && !self.no_compress.load(Ordering::Relaxed);
                // A big read the page cache lacks: from the disk straight into the buffer,
                // on the blocking pool.
                // A hole of a sparse file is zeros: not read at all.
                let hole = self.read_in_hole(&r);
                let direct = match (!hole).then(|| self.direct_for(r.file, r.offset, r.len)) {
                    None => Ok(None),
                    Some(Ok(Some(f))) => {
                        let (me, r) = (self.clone(), r.clone());
                        tokio::task::spawn_blocking(move || {
                            let read = me.read_direct(r.file, r.offset, r.len, room, &f)?;
                            Ok(read.map(|(buf, at, whole)| {
                                let (buf, hash) = me.hashed(&r, at, (buf, whole));
                                (buf, at, hash)
                            }))
                        })
                        .await
                        .unwrap_or_else(|e| Err(fail(ErrorCode::Io, e.to_string()).into()))
                    }
                    Some(Ok(None)) => Ok(None),
                    Some(Err(f)) => Err(f.into()),
                };
                let mut at = room.before;
                let read = match direct {
                    Ok(Some((buf, start, hash))) => {
                        at = start;
                        Ok((buf, hash))
                    }
                    Err(e) => Err(e),
                    Ok(None) if hole => self.read_hole(&r, room),
                    Ok(None) => self.read_cached_or_not(r, room).await,
                };
                // A run of zeros (a sparse file's hole, a preallocated region) goes as its
                // count; other bytes compressed where asked and worth it (SPEC §11.3).
                let read = read.map(|(buf, hash)| {
                    let zero = zeros_ok
                        && buf.len() - at >= crate::pages::ZERO_RUN
                        && crate::pages::is_zero(&buf[at..]);
                    let packed = (compress_ok && !zero)
                        .then(|| self.pack(file, &buf[at..]))
                        .flatten();
                    (buf, hash, zero, packed)
                });
                match read {
                    Ok((buf, hash, true, _)) => {
                        resp.zeros = (buf.len() - at) as u64;
                        if let Some(hash) = hash {
                            resp.hash = hash.to_vec();
                        }
                        Ok(())
                    }
                    Ok((buf, hash, false, Some(packed))) => {
                        resp.compressed = (buf.len() - at) as u64;
                        resp.data = packed.into();
                        if let Some(hash) = hash {
                            resp.hash = hash.to_vec();
                        }
                        Ok(())
                    }
                    Ok((buf, None, false, None)) => {
                        return Answer::Data {
                            id: req.id,
                            buf,
                            at,
                        }
                    }
                    Ok((buf, Some(hash), false, None)) => {
                        resp.data = Bytes::from(buf).slice(at..);
                        resp.hash = hash.to_vec();
                        Ok(())
                    }
                    Err(ReadError::Failed(f)) => Err(f),
                    Err(ReadError::WouldBlock(..)) => Err(fail(ErrorCode::Io, "read would block")),
                }
            }
            Some(request::Op::Hash(h)) if h.len == 0 => {
                self.hash(h.file).await.map(|h| resp.hash = h.to_vec())
            }
            Some(request::Op::Hash(h)) => {
                let me = self.clone();
                match tokio::task::spawn_blocking(move || me.range_hash(h.file, h.offset, h.len))
                    .await
                {
                    Ok(r) => r.map(|h| resp.hash = h.to_vec()),
                    Err(e) => Err(fail(ErrorCode::Io, e.to_string())),
                }
            }
            Some(request::Op::Seek(s)) => self.seek(&s).map(|(p, edges)| {
                resp.position = p;
                resp.extents = edges;
            }),
            None => Err(fail(ErrorCode::Unspecified, "unknown request")),
        };
        if let Err(f) = result {
            resp.error = Some(f);
        }
        Answer::Other(resp)
    }
}

#[cfg(test)]
mod tests;
