//! The hybrid handshake against a real sender over libp2p: a man in the middle who alters
//! the ML-KEM messages, and peers of protocol version 1.
use super::*;
use futures::StreamExt;
use ml_kem::{ml_kem_768, KeyExport};
use pcp::crypto::{self, HandshakeParams};
use pcp::net::{Node, NodeConfig, STREAM_PROTOCOL, STREAM_PROTOCOL_1};
use pcp::proto::{opening, read_frame, write_frame, Hello, Opening, Role};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// An encapsulation key and a ciphertext of the man in the middle's own making.
fn forged_key() -> Vec<u8> {
    let dk = ml_kem_768::DecapsulationKey::from_seed([9u8; 64].into());
    dk.encapsulation_key().to_bytes().to_vec()
}

fn forged_ciphertext(to: &[u8]) -> Vec<u8> {
    let key = ml_kem::Key::<ml_kem_768::EncapsulationKey>::try_from(to).unwrap();
    let ek = ml_kem_768::EncapsulationKey::new(&key).unwrap();
    ek.encapsulate_deterministic(&[9u8; 32].into()).0.to_vec()
}

/// Forwards one plaintext frame, edited; false once either side is gone.
async fn forward<R, W>(from: &mut R, to: &mut W, edit: impl FnOnce(Vec<u8>) -> Vec<u8>) -> bool
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let Ok(Some(f)) = read_frame(from, 1 << 20).await else {
        return false;
    };
    write_frame(to, &edit(f)).await.is_ok() && to.flush().await.is_ok()
}

/// Runs the real receiver handshake (right code) against the real sender through a relay
/// on the libp2p stream that replaces the receiver's encapsulation key (`swap_key`) or the
/// sender's ciphertext, and returns the receiver's result.
async fn through_a_meddler(addr: &libp2p::Multiaddr, code: &Code, swap_key: bool) -> Error {
    let node = Node::start(NodeConfig::default()).await.unwrap();
    let peer = node.dial(addr.clone()).await.unwrap();
    let mut wire = node
        .control()
        .open_stream(peer, STREAM_PROTOCOL)
        .await
        .unwrap()
        .compat();
    let (mut mine, mut relay_end) = tokio::io::duplex(1 << 16);
    let phrase = code.phrase();
    let me = node.peer_id();
    let receiver = async move {
        let params = HandshakeParams::with_code(&phrase, Role::Receiver, peer, me);
        crypto::handshake(&mut mine, params, None).await
    };
    let relay = async move {
        let mut receiver_ek = Vec::new();
        let _ = forward(&mut relay_end, &mut wire, |f| {
            let mut o = Opening::decode(&f[..]).unwrap();
            let Some(opening::Kind::Hello(h)) = o.kind.as_mut() else {
                panic!("not a hello")
            };
            receiver_ek = h.kem.clone();
            if swap_key {
                h.kem = forged_key();
            }
            o.encode_to_vec()
        })
        .await
            && forward(&mut wire, &mut relay_end, |f| {
                let mut h = Hello::decode(&f[..]).unwrap();
                if !swap_key {
                    h.kem = forged_ciphertext(&receiver_ek);
                }
                h.encode_to_vec()
            })
            .await
            && forward(&mut relay_end, &mut wire, |f| f).await
            && forward(&mut wire, &mut relay_end, |f| f).await;
        drop(node);
    };
    let (got, ()) = tokio::join!(receiver, relay);
    got.expect_err("an altered key exchange must not authenticate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_man_in_the_middle_who_alters_ml_kem_counts_as_a_wrong_attempt() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"data").unwrap();
    let code = Code::generate(4);
    let mut sender = start_sender(&[src.path().join("f")], &code).await;
    for (attempt, swap_key) in [(1u32, true), (2, false)] {
        let err = within(10, through_a_meddler(&sender.addr, &code, swap_key)).await;
        assert!(matches!(err, Error::WrongCode), "{err}");
        match within(5, sender.events.recv()).await {
            Some(pcp::share::ShareEvent::WrongCode { attempts }) => {
                assert_eq!(attempts, attempt)
            }
            other => panic!("expected a wrong-code event, got {other:?}"),
        }
    }
    // Untouched, the same code still works.
    let mut session = within(20, connect(&sender.addr, &code)).await.unwrap();
    assert_eq!(session.offer().await.unwrap().files, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_of_protocol_1_is_answered_with_version_2() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"data").unwrap();
    let code = Code::generate(4);
    let sender = start_sender(&[src.path().join("f")], &code).await;
    let node = Node::start(NodeConfig::default()).await.unwrap();
    let peer = node.dial(sender.addr.clone()).await.unwrap();
    let mut io = node
        .control()
        .open_stream(peer, STREAM_PROTOCOL_1)
        .await
        .unwrap()
        .compat();
    // What a protocol-1 receiver sends: its Hello with a 33-byte SPAKE2 message.
    let old = Hello {
        version: 1,
        role: Role::Receiver as i32,
        spake: vec![0x53; 33],
        ..Default::default()
    };
    pcp::proto::write_opening(&mut io, opening::Kind::Hello(old))
        .await
        .unwrap();
    // It reads at most 1024 bytes and checks the version first.
    let reply = within(10, read_frame(&mut io, 1024))
        .await
        .unwrap()
        .unwrap();
    let hello = Hello::decode(&reply[..]).unwrap();
    assert_eq!(hello.version, 2);
    assert_eq!(within(10, read_frame(&mut io, 1024)).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_of_protocol_1_is_named_with_both_versions() {
    // A node that, like a pcp of protocol 1, accepts only "/pcp/1".
    let (old, addr) = loopback_node().await;
    let mut incoming = old.control().accept(STREAM_PROTOCOL_1).unwrap();
    tokio::spawn(async move { while incoming.next().await.is_some() {} });
    let err = within(20, connect(&addr, &Code::generate(4)))
        .await
        .err()
        .expect("no common protocol");
    assert!(
        matches!(
            err,
            Error::IncompatibleVersion {
                theirs: Some(1),
                ours: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the sender runs pcp protocol 1, this pcp speaks protocol 2: both sides need a pcp \
         release with the same protocol"
    );
    // A node with no pcp protocol at all.
    let (_none, addr) = loopback_node().await;
    let err = within(20, connect(&addr, &Code::generate(4)))
        .await
        .err()
        .expect("no pcp at all");
    assert!(
        matches!(err, Error::IncompatibleVersion { theirs: None, .. }),
        "{err}"
    );
    drop(old);
}
