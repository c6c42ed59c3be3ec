//! One inbound stream on the sharing side: a `Hello` starts a session (the handshake, then the
//! control stream: offer, manifest, waiting for the receiver to finish), a `Join` adds a data
//! stream to an authenticated session (requests in, responses out, a bounded number in
//! progress). Outcomes go back to the accept loop in `serve`.

use std::collections::HashSet;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::{PeerId, Stream};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

use super::limits::Attempts;
use super::serve::{Outcome, SessionState, Sessions, ShareEvent, Transfer, MAX_STREAMS};
use super::store::{Answer, Share};
use super::tickets::{Refusal, TICKET_IDLE};
use crate::crypto::{
    self, secure_stream, HandshakeParams, SecureReader, SecureWriter, SessionKeys,
    HANDSHAKE_TIMEOUT,
};
use crate::error::{Error, Result};
use crate::linger::LINGER_AFTER;
use crate::net::Node;
use crate::proto::{
    envelope::Msg, opening, read_opening, Hello, Join, ManifestChunk, Ready, Request, Role,
    MANIFEST_BATCH_BYTES,
};
use crate::rate::RateLimit;
use crate::task::AbortOnDrop;

/// Requests one data stream may have in progress; beyond it the sender stops reading requests.
const MAX_INFLIGHT_PER_STREAM: usize = 8;

type Io = Compat<Stream>;

pub(super) struct StreamCtx {
    /// The share's guess budget.
    pub(super) attempts: Arc<Attempts>,
    pub(super) node: Node,
    pub(super) share: Arc<Share>,
    pub(super) sessions: Arc<Sessions>,
    pub(super) phrase: Arc<zeroize::Zeroizing<String>>,
    pub(super) events: mpsc::Sender<ShareEvent>,
    pub(super) outcomes: mpsc::Sender<Outcome>,
    /// Cancelled when the user stops the share: every receiver is told so.
    pub(super) stop: CancellationToken,
    /// `--limit-rate`, shared by every stream of the share.
    pub(super) rate: Option<Arc<RateLimit>>,
}

impl StreamCtx {
    pub(super) async fn handle(self, peer: PeerId, stream: Stream) -> Result<Outcome> {
        let mut io = stream.compat();
        let opening = crypto::timed("the opening frame", read_opening(&mut io)).await?;
        match opening {
            opening::Kind::Hello(hello) => self.session(peer, hello, io).await,
            opening::Kind::Join(join) => self.join(peer, join, io).await,
        }
    }

    /// Authenticates a receiver (with the code, or a resumption ticket it got earlier).
    /// `Ok(Err(n))`: it made the n-th wrong guess.
    async fn authenticate(
        &self,
        peer: PeerId,
        hello: Hello,
        io: &mut Io,
    ) -> Result<std::result::Result<(SessionKeys, [u8; 16]), u32>> {
        let me = self.node.peer_id();
        if hello.resume.is_empty() {
            if !self.sessions.keep && self.sessions.receiver.lock().expect("lock").is_some() {
                return Err(Error::Protocol("the share already has its receiver".into()));
            }
            // Reserved before the handshake, so parallel handshakes cannot outrun the budget.
            let Some(attempt) = self.attempts.wait_reserve(HANDSHAKE_TIMEOUT / 2).await else {
                return Err(Error::Protocol("too many attempts in progress".into()));
            };
            let params = HandshakeParams::with_code(&self.phrase, Role::Sender, me, peer);
            let keys =
                match crypto::timed("the handshake", crypto::handshake(io, params, Some(hello)))
                    .await
                {
                    Ok(keys) => keys,
                    Err(Error::WrongCode) => return Ok(Err(attempt.failed())),
                    Err(e) => return Err(e),
                };
            drop(attempt);
            {
                let mut receiver = self.sessions.receiver.lock().expect("lock");
                if !self.sessions.keep && receiver.is_some_and(|r| r != peer) {
                    return Err(Error::Protocol("the share already has its receiver".into()));
                }
                *receiver = Some(peer);
            }
            self.sessions.tickets.issue(peer, keys.ticket());
            return Ok(Ok((keys.clone(), keys.session_id())));
        }
        let ticket = match self.sessions.tickets.resume(&hello.resume, peer) {
            Ok(t) => t,
            Err(Refusal::Unknown) => {
                return Err(Error::Protocol("resumption of an unknown session".into()))
            }
            Err(Refusal::Expired) => {
                return Err(Error::Protocol(format!(
                    "resumption ticket unused for over {} min; it has expired",
                    TICKET_IDLE.as_secs() / 60
                )))
            }
        };
        let id = ticket.session;
        let hs = crypto::resume_handshake(io, Role::Sender, me, peer, &ticket, Some(hello));
        let r = crypto::timed("the handshake", hs).await;
        if r.is_err() {
            self.sessions.tickets.end(&id);
        }
        match r {
            Ok(keys) => Ok(Ok((keys, id))),
            Err(Error::WrongCode) => Ok(Err(self.attempts.record_failure())),
            Err(e) => Err(e),
        }
    }

    /// A new session: handshake, registration, then the control stream until it ends.
    async fn session(&self, peer: PeerId, hello: Hello, mut io: Io) -> Result<Outcome> {
        let resumed = !hello.resume.is_empty();
        let packed = hello.packed_manifest;
        let (keys, ticket) = match self.authenticate(peer, hello, &mut io).await? {
            Ok(k) => k,
            Err(failures) => return Ok(Outcome::WrongCode(failures)),
        };
        let ended = CancellationToken::new();
        let transfer = self
            .sessions
            .transfers
            .lock()
            .expect("lock")
            .entry(peer)
            .or_default()
            .clone();
        self.sessions.by_id.lock().expect("lock").insert(
            keys.session_id(),
            SessionState {
                peer,
                keys: keys.clone(),
                ended: ended.clone(),
                joined: HashSet::new(),
                transfer,
            },
        );
        let connection = match self.node.connection(peer).await {
            Ok(Some(c)) => format!("{} via {}", c.transport(), c.remote),
            _ => "unknown connection".into(),
        };
        // Counted as active before the control stream runs, so the serve loop cannot finish
        // while this session is still starting.
        let _ = self.outcomes.send(Outcome::Authenticated).await;
        let ev = if resumed {
            ShareEvent::Resumed { peer, connection }
        } else {
            ShareEvent::Authenticated { peer, connection }
        };
        let _ = self.events.send(ev).await;
        // A mount comes back by resumption; a receive that lost its session does not.
        let mut mount = resumed;
        let outcome = self
            .control(peer, &keys, io, (resumed, packed), &mut mount)
            .await;
        if outcome.is_err() && !mount {
            // Its user may start `pcp receive` again: a new receiver may take its place.
            let mut receiver = self.sessions.receiver.lock().expect("lock");
            if *receiver == Some(peer) {
                *receiver = None;
            }
        }
        self.sessions
            .by_id
            .lock()
            .expect("lock")
            .remove(&keys.session_id());
        ended.cancel();
        self.sessions.tickets.end(&ticket);
        self.ended(peer, outcome).await
    }

    /// Reports how a session's control stream ended.
    async fn ended(&self, peer: PeerId, outcome: Result<bool>) -> Result<Outcome> {
        match outcome {
            Ok(accepted) => {
                // Finished or declined: this receiver will not come back.
                self.sessions.tickets.forget(peer);
                let transfer = self.sessions.transfers.lock().expect("lock").remove(&peer);
                let (bytes, zeros, packed, elapsed) =
                    transfer.map(|t| t.totals()).unwrap_or_default();
                let ev = if accepted {
                    ShareEvent::Finished {
                        peer,
                        bytes,
                        zeros,
                        packed,
                        elapsed,
                    }
                } else {
                    ShareEvent::Declined { peer }
                };
                let _ = self.events.send(ev).await;
                Ok(Outcome::Finished(accepted))
            }
            Err(Error::Remote(reason)) => {
                let _ = self.events.send(ShareEvent::Stopped { peer, reason }).await;
                Ok(Outcome::Lost)
            }
            Err(e) => {
                let reason = e.to_string();
                let _ = self.events.send(ShareEvent::Lost { peer, reason }).await;
                Ok(Outcome::Lost)
            }
        }
    }

    /// An extra data stream of an authenticated session of the same peer.
    async fn join(&self, peer: PeerId, join: Join, io: Io) -> Result<Outcome> {
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
                        .then(|| (st.keys.clone(), st.ended.clone(), st.transfer.clone()))
                })
        };
        let Some((keys, ended, transfer)) = joined else {
            return Err(Error::Protocol(
                "join for an unknown session or a used stream index".into(),
            ));
        };
        tokio::select! {
            r = self.data(&keys, join.index, io, &transfer) => r?,
            _ = ended.cancelled() => {}
        }
        Ok(Outcome::Other)
    }

    /// Runs the control stream of an authenticated session (`resumed`, and whether its
    /// receiver takes the manifest `packed`). Returns whether the offer was accepted and the
    /// receiver finished. `mount` is set when the receiver mounts the share.
    async fn control(
        &self,
        peer: PeerId,
        keys: &SessionKeys,
        io: Io,
        (resumed, packed): (bool, bool),
        mount: &mut bool,
    ) -> Result<bool> {
        let (mut reader, mut writer) = secure_stream(io, keys, 0);
        if resumed {
            // The receiver already has the offer and manifest.
            return wait_done(&mut reader, &mut writer, &self.stop).await;
        }
        // The offer and the whole manifest at once: the receiver decides on what it checked.
        writer.send(Msg::Offer(self.share.offer())).await?;
        self.send_manifest(&mut writer, packed).await?;
        let accept = match reader.expect("the answer to the offer").await? {
            Msg::Accept(a) => {
                *mount = a.mount;
                a
            }
            Msg::Decline(_) => return Ok(false),
            Msg::Abort(a) => return Err(Error::Remote(a.reason)),
            other => return Err(Error::Protocol(format!("expected accept, got {other:?}"))),
        };
        let _ = self
            .events
            .send(ShareEvent::Accepted {
                peer,
                mount: accept.mount,
            })
            .await;
        wait_done(&mut reader, &mut writer, &self.stop).await
    }

    /// The manifest in batches bounded by encoded size, so long names and link targets never
    /// overflow a frame; each compressed when the receiver takes it so and that saves enough
    /// (a big tree's names and times compress 4-6 fold: the listing comes sooner on a slow link).
    async fn send_manifest<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        writer: &mut SecureWriter<W>,
        packed: bool,
    ) -> Result<()> {
        let entries = &self.share.tree().entries;
        let mut batch = Vec::new();
        let mut size = 0;
        for (i, e) in entries.iter().enumerate() {
            batch.push(e.clone());
            size += e.encoded_len() + 4;
            let last = i + 1 == entries.len();
            if last || size >= MANIFEST_BATCH_BYTES {
                let chunk = ManifestChunk {
                    entries: std::mem::take(&mut batch),
                    last,
                };
                let msg = match packed {
                    true => pack_manifest(&chunk).unwrap_or(Msg::Manifest(chunk)),
                    false => Msg::Manifest(chunk),
                };
                writer.send(msg).await?;
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
        writer.flush().await
    }

    /// Serves one data stream: requests in, responses out, at most
    /// [`MAX_INFLIGHT_PER_STREAM`] in progress.
    async fn data(
        &self,
        keys: &SessionKeys,
        index: u32,
        io: Io,
        transfer: &Transfer,
    ) -> Result<()> {
        let (mut reader, mut writer) = secure_stream(io, keys, index);
        writer.send_now(Msg::Ready(Ready {})).await?;
        // A separate reader task, since a frame read is not cancel-safe inside select!.
        let (tx, mut rx) = mpsc::channel::<Request>(MAX_INFLIGHT_PER_STREAM);
        let reader_task = AbortOnDrop::spawn(async move {
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
        });
        let mut inflight = FuturesUnordered::new();
        let mut open = true;
        let result = loop {
            tokio::select! {
                req = rx.recv(), if open && inflight.len() < MAX_INFLIGHT_PER_STREAM => match req {
                    Some(req) => {
                        transfer.requested();
                        inflight.push(self.share.clone().answer(req));
                    }
                    None => open = false,
                },
                Some(resp) = inflight.next() => {
                    // Answers that are ready too go out in the same write; then it is pushed
                    // out, so none waits for a slower one behind it.
                    let mut next = Some(resp);
                    let mut sent = Ok(());
                    // Only small answers are followed by polling: see `Linger`.
                    let mut small = true;
                    while let Some(answer) = next.take() {
                        small &= answer.wire_len() <= LINGER_AFTER;
                        if let Some(rate) = &self.rate {
                            rate.take(answer.wire_len() as u64).await;
                        }
                        transfer.served(&answer);
                        sent = match answer {
                            Answer::Data { id, buf, at } => writer.send_data(id, buf, at).await,
                            Answer::Other(resp) => writer.send(Msg::Response(resp)).await,
                        };
                        if sent.is_err() {
                            break;
                        }
                        next = inflight.next().now_or_never().flatten();
                    }
                    if sent.is_ok() {
                        sent = writer.flush().await;
                        if small {
                            self.share.answered();
                        }
                    }
                    if let Err(e) = sent {
                        break Err(e);
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
            writer.send_now(Msg::Abort(crate::proto::Abort { reason })).await?;
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

/// A manifest chunk as one zstd frame, if that saves enough (see [`crate::pack::compress`]).
fn pack_manifest(chunk: &ManifestChunk) -> Option<Msg> {
    let raw = chunk.encode_to_vec();
    let zstd = crate::pack::compress(&raw)?;
    Some(Msg::PackedManifest(crate::proto::PackedManifest {
        zstd,
        len: raw.len() as u32,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Kind;

    #[test]
    fn a_big_manifest_chunk_goes_packed_and_a_small_one_as_it_is() {
        let chunk = |n: u64| ManifestChunk {
            entries: (1..=n)
                .map(|i| {
                    let name = format!("photo{i:05}.jpg");
                    crate::manifest::test_entry(i, 0, name.as_bytes(), Kind::File, i * 977)
                })
                .collect(),
            last: true,
        };
        let big = chunk(5000);
        match pack_manifest(&big) {
            Some(Msg::PackedManifest(p)) => {
                assert_eq!(p.len as usize, big.encoded_len());
                assert!(p.zstd.len() * 4 < big.encoded_len(), "{}", p.zstd.len());
            }
            other => panic!("not packed: {other:?}"),
        }
        assert!(pack_manifest(&chunk(3)).is_none());
    }
}
