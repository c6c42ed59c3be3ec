//! An authenticated session with a sender, on its control stream: authenticate (with the code,
//! or a resumption ticket), read the offer and the manifest, open data streams, and end the
//! session saying why. Requests go through [`Client`](super::Client).

use std::sync::Arc;
use std::time::Duration;

use libp2p::{PeerId, Stream};
use prost::Message;
use tokio::io::{ReadHalf, WriteHalf};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use super::client::{open_lane, Client, ClientInner, LANE_ATTEMPTS};
use crate::code::Code;
use crate::crypto::{
    self, secure_stream, HandshakeParams, SecureReader, SecureWriter, SessionKeys,
};
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::net::{Node, STREAM_PROTOCOL};
use crate::proto::{
    envelope::Msg, Abort, Accept, Decline, Done, Entry, ManifestChunk, Offer, Role, MAX_ENTRIES,
    MAX_FRAME, MAX_MANIFEST_BYTES,
};
use crate::rate::RateLimit;

type Io = Compat<Stream>;

/// Opens a pcp stream to `peer` (already connected).
pub(super) async fn open_stream(node: &Node, peer: PeerId) -> Result<Io> {
    // Inbound streams are buffered one at a time by the sender's libp2p-stream; retry a reset.
    let mut last = None;
    for attempt in 0..5u64 {
        match node.control().open_stream(peer, STREAM_PROTOCOL).await {
            Ok(s) => return Ok(s.compat()),
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {
                return Err(super::incompatible_sender(node, peer).await)
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
    manifest: Option<Manifest>,
    /// `--limit-rate`: the pace of read requests over all data streams.
    rate: Option<Arc<RateLimit>>,
    /// `--compress`: reads ask for compressed data, counted here.
    packed: Option<Arc<crate::pack::Packed>>,
}

/// Attempts at opening the control stream when the sender closes it unanswered.
pub const OPEN_ATTEMPTS: u32 = 5;

impl Session {
    fn on_control_stream(node: &Node, peer: PeerId, keys: SessionKeys, io: Io) -> Session {
        let (reader, writer) = secure_stream(io, &keys, 0);
        Session {
            node: node.clone(),
            peer,
            keys,
            reader,
            writer,
            offer: None,
            manifest: None,
            rate: None,
            packed: None,
        }
    }

    /// Asks for at most `bytes_per_sec` of file data a second over the data streams opened
    /// from now on (read requests go out at that pace).
    pub fn limit_rate(&mut self, bytes_per_sec: Option<u64>) {
        self.rate = bytes_per_sec.map(|r| Arc::new(RateLimit::new(r)));
    }

    /// The pace itself, for a session resumed in this one's place.
    pub(crate) fn rate(&self) -> Option<Arc<RateLimit>> {
        self.rate.clone()
    }

    pub(crate) fn set_rate(&mut self, rate: Option<Arc<RateLimit>>) {
        self.rate = rate;
    }

    /// The round trip to the sender, as libp2p's ping measured it on the connection (its
    /// first ping goes out when the connection opens, so it is there by the time a session
    /// is authenticated; waits up to half a second for it otherwise).
    pub async fn round_trip(&self) -> Option<Duration> {
        for _ in 0..5 {
            if let Ok(Some(rtt)) = self
                .node
                .connection(self.peer)
                .await
                .map(|c| c.and_then(|c| c.rtt))
            {
                return Some(rtt);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Asks the sender to compress file data over the data streams opened from now on, where
    /// that saves enough (SPEC §11.3); what came compressed is counted in [`packed`](Self::packed).
    pub fn compress(&mut self, on: bool) {
        self.packed = on.then(Arc::default);
    }

    /// What came compressed so far (`None`: not asked for), shared with a session resumed in
    /// this one's place.
    pub fn packed(&self) -> Option<Arc<crate::pack::Packed>> {
        self.packed.clone()
    }

    pub(crate) fn set_packed(&mut self, packed: Option<Arc<crate::pack::Packed>>) {
        self.packed = packed;
    }

    /// Opens the control stream to `peer` (already connected) and runs the handshake. A stream
    /// the sender closed before answering (it had no room for it) is opened again, up to
    /// [`OPEN_ATTEMPTS`] times: it made no guess.
    pub async fn authenticate(node: &Node, peer: PeerId, code: &Code) -> Result<Session> {
        let phrase = code.phrase();
        let mut attempt = 0;
        loop {
            let mut io = open_stream(node, peer).await?;
            let params = HandshakeParams::with_code(&phrase, Role::Receiver, peer, node.peer_id());
            match crypto::timed("the handshake", crypto::handshake(&mut io, params, None)).await {
                Ok(keys) => return Ok(Session::on_control_stream(node, peer, keys, io)),
                // The stream was negotiated lazily (net::lazy): a sender that does not speak
                // our protocol says so at its first answer. Name its version if it has one.
                Err(Error::IncompatibleVersion { theirs: None, .. }) => {
                    return Err(super::incompatible_sender(node, peer).await)
                }
                Err(Error::Unanswered(why)) if attempt + 1 < OPEN_ATTEMPTS => {
                    tracing::debug!(%peer, "handshake stream closed unanswered ({why}); again");
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
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
        let keys = crypto::timed("the resumption handshake", hs).await?;
        Ok(Session::on_control_stream(node, peer, keys, io))
    }

    /// Waits until the sender ends the session (an abort, a closed stream or a lost connection)
    /// and says why. Cancel-safe only before the first frame arrives; use it from one task.
    pub async fn closed(&mut self) -> Error {
        match self.reader.recv().await {
            Ok(Some(Msg::Abort(a))) => Error::Remote(a.reason),
            Ok(Some(other)) => Error::Protocol(format!("unexpected message {other:?}")),
            Ok(None) => Error::ConnectionLost(
                "the sender closed the session without saying why (its process may have ended)"
                    .into(),
            ),
            Err(e) => e,
        }
    }

    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The node the session runs on.
    pub fn node(&self) -> &Node {
        &self.node
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

    /// The whole manifest, read and validated (the sender sends it right behind the offer;
    /// nothing is answered before it is checked). Bounded in memory: each entry counts its
    /// encoded size plus what it takes in memory against [`MAX_MANIFEST_BYTES`].
    pub async fn manifest(&mut self) -> Result<&Manifest> {
        if self.manifest.is_none() {
            let m = self.read_manifest().await?;
            self.manifest = Some(m);
        }
        Ok(self.manifest.as_ref().expect("just set"))
    }

    async fn read_manifest(&mut self) -> Result<Manifest> {
        let offer = self.offer().await?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        loop {
            let msg = match self.reader.expect("the manifest").await? {
                Msg::PackedManifest(p) => Msg::Manifest(unpack_manifest(&p)?),
                other => other,
            };
            match msg {
                Msg::Manifest(c) => {
                    if entries.len() as u64 + c.entries.len() as u64 > offer.entries {
                        return Err(Error::InvalidManifest(format!(
                            "more entries than the {} offered",
                            offer.entries
                        )));
                    }
                    bytes += c
                        .entries
                        .iter()
                        .map(|e| e.encoded_len() + std::mem::size_of::<Entry>())
                        .sum::<usize>();
                    if bytes > MAX_MANIFEST_BYTES {
                        return Err(Error::InvalidManifest(format!(
                            "the manifest takes more than {} MiB",
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

    /// Declines the offer (the sender stops sharing), once the manifest is read.
    pub async fn decline(mut self) -> Result<()> {
        let _ = self.manifest().await;
        self.end(Msg::Decline(Decline {})).await
    }

    /// Ends the session saying why (the sender prints the reason).
    pub async fn abort(self, reason: String) -> Result<()> {
        self.end(Msg::Abort(Abort { reason })).await
    }

    /// Accepts the offer (for a mount: `mount`) and returns the validated manifest.
    pub async fn accept(&mut self, mount: bool) -> Result<Manifest> {
        self.manifest().await?;
        self.writer.send_now(Msg::Accept(Accept { mount })).await?;
        Ok(self.manifest.take().expect("read above"))
    }

    /// Returns at once a client that spreads requests over `n` data streams, opened in the
    /// background one after another: across a long path their opening is off the critical
    /// path (requests wait for the first stream, not for all of them, and go out right behind
    /// its `Join`). Each stream is opened only once the sender has answered the previous one
    /// with `Ready`, so the sender never has more than one of our streams waiting to be
    /// accepted (its libp2p-stream buffers one and drops the rest).
    pub async fn client(&mut self, n: u32) -> Result<Client> {
        let inner = std::sync::Arc::new(ClientInner::new(self.packed.clone()));
        let (node, peer, keys) = (self.node.clone(), self.peer, self.keys.clone());
        let rate = self.rate.clone();
        let opener = std::sync::Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut why = None;
            let mut index = 1;
            let mut attempt = 0;
            while index <= n.max(1) {
                let opened = open_lane(&node, peer, &keys, index, rate.clone()).await;
                let Some(inner) = opener.upgrade() else {
                    return;
                };
                let result = match opened {
                    Ok((lane, ready)) => {
                        inner.add(lane);
                        drop(inner);
                        ready.await.unwrap_or_else(|_| {
                            Err(Error::ConnectionLost("data stream closed".into()))
                        })
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        index += 1;
                        attempt = 0;
                    }
                    // Dropped unread by a busy sender: the same index, a moment later.
                    Err(Error::Unanswered(w)) if attempt + 1 < LANE_ATTEMPTS => {
                        tracing::debug!("data stream {index} unanswered ({w}); again");
                        tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                        attempt += 1;
                    }
                    Err(Error::ConnectionLost(w) | Error::Unanswered(w)) => {
                        why = Some(w);
                        break;
                    }
                    Err(e) => {
                        why = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(inner) = opener.upgrade() {
                if let Some(why) = &why {
                    tracing::debug!("opening data streams stopped: {why}");
                }
                inner.opened(why);
            }
        });
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

/// A compressed manifest chunk opened: one zstd frame that gives exactly the length it claims,
/// at most [`MAX_FRAME`] (what a chunk sent plain could be), and decodes as a chunk.
fn unpack_manifest(p: &crate::proto::PackedManifest) -> Result<ManifestChunk> {
    if p.len as usize > MAX_FRAME {
        return Err(Error::Protocol(format!(
            "a compressed manifest chunk of {} bytes",
            p.len
        )));
    }
    let raw = crate::pack::decompress(&p.zstd, p.len as usize)
        .map_err(|e| Error::Protocol(format!("the manifest's {e}")))?;
    ManifestChunk::decode(&raw[..])
        .map_err(|e| Error::Protocol(format!("undecodable manifest chunk: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Kind, PackedManifest};

    #[test]
    fn a_packed_manifest_chunk_opens_only_as_what_it_claims() {
        let entries: Vec<Entry> = (1..=2000u64)
            .map(|i| {
                crate::manifest::test_entry(
                    i,
                    0,
                    format!("file{i:05}.txt").as_bytes(),
                    Kind::File,
                    i,
                )
            })
            .collect();
        let chunk = ManifestChunk {
            entries,
            last: true,
        };
        let raw = chunk.encode_to_vec();
        let zstd = crate::pack::compress(&raw).expect("a tree's entries compress");
        assert!(
            zstd.len() * 4 < raw.len(),
            "{} of {}",
            zstd.len(),
            raw.len()
        );
        let packed = |zstd: &[u8], len: usize| PackedManifest {
            zstd: zstd.to_vec(),
            len: len as u32,
        };
        assert_eq!(unpack_manifest(&packed(&zstd, raw.len())).unwrap(), chunk);
        // A length other than the frame's, too big to be a chunk, not zstd, or not a chunk.
        let not_a_chunk = crate::pack::compress(&[0xff; 8192]).unwrap();
        for bad in [
            packed(&zstd, raw.len() - 1),
            packed(&zstd, raw.len() + 1),
            packed(&zstd, MAX_FRAME + 1),
            packed(b"not zstd at all", 100),
            packed(&not_a_chunk, 8192),
        ] {
            assert!(
                matches!(unpack_manifest(&bad), Err(Error::Protocol(_))),
                "{}",
                bad.len
            );
        }
    }
}
