//! The fetching side of a session: authenticate to a sender, read its offer and manifest, then
//! issue many (id, offset, length) requests at once over a few long-lived data streams.
//! [`Client`] is what `receive`, copy-out and the mount all read through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use libp2p::{PeerId, Stream};
use prost::Message;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::code::Code;
use crate::crypto::{self, HandshakeParams, SecureReader, SecureWriter, SessionKeys};
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::net::{Node, STREAM_PROTOCOL};
use crate::wire::{
    envelope::Msg, opening, request, Accept, Decline, Done, ErrorCode, HashRequest, Join, Offer,
    Read, Request, Response, Role, MAX_ENTRIES, MAX_MANIFEST_BYTES,
};

type Io = Compat<Stream>;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests queued per data stream before callers wait.
const LANE_QUEUE: usize = 64;

async fn open_stream(node: &Node, peer: PeerId) -> Result<Io> {
    // Inbound streams are buffered one at a time by the sender's libp2p-stream; retry a reset.
    let mut last = None;
    for attempt in 0..5u64 {
        match node.control().open_stream(peer, STREAM_PROTOCOL).await {
            Ok(s) => return Ok(s.compat()),
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {
                return Err(Error::IncompatibleVersion)
            }
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
    }
    Err(Error::Network(format!(
        "cannot open a stream: {}",
        last.unwrap_or_default()
    )))
}

/// An authenticated session with a sender, on its control stream.
pub struct Session {
    node: Node,
    peer: PeerId,
    keys: SessionKeys,
    reader: SecureReader<ReadHalf<Io>>,
    writer: SecureWriter<WriteHalf<Io>>,
    offer: Option<Offer>,
}

impl Session {
    fn on_control_stream(node: &Node, peer: PeerId, keys: SessionKeys, io: Io) -> Session {
        let (sealer, opener) = keys.stream(0);
        let (r, w) = tokio::io::split(io);
        Session {
            node: node.clone(),
            peer,
            keys,
            reader: SecureReader::new(r, opener),
            writer: SecureWriter::new(w, sealer),
            offer: None,
        }
    }

    /// Opens the control stream to `peer` (already connected) and runs the handshake.
    pub async fn authenticate(node: &Node, peer: PeerId, code: &Code) -> Result<Session> {
        let mut io = open_stream(node, peer).await?;
        let phrase = code.phrase();
        let params = HandshakeParams::with_code(&phrase, Role::Receiver, peer, node.peer_id());
        let keys =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, crypto::handshake(&mut io, params, None))
                .await
                .map_err(|_| Error::Timeout(HANDSHAKE_TIMEOUT, "the handshake"))??;
        Ok(Session::on_control_stream(node, peer, keys, io))
    }

    /// Re-authenticates to the sender of an earlier session with its ticket (no code needed).
    pub async fn resume(
        node: &Node,
        peer: PeerId,
        ticket: &crypto::ResumeTicket,
    ) -> Result<Session> {
        let mut io = open_stream(node, peer).await?;
        let hs =
            crypto::resume_handshake(&mut io, Role::Receiver, peer, node.peer_id(), ticket, None);
        let keys = tokio::time::timeout(HANDSHAKE_TIMEOUT, hs)
            .await
            .map_err(|_| Error::Timeout(HANDSHAKE_TIMEOUT, "the resumption handshake"))??;
        Ok(Session::on_control_stream(node, peer, keys, io))
    }

    /// Waits until the sender ends the session (an abort, a closed stream or a lost connection)
    /// and says why. Cancel-safe only before the first frame arrives; use it from one task.
    pub async fn closed(&mut self) -> Error {
        match self.reader.recv().await {
            Ok(Some(Msg::Abort(a))) => Error::Remote(a.reason),
            Ok(Some(other)) => Error::Protocol(format!("unexpected message {other:?}")),
            Ok(None) => Error::ConnectionLost("the sender closed the session".into()),
            Err(e) => e,
        }
    }

    pub fn peer(&self) -> PeerId {
        self.peer
    }

    pub fn keys(&self) -> &SessionKeys {
        &self.keys
    }

    /// The sender's offer (the first message after authentication).
    pub async fn offer(&mut self) -> Result<Offer> {
        if let Some(o) = &self.offer {
            return Ok(o.clone());
        }
        match self.reader.expect("the offer").await? {
            Msg::Offer(o) => {
                if o.entries > MAX_ENTRIES {
                    return Err(Error::InvalidManifest(format!(
                        "the sender offers {} entries (limit {MAX_ENTRIES})",
                        o.entries
                    )));
                }
                self.offer = Some(o.clone());
                Ok(o)
            }
            Msg::Abort(a) => Err(Error::Remote(a.reason)),
            other => Err(Error::Protocol(format!("expected an offer, got {other:?}"))),
        }
    }

    /// Declines the offer (the sender stops sharing).
    pub async fn decline(self) -> Result<()> {
        self.end(Msg::Decline(Decline {})).await
    }

    /// Accepts the offer and reads and validates the whole manifest.
    pub async fn accept(&mut self, mount: bool) -> Result<Manifest> {
        let offer = self.offer().await?;
        self.writer.send_now(Msg::Accept(Accept { mount })).await?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        loop {
            match self.reader.expect("the manifest").await? {
                Msg::Manifest(c) => {
                    if entries.len() as u64 + c.entries.len() as u64 > offer.entries {
                        return Err(Error::InvalidManifest(format!(
                            "more entries than the {} offered",
                            offer.entries
                        )));
                    }
                    bytes += c.entries.iter().map(|e| e.encoded_len()).sum::<usize>();
                    if bytes > MAX_MANIFEST_BYTES {
                        return Err(Error::InvalidManifest(format!(
                            "the manifest is larger than {} MiB",
                            MAX_MANIFEST_BYTES >> 20
                        )));
                    }
                    entries.extend(c.entries);
                    if c.last {
                        break;
                    }
                }
                Msg::Abort(a) => return Err(Error::Remote(a.reason)),
                other => {
                    return Err(Error::Protocol(format!(
                        "expected the manifest, got {other:?}"
                    )))
                }
            }
        }
        if entries.len() as u64 != offer.entries {
            return Err(Error::InvalidManifest(format!(
                "{} entries offered, {} sent",
                offer.entries,
                entries.len()
            )));
        }
        Manifest::validate(entries)
    }

    /// Opens `n` data streams, one after another (each waits for the sender's ready), and
    /// returns a client that spreads requests over them.
    pub async fn client(&mut self, n: u32) -> Result<Client> {
        let inner = Arc::new(ClientInner {
            lanes: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
        });
        for index in 1..=n.max(1) {
            let lane = open_lane(&self.node, self.peer, &self.keys, index).await?;
            inner.lanes.lock().expect("lock").push(lane);
        }
        Ok(Client { inner })
    }

    /// Tells the sender we are done and closes the session.
    pub async fn finish(self) -> Result<()> {
        self.end(Msg::Done(Done {})).await
    }

    /// Sends the session's last message and waits (briefly) for the sender to close its side,
    /// so it has seen it before our node, and the connection, may go away.
    async fn end(mut self, last: Msg) -> Result<()> {
        self.writer.send_now(last).await?;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.reader.recv()).await;
        self.writer.close().await;
        Ok(())
    }
}

struct Outgoing {
    req: Request,
    reply: oneshot::Sender<Result<Response>>,
}

#[derive(Clone)]
struct Lane {
    tx: mpsc::Sender<Outgoing>,
    dead: Arc<AtomicBool>,
}

async fn open_lane(node: &Node, peer: PeerId, keys: &SessionKeys, index: u32) -> Result<Lane> {
    let mut io = open_stream(node, peer).await?;
    crypto::write_opening(
        &mut io,
        opening::Kind::Join(Join {
            session: keys.session_id().to_vec(),
            index,
        }),
    )
    .await?;
    let (sealer, opener) = keys.stream(index);
    let (r, w) = tokio::io::split(io);
    let mut reader = SecureReader::new(r, opener);
    let mut writer = SecureWriter::new(w, sealer);
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        reader.expect("the data stream to be ready"),
    )
    .await
    {
        Ok(Ok(Msg::Ready(_))) => {}
        Ok(Ok(other)) => return Err(Error::Protocol(format!("expected ready, got {other:?}"))),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(Error::Timeout(HANDSHAKE_TIMEOUT, "a data stream")),
    }
    let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Response>>>>> = Default::default();
    let dead = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel::<Outgoing>(LANE_QUEUE);

    let fail_all = {
        let pending = pending.clone();
        let dead = dead.clone();
        move |why: &Error| {
            dead.store(true, Ordering::SeqCst);
            let msg = match why {
                Error::ConnectionLost(m) => m.clone(),
                other => other.to_string(),
            };
            for (_, reply) in pending.lock().expect("lock").drain() {
                let _ = reply.send(Err(Error::ConnectionLost(msg.clone())));
            }
        }
    };

    let p = pending.clone();
    let fail = fail_all.clone();
    let dead_w = dead.clone();
    tokio::spawn(async move {
        while let Some(o) = rx.recv().await {
            if dead_w.load(Ordering::SeqCst) {
                let _ = o
                    .reply
                    .send(Err(Error::ConnectionLost("data stream closed".into())));
                continue;
            }
            p.lock().expect("lock").insert(o.req.id, o.reply);
            let mut r = writer.send(Msg::Request(o.req)).await;
            if r.is_ok() && rx.is_empty() {
                r = writer.flush().await;
            }
            if let Err(e) = r {
                fail(&e);
            }
        }
        writer.close().await;
    });
    tokio::spawn(async move {
        let why = loop {
            match reader.recv().await {
                Ok(Some(Msg::Response(resp))) => {
                    let reply = pending.lock().expect("lock").remove(&resp.id);
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(Ok(resp));
                        }
                        None => {
                            break Error::Protocol(format!(
                                "response to unknown request {}",
                                resp.id
                            ))
                        }
                    }
                }
                Ok(Some(other)) => break Error::Protocol(format!("unexpected message {other:?}")),
                Ok(None) => break Error::ConnectionLost("the sender closed a data stream".into()),
                Err(e) => break e,
            }
        };
        tracing::debug!("data stream {index} ended: {why}");
        fail_all(&why);
    });
    Ok(Lane { tx, dead })
}

struct ClientInner {
    lanes: Mutex<Vec<Lane>>,
    next: AtomicU64,
}

/// Sends requests over the session's data streams; cheap to clone, usable from many tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

/// A failed request, as reported by the sender.
fn remote_failure(f: crate::wire::Failure) -> Error {
    match ErrorCode::try_from(f.code) {
        Ok(ErrorCode::Changed) => {
            Error::Remote(format!("file changed on the sender: {}", f.message))
        }
        _ => Error::Remote(f.message),
    }
}

impl Client {
    async fn call(&self, op: request::Op) -> Result<Response> {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let lane = {
            let lanes = self.inner.lanes.lock().expect("lock");
            let n = lanes.len();
            (0..n)
                .map(|k| &lanes[(id as usize + k) % n])
                .find(|l| !l.dead.load(Ordering::SeqCst))
                .cloned()
        };
        let lane = lane.ok_or_else(|| Error::ConnectionLost("no data stream is open".into()))?;
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
        let resp = self
            .call(request::Op::Read(Read { file, offset, len }))
            .await?;
        if resp.data.len() > len as usize {
            return Err(Error::Protocol(
                "the sender returned more data than asked".into(),
            ));
        }
        let hash = if resp.hash.is_empty() {
            None
        } else {
            Some(parse_hash(&resp.hash)?)
        };
        Ok((resp.data, hash))
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

    /// Whether at least one data stream is usable.
    pub fn is_alive(&self) -> bool {
        self.inner
            .lanes
            .lock()
            .expect("lock")
            .iter()
            .any(|l| !l.dead.load(Ordering::SeqCst))
    }
}

fn parse_hash(h: &[u8]) -> Result<[u8; 32]> {
    h.try_into()
        .map_err(|_| Error::Protocol(format!("hash of {} bytes", h.len())))
}
