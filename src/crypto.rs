//! The authenticated session: SPAKE2 over the whole code with both peer IDs bound in, explicit
//! key confirmation, HKDF keys per purpose and direction, and the ChaCha20-Poly1305 record layer
//! with counter nonces. The exact byte layout is in `proto/SPEC.md`.

use bytes::Bytes;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use libp2p::PeerId;
use prost::Message;
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::wire::{self, envelope, Confirm, Envelope, Hello, Role, MAX_FRAME, MAX_HANDSHAKE_FRAME};

const TAG: usize = 16;

/// Writes one length-prefixed frame: u32 big-endian length, then the bytes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| Error::FrameTooLarge(payload.len(), 0))?;
    w.write_all(&len.to_be_bytes()).await.map_err(lost)?;
    w.write_all(payload).await.map_err(lost)?;
    Ok(())
}

/// Reads one length-prefixed frame of at most `max` bytes. `Ok(None)` on a clean end of stream
/// at a frame boundary; a stream that ends inside a frame is an error.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await.map_err(lost)?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(Error::ConnectionLost(
                    "stream ended inside a frame header".into(),
                ))
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(Error::FrameTooLarge(len, max));
    }
    // Zeroed once: reading into spare capacity instead goes through the futures-io compat
    // layer, which zeroes the whole unfilled rest at every read (quadratic for a 1 MiB frame).
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(lost)?;
    Ok(Some(buf))
}

fn lost(e: std::io::Error) -> Error {
    Error::ConnectionLost(e.to_string())
}

async fn read_plain<R: AsyncRead + Unpin, M: Message + Default>(r: &mut R) -> Result<M> {
    let buf = read_frame(r, MAX_HANDSHAKE_FRAME).await?.ok_or_else(|| {
        Error::ConnectionLost("peer closed the stream during the handshake".into())
    })?;
    M::decode(&buf[..]).map_err(|e| Error::Protocol(format!("bad handshake message: {e}")))
}

/// Reads the first frame of a stream, which says whether it starts or joins a session.
pub async fn read_opening<R: AsyncRead + Unpin>(r: &mut R) -> Result<wire::opening::Kind> {
    read_plain::<_, wire::Opening>(r)
        .await?
        .kind
        .ok_or_else(|| Error::Protocol("empty opening frame".into()))
}

pub async fn write_opening<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: wire::opening::Kind,
) -> Result<()> {
    let msg = wire::Opening { kind: Some(kind) };
    write_frame(w, &msg.encode_to_vec()).await?;
    w.flush().await.map_err(lost)
}

/// What both sides bind into SPAKE2: the protocol label and both peer IDs in role order, so a
/// key agreed with one peer is useless on a connection with another.
pub fn identity(sender: &PeerId, receiver: &PeerId) -> Vec<u8> {
    let mut id = b"pcp/1 spake2".to_vec();
    for p in [sender.to_bytes(), receiver.to_bytes()] {
        id.extend_from_slice(&(p.len() as u16).to_be_bytes());
        id.extend_from_slice(&p);
    }
    id
}

/// Keys of one authenticated session.
#[derive(Clone)]
pub struct SessionKeys {
    role: Role,
    prk: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SessionKeys({:?}, id {})",
            self.role,
            hex(&self.session_id())
        )
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SessionKeys {
    /// Derives the session from the SPAKE2 key and the handshake transcript hash.
    pub fn derive(role: Role, spake_key: &[u8], transcript: &[u8; 32]) -> SessionKeys {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(transcript), spake_key);
        SessionKeys {
            role,
            prk: prk.into(),
        }
    }

    fn expand(&self, info: &str) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::from_prk(&self.prk).expect("32-byte PRK");
        let mut out = [0u8; 32];
        hk.expand(info.as_bytes(), &mut out).expect("32 bytes fit");
        out
    }

    /// Public name of the session, which extra streams quote to join it.
    pub fn session_id(&self) -> [u8; 16] {
        let k = self.expand("pcp/1 session id");
        k[..16].try_into().expect("16 of 32")
    }

    /// Secret a receiver uses to re-authenticate after a lost connection without the code.
    pub fn resume_secret(&self) -> [u8; 32] {
        self.expand("pcp/1 resume")
    }

    fn confirm_mac(&self, of: Role, transcript: &[u8; 32]) -> Vec<u8> {
        let who = if of == Role::Sender {
            "sender"
        } else {
            "receiver"
        };
        let key = self.expand(&format!("pcp/1 confirm {who}"));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
        mac.update(transcript);
        mac.finalize().into_bytes().to_vec()
    }

    /// The record-layer halves for stream `index` (0 is the control stream).
    pub fn stream(&self, index: u32) -> (Sealer, Opener) {
        let s2r = self.expand(&format!("pcp/1 stream {index} sender->receiver"));
        let r2s = self.expand(&format!("pcp/1 stream {index} receiver->sender"));
        let (send, recv) = match self.role {
            Role::Sender => (s2r, r2s),
            _ => (r2s, s2r),
        };
        (Sealer::new(&send), Opener::new(&recv))
    }

    pub fn role(&self) -> Role {
        self.role
    }
}

fn transcript(identity: &[u8], sender_msg: &[u8], receiver_msg: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [identity, sender_msg, receiver_msg] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Everything a handshake needs besides the stream.
pub struct HandshakeParams<'a> {
    pub password: &'a [u8],
    pub role: Role,
    pub sender: PeerId,
    pub receiver: PeerId,
    /// Fixed SPAKE2 randomness, for the golden handshake test only.
    #[cfg(test)]
    pub seed: Option<[u8; 32]>,
}

impl<'a> HandshakeParams<'a> {
    pub fn with_code(code: &'a str, role: Role, sender: PeerId, receiver: PeerId) -> Self {
        HandshakeParams {
            password: code.as_bytes(),
            role,
            sender,
            receiver,
            #[cfg(test)]
            seed: None,
        }
    }
}

/// Sends our hello and gets the peer's: the receiver opens the stream with it, the sender has
/// already read the receiver's (`peer_hello`) and answers.
async fn exchange_hellos<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    role: Role,
    hello: Hello,
    peer_hello: Option<Hello>,
) -> Result<Hello> {
    let peer = match (role, peer_hello) {
        (Role::Receiver, _) => {
            write_opening(io, wire::opening::Kind::Hello(hello)).await?;
            read_plain::<_, Hello>(io).await?
        }
        (_, Some(peer)) => {
            write_frame(io, &hello.encode_to_vec()).await?;
            io.flush().await.map_err(lost)?;
            peer
        }
        (_, None) => {
            return Err(Error::Protocol(
                "sender handshake without the peer's hello".into(),
            ))
        }
    };
    if peer.version != wire::VERSION {
        return Err(Error::IncompatibleVersion);
    }
    Ok(peer)
}

/// Runs SPAKE2 plus key confirmation. The receiver opens with `Opening{Hello}`; the sender,
/// which has already read that opening, passes the peer's hello in `peer_hello`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    p: HandshakeParams<'_>,
    peer_hello: Option<Hello>,
) -> Result<SessionKeys> {
    let id = identity(&p.sender, &p.receiver);
    let (password, ident) = (Password::new(p.password), Identity::new(&id));
    #[cfg(test)]
    let (spake, my_msg) = match p.seed {
        Some(seed) => {
            use rand::SeedableRng;
            Spake2::<Ed25519Group>::start_symmetric_with_rng(
                &password,
                &ident,
                rand::rngs::StdRng::from_seed(seed),
            )
        }
        None => Spake2::<Ed25519Group>::start_symmetric(&password, &ident),
    };
    #[cfg(not(test))]
    let (spake, my_msg) = Spake2::<Ed25519Group>::start_symmetric(&password, &ident);
    let hello = Hello {
        version: wire::VERSION,
        role: p.role as i32,
        spake: my_msg.clone(),
        resume: vec![],
    };
    let peer = exchange_hellos(io, p.role, hello, peer_hello).await?;
    let want_role = if p.role == Role::Sender {
        Role::Receiver
    } else {
        Role::Sender
    };
    if peer.role != want_role as i32 {
        return Err(Error::Protocol("peer claims the wrong role".into()));
    }
    let key = spake
        .finish(&peer.spake)
        .map_err(|e| Error::Protocol(format!("bad SPAKE2 message: {e:?}")))?;
    let (smsg, rmsg) = if p.role == Role::Sender {
        (&my_msg, &peer.spake)
    } else {
        (&peer.spake, &my_msg)
    };
    let t = transcript(&id, smsg, rmsg);
    let keys = SessionKeys::derive(p.role, &key, &t);
    confirm(io, &keys, &t).await?;
    Ok(keys)
}

/// Explicit key confirmation, receiver first. The sender checks the receiver's MAC before it
/// says anything keyed, so a guesser who hangs up early learns nothing, and every wrong guess is
/// seen and counted; an empty MAC from the sender means "wrong code".
async fn confirm<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    keys: &SessionKeys,
    t: &[u8; 32],
) -> Result<()> {
    let role = keys.role;
    let peer_role = if role == Role::Sender {
        Role::Receiver
    } else {
        Role::Sender
    };
    let mine = keys.confirm_mac(role, t);
    let want = keys.confirm_mac(peer_role, t);
    if role == Role::Receiver {
        write_frame(io, &Confirm { mac: mine }.encode_to_vec()).await?;
        io.flush().await.map_err(lost)?;
        let theirs: Confirm = read_plain(io).await?;
        if !constant_time_eq(&theirs.mac, &want) {
            return Err(Error::WrongCode);
        }
    } else {
        let theirs: Confirm = read_plain(io).await?;
        let ok = constant_time_eq(&theirs.mac, &want);
        let reply = if ok { mine } else { Vec::new() };
        write_frame(io, &Confirm { mac: reply }.encode_to_vec()).await?;
        io.flush().await.map_err(lost)?;
        if !ok {
            // Close our side cleanly so the rejection arrives before the stream goes away.
            let _ = io.shutdown().await;
            return Err(Error::WrongCode);
        }
    }
    Ok(())
}

/// What a receiver keeps to re-authenticate to the same sender after a lost connection without
/// the code: the first session's id and its resumption secret.
#[derive(Clone)]
pub struct ResumeTicket {
    pub session: [u8; 16],
    pub secret: [u8; 32],
}

impl std::fmt::Debug for ResumeTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResumeTicket({})", hex(&self.session))
    }
}

impl SessionKeys {
    pub fn ticket(&self) -> ResumeTicket {
        ResumeTicket {
            session: self.session_id(),
            secret: self.resume_secret(),
        }
    }
}

/// A resumption handshake: fresh nonces in place of SPAKE2 messages, keys derived from the
/// ticket's secret, then the usual confirmation. The receiver opens with `Opening{Hello}` whose
/// `resume` field names the original session; the sender looks the ticket up by that id and
/// passes it (with the peer's hello) in `sender_side`.
pub async fn resume_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    role: Role,
    sender: PeerId,
    receiver: PeerId,
    ticket: &ResumeTicket,
    peer_hello: Option<Hello>,
) -> Result<SessionKeys> {
    let id = {
        let mut id = identity(&sender, &receiver);
        id.extend_from_slice(b" resume");
        id.extend_from_slice(&ticket.session);
        id
    };
    let nonce: [u8; 32] = rand::random();
    let hello = Hello {
        version: wire::VERSION,
        role: role as i32,
        spake: nonce.to_vec(),
        resume: ticket.session.to_vec(),
    };
    let peer = exchange_hellos(io, role, hello, peer_hello).await?;
    if peer.spake.len() != 32 {
        return Err(Error::Protocol("bad resumption nonce".into()));
    }
    let (snonce, rnonce) = if role == Role::Sender {
        (&nonce[..], &peer.spake[..])
    } else {
        (&peer.spake[..], &nonce[..])
    };
    let t = transcript(&id, snonce, rnonce);
    let keys = SessionKeys::derive(role, &ticket.secret, &t);
    confirm(io, &keys, &t).await?;
    Ok(keys)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n.into()
}

/// Encrypts outgoing frames of one stream direction; the counter is the nonce.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl Sealer {
    fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
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
        let tag = self
            .cipher
            .encrypt_in_place_detached(&n, b"", buf)
            .map_err(|_| Error::Decrypt)?;
        Ok(tag.into())
    }
}

/// Decrypts incoming frames of one stream direction; any failure is fatal to the session, so a
/// dropped, replayed or reordered frame cannot go unnoticed.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl Opener {
    fn new(key: &[u8; 32]) -> Opener {
        Opener {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            counter: 0,
        }
    }

    pub fn open(&mut self, mut buf: Vec<u8>) -> Result<Bytes> {
        if buf.len() < TAG {
            return Err(Error::Decrypt);
        }
        let n = nonce(self.counter);
        self.cipher
            .decrypt_in_place(&n, b"", &mut buf)
            .map_err(|_| Error::Decrypt)?;
        self.counter += 1;
        Ok(Bytes::from(buf))
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

    /// Encodes, seals and writes one message as a single write (length prefix included, so
    /// the transport makes one frame of it); call [`flush`](Self::flush) to push it out.
    pub async fn send(&mut self, msg: envelope::Msg) -> Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 4]);
        Envelope { msg: Some(msg) }
            .encode(&mut self.buf)
            .expect("Vec grows as needed");
        let plain = self.buf.len() - 4;
        if plain > MAX_FRAME {
            return Err(Error::FrameTooLarge(plain, MAX_FRAME));
        }
        let tag = self.sealer.seal_detached(&mut self.buf[4..])?;
        self.buf.extend_from_slice(&tag);
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.w.write_all(&self.buf).await.map_err(lost)?;
        if self.buf.capacity() > 4 * MAX_FRAME {
            self.buf = Vec::new();
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.w.flush().await.map_err(lost)
    }

    pub async fn send_now(&mut self, msg: envelope::Msg) -> Result<()> {
        self.send(msg).await?;
        self.flush().await
    }

    pub async fn close(&mut self) {
        let _ = self.w.shutdown().await;
    }
}

/// The receiving half of an encrypted stream.
pub struct SecureReader<R> {
    r: R,
    opener: Opener,
}

impl<R: AsyncRead + Unpin> SecureReader<R> {
    pub fn new(r: R, opener: Opener) -> Self {
        SecureReader { r, opener }
    }

    /// The next message, or `None` when the peer closed the stream cleanly.
    pub async fn recv(&mut self) -> Result<Option<envelope::Msg>> {
        match read_frame(&mut self.r, MAX_FRAME + TAG).await? {
            None => Ok(None),
            Some(buf) => wire::decode_envelope(self.opener.open(buf)?).map(Some),
        }
    }

    /// Like [`recv`](Self::recv), but an end of stream is an error.
    pub async fn expect(&mut self, what: &str) -> Result<envelope::Msg> {
        self.recv()
            .await?
            .ok_or_else(|| Error::ConnectionLost(format!("stream closed while waiting for {what}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> (PeerId, PeerId) {
        (PeerId::random(), PeerId::random())
    }

    async fn run(code_s: &str, code_r: &str) -> (Result<SessionKeys>, Result<SessionKeys>) {
        let (s, r) = peers();
        let (mut a, mut b) = tokio::io::duplex(4096);
        let sender = async move {
            let opening = read_opening(&mut a).await?;
            let wire::opening::Kind::Hello(h) = opening else {
                panic!("not a hello")
            };
            handshake(
                &mut a,
                HandshakeParams::with_code(code_s, Role::Sender, s, r),
                Some(h),
            )
            .await
        };
        let receiver = async move {
            handshake(
                &mut b,
                HandshakeParams::with_code(code_r, Role::Receiver, s, r),
                None,
            )
            .await
        };
        tokio::join!(sender, receiver)
    }

    #[tokio::test]
    async fn same_code_agrees_and_streams_work() {
        let (s, r) = run("a-b-c", "a-b-c").await;
        let (s, r) = (s.unwrap(), r.unwrap());
        assert_eq!(s.session_id(), r.session_id());
        assert_eq!(s.resume_secret(), r.resume_secret());
        let (mut seal, _) = s.stream(1);
        let (_, mut open) = r.stream(1);
        let mut buf = b"hello".to_vec();
        seal.seal(&mut buf).unwrap();
        assert_eq!(&open.open(buf).unwrap()[..], b"hello");
        // Another stream's keys do not open it.
        let mut buf = b"x".to_vec();
        seal.seal(&mut buf).unwrap();
        let (_, mut other) = r.stream(2);
        assert!(other.open(buf).is_err());
    }

    #[tokio::test]
    async fn resumption_needs_the_ticket() {
        let (s, r) = run("a-b-c", "a-b-c").await;
        let (s, r) = (s.unwrap(), r.unwrap());
        let (sp, rp) = (PeerId::random(), PeerId::random());
        for (good, expect_ok) in [(true, true), (false, false)] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let st = s.ticket();
            let mut rt = r.ticket();
            if !good {
                rt.secret[0] ^= 1;
            }
            let sender = async move {
                let wire::opening::Kind::Hello(h) = read_opening(&mut a).await.unwrap() else {
                    panic!()
                };
                assert_eq!(h.resume, st.session.to_vec());
                resume_handshake(&mut a, Role::Sender, sp, rp, &st, Some(h)).await
            };
            let receiver =
                async move { resume_handshake(&mut b, Role::Receiver, sp, rp, &rt, None).await };
            let (x, y) = tokio::join!(sender, receiver);
            assert_eq!(x.is_ok(), expect_ok);
            assert_eq!(y.is_ok(), expect_ok);
            if expect_ok {
                let (x, y) = (x.unwrap(), y.unwrap());
                assert_eq!(x.session_id(), y.session_id());
                assert_ne!(
                    x.session_id(),
                    s.session_id(),
                    "a resumed session has fresh keys"
                );
            } else {
                assert!(matches!(x, Err(Error::WrongCode)));
            }
        }
    }

    #[tokio::test]
    async fn wrong_code_fails_on_both_sides() {
        let (s, r) = run("a-b-c", "a-b-d").await;
        assert!(matches!(s, Err(Error::WrongCode)), "{s:?}");
        assert!(matches!(r, Err(Error::WrongCode)), "{r:?}");
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

    /// Golden bytes of the key schedule: a fixed SPAKE2 key and transcript give these keys.
    #[test]
    fn golden_key_schedule() {
        let k = SessionKeys::derive(Role::Sender, &[7u8; 32], &[9u8; 32]);
        let vectors = include_str!("../proto/vectors.txt");
        let get = |n: &str| {
            vectors
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{n} ")))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(hex(&k.session_id()), get("session_id"));
        assert_eq!(hex(&k.resume_secret()), get("resume_secret"));
        let (mut seal, _) = k.stream(0);
        let mut buf = b"pcp".to_vec();
        seal.seal(&mut buf).unwrap();
        assert_eq!(hex(&buf), get("sealed_stream0_s2r_frame0"));
        let fixed = |b: u8| {
            libp2p::identity::Keypair::ed25519_from_bytes([b; 32])
                .unwrap()
                .public()
                .to_peer_id()
        };
        assert_eq!(hex(&identity(&fixed(1), &fixed(2))), get("identity_1_2"));
    }

    fn vector(name: &str) -> String {
        include_str!("../proto/vectors.txt")
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no vector {name}"))
            .trim()
            .to_string()
    }

    /// The whole handshake with fixed peers and fixed SPAKE2 randomness: pins the SPAKE2
    /// messages (hence the identity binding and password) and the key schedule after it.
    #[tokio::test]
    async fn golden_handshake() {
        let fixed = |b: u8| {
            libp2p::identity::Keypair::ed25519_from_bytes([b; 32])
                .unwrap()
                .public()
                .to_peer_id()
        };
        let (s, r) = (fixed(1), fixed(2));
        let (mut a, mut b) = tokio::io::duplex(4096);
        let sender = async move {
            let wire::opening::Kind::Hello(h) = read_opening(&mut a).await.unwrap() else {
                panic!()
            };
            assert_eq!(hex(&h.spake), vector("spake_receiver_seed2"));
            let mut p = HandshakeParams::with_code("a-b-c", Role::Sender, s, r);
            p.seed = Some([1; 32]);
            handshake(&mut a, p, Some(h)).await.unwrap()
        };
        let receiver = async move {
            let mut p = HandshakeParams::with_code("a-b-c", Role::Receiver, s, r);
            p.seed = Some([2; 32]);
            handshake(&mut b, p, None).await.unwrap()
        };
        let (ks, kr) = tokio::join!(sender, receiver);
        assert_eq!(hex(&ks.session_id()), vector("handshake_session_id"));
        assert_eq!(ks.session_id(), kr.session_id());
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors() {
        let mut data: &[u8] = &[0, 0, 0x10, 0, 1, 2];
        assert!(matches!(
            read_frame(&mut data, 16).await,
            Err(Error::FrameTooLarge(4096, 16))
        ));
        let mut data: &[u8] = &[0, 0, 0, 4, 1, 2];
        assert!(matches!(
            read_frame(&mut data, 16).await,
            Err(Error::ConnectionLost(_))
        ));
        let mut data: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut data, 16).await,
            Err(Error::ConnectionLost(_))
        ));
        let mut data: &[u8] = &[];
        assert!(read_frame(&mut data, 16).await.unwrap().is_none());
    }
}
