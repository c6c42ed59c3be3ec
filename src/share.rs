//! The sharing side: accepts streams, authenticates receivers, sends the offer and manifest, and
//! answers (id, offset, length) reads and hash requests with positioned reads from a bounded set
//! of open files. Hashes are computed on demand (or for free when a read covers a whole file)
//! and kept, so a huge share starts serving at once.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::{PeerId, Stream};
use lru::LruCache;
use prost::Message;
use tokio::sync::{mpsc, OnceCell};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use crate::code::Code;
use crate::crypto::{self, HandshakeParams, SecureReader, SecureWriter, SessionKeys};
use crate::error::{Error, Result};
use crate::manifest::LocalTree;
use crate::net::{Node, STREAM_PROTOCOL};
use crate::wire::{
    envelope::Msg, opening, request, ErrorCode, Failure, Kind, ManifestChunk, Offer, Ready,
    Request, Response, Role, MANIFEST_BATCH_BYTES, MAX_RANGE_HASH, MAX_READ,
};

/// Failed handshakes after which the share stops, so online guessing stays hopeless.
pub const MAX_FAILED_ATTEMPTS: u32 = 3;
/// Requests one data stream may have in progress; beyond it the sender stops reading requests.
const MAX_INFLIGHT_PER_STREAM: usize = 8;
/// Data streams one session may open.
pub const MAX_STREAMS: u32 = 8;
const OPEN_FILES: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type HashCell = Arc<OnceCell<[u8; 32]>>;

/// The files being shared and the state needed to serve them.
pub struct Share {
    tree: LocalTree,
    open: Mutex<LruCache<u64, Arc<File>>>,
    hashes: Mutex<HashMap<u64, HashCell>>,
    served: AtomicU64,
}

/// Reads up to this size wait for the disk on the serving task instead of the blocking pool.
const INLINE_READ: u32 = 64 * 1024;

/// Why [`Share::read`] returned no data.
#[derive(Debug)]
pub enum ReadError {
    /// A read asked not to wait, and some of the range is not in the page cache; what it
    /// got before that (to go on from with [`Share::read_into`]).
    WouldBlock(Vec<u8>),
    Failed(Failure),
}

impl From<Failure> for ReadError {
    fn from(f: Failure) -> Self {
        ReadError::Failed(f)
    }
}

/// One `preadv2` at `offset` into `buf`'s spare room, up to `want` bytes in all (no zeroing
/// first); `flags` 0 waits for the disk, `RWF_NOWAIT` takes only what the page cache holds
/// (EAGAIN otherwise, or EOPNOTSUPP where the kernel or filesystem cannot tell).
fn pread_append(
    f: &File,
    buf: &mut Vec<u8>,
    want: usize,
    offset: u64,
    flags: libc::c_int,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(want.saturating_sub(buf.len()));
    let room = want
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
            hashes: Mutex::new(HashMap::new()),
            served: AtomicU64::new(0),
        }
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

    fn source(&self, id: u64) -> std::result::Result<&crate::manifest::Source, Failure> {
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

    fn check_unchanged(&self, id: u64, f: &File) -> std::result::Result<(), Failure> {
        let src = self.source(id)?;
        let m = f
            .metadata()
            .map_err(|e| fail(ErrorCode::Io, format!("cannot stat: {e}")))?;
        if !src.unchanged(&m) {
            self.open.lock().expect("lock").pop(&id);
            tracing::warn!(path = %src.path.display(), "file changed since the share started; refusing to serve it");
            return Err(fail(
                ErrorCode::Changed,
                "file changed on the sender since the share started",
            ));
        }
        Ok(())
    }

    /// Positioned read of up to `len` bytes at `offset`: blocking (call from a blocking thread),
    /// or with `nowait` only from the page cache (fails with [`ReadError::WouldBlock`] if any
    /// of it is not there). A read covering the whole file also yields its hash.
    pub fn read(
        &self,
        id: u64,
        offset: u64,
        len: u32,
        nowait: bool,
    ) -> std::result::Result<(Vec<u8>, Option<[u8; 32]>), ReadError> {
        self.read_into(id, offset, len, Vec::new(), nowait)
    }

    /// [`read`](Self::read), going on from `buf`: the bytes a no-wait read already got (from
    /// [`ReadError::WouldBlock`]), so a fallback to the disk reads only the rest.
    pub fn read_into(
        &self,
        id: u64,
        offset: u64,
        len: u32,
        mut buf: Vec<u8>,
        nowait: bool,
    ) -> std::result::Result<(Vec<u8>, Option<[u8; 32]>), ReadError> {
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
        if buf.len() > want {
            buf.clear();
        }
        // No-wait: only what the page cache holds (EAGAIN at the first page it lacks; where the
        // filesystem cannot tell, EOPNOTSUPP); the caller then goes on from there, blocking.
        let flags = if nowait { libc::RWF_NOWAIT } else { 0 };
        while buf.len() < want {
            let at = offset + buf.len() as u64;
            match pread_append(&f, &mut buf, want, at, flags) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) if nowait => return Err(ReadError::WouldBlock(buf)),
                Err(e) => return Err(fail(ErrorCode::Io, format!("read failed: {e}")).into()),
            }
        }
        let got = buf.len();
        // Checked after reading, so bytes of a file that changed meanwhile are never sent.
        self.check_unchanged(id, &f)?;
        if got < want {
            return Err(fail(ErrorCode::Changed, "file shrank on the sender").into());
        }
        self.served.fetch_add(got as u64, Ordering::Relaxed);
        let hash = (offset == 0 && want as u64 == src.size).then(|| {
            let h: [u8; 32] = blake3::hash(&buf).into();
            let _ = self.cell(id).set(h);
            h
        });
        Ok((buf, hash))
    }

    fn cell(&self, id: u64) -> HashCell {
        self.hashes
            .lock()
            .expect("lock")
            .entry(id)
            .or_default()
            .clone()
    }

    /// BLAKE3 of file `id`, computed once on first demand.
    pub async fn hash(self: &Arc<Self>, id: u64) -> std::result::Result<[u8; 32], Failure> {
        self.source(id)?;
        let cell = self.cell(id);
        let me = self.clone();
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || me.hash_blocking(id))
                .await
                .map_err(|e| fail(ErrorCode::Io, e.to_string()))?
        })
        .await
        .copied()
    }

    fn hash_blocking(&self, id: u64) -> std::result::Result<[u8; 32], Failure> {
        let f = self.file(id)?;
        self.check_unchanged(id, &f)?;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        loop {
            let n = f
                .read_at(&mut buf, off)
                .map_err(|e| fail(ErrorCode::Io, format!("read failed: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        self.check_unchanged(id, &f)?;
        if off != self.source(id)?.size {
            return Err(fail(ErrorCode::Changed, "file size changed on the sender"));
        }
        Ok(h.finalize().into())
    }

    /// BLAKE3 of bytes `offset..offset+len` of file `id` (blocking).
    fn range_hash(&self, id: u64, offset: u64, len: u64) -> std::result::Result<[u8; 32], Failure> {
        let src = self.source(id)?;
        if len > MAX_RANGE_HASH || offset.checked_add(len).is_none_or(|end| end > src.size) {
            return Err(fail(ErrorCode::BadRange, "range out of bounds"));
        }
        let f = self.file(id)?;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; (1usize << 20).min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let want = ((len - done) as usize).min(buf.len());
            let n = f
                .read_at(&mut buf[..want], offset + done)
                .map_err(|e| fail(ErrorCode::Io, format!("read failed: {e}")))?;
            if n == 0 {
                return Err(fail(ErrorCode::Changed, "file shrank on the sender"));
            }
            h.update(&buf[..n]);
            done += n as u64;
        }
        self.check_unchanged(id, &f)?;
        Ok(h.finalize().into())
    }

    async fn answer(self: Arc<Self>, req: Request) -> Response {
        let mut resp = Response {
            id: req.id,
            ..Default::default()
        };
        let result = match req.op {
            Some(request::Op::Read(r)) => {
                // From the page cache right here when it holds the range (no hand-off to the
                // blocking pool, which costs a thread wake-up per request), else from the pool.
                let read = match self.read(r.file, r.offset, r.len, true) {
                    // A small read from the disk waits less than the two thread hand-offs the
                    // pool costs (~0.1 ms against ~0.1 ms on a 2-core VM): read it right here.
                    Err(ReadError::WouldBlock(got)) if r.len <= INLINE_READ => {
                        self.read_into(r.file, r.offset, r.len, got, false)
                    }
                    Err(ReadError::WouldBlock(got)) => {
                        let me = self.clone();
                        tokio::task::spawn_blocking(move || {
                            me.read_into(r.file, r.offset, r.len, got, false)
                        })
                        .await
                        .unwrap_or_else(|e| Err(fail(ErrorCode::Io, e.to_string()).into()))
                    }
                    other => other,
                };
                match read {
                    Ok((data, hash)) => {
                        resp.data = data.into();
                        resp.hash = hash.map(|h| h.to_vec()).unwrap_or_default();
                        Ok(())
                    }
                    Err(ReadError::Failed(f)) => Err(f),
                    Err(ReadError::WouldBlock(_)) => Err(fail(ErrorCode::Io, "read would block")),
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
            None => Err(fail(ErrorCode::Unspecified, "unknown request")),
        };
        if let Err(f) = result {
            resp.error = Some(f);
        }
        resp
    }
}

/// What the sharing side reports while it runs.
#[derive(Debug, Clone)]
pub enum ShareEvent {
    /// A receiver proved it holds the code.
    Authenticated {
        peer: PeerId,
        connection: String,
    },
    /// A receiver came back after a lost connection, with its resumption ticket.
    Resumed {
        peer: PeerId,
        connection: String,
    },
    /// Someone tried a wrong code.
    WrongCode {
        attempts: u32,
    },
    Accepted {
        peer: PeerId,
        mount: bool,
    },
    Declined {
        peer: PeerId,
    },
    /// A receiver said it has everything.
    Finished {
        peer: PeerId,
    },
    /// A receiver's control stream ended without it saying it was done.
    Lost {
        peer: PeerId,
        reason: String,
    },
}

/// How a share ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareEnd {
    Finished,
    Declined,
}

enum Outcome {
    WrongCode,
    Authenticated,
    Finished(bool),
    Lost,
    Other,
}

struct SessionState {
    peer: PeerId,
    keys: SessionKeys,
    /// Cancelled when the control stream ends: every data stream of the session stops with it.
    ended: CancellationToken,
    /// Stream indices already joined; each index's keys and nonces serve one stream only.
    joined: HashSet<u32>,
}

struct Sessions {
    by_id: Mutex<HashMap<[u8; 16], SessionState>>,
    /// Resumption tickets by the id of the session that issued them, with the peer they
    /// belong to; kept while that receiver may come back.
    tickets: Mutex<HashMap<[u8; 16], (PeerId, crypto::ResumeTicket)>>,
}

/// Serves `share` under `code` until a receiver has finished (or declined). Cancel-safe: dropping
/// the future stops serving.
pub async fn serve(
    node: &Node,
    share: Arc<Share>,
    code: &Code,
    events: mpsc::Sender<ShareEvent>,
    stop: CancellationToken,
) -> Result<ShareEnd> {
    let mut incoming = node
        .control()
        .accept(STREAM_PROTOCOL)
        .map_err(|e| Error::Network(e.to_string()))?;
    let sessions = Arc::new(Sessions {
        by_id: Mutex::new(HashMap::new()),
        tickets: Mutex::new(HashMap::new()),
    });
    let (done_tx, mut done_rx) = mpsc::channel::<Outcome>(64);
    let phrase: Arc<str> = code.phrase().into();
    let mut failures = 0u32;
    let mut active = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                // Give the control streams a moment to tell their receivers.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                return Err(Error::Interrupted);
            }
            s = incoming.next() => {
                let Some((peer, stream)) = s else { return Err(Error::Network("stopped accepting streams".into())) };
                let ctx = StreamCtx {
                    node: node.clone(),
                    share: share.clone(),
                    sessions: sessions.clone(),
                    phrase: phrase.clone(),
                    events: events.clone(),
                    outcomes: done_tx.clone(),
                    stop: stop.clone(),
                };
                let done = done_tx.clone();
                // Hand off at once: libp2p-stream buffers only one pending inbound stream.
                tokio::spawn(async move {
                    let outcome = match ctx.handle(peer, stream).await {
                        Ok(o) => o,
                        Err(Error::WrongCode) => Outcome::WrongCode,
                        Err(e) => {
                            tracing::debug!(%peer, "stream ended: {e}");
                            Outcome::Other
                        }
                    };
                    let _ = done.send(outcome).await;
                });
            }
            Some(o) = done_rx.recv() => match o {
                Outcome::WrongCode => {
                    failures += 1;
                    let _ = events.send(ShareEvent::WrongCode { attempts: failures }).await;
                    if failures >= MAX_FAILED_ATTEMPTS {
                        // Let the last rejection reach its receiver before the node goes away.
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        return Err(Error::TooManyAttempts(failures));
                    }
                }
                Outcome::Authenticated => active += 1,
                Outcome::Finished(accepted) => {
                    active = active.saturating_sub(1);
                    if active == 0 {
                        return Ok(if accepted { ShareEnd::Finished } else { ShareEnd::Declined });
                    }
                }
                Outcome::Lost => {
                    active = active.saturating_sub(1);
                }
                Outcome::Other => {}
            }
        }
    }
}

struct StreamCtx {
    node: Node,
    share: Arc<Share>,
    sessions: Arc<Sessions>,
    phrase: Arc<str>,
    events: mpsc::Sender<ShareEvent>,
    outcomes: mpsc::Sender<Outcome>,
    /// Cancelled when the user stops the share: every receiver is told so.
    stop: CancellationToken,
}

impl StreamCtx {
    async fn handle(self, peer: PeerId, stream: Stream) -> Result<Outcome> {
        let mut io = stream.compat();
        let opening = tokio::time::timeout(HANDSHAKE_TIMEOUT, crypto::read_opening(&mut io))
            .await
            .map_err(|_| Error::Timeout(HANDSHAKE_TIMEOUT, "the opening frame"))??;
        match opening {
            opening::Kind::Hello(hello) => {
                let resumed = !hello.resume.is_empty();
                let keys = if resumed {
                    let ticket = {
                        let tickets = self.sessions.tickets.lock().expect("lock");
                        match tickets.get(hello.resume.as_slice()) {
                            Some((p, t)) if *p == peer => t.clone(),
                            _ => {
                                return Err(Error::Protocol(
                                    "resumption of an unknown session".into(),
                                ))
                            }
                        }
                    };
                    let hs = crypto::resume_handshake(
                        &mut io,
                        Role::Sender,
                        self.node.peer_id(),
                        peer,
                        &ticket,
                        Some(hello),
                    );
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, hs)
                        .await
                        .map_err(|_| Error::Timeout(HANDSHAKE_TIMEOUT, "the handshake"))??
                } else {
                    let params = HandshakeParams::with_code(
                        &self.phrase,
                        Role::Sender,
                        self.node.peer_id(),
                        peer,
                    );
                    let keys = tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        crypto::handshake(&mut io, params, Some(hello)),
                    )
                    .await
                    .map_err(|_| Error::Timeout(HANDSHAKE_TIMEOUT, "the handshake"))??;
                    self.sessions
                        .tickets
                        .lock()
                        .expect("lock")
                        .insert(keys.session_id(), (peer, keys.ticket()));
                    keys
                };
                let ended = CancellationToken::new();
                self.sessions.by_id.lock().expect("lock").insert(
                    keys.session_id(),
                    SessionState {
                        peer,
                        keys: keys.clone(),
                        ended: ended.clone(),
                        joined: HashSet::new(),
                    },
                );
                let connection = match self.node.connection(peer).await {
                    Ok(Some(c)) => format!("{} via {}", c.transport(), c.remote),
                    _ => "unknown connection".into(),
                };
                // Counted as active before the control stream runs, so the serve loop cannot
                // finish while this session is still starting.
                let _ = self.outcomes.send(Outcome::Authenticated).await;
                let ev = if resumed {
                    ShareEvent::Resumed { peer, connection }
                } else {
                    ShareEvent::Authenticated { peer, connection }
                };
                let _ = self.events.send(ev).await;
                let outcome = self.control(peer, keys.clone(), io, resumed).await;
                self.sessions
                    .by_id
                    .lock()
                    .expect("lock")
                    .remove(&keys.session_id());
                ended.cancel();
                match outcome {
                    Ok(accepted) => {
                        // Finished or declined: this receiver will not come back.
                        self.sessions
                            .tickets
                            .lock()
                            .expect("lock")
                            .retain(|_, (p, _)| *p != peer);
                        let ev = if accepted {
                            ShareEvent::Finished { peer }
                        } else {
                            ShareEvent::Declined { peer }
                        };
                        let _ = self.events.send(ev).await;
                        Ok(Outcome::Finished(accepted))
                    }
                    Err(e) => {
                        let _ = self
                            .events
                            .send(ShareEvent::Lost {
                                peer,
                                reason: e.to_string(),
                            })
                            .await;
                        Ok(Outcome::Lost)
                    }
                }
            }
            opening::Kind::Join(join) => {
                let session: [u8; 16] = join
                    .session
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Protocol("bad session id".into()))?;
                if join.index == 0 || join.index > MAX_STREAMS {
                    return Err(Error::Protocol(format!("bad stream index {}", join.index)));
                }
                let joined = {
                    let mut map = self.sessions.by_id.lock().expect("lock");
                    map.get_mut(&session)
                        .filter(|st| st.peer == peer)
                        .and_then(|st| {
                            st.joined
                                .insert(join.index)
                                .then(|| (st.keys.clone(), st.ended.clone()))
                        })
                };
                let Some((keys, ended)) = joined else {
                    return Err(Error::Protocol(
                        "join for an unknown session or a used stream index".into(),
                    ));
                };
                tokio::select! {
                    r = self.data(keys, join.index, io) => r?,
                    _ = ended.cancelled() => {}
                }
                Ok(Outcome::Other)
            }
        }
    }

    /// Runs the control stream of an authenticated session. Returns whether the offer was
    /// accepted and the receiver finished.
    async fn control(
        &self,
        peer: PeerId,
        keys: SessionKeys,
        io: tokio_util::compat::Compat<Stream>,
        resumed: bool,
    ) -> Result<bool> {
        let (sealer, opener) = keys.stream(0);
        let (r, w) = tokio::io::split(io);
        let mut reader = SecureReader::new(r, opener);
        let mut writer = SecureWriter::new(w, sealer);
        if resumed {
            // The receiver already has the offer and manifest.
            return wait_done(&mut reader, &mut writer, &self.stop).await;
        }
        writer.send_now(Msg::Offer(self.share.offer())).await?;
        let accept = match reader.expect("the answer to the offer").await? {
            Msg::Accept(a) => a,
            Msg::Decline(_) => return Ok(false),
            other => return Err(Error::Protocol(format!("expected accept, got {other:?}"))),
        };
        let _ = self
            .events
            .send(ShareEvent::Accepted {
                peer,
                mount: accept.mount,
            })
            .await;
        // Batches bounded by encoded size, so long names and link targets never overflow a frame.
        let entries = &self.share.tree.entries;
        let mut batch = Vec::new();
        let mut size = 0;
        for (i, e) in entries.iter().enumerate() {
            batch.push(e.clone());
            size += e.encoded_len() + 4;
            let last = i + 1 == entries.len();
            if last || size >= MANIFEST_BATCH_BYTES {
                writer
                    .send(Msg::Manifest(ManifestChunk {
                        entries: std::mem::take(&mut batch),
                        last,
                    }))
                    .await?;
                size = 0;
            }
        }
        if entries.is_empty() {
            writer
                .send(Msg::Manifest(ManifestChunk {
                    entries: vec![],
                    last: true,
                }))
                .await?;
        }
        writer.flush().await?;
        wait_done(&mut reader, &mut writer, &self.stop).await
    }

    /// Serves one data stream: requests in, responses out, at most
    /// [`MAX_INFLIGHT_PER_STREAM`] in progress.
    async fn data(
        &self,
        keys: SessionKeys,
        index: u32,
        io: tokio_util::compat::Compat<Stream>,
    ) -> Result<()> {
        let (sealer, opener) = keys.stream(index);
        let (r, w) = tokio::io::split(io);
        let mut reader = SecureReader::new(r, opener);
        let mut writer = SecureWriter::new(w, sealer);
        writer.send_now(Msg::Ready(Ready {})).await?;
        // A separate reader task, since a frame read is not cancel-safe inside select!.
        let (tx, mut rx) = mpsc::channel::<Request>(MAX_INFLIGHT_PER_STREAM);
        let reader_task = AbortOnDrop(tokio::spawn(async move {
            loop {
                match reader.recv().await {
                    Ok(Some(Msg::Request(req))) => {
                        if tx.send(req).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    Ok(Some(other)) => {
                        return Err(Error::Protocol(format!(
                            "unexpected message on a data stream: {other:?}"
                        )))
                    }
                    Err(e) => return Err(e),
                }
            }
        }));
        let mut inflight = FuturesUnordered::new();
        let mut open = true;
        let result = loop {
            tokio::select! {
                req = rx.recv(), if open && inflight.len() < MAX_INFLIGHT_PER_STREAM => match req {
                    Some(req) => inflight.push(self.share.clone().answer(req)),
                    None => open = false,
                },
                Some(resp) = inflight.next() => {
                    if let Err(e) = writer.send(Msg::Response(resp)).await {
                        break Err(e);
                    }
                    if inflight.is_empty() {
                        if let Err(e) = writer.flush().await {
                            break Err(e);
                        }
                    }
                }
                else => break Ok(()),
            }
            if !open && inflight.is_empty() {
                break Ok(());
            }
        };
        drop(reader_task);
        writer.close().await;
        result
    }
}

/// Waits for the receiver's Done; if the user stops the share first, tells the receiver.
async fn wait_done<R, W>(
    reader: &mut SecureReader<R>,
    writer: &mut SecureWriter<W>,
    stop: &CancellationToken,
) -> Result<bool>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let msg = tokio::select! {
        m = reader.expect("the receiver to finish") => m?,
        _ = stop.cancelled() => {
            let reason = "the sender stopped sharing".to_string();
            writer.send_now(Msg::Abort(crate::wire::Abort { reason })).await?;
            writer.close().await;
            return Err(Error::Interrupted);
        }
    };
    match msg {
        Msg::Done(_) => {
            writer.close().await;
            Ok(true)
        }
        Msg::Abort(a) => Err(Error::Remote(a.reason)),
        other => Err(Error::Protocol(format!("unexpected message {other:?}"))),
    }
}

/// Stops a task when its handle goes away (also when the owning future is cancelled).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share_of(dir: &std::path::Path, data: &[u8]) -> (Share, u64) {
        let p = dir.join("f");
        std::fs::write(&p, data).unwrap();
        let share = Share::new(LocalTree::build(&[p]).unwrap());
        let id = share.tree().entries[0].id;
        (share, id)
    }

    #[test]
    fn reads_from_the_page_cache_or_the_disk_agree() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (share, id) = share_of(dir.path(), &data);
        for (off, len) in [
            (0u64, 4096u32),
            (12_345, 70_000),
            (299_000, 4096),
            (300_000, 10),
        ] {
            let want = &data[off as usize..(off as usize + len as usize).min(data.len())];
            let (blocking, _) = share.read(id, off, len, false).unwrap();
            assert_eq!(blocking, want);
            // Just written, so in the page cache: the no-wait read gets it all.
            match share.read(id, off, len, true) {
                Ok((cached, _)) => assert_eq!(cached, want),
                Err(e) => panic!("a read of cached data failed: {e:?}"),
            }
        }
        // A fallback goes on from what a no-wait read got.
        let (rest, _) = share
            .read_into(id, 1000, 50_000, data[1000..1100].to_vec(), false)
            .unwrap();
        assert_eq!(rest, &data[1000..51_000]);
        // A read of the whole file carries its hash.
        let (_, hash) = share.read(id, 0, 300_000, false).unwrap();
        assert_eq!(hash, Some(*blake3::hash(&data).as_bytes()));
        // Past the end and over the limit are refused.
        assert!(matches!(
            share.read(id, 300_001, 1, false),
            Err(ReadError::Failed(_))
        ));
        assert!(matches!(
            share.read(id, 0, MAX_READ + 1, true),
            Err(ReadError::Failed(_))
        ));
    }

    #[test]
    fn a_file_that_shrank_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (share, id) = share_of(dir.path(), &[7u8; 10_000]);
        std::fs::write(dir.path().join("f"), [7u8; 100]).unwrap();
        for nowait in [false, true] {
            match share.read(id, 0, 10_000, nowait) {
                Err(ReadError::Failed(f)) => assert_eq!(f.code, ErrorCode::Changed as i32),
                other => panic!("{other:?}"),
            }
        }
    }
}
