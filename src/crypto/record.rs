//! The record layer: ChaCha20-Poly1305 per stream direction with counter nonces, so a dropped,
//! replayed or reordered frame ends the session. One sealed message per frame; frames sent back
//! to back are written together.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use bytes::Bytes;
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::keys::SessionKeys;
use crate::error::{Error, Result};
use crate::pages::{self, PAGE};
use crate::proto::{self as wire, envelope, lost, read_frame_len, Envelope, Response, MAX_FRAME};

/// Bytes of a Poly1305 tag at the end of each sealed frame.
pub const TAG: usize = 16;

/// Bytes kept free before a read's data in the buffer [`SecureWriter::send_data`] seals in
/// place: the frame's length (4) and at most 33 bytes of keys and lengths before the data.
pub const DATA_ROOM: usize = 40;

/// Sealed messages wait in a [`SecureWriter`] until this many bytes (or a flush), so a run of
/// small ones is written at once.
const COALESCE: usize = 32 * 1024;

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// Frames up to this size are sealed and opened by AWS-LC, bigger ones by OpenSSL. The same
/// algorithm (RFC 8439) either way, so the choice is local and changes no byte on the wire.
/// OpenSSL's assembly uses AVX-512 where the CPU has it: 3.4 against AWS-LC's 2.1 GB/s on this
/// project's machines for a 1 MiB answer, but a small message costs it 0.7 µs against 0.18
/// (its context is set up again for every nonce), and the mount's random 4 KiB reads lost 6%
/// with OpenSSL on every frame (`scripts/BENCHMARKS.md`).
pub(crate) const SMALL_FRAME: usize = 64 * 1024;

/// OpenSSL runs ChaCha20 over what it is given, then Poly1305 over the result: given a whole
/// frame (up to 1 MiB) the second pass reads it back from memory. Given pieces that fit the
/// CPU's L2 cache, both passes find them there. The result is the same.
const PIECE: usize = 64 * 1024;

/// One direction's ChaCha20-Poly1305 key in both implementations; each cleanses its copy of
/// the key when dropped.
struct Cipher2 {
    small: LessSafeKey,
    big: CipherCtx,
}

impl Cipher2 {
    fn new(key: &[u8; 32], seal: bool) -> Cipher2 {
        let small =
            LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"));
        let mut big = CipherCtx::new().expect("an OpenSSL cipher context");
        let alg = Some(Cipher::chacha20_poly1305());
        if seal {
            big.encrypt_init(alg, Some(key), None)
        } else {
            big.decrypt_init(alg, Some(key), None)
        }
        .expect("ChaCha20-Poly1305 with a 32-byte key");
        Cipher2 { small, big }
    }

    fn seal(&mut self, n: [u8; 12], buf: &mut [u8]) -> Result<[u8; TAG]> {
        let mut out = [0u8; TAG];
        if buf.len() <= SMALL_FRAME {
            let n = Nonce::assume_unique_for_key(n);
            let tag = self
                .small
                .seal_in_place_separate_tag(n, Aad::empty(), buf)
                .map_err(|_| Error::Decrypt)?;
            out.copy_from_slice(tag.as_ref());
            return Ok(out);
        }
        let ctx = &mut self.big;
        ctx.encrypt_init(None, None, Some(&n))
            .and_then(|_| update_in_pieces(ctx, buf))
            .and_then(|_| ctx.cipher_final(&mut []))
            .and_then(|_| ctx.tag(&mut out))
            .map_err(|_| Error::Decrypt)?;
        Ok(out)
    }

    /// Decrypts `buf` (ciphertext then tag) in place; the plaintext is its first
    /// `buf.len() - TAG` bytes. On a wrong tag it holds garbage and an error is returned.
    fn open(&mut self, n: [u8; 12], buf: &mut [u8]) -> Result<usize> {
        let plain = buf.len().checked_sub(TAG).ok_or(Error::Decrypt)?;
        if plain <= SMALL_FRAME {
            let n = Nonce::assume_unique_for_key(n);
            self.small
                .open_in_place(n, Aad::empty(), buf)
                .map_err(|_| Error::Decrypt)?;
            return Ok(plain);
        }
        let (data, tag) = buf.split_at_mut(plain);
        let ctx = &mut self.big;
        ctx.decrypt_init(None, None, Some(&n))
            .and_then(|_| update_in_pieces(ctx, data))
            .and_then(|_| ctx.set_tag(tag))
            .and_then(|_| ctx.cipher_final(&mut []))
            .map_err(|_| Error::Decrypt)?;
        Ok(plain)
    }
}

fn update_in_pieces(
    ctx: &mut CipherCtx,
    buf: &mut [u8],
) -> std::result::Result<(), openssl::error::ErrorStack> {
    for piece in buf.chunks_mut(PIECE) {
        let len = piece.len();
        ctx.cipher_update_inplace(piece, len)?;
    }
    Ok(())
}

/// Encrypts outgoing frames of one stream direction; the counter is the nonce.
pub struct Sealer {
    cipher: Cipher2,
    counter: u64,
}

impl Sealer {
    pub(crate) fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: Cipher2::new(key, true),
            counter: 0,
        }
    }

    /// Encrypts `buf` in place, appending the tag.
    pub fn seal(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let tag = self.seal_detached(buf)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_detached(&mut self, buf: &mut [u8]) -> Result<[u8; TAG]> {
        let n = nonce(self.counter);
        self.counter = self.counter.checked_add(1).ok_or(Error::Decrypt)?;
        self.cipher.seal(n, buf)
    }
}

/// Decrypts incoming frames of one stream direction; any failure is fatal to the session, so a
/// dropped, replayed or reordered frame cannot go unnoticed.
pub struct Opener {
    cipher: Cipher2,
    counter: u64,
}

impl Opener {
    pub(crate) fn new(key: &[u8; 32]) -> Opener {
        Opener {
            cipher: Cipher2::new(key, false),
            counter: 0,
        }
    }

    pub fn open(&mut self, mut buf: Vec<u8>) -> Result<Bytes> {
        let plain = self.open_in_place(&mut buf)?;
        buf.truncate(plain);
        Ok(Bytes::from(buf))
    }

    /// Decrypts a sealed frame in place; its plaintext is the returned number of first bytes.
    /// On a wrong tag the buffer holds garbage and an error is returned: nothing of it is used.
    pub fn open_in_place(&mut self, buf: &mut [u8]) -> Result<usize> {
        let plain = self.cipher.open(nonce(self.counter), buf)?;
        self.counter += 1;
        Ok(plain)
    }
}

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

    #[test]
    fn replayed_or_reordered_frames_fail() {
        let keys = SessionKeys::derive(Role::Sender, b"k", &[0; 32]);
        let peer = SessionKeys::derive(Role::Receiver, b"k", &[0; 32]);
        let (mut seal, _) = keys.stream(0);
        let (_, mut open) = peer.stream(0);
        let mut f1 = b"one".to_vec();
        let mut f2 = b"two".to_vec();
        seal.seal(&mut f1).unwrap();
        seal.seal(&mut f2).unwrap();
        // Reordered: frame 2 first fails.
        assert!(open.open(f2.clone()).is_err());
        assert_eq!(&open.open(f1.clone()).unwrap()[..], b"one");
        // Replayed: frame 1 again fails.
        assert!(open.open(f1).is_err());
        let mut flipped = f2.clone();
        flipped[0] ^= 1;
        assert!(open.open(flipped).is_err());
    }

    /// Every frame, whichever implementation seals it (AWS-LC up to [`SMALL_FRAME`], OpenSSL
    /// in pieces above), is byte for byte what the other one gives in one call, at every
    /// length around the pieces' and the implementations' edges and the biggest frame; it
    /// opens, and fails to with any bit flipped.
    #[test]
    fn frames_match_the_other_implementation() {
        let key = [0x42u8; 32];
        let aws = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap());
        let openssl = |n: &[u8; 12], plain: &[u8]| {
            let mut c = CipherCtx::new().unwrap();
            c.encrypt_init(Some(Cipher::chacha20_poly1305()), Some(&key), Some(n))
                .unwrap();
            let mut out = vec![0u8; plain.len()];
            c.cipher_update(plain, Some(&mut out)).unwrap();
            c.cipher_final(&mut []).unwrap();
            let mut tag = [0u8; TAG];
            c.tag(&mut tag).unwrap();
            out.extend_from_slice(&tag);
            out
        };
        let (mut seal, mut open) = (Sealer::new(&key), Opener::new(&key));
        let lens = [
            0,
            1,
            15,
            16,
            63,
            64,
            65,
            4096,
            SMALL_FRAME - 1,
            SMALL_FRAME,
            SMALL_FRAME + 1,
            3 * PIECE + 17,
            MAX_FRAME,
        ];
        for (counter, len) in lens.into_iter().enumerate() {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut ours = plain.clone();
            seal.seal(&mut ours).unwrap();
            let n = nonce(counter as u64);
            let theirs = if len <= SMALL_FRAME {
                openssl(&n, &plain)
            } else {
                let mut t = plain.clone();
                let n = Nonce::assume_unique_for_key(n);
                aws.seal_in_place_append_tag(n, Aad::empty(), &mut t)
                    .unwrap();
                t
            };
            assert!(ours == theirs, "length {len}");
            for at in [0, len / 2, len + TAG - 1] {
                let mut flipped = ours.clone();
                flipped[at] ^= 0x10;
                let mut o = Opener {
                    counter: counter as u64,
                    ..Opener::new(&key)
                };
                assert!(
                    o.open(flipped).is_err(),
                    "length {len}, bit flipped at {at}"
                );
            }
            assert_eq!(open.open(ours).unwrap(), plain, "length {len}");
        }
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
