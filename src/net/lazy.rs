//! Streams negotiated lazily. Receivers and senders open their streams with multistream-select
//! `V1Lazy` (set on the swarm, see `node.rs`): the protocol id goes out with the stream's first
//! bytes instead of costing a round trip of its own, so a peer that does not speak the protocol
//! is only noticed when the first read fails. [`Opened`] wraps such a stream and remembers that
//! failure, so callers can still tell "the peer refused the protocol" from a lost connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::upgrade::NegotiationError;
use libp2p::Stream;

/// Whether `e` says the peer refused the protocol a lazily negotiated stream proposed.
pub fn is_refusal(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<NegotiationError>())
        .is_some_and(|n| matches!(n, NegotiationError::Failed))
}

/// An outbound stream whose protocol the peer may still refuse (seen on the first read).
pub struct Opened {
    inner: Stream,
    refused: Arc<AtomicBool>,
}

impl Opened {
    pub fn new(inner: Stream) -> Opened {
        Opened {
            inner,
            refused: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a read found that the peer refused the stream's protocol.
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::SeqCst)
    }
}

impl AsyncRead for Opened {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &r {
            if is_refusal(e) {
                self.refused.store(true, Ordering::SeqCst);
            }
        }
        r
    }
}

impl AsyncWrite for Opened {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

    #[test]
    fn only_a_failed_negotiation_is_a_refusal() {
        assert!(is_refusal(&io::Error::other(NegotiationError::Failed)));
        // What a lazily negotiated stream's read returns when the peer refuses, as `Negotiated`
        // builds it, keeps its cause through the conversion.
        let converted: io::Error = NegotiationError::Failed.into();
        assert!(is_refusal(&converted));
        assert!(!is_refusal(&io::Error::from(
            io::ErrorKind::ConnectionReset
        )));
        assert!(!is_refusal(&io::Error::other(
            "Protocol negotiation failed."
        )));
        let garbled: io::Error =
            NegotiationError::ProtocolError(libp2p::core::upgrade::ProtocolError::InvalidMessage)
                .into();
        assert!(!is_refusal(&garbled));
    }
}
