//! The record layer: one message per frame, sealed with its stream direction's
//! ChaCha20-Poly1305 ([`super::aead`]), so a dropped, replayed or reordered frame ends the
//! session; frames sent back to back are written together.

use bytes::Bytes;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::aead::{Opener, Sealer, TAG};
use super::keys::SessionKeys;
use crate::error::{Error, Result};
use crate::pages::{self, PAGE};
use crate::proto::{self as wire, envelope, lost, read_frame_len, Envelope, Response, MAX_FRAME};

/// Bytes kept free before a read's data in the buffer [`SecureWriter::send_data`] seals in
/// place: the frame's length (4) and at most 33 bytes of keys and lengths before the data.
pub const DATA_ROOM: usize = 40;

/// Sealed messages wait in a [`SecureWriter`] until this many bytes (or a flush), so a run of
/// small ones is written at once.
const COALESCE: usize = 32 * 1024;

/// The sending half of an encrypted stream.
pub struct SecureWriter<W> {
    w: W,
    sealer: Sealer,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> SecureWriter<W> {
    pub fn new(w: W, sealer: Sealer) -> Self {
        SecureWriter {
            w,
            sealer,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Encodes and seals one message behind those not yet written; they go out together (one
    /// transport frame, one TLS record, one system call) at [`flush`](Self::flush) or once
    /// `COALESCE` (32 KiB) bytes wait. Small requests and answers sent back to back thus cost
    /// one write, not one each; a big answer is written at once.
    pub async fn send(&mut self, msg: envelope::Msg) -> Result<()> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        Envelope { msg: Some(msg) }
            .encode(&mut self.buf)
            .expect("Vec grows as needed");
        let plain = self.buf.len() - start - 4;
        if plain > MAX_FRAME {
            self.buf.truncate(start);
            return Err(Error::FrameTooLarge(plain, MAX_FRAME));
        }
        let tag = match self.sealer.seal_detached(&mut self.buf[start + 4..]) {
            Ok(tag) => tag,
            Err(e) => {
                self.buf.truncate(start);
                return Err(e);
            }
        };
        self.buf.extend_from_slice(&tag);
        let len = (self.buf.len() - start - 4) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
        if self.buf.len() >= COALESCE {
            self.write_out().await?;
        }
        Ok(())
    }

    /// [`send`](Self::send) of `Response { id, data: buf[at..] }`, the same bytes on the wire,
    /// sealed in place in `buf` instead of copied into the writer's buffer first: the frame's
    /// length and the message's first bytes go into the [`DATA_ROOM`] bytes before the data
    /// (`at >= DATA_ROOM`; what lies before them is not sent), the tag after it (`buf` has
    /// room for it when read with [`TAG`] bytes to spare). A small answer still waits with the
    /// others; a big one is written from `buf` at once.
    pub async fn send_data(&mut self, id: u64, mut buf: Vec<u8>, at: usize) -> Result<()> {
        use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
        assert!(at >= DATA_ROOM, "no room for the record's header");
        let len = buf.len().saturating_sub(at);
        if len == 0 {
            // prost leaves empty bytes out, and so must this.
            let resp = Response {
                id,
                ..Default::default()
            };
            return self.send(envelope::Msg::Response(resp)).await;
        }
        let id_len = if id == 0 {
            0
        } else {
            key_len(1) + encoded_len_varint(id)
        };
        let inner = id_len + key_len(2) + encoded_len_varint(len as u64) + len;
        // Envelope.response (6); Response.id (1), left out when 0; Response.data's key and
        // length (2): prost's order and encoding, pinned by a test against `send`.
        let mut head = [0u8; DATA_ROOM - 4];
        let spare = {
            let mut h = &mut head[..];
            encode_key(6, WireType::LengthDelimited, &mut h);
            encode_varint(inner as u64, &mut h);
            if id != 0 {
                encode_key(1, WireType::Varint, &mut h);
                encode_varint(id, &mut h);
            }
            encode_key(2, WireType::LengthDelimited, &mut h);
            encode_varint(len as u64, &mut h);
            h.len()
        };
        let head = &head[..head.len() - spare];
        let plain = head.len() + len;
        if plain > MAX_FRAME {
            return Err(Error::FrameTooLarge(plain, MAX_FRAME));
        }
        let start = at - head.len() - 4;
        buf[start..start + 4].copy_from_slice(&((plain + TAG) as u32).to_be_bytes());
        buf[start + 4..at].copy_from_slice(head);
        let tag = self.sealer.seal_detached(&mut buf[start + 4..])?;
        buf.extend_from_slice(&tag);
        let frame = &buf[start..];
        if self.buf.len() + frame.len() < COALESCE {
            self.buf.extend_from_slice(frame);
            return Ok(());
        }
        self.write_out().await?;
        self.w.write_all(frame).await.map_err(lost)
    }

    /// Writes what [`send`](Self::send) sealed and has not written yet.
    async fn write_out(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.w.write_all(&self.buf).await.map_err(lost);
        self.buf.clear();
        if self.buf.capacity() > 4 * MAX_FRAME {
            self.buf = Vec::new();
        }
        r
    }

    /// Writes every message sent so far and pushes them out.
    pub async fn flush(&mut self) -> Result<()> {
        self.write_out().await?;
        self.w.flush().await.map_err(lost)
    }

    pub async fn send_now(&mut self, msg: envelope::Msg) -> Result<()> {
        self.send(msg).await?;
        self.flush().await
    }

    /// Writes what is still waiting, then closes the stream.
    pub async fn close(&mut self) {
        let _ = self.write_out().await;
        let _ = self.w.shutdown().await;
    }
}

/// The receiving half of an encrypted stream.
pub struct SecureReader<R> {
    r: R,
    opener: Opener,
    /// Bytes before a response's data in the last big frame: where the next one's data is
    /// expected to start, so it is read to land on a page boundary.
    lead: usize,
}

/// Frames at least this big are read into pooled pages (see [`crate::pages`]).
const POOLED_FRAME: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> SecureReader<R> {
    pub fn new(r: R, opener: Opener) -> Self {
        SecureReader { r, opener, lead: 0 }
    }

    /// The next message, or `None` when the peer closed the stream cleanly.
    pub async fn recv(&mut self) -> Result<Option<envelope::Msg>> {
        let Some(len) = read_frame_len(&mut self.r, MAX_FRAME + TAG).await? else {
            return Ok(None);
        };
        if len < POOLED_FRAME {
            let mut buf = vec![0u8; len];
            self.r.read_exact(&mut buf).await.map_err(lost)?;
            return wire::decode_envelope(self.opener.open(buf)?).map(Some);
        }
        // A big frame (a read's answer) goes into pooled pages, placed so that its data
        // starts on a page when it has as many bytes before it as the last one did.
        let start = (PAGE - self.lead % PAGE) % PAGE;
        let mut pages = pages::take(start + len);
        let frame = &mut pages::bytes_mut(&mut pages)[start..start + len];
        self.r.read_exact(frame).await.map_err(lost)?;
        let plain = self.opener.open_in_place(frame)?;
        let base = frame.as_ptr() as usize;
        let end = start + plain;
        let msg = wire::decode_envelope(Bytes::from_owner(pages::Pooled { pages, start, end }))?;
        if let envelope::Msg::Response(r) = &msg {
            // Where the data began in the frame (it is a slice of it; were it ever a copy, the
            // guess simply stays).
            if let Some(lead) = (r.data.as_ptr() as usize).checked_sub(base) {
                if !r.data.is_empty() && lead < plain {
                    self.lead = lead;
                }
            }
        }
        Ok(Some(msg))
    }

    /// Like [`recv`](Self::recv), but an end of stream is an error.
    pub async fn expect(&mut self, what: &str) -> Result<envelope::Msg> {
        self.recv()
            .await?
            .ok_or_else(|| Error::ConnectionLost(format!("stream closed while waiting for {what}")))
    }
}

/// Splits `io` into the sealed halves of stream `index` of the session `keys` belongs to.
pub fn secure_stream<S: AsyncRead + AsyncWrite>(
    io: S,
    keys: &SessionKeys,
    index: u32,
) -> (SecureReader<ReadHalf<S>>, SecureWriter<WriteHalf<S>>) {
    let (sealer, opener) = keys.stream(index);
    let (r, w) = tokio::io::split(io);
    (SecureReader::new(r, opener), SecureWriter::new(w, sealer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Role;
    use tokio::io::DuplexStream;

    /// The sender's writer and the receiver's reader of stream 1 over an in-memory pipe of
    /// `capacity` bytes.
    fn sender_to_receiver(
        capacity: usize,
    ) -> (
        SecureWriter<WriteHalf<DuplexStream>>,
        SecureReader<ReadHalf<DuplexStream>>,
    ) {
        let keys = SessionKeys::derive(Role::Sender, b"k", &[0; 32]);
        let peer = SessionKeys::derive(Role::Receiver, b"k", &[0; 32]);
        let (a, b) = tokio::io::duplex(capacity);
        let (_, w) = secure_stream(a, &keys, 1);
        let (r, _) = secure_stream(b, &peer, 1);
        (w, r)
    }

    /// An answer sealed in its read buffer is, byte for byte, the frame `send` makes, small
    /// ones behind others as big ones alone, and it opens to the same message.
    #[tokio::test]
    async fn answers_sealed_in_place_match_encoded_ones() {
        use tokio::io::AsyncReadExt;
        let keys = SessionKeys::derive(Role::Sender, b"k", &[0; 32]);
        let peer = SessionKeys::derive(Role::Receiver, b"k", &[0; 32]);
        let answers = [
            (0u64, 1usize),
            (1, 0),
            (2, 300),
            (300, COALESCE),
            (1 << 40, 70_000),
            (u64::MAX, MAX_FRAME - 33),
        ];
        let data = |len: usize| (0..len).map(|i| (i % 253) as u8).collect::<Vec<u8>>();
        let mut streams = Vec::new();
        for in_place in [false, true] {
            let (a, mut b) = tokio::io::duplex(16 << 20);
            let (_, mut w) = secure_stream(a, &keys, 1);
            for (id, len) in answers {
                if in_place {
                    // Some with bytes before the room, as a direct read leaves them.
                    let at = DATA_ROOM + (id as usize % 3) * 100;
                    let mut buf = vec![0xEE; at];
                    buf.extend(data(len));
                    w.send_data(id, buf, at).await.unwrap();
                } else {
                    let data = data(len).into();
                    let resp = Response {
                        id,
                        data,
                        ..Default::default()
                    };
                    w.send(envelope::Msg::Response(resp)).await.unwrap();
                }
            }
            w.close().await;
            drop(w);
            let mut raw = Vec::new();
            b.read_to_end(&mut raw).await.unwrap();
            streams.push(raw);
        }
        assert!(streams[0] == streams[1], "the streams differ");
        let (_, open) = peer.stream(1);
        let mut r = SecureReader::new(&streams[1][..], open);
        for (id, len) in answers {
            match r.recv().await.unwrap() {
                Some(envelope::Msg::Response(got)) => {
                    assert_eq!((got.id, got.data.len()), (id, len));
                    assert!(got.data == data(len));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(r.recv().await.unwrap().is_none());
    }

    /// Big answers are read into pooled pages, their data on a page boundary once the reader
    /// has seen one answer of the same shape (so it goes to the disk without a copy).
    #[tokio::test]
    async fn big_answers_land_on_a_page_boundary() {
        let (mut w, mut r) = sender_to_receiver(8 << 20);
        let data = |k: usize| {
            (0..300_000)
                .map(|i| ((i + k) % 251) as u8)
                .collect::<Vec<u8>>()
        };
        for id in 10..14u64 {
            let mut buf = vec![0; DATA_ROOM];
            buf.extend(data(id as usize));
            w.send_data(id, buf, DATA_ROOM).await.unwrap();
        }
        w.flush().await.unwrap();
        for id in 10..14u64 {
            match r.recv().await.unwrap() {
                Some(envelope::Msg::Response(got)) => {
                    assert_eq!(got.id, id);
                    assert!(got.data == data(id as usize), "answer {id} differs");
                    if id > 10 {
                        assert!((got.data.as_ptr() as usize).is_multiple_of(PAGE));
                    }
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Small messages wait until a flush and then arrive together, in order; a big one is
    /// written without a flush (with those before it); a frame too large leaves nothing behind.
    #[tokio::test]
    async fn messages_sent_back_to_back_are_written_together() {
        use crate::proto::{Request, Response};
        let (mut w, mut r) = sender_to_receiver(4 << 20);
        let req = |id| {
            envelope::Msg::Request(Request {
                id,
                ..Default::default()
            })
        };
        for id in 1..=3 {
            w.send(req(id)).await.unwrap();
        }
        let nothing_yet = tokio::time::timeout(std::time::Duration::from_millis(50), r.recv());
        assert!(
            nothing_yet.await.is_err(),
            "a small message was written before a flush"
        );
        let big = Response {
            id: 4,
            data: vec![7; COALESCE].into(),
            ..Default::default()
        };
        w.send(envelope::Msg::Response(big)).await.unwrap();
        let too_big = Response {
            id: 5,
            data: vec![0; MAX_FRAME + 1].into(),
            ..Default::default()
        };
        assert!(w.send(envelope::Msg::Response(too_big)).await.is_err());
        for id in 1..=3 {
            match r.recv().await.unwrap() {
                Some(envelope::Msg::Request(q)) => assert_eq!(q.id, id),
                other => panic!("{other:?}"),
            }
        }
        match r.recv().await.unwrap() {
            Some(envelope::Msg::Response(p)) => assert_eq!((p.id, p.data.len()), (4, COALESCE)),
            other => panic!("{other:?}"),
        }
        w.send(req(6)).await.unwrap();
        w.flush().await.unwrap();
        match r.recv().await.unwrap() {
            Some(envelope::Msg::Request(q)) => assert_eq!(q.id, 6),
            other => panic!("{other:?}"),
        }
    }
}
