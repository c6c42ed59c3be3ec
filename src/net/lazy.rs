//! Lazy protocol negotiation for pcp's own streams only.
//!
//! libp2p negotiates every outbound stream with multistream-select and waits for the other side
//! to confirm the protocol before the stream is handed over: one round trip before the first
//! byte of a request. multistream-select's `V1Lazy` (sending data right behind the proposal)
//! can only be switched on for every protocol of a swarm at once, and some (Kademlia) break
//! with it. This muxer wrapper gives it to `/pcp/2` alone: on an outbound stream whose
//! proposal is `/pcp/2`, it answers the local negotiation itself with the confirmation the
//! other side will send, so the stream is handed over at once and the first request travels
//! with the proposal; the real confirmation is then checked and removed from the front of what
//! arrives. A refusal in its place ends the stream with a [`crate::error::ProtocolRefused`]
//! error. Other protocols, and every inbound stream, pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};

use crate::error::ProtocolRefused as Refused;

/// What a dialer writes to propose `/pcp/2` (the protocol negotiated lazily) (multistream-select's header line, then the
/// protocol's, each behind its length), and also what the other side echoes to accept it.
const PROPOSAL: &[u8] = b"\x13/multistream/1.0.0\n\x07/pcp/2\n";

/// A stream muxer whose outbound `/pcp/2` streams are negotiated lazily.
pub struct Lazy<M>(M);

impl<M> Lazy<M> {
    pub fn new(muxer: M) -> Self {
        Lazy(muxer)
    }
}

impl<M> StreamMuxer for Lazy<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = Substream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.0)
            .poll_inbound(cx)
            .map_ok(Substream::inbound)
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.0)
            .poll_outbound(cx)
            .map_ok(Substream::outbound)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_close(cx)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// A substream of [`Lazy`].
pub struct Substream<S> {
    inner: S,
    /// While the local dialer's writes may still be [`PROPOSAL`]: how much of it they were.
    watched: Option<usize>,
    /// How much of [`PROPOSAL`] the local dialer has read as its confirmation ...
    given: usize,
    /// ... and how much of the real one has arrived (both all of it unless lazy).
    stripped: usize,
}

impl<S> Substream<S> {
    fn inbound(inner: S) -> Self {
        Substream {
            inner,
            watched: None,
            given: PROPOSAL.len(),
            stripped: PROPOSAL.len(),
        }
    }

    fn outbound(inner: S) -> Self {
        Substream {
            watched: Some(0),
            ..Substream::inbound(inner)
        }
    }

    /// Follows what the dialer writes: once it has written exactly [`PROPOSAL`], the stream
    /// goes lazy; anything else ends the watch.
    fn watch_written(&mut self, written: &[u8]) {
        let Some(at) = self.watched else {
            return;
        };
        let end = at + written.len();
        self.watched = (PROPOSAL.get(at..end) == Some(written)).then_some(end);
        if self.watched == Some(PROPOSAL.len()) {
            self.watched = None;
            self.given = 0;
            self.stripped = 0;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Substream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.given < PROPOSAL.len() {
            let n = buf.len().min(PROPOSAL.len() - this.given);
            buf[..n].copy_from_slice(&PROPOSAL[this.given..this.given + n]);
            this.given += n;
            return Poll::Ready(Ok(n));
        }
        loop {
            let n = match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            if this.stripped == PROPOSAL.len() || n == 0 {
                return Poll::Ready(Ok(n));
            }
            let take = n.min(PROPOSAL.len() - this.stripped);
            if buf[..take] != PROPOSAL[this.stripped..this.stripped + take] {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::Unsupported, Refused)));
            }
            this.stripped += take;
            if take < n {
                buf.copy_within(take..n, 0);
                return Poll::Ready(Ok(n - take));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Substream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.watch_written(&buf[..n]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use multistream_select::{dialer_select_proto, listener_select_proto, Version};

    fn msg(line: &[u8]) -> Vec<u8> {
        let mut m = vec![line.len() as u8];
        m.extend_from_slice(line);
        m
    }

    #[test]
    fn the_lazy_proposal_is_pcps_own_protocol_in_multistream_framing() {
        let protocol = format!("{}\n", crate::proto::PROTOCOL);
        let framed = [msg(b"/multistream/1.0.0\n"), msg(protocol.as_bytes())].concat();
        assert_eq!(PROPOSAL, framed);
    }

    fn lazy_after(writes: &[&[u8]]) -> bool {
        let mut s = Substream::outbound(());
        for w in writes {
            s.watch_written(w);
        }
        s.given == 0 && s.stripped == 0
    }

    #[test]
    fn only_a_header_and_a_pcp_proposal_go_lazy() {
        for cut in 0..=PROPOSAL.len() {
            let (a, b) = PROPOSAL.split_at(cut);
            assert!(lazy_after(&[a, b]), "{cut}");
            assert!(!lazy_after(&[a]) || cut == PROPOSAL.len(), "{cut}");
        }
        let header = msg(b"/multistream/1.0.0\n");
        assert!(!lazy_after(&[&header, &msg(b"/ipfs/kad/1.0.0\n")]));
        assert!(!lazy_after(&[&header, &msg(b"/pcp/1\n")]));
        assert!(!lazy_after(&[&[PROPOSAL, b"more"].concat()]));
        // Once lazy, later writes (the request) change nothing.
        assert!(lazy_after(&[PROPOSAL, b"hello"]));
        let inbound = Substream::inbound(());
        assert_eq!(inbound.stripped, PROPOSAL.len());
    }

    /// A pair of connected in-memory byte streams.
    fn pair() -> (
        impl AsyncRead + AsyncWrite + Unpin + Send,
        impl AsyncRead + AsyncWrite + Unpin + Send,
    ) {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (a, b) = tokio::io::duplex(1 << 16);
        (a.compat(), b.compat())
    }

    #[tokio::test]
    async fn the_first_request_travels_with_the_proposal_and_the_answer_arrives_whole() {
        let (a, b) = pair();
        let listener = tokio::spawn(async move {
            let (p, mut s) = listener_select_proto(b, ["/pcp/1", "/pcp/2"])
                .await
                .unwrap();
            assert_eq!(p, "/pcp/2");
            let mut req = [0u8; 5];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(b"answer to ").await.unwrap();
            s.write_all(&req).await.unwrap();
            s.flush().await.unwrap();
        });
        // The dialer waits for the confirmation (V1), which the wrapper gives at once.
        let (p, mut s) = dialer_select_proto(Substream::outbound(a), ["/pcp/2"], Version::V1)
            .await
            .unwrap();
        assert_eq!(p, "/pcp/2");
        s.write_all(b"hello").await.unwrap();
        s.flush().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"answer to hello");
        listener.await.unwrap();
    }

    #[tokio::test]
    async fn the_request_is_sent_before_the_confirmation_arrives() {
        let (a, mut b) = pair();
        let dialer = tokio::spawn(async move {
            let (_, mut s) = dialer_select_proto(Substream::outbound(a), ["/pcp/2"], Version::V1)
                .await
                .unwrap();
            s.write_all(b"hello").await.unwrap();
            s.flush().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        // The other side answers nothing until the request is there.
        let proposal = PROPOSAL.to_vec();
        let mut wire = vec![0u8; proposal.len() + 5];
        tokio::time::timeout(std::time::Duration::from_secs(5), b.read_exact(&mut wire))
            .await
            .expect("the request came with the proposal")
            .unwrap();
        assert_eq!(wire, [&proposal[..], b"hello"].concat());
        b.write_all(&[&proposal[..], b"answer"].concat())
            .await
            .unwrap();
        b.close().await.unwrap();
        assert_eq!(dialer.await.unwrap(), b"answer");
    }

    #[tokio::test]
    async fn a_refusal_ends_the_stream_with_refused() {
        let (a, b) = pair();
        let listener =
            tokio::spawn(async move { listener_select_proto(b, ["/other/1"]).await.is_err() });
        let (_, mut s) = dialer_select_proto(Substream::outbound(a), ["/pcp/2"], Version::V1)
            .await
            .unwrap();
        s.write_all(b"hello").await.unwrap();
        s.flush().await.unwrap();
        let mut got = [0u8; 1];
        let e = s.read(&mut got).await.unwrap_err();
        assert!(crate::error::is_refused(&e), "{e}");
        drop(s);
        assert!(listener.await.unwrap());
    }

    #[tokio::test]
    async fn other_protocols_are_negotiated_as_before() {
        let (a, b) = pair();
        let listener = tokio::spawn(async move {
            let (_, mut s) = listener_select_proto(b, ["/pcp/1"]).await.unwrap();
            s.write_all(b"old").await.unwrap();
            s.close().await.unwrap();
        });
        let (p, mut s) = dialer_select_proto(Substream::outbound(a), ["/pcp/1"], Version::V1)
            .await
            .unwrap();
        assert_eq!(p, "/pcp/1");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"old");
        listener.await.unwrap();
    }
}
