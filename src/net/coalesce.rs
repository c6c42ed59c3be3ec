//! Fewer, fuller TCP segments under yamux. yamux writes each frame's 12-byte header and its body
//! separately and flushes after every frame; over TLS with `TCP_NODELAY` each write became a TLS
//! record and a TCP segment of its own, so the first flights of a connection (window updates,
//! identify, ping, the handshake's streams) were a dozen tiny segments. TCP's first window
//! counts segments (10), so the handshake's own message waited a whole round trip for ACKs.
//!
//! [`Coalesce`] buffers writes (up to [`CAPACITY`]) and defers a flush by one wake-up of the
//! task: yamux's loop, polled again at once, writes the frames it still has into the same buffer
//! and flushes again; a flush with nothing new written since the last one writes the buffer out.
//! So the frames one poll produces leave as one write, and nothing waits longer than that.
//! A write too big to buffer takes what waits along in one vectored write (a big frame's
//! header leads its body), so no small write is left on its own either.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::{AsyncRead, AsyncWrite};

/// Bytes buffered before they are written without waiting for a flush.
pub const CAPACITY: usize = 32 * 1024;

/// A write buffer for a muxer's connection; see the module docs.
pub struct Coalesce<T> {
    inner: T,
    buf: Vec<u8>,
    /// How much of `buf` is already written.
    sent: usize,
    /// A flush was asked for and deferred.
    deferred: bool,
    /// Something was buffered since the deferred flush.
    wrote_since: bool,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Coalesce {
            inner,
            buf: Vec::with_capacity(CAPACITY),
            sent: 0,
            deferred: false,
            wrote_since: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() + data.len() > CAPACITY {
            // What waits goes out with these bytes in one vectored write: a yamux frame's
            // 12-byte header then leads its body's first TLS record instead of being a record,
            // a system call and (with TCP_NODELAY) a TCP segment of its own, as it was for
            // every 64 KiB frame of a transfer.
            while this.sent < this.buf.len() {
                let waiting = this.buf.len() - this.sent;
                let bufs = [IoSlice::new(&this.buf[this.sent..]), IoSlice::new(data)];
                let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                this.sent += n.min(waiting);
                if n > waiting {
                    this.buf.clear();
                    this.sent = 0;
                    return Poll::Ready(Ok(n - waiting));
                }
            }
            this.buf.clear();
            this.sent = 0;
            if data.len() >= CAPACITY {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        this.buf.extend_from_slice(data);
        this.wrote_since = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.len() > this.sent && (!this.deferred || this.wrote_since) {
            // Once more round the caller's loop first: frames it has ready join this write.
            this.deferred = true;
            this.wrote_since = false;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};

    /// A writer that records each write it gets.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(b.to_vec());
            Poll::Ready(Ok(b.len()))
        }
        /// Records the buffers as one write, as a TLS stream turns them into one run of records.
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len();
            self.0.push(all);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A writer that takes a few bytes at a time and is not ready every other call.
    struct Stingy {
        got: Vec<u8>,
        calls: usize,
        most: usize,
    }

    impl Stingy {
        fn take(&mut self, cx: &mut Context<'_>, bufs: &[&[u8]]) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = (self.calls * 7919 % self.most) + 1;
            let all: Vec<u8> = bufs.concat().into_iter().take(n).collect();
            self.got.extend_from_slice(&all);
            Poll::Ready(Ok(all.len()))
        }
    }

    impl AsyncWrite for Stingy {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.take(cx, &[b])
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let bufs: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
            self.take(cx, &bufs)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Whatever the writer beneath takes per call, and however often it is not ready, every
    /// byte leaves once and in order, through flushes and frames of every size.
    #[test]
    fn partial_writes_beneath_lose_and_repeat_nothing() {
        futures::executor::block_on(async {
            for most in [1, 13, 4096, CAPACITY + 100, 3 * CAPACITY] {
                let mut c = Coalesce::new(Stingy {
                    got: Vec::new(),
                    calls: 0,
                    most,
                });
                let mut sent = Vec::new();
                for (i, len) in [12, 65536, 12, 700, 12, CAPACITY, 5, 12, 65536, 1, 40000]
                    .into_iter()
                    .enumerate()
                {
                    let data: Vec<u8> = (0..len).map(|k| (k * 31 + i) as u8).collect();
                    c.write_all(&data).await.unwrap();
                    sent.extend_from_slice(&data);
                    if i % 3 == 2 {
                        c.flush().await.unwrap();
                    }
                }
                c.close().await.unwrap();
                assert!(
                    c.inner.got == sent,
                    "bytes differ when {most} are taken at most"
                );
            }
        });
    }

    #[test]
    fn frames_flushed_one_by_one_leave_in_one_write() {
        futures::executor::block_on(async {
            let mut c = Coalesce::new(Writes::default());
            // yamux: header, body, flush; next frame; flush.
            c.write_all(b"h1").await.unwrap();
            c.write_all(b"body1").await.unwrap();
            c.flush().await.unwrap();
            assert!(c.inner.0.is_empty(), "the first flush is deferred");
            c.write_all(b"h2").await.unwrap();
            c.flush().await.unwrap();
            assert!(
                c.inner.0.is_empty(),
                "a write since the deferral defers again"
            );
            c.flush().await.unwrap();
            assert_eq!(c.inner.0, vec![b"h1body1h2".to_vec()]);
            // Nothing buffered: a flush goes straight through.
            c.flush().await.unwrap();
            assert_eq!(c.inner.0.len(), 1);
        });
    }

    #[test]
    fn big_writes_pass_and_close_writes_what_is_left() {
        futures::executor::block_on(async {
            let mut c = Coalesce::new(Writes::default());
            c.write_all(b"small").await.unwrap();
            let big = vec![1u8; CAPACITY];
            c.write_all(&big).await.unwrap();
            // What waited leads the big write: one write, not a small one of its own.
            assert_eq!(c.inner.0, vec![[&b"small"[..], &big].concat()]);
            let bigger = vec![2u8; CAPACITY + 1];
            c.write_all(&bigger).await.unwrap();
            assert_eq!(
                c.inner.0.len(),
                2,
                "nothing waited: the big write passes alone"
            );
            assert!(c.inner.0[1] == bigger);
            c.write_all(b"tail").await.unwrap();
            c.close().await.unwrap();
            assert_eq!(c.inner.0.last().unwrap(), b"tail");
        });
    }

    #[test]
    fn reads_pass_through() {
        futures::executor::block_on(async {
            let mut c = Coalesce::new(futures::io::Cursor::new(b"abc".to_vec()));
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"abc");
        });
    }
}
