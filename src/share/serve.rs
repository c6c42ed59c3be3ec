//! The session registry and the accept loop: every inbound stream is handed to its own task
//! (`stream`), whose outcome comes back here to be counted (wrong codes, active receivers) until
//! the share ends. What the sharing side reports is a [`ShareEvent`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use futures::StreamExt;
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::limits::{Attempts, StreamSlots};
use super::store::Share;
use super::stream::StreamCtx;
use super::tickets::{Tickets, TICKET_IDLE};
use crate::code::Code;
use crate::crypto::SessionKeys;
use crate::error::{Error, Result};
use crate::net::{Node, STREAM_PROTOCOL, STREAM_PROTOCOL_1};
use crate::rate::RateLimit;

/// Failed handshakes after which the share stops, so online guessing stays hopeless.
pub const MAX_FAILED_ATTEMPTS: u32 = 3;
/// Data streams one session may open.
pub const MAX_STREAMS: u32 = 8;
/// Streams one peer may have open at once: a control stream, its data streams, and one more
/// (a resumption that overlaps the stream it replaces).
const STREAMS_PER_PEER: usize = MAX_STREAMS as usize + 2;
/// Streams the sender serves at once, from everyone.
const STREAMS_TOTAL: usize = 64;

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
    /// A receiver said it has everything: `bytes` served to it (`zeros` of them runs of zeros
    /// sent as their length), in `elapsed` from its first data request to its word that it has
    /// everything (zero if it asked for nothing).
    Finished {
        peer: PeerId,
        bytes: u64,
        zeros: u64,
        /// Of `bytes`, those sent compressed, and their size on the wire.
        packed: (u64, u64),
        elapsed: std::time::Duration,
    },
    /// A receiver stopped, saying why (its own error, an interruption).
    Stopped {
        peer: PeerId,
        reason: String,
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

pub(super) enum Outcome {
    /// A wrong guess, the n-th.
    WrongCode(u32),
    Authenticated,
    Finished(bool),
    Lost,
    Other,
}

pub(super) struct SessionState {
    pub(super) peer: PeerId,
    pub(super) keys: SessionKeys,
    /// Cancelled when the control stream ends: every data stream of the session stops with it.
    pub(super) ended: CancellationToken,
    /// Stream indices already joined; each index's keys and nonces serve one stream only.
    pub(super) joined: HashSet<u32>,
    /// What this receiver was served (shared by its resumed sessions).
    pub(super) transfer: Arc<Transfer>,
}

/// Bytes served to one receiver, and when it first asked for data.
#[derive(Default)]
pub(super) struct Transfer {
    bytes: AtomicU64,
    /// Of `bytes`, runs of zeros sent as their length.
    zeros: AtomicU64,
    /// Of `bytes`, those sent compressed.
    packed: crate::pack::Packed,
    first: OnceLock<Instant>,
}

impl Transfer {
    /// A data request arrived (the first one starts the clock).
    pub(super) fn requested(&self) {
        self.first.get_or_init(Instant::now);
    }

    /// An answer is going out.
    pub(super) fn served(&self, answer: &crate::share::store::Answer) {
        let n = answer.data_len();
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.zeros
            .fetch_add(answer.zeros() as u64, Ordering::Relaxed);
        if answer.packed() {
            self.packed.add(n, answer.wire_len());
        }
    }

    /// Bytes served, the zeros among them, those sent compressed and their size on the wire,
    /// and time since the first request.
    pub(super) fn totals(&self) -> (u64, u64, (u64, u64), std::time::Duration) {
        let t = self.first.get().map(|f| f.elapsed()).unwrap_or_default();
        (
            self.bytes.load(Ordering::Relaxed),
            self.zeros.load(Ordering::Relaxed),
            self.packed.totals(),
            t,
        )
    }
}

pub(super) struct Sessions {
    pub(super) by_id: Mutex<HashMap<[u8; 16], SessionState>>,
    /// Resumption tickets, kept while their receiver may come back.
    pub(super) tickets: Tickets,
    /// What each receiver was served, across its sessions.
    pub(super) transfers: Mutex<HashMap<PeerId, Arc<Transfer>>>,
    /// The receiver that authenticated with the code: after it, new sessions come only from it
    /// (by resumption).
    pub(super) receiver: Mutex<Option<PeerId>>,
    /// Several receivers may authenticate (`--keep`).
    pub(super) keep: bool,
}

/// How to serve.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Cancelled to stop sharing (receivers are told).
    pub stop: CancellationToken,
    /// Serve several receivers, each with its own session, until stopped; otherwise the
    /// share serves the first receiver that authenticates and ends when it has finished.
    pub keep: bool,
    /// At most this many bytes of file data a second, to all receivers together.
    pub limit_rate: Option<u64>,
}

/// Serves `share` under `code` until a receiver has finished (or declined), or with `keep`
/// until stopped. Cancel-safe: dropping the future stops serving.
pub async fn serve(
    node: &Node,
    share: Arc<Share>,
    code: &Code,
    events: mpsc::Sender<ShareEvent>,
    opts: ServeOptions,
) -> Result<ShareEnd> {
    let ServeOptions {
        stop,
        keep,
        limit_rate,
    } = opts;
    let rate = limit_rate.map(|r| Arc::new(RateLimit::new(r)));
    let mut incoming = node
        .control()
        .accept(STREAM_PROTOCOL)
        .map_err(|e| Error::Network(e.to_string()))?;
    // Receivers of protocol 1 are answered with our version, so they report the mismatch
    // instead of timing out.
    let mut old = node
        .control()
        .accept(STREAM_PROTOCOL_1)
        .map_err(|e| Error::Network(e.to_string()))?;
    let sessions = Arc::new(Sessions {
        by_id: Mutex::new(HashMap::new()),
        tickets: Tickets::new(TICKET_IDLE),
        transfers: Mutex::new(HashMap::new()),
        receiver: Mutex::new(None),
        keep,
    });
    let attempts = Attempts::new(MAX_FAILED_ATTEMPTS);
    let slots = StreamSlots::new(STREAMS_PER_PEER, STREAMS_TOTAL);
    let (done_tx, mut done_rx) = mpsc::channel::<Outcome>(64);
    let phrase = Arc::new(code.phrase());
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
                let Some(slot) = slots.take(peer) else {
                    tracing::debug!(%peer, "too many streams; dropping one");
                    continue;
                };
                let ctx = StreamCtx {
                    attempts: attempts.clone(),
                    node: node.clone(),
                    share: share.clone(),
                    sessions: sessions.clone(),
                    phrase: phrase.clone(),
                    events: events.clone(),
                    outcomes: done_tx.clone(),
                    stop: stop.clone(),
                    rate: rate.clone(),
                };
                let done = done_tx.clone();
                // Hand off at once: libp2p-stream buffers only one pending inbound stream.
                tokio::spawn(async move {
                    let outcome = match ctx.handle(peer, stream).await {
                        Ok(o) => o,
                        Err(e) => {
                            tracing::debug!(%peer, "stream ended: {e}");
                            Outcome::Other
                        }
                    };
                    drop(slot);
                    let _ = done.send(outcome).await;
                });
            }
            Some((peer, stream)) = old.next() => {
                tokio::spawn(refuse_protocol_1(peer, stream));
            }
            Some(o) = done_rx.recv() => match o {
                Outcome::WrongCode(failures) => {
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
                    if active == 0 && !keep {
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

/// Answers a protocol-1 stream with a bare `Hello{version: 2}` and closes it: a pcp of protocol
/// 1 checks the version first and tells its user both sides need the same protocol.
async fn refuse_protocol_1(peer: PeerId, stream: libp2p::Stream) {
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::compat::FuturesAsyncReadCompatExt;
    tracing::warn!(
        %peer,
        "a receiver running pcp protocol 1 was refused: this pcp speaks protocol {}; \
         both sides need a pcp release with the same protocol",
        crate::proto::VERSION
    );
    let hello = crate::proto::Hello {
        version: crate::proto::VERSION,
        role: crate::proto::Role::Sender as i32,
        ..Default::default()
    };
    let mut io = stream.compat();
    let answer = async {
        crate::proto::write_frame(&mut io, &hello.encode_to_vec()).await?;
        io.shutdown().await.map_err(crate::proto::lost)?;
        // Wait for the receiver to hang up, so the answer is read before the stream goes.
        let mut sink = [0u8; 1024];
        while io.read(&mut sink).await.map_err(crate::proto::lost)? > 0 {}
        Ok::<_, Error>(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), answer).await;
}
