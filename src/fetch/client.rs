//! Requests over a session's data streams ("lanes"): each lane has a writer task that sends
//! queued requests and a reader task that matches responses to them by id; [`Client`] spreads
//! requests over the lanes that are alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, watch};

use super::session::open_stream;
use crate::crypto::{self, secure_stream, SessionKeys};
use crate::error::{Error, Result};
use crate::net::Node;
use crate::proto::{
    envelope::Msg, opening, request, ErrorCode, Failure, HashRequest, Join, Read, Request,
    Response, Seek,
};
use crate::rate::RateLimit;

/// Requests queued per data stream before callers wait.
const LANE_QUEUE: usize = 64;
/// Times a data stream is opened (and a request sent) again when the sender closed the stream
/// before joining it.
pub(super) const LANE_ATTEMPTS: u32 = 5;

struct Outgoing {
    req: Request,
    reply: oneshot::Sender<Result<Response>>,
}

#[derive(Clone)]
pub(super) struct Lane {
    tx: mpsc::Sender<Outgoing>,
    dead: Arc<AtomicBool>,
}

/// Responses awaited on one lane, by request id.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Response>>>>>;

/// Opens data stream `index` of the session and starts its writer and reader tasks. Requests
/// may be queued at once: they follow the `Join` without waiting for the sender's `Ready`,
/// which the returned receiver reports (or why it did not come).
pub(super) async fn open_lane(
    node: &Node,
    peer: PeerId,
    keys: &SessionKeys,
    index: u32,
    rate: Option<Arc<RateLimit>>,
) -> Result<(Lane, oneshot::Receiver<Result<()>>)> {
    let mut io = open_stream(node, peer).await?;
    let join = Join {
        session: keys.session_id().to_vec(),
        index,
    };
    // A stream closed before our `Join` went out was never read: it may be opened again.
    crate::proto::write_opening(&mut io, opening::Kind::Join(join))
        .await
        .map_err(|e| match e {
            Error::ConnectionLost(why) => Error::Unanswered(why),
            e => e,
        })?;
    let (mut reader, writer) = secure_stream(io, keys, index);
    let pending: Pending = Default::default();
    let dead = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Outgoing>(LANE_QUEUE);
    let failed = Failed {
        pending: pending.clone(),
        dead: dead.clone(),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(write_requests(rx, writer, failed.clone(), rate));
    tokio::spawn(async move {
        let ready = match crypto::timed(
            "a data stream",
            reader.expect("the data stream to be ready"),
        )
        .await
        {
            Ok(Msg::Ready(_)) => Ok(()),
            Ok(other) => Err(Error::Protocol(format!("expected ready, got {other:?}"))),
            Err(e) => Err(e),
        };
        let why = match ready {
            Ok(()) => {
                let _ = ready_tx.send(Ok(()));
                read_responses(&mut reader, &pending).await
            }
            // Closed before `Ready`: the sender never joined the stream (a busy sender drops a
            // stream it has no room for), so no request on it was answered; they may be sent
            // again, and the stream opened again with the same index.
            Err(Error::ConnectionLost(why)) => {
                let _ = ready_tx.send(Err(Error::Unanswered(why.clone())));
                Error::Unanswered(why)
            }
            Err(e) => {
                let _ = ready_tx.send(Err(Error::ConnectionLost(e.to_string())));
                e
            }
        };
        tracing::debug!("data stream {index} ended: {why}");
        failed.fail_all(&why);
    });
    Ok((Lane { tx, dead }, ready_rx))
}

/// Marks a lane dead and fails every request still waiting on it.
#[derive(Clone)]
struct Failed {
    pending: Pending,
    dead: Arc<AtomicBool>,
}

impl Failed {
    fn fail_all(&self, why: &Error) {
        self.dead.store(true, Ordering::SeqCst);
        let err = |m: &str| match why {
            Error::Unanswered(_) => Error::Unanswered(m.to_string()),
            _ => Error::ConnectionLost(m.to_string()),
        };
        let msg = match why {
            Error::ConnectionLost(m) | Error::Unanswered(m) => m.clone(),
            other => other.to_string(),
        };
        for (_, reply) in self.pending.lock().expect("lock").drain() {
            let _ = reply.send(Err(err(&msg)));
        }
    }
}

/// Sends queued requests, flushing when the queue is empty.
async fn write_requests<W: tokio::io::AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Outgoing>,
    mut writer: crypto::SecureWriter<W>,
    failed: Failed,
    rate: Option<Arc<RateLimit>>,
) {
    while let Some(o) = rx.recv().await {
        if let (Some(rate), Some(request::Op::Read(r))) = (&rate, &o.req.op) {
            rate.take(r.len.into()).await;
        }
        if failed.dead.load(Ordering::SeqCst) {
            // Never sent, so never answered: it may go out on another stream. (A sender with
            // several receivers arriving at once may drop a new stream before its `Ready`.)
            let _ = o.reply.send(Err(Error::Unanswered(
                "data stream closed before the request went out".into(),
            )));
            continue;
        }
        failed
            .pending
            .lock()
            .expect("lock")
            .insert(o.req.id, o.reply);
        let mut r = writer.send(Msg::Request(o.req)).await;
        if r.is_ok() && rx.is_empty() {
            r = writer.flush().await;
        }
        if let Err(e) = r {
            failed.fail_all(&e);
        }
    }
    writer.close().await;
}

/// Hands each response to its request until the stream ends; returns why it ended.
async fn read_responses<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut crypto::SecureReader<R>,
    pending: &Pending,
) -> Error {
    loop {
        match reader.recv().await {
            Ok(Some(Msg::Response(resp))) => {
                let reply = pending.lock().expect("lock").remove(&resp.id);
                match reply {
                    Some(reply) => {
                        let _ = reply.send(Ok(resp));
                    }
                    None => {
                        return Error::Protocol(format!("response to unknown request {}", resp.id))
                    }
                }
            }
            Ok(Some(other)) => return Error::Protocol(format!("unexpected message {other:?}")),
            Ok(None) => return Error::ConnectionLost("the sender closed a data stream".into()),
            Err(e) => return e,
        }
    }
}

pub(super) struct ClientInner {
    lanes: Mutex<Vec<Lane>>,
    next: AtomicU64,
    /// Lanes added so far, and whether the opener is done (with why it stopped early, if so).
    opening: watch::Sender<(usize, Option<Option<String>>)>,
    /// `Some` when reads ask for compressed data: what came so, counted.
    packed: Option<Arc<crate::pack::Packed>>,
}

impl ClientInner {
    pub(super) fn new(packed: Option<Arc<crate::pack::Packed>>) -> ClientInner {
        ClientInner {
            lanes: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            opening: watch::Sender::new((0, None)),
            packed,
        }
    }

    pub(super) fn add(&self, lane: Lane) {
        let n = {
            let mut lanes = self.lanes.lock().expect("lock");
            lanes.push(lane);
            lanes.len()
        };
        self.opening.send_modify(|s| s.0 = n);
    }

    /// The opener is done: `why` it stopped early, if it did.
    pub(super) fn opened(&self, why: Option<String>) {
        self.opening.send_modify(|s| s.1 = Some(why));
    }

    /// A live lane for request `id`, waiting while none is open yet but more may come.
    async fn lane(&self, id: u64) -> Result<Lane> {
        let mut rx = self.opening.subscribe();
        loop {
            {
                let lanes = self.lanes.lock().expect("lock");
                let n = lanes.len();
                if let Some(l) = (0..n)
                    .map(|k| &lanes[(id as usize + k) % n])
                    .find(|l| !l.dead.load(Ordering::SeqCst))
                {
                    return Ok(l.clone());
                }
            }
            if let Some(why) = &rx.borrow_and_update().1 {
                return Err(Error::ConnectionLost(
                    why.clone()
                        .unwrap_or_else(|| "no data stream is open".into()),
                ));
            }
            // Woken by a new lane or the opener's end (a dropped sender also ends the wait).
            if rx.changed().await.is_err() {
                return Err(Error::ConnectionLost("no data stream is open".into()));
            }
        }
    }
}

/// Sends requests over the session's data streams; cheap to clone, usable from many tasks.
#[derive(Clone)]
pub struct Client {
    pub(super) inner: Arc<ClientInner>,
}

/// A failed request, as reported by the sender.
fn remote_failure(f: Failure) -> Error {
    match ErrorCode::try_from(f.code) {
        // The code says it all; the sender's words would say it twice.
        Ok(ErrorCode::Changed) => {
            Error::Remote("file changed on the sender since the share started".into())
        }
        _ => Error::Remote(f.message),
    }
}

impl Client {
    /// Sends one request and waits for its answer; a request that went out on a stream the
    /// sender never joined (closed before `Ready`) is sent again on another one (reads and
    /// hashes are idempotent).
    async fn call(&self, op: request::Op) -> Result<Response> {
        let mut attempt = 0;
        loop {
            match self.call_once(op.clone()).await {
                Err(Error::Unanswered(why)) if attempt + 1 < LANE_ATTEMPTS => {
                    tracing::debug!("request unanswered ({why}); again");
                    attempt += 1;
                }
                Err(Error::Unanswered(why)) => return Err(Error::ConnectionLost(why)),
                r => return r,
            }
        }
    }

    async fn call_once(&self, op: request::Op) -> Result<Response> {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let lane = self.inner.lane(id).await?;
        let (reply, rx) = oneshot::channel();
        lane.tx
            .send(Outgoing {
                req: Request { id, op: Some(op) },
                reply,
            })
            .await
            .map_err(|_| Error::ConnectionLost("data stream closed".into()))?;
        let resp = rx
            .await
            .map_err(|_| Error::ConnectionLost("data stream closed".into()))??;
        if let Some(f) = resp.error {
            return Err(remote_failure(f));
        }
        Ok(resp)
    }

    /// Reads `len` bytes of file `file` at `offset`; also returns the whole-file hash when the
    /// sender attached it (reads covering a whole file).
    pub async fn read(
        &self,
        file: u64,
        offset: u64,
        len: u32,
    ) -> Result<(Bytes, Option<[u8; 32]>)> {
        self.read_op(file, offset, len, false).await
    }

    /// [`read`](Self::read), for a receiver that reads the whole file from its start and will
    /// want its hash: the sender may put it together from these reads and send it with the
    /// one that completes it (instead of reading the file a second time to hash it).
    pub async fn read_toward_hash(
        &self,
        file: u64,
        offset: u64,
        len: u32,
    ) -> Result<(Bytes, Option<[u8; 32]>)> {
        self.read_op(file, offset, len, true).await
    }

    async fn read_op(
        &self,
        file: u64,
        offset: u64,
        len: u32,
        hash: bool,
    ) -> Result<(Bytes, Option<[u8; 32]>)> {
        let read = Read {
            file,
            offset,
            len,
            hash,
            zeros: true,
            compress: self.inner.packed.is_some(),
        };
        let resp = self.call(request::Op::Read(read)).await?;
        if resp.data.len() > len as usize || resp.zeros > len as u64 || resp.compressed > len as u64
        {
            return Err(Error::Protocol(
                "the sender returned more data than asked".into(),
            ));
        }
        if resp.zeros > 0 && (!resp.data.is_empty() || resp.compressed > 0) {
            return Err(Error::Protocol(
                "the sender sent both data and a count of zeros".into(),
            ));
        }
        let hash = if resp.hash.is_empty() {
            None
        } else {
            Some(parse_hash(&resp.hash)?)
        };
        let data = match (resp.zeros, resp.compressed) {
            (0, 0) => resp.data,
            (0, n) => {
                let Some(packed) = &self.inner.packed else {
                    return Err(Error::Protocol(
                        "the sender sent compressed data unasked".into(),
                    ));
                };
                let wire = resp.data.len();
                let data = crate::pack::decompress(&resp.data, n as usize)
                    .map_err(|e| Error::Protocol(format!("the sender's {e}")))?;
                packed.add(data.len(), wire);
                Bytes::from(data)
            }
            (n, _) => crate::pages::zeros(n as usize),
        };
        Ok((data, hash))
    }

    /// The BLAKE3 hash of file `file`.
    pub async fn hash(&self, file: u64) -> Result<[u8; 32]> {
        self.range_hash(file, 0, 0).await
    }

    /// The BLAKE3 hash of bytes `offset..offset+len` of `file` (`len` 0: the whole file).
    pub async fn range_hash(&self, file: u64, offset: u64, len: u64) -> Result<[u8; 32]> {
        let resp = self
            .call(request::Op::Hash(HashRequest { file, offset, len }))
            .await?;
        parse_hash(&resp.hash)
    }

    /// Where the next data (`hole` false) or hole of a sparse `file` begins at or after
    /// `offset`, as the sender's `lseek(2)` says (its size: no data after `offset`), and the
    /// edges between data and hole that follow; unchecked.
    pub async fn seek(&self, file: u64, offset: u64, hole: bool) -> Result<super::SeekAnswer> {
        let resp = self
            .call(request::Op::Seek(Seek { file, offset, hole }))
            .await?;
        Ok(super::SeekAnswer {
            position: resp.position,
            edges: resp.extents,
        })
    }

    /// Whether at least one data stream is usable, or may still be (streams being opened).
    pub fn is_alive(&self) -> bool {
        self.inner
            .lanes
            .lock()
            .expect("lock")
            .iter()
            .any(|l| !l.dead.load(Ordering::SeqCst))
            || self.inner.opening.borrow().1.is_none()
    }
}

fn parse_hash(h: &[u8]) -> Result<[u8; 32]> {
    h.try_into()
        .map_err(|_| Error::Protocol(format!("hash of {} bytes", h.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Role;

    /// A request that reaches a data stream the sender dropped before answering anything (its
    /// `Ready` never came: a busy sender) was never sent: it fails as "unanswered", which
    /// `Client::call` sends again on another stream, not as a lost connection that ends the
    /// whole transfer.
    #[tokio::test]
    async fn a_request_on_a_stream_dropped_unanswered_may_go_out_again() {
        let keys = SessionKeys::derive(Role::Receiver, b"k", &[0; 32]);
        let (io, _peer) = tokio::io::duplex(1024);
        let (_, writer) = secure_stream(io, &keys, 1);
        let failed = Failed {
            pending: Default::default(),
            dead: Arc::new(AtomicBool::new(false)),
        };
        failed.fail_all(&Error::Unanswered("closed before Ready".into()));
        let (tx, rx) = mpsc::channel(1);
        let (reply, answer) = oneshot::channel();
        tx.send(Outgoing {
            req: Request::default(),
            reply,
        })
        .await
        .unwrap();
        drop(tx);
        write_requests(rx, writer, failed, None).await;
        let got = answer.await.unwrap();
        assert!(matches!(got, Err(Error::Unanswered(_))), "{got:?}");
    }
}
