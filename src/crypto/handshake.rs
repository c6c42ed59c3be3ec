//! The handshake: SPAKE2 over the whole code with both peer IDs bound in, then explicit key
//! confirmation (receiver first); or, to resume, fresh nonces and the ticket's secret in place
//! of SPAKE2. The byte layout is in `proto/SPEC.md`. Keys come from `keys`.

use std::future::Future;
use std::time::Duration;

use libp2p::PeerId;
use prost::Message;
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::keys::{constant_time_eq, ResumeTicket, SessionKeys};
use crate::error::{Error, Result};
use crate::proto::{
    self as wire, lost, read_plain, write_frame, write_opening, Confirm, Hello, Role,
};

/// How long a handshake (or a data stream's join) may take before the stream is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a sender waits for a receiver to close after telling it its code was wrong.
const REJECTION_DELIVERY: Duration = Duration::from_secs(2);

/// Reads and drops what the peer still sends (at most a few KiB) until it closes its side.
async fn drain<S: AsyncRead + Unpin>(io: &mut S) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    for _ in 0..8 {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Runs `fut` (a handshake step) within [`HANDSHAKE_TIMEOUT`]; `what` names it in the error.
pub async fn timed<T>(what: &'static str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| Error::Timeout(HANDSHAKE_TIMEOUT, what))?
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
    let role = keys.role();
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
            // Close our side cleanly, then wait (briefly) for the receiver to close its side:
            // it has read the rejection by then, even if the share stops right after.
            let _ = io.shutdown().await;
            let _ = tokio::time::timeout(REJECTION_DELIVERY, drain(io)).await;
            return Err(Error::WrongCode);
        }
    }
    Ok(())
}

/// A resumption handshake: fresh nonces in place of SPAKE2 messages, keys derived from the
/// ticket's secret, then the usual confirmation. The receiver opens with `Opening{Hello}` whose
/// `resume` field names the original session; the sender looks the ticket up by that id and
/// passes it (with the peer's hello) in `peer_hello`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::hex;
    use crate::proto::{read_opening, test_vector as vector};

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
}
