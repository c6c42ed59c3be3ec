//! The plaintext handshake messages: the opening frame, Hello (with its ML-KEM field) and
//! Confirm; then both sides of the first handshake against a fuzzed Hello: the sender answering
//! a receiver's Opening (ML-KEM encapsulation to whatever key it carries) and the receiver
//! reading a sender's Hello (decapsulation of whatever ciphertext it carries). Must never
//! panic or hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pcp::crypto::{handshake, HandshakeParams};
use pcp::proto::{self as wire, Role};
use prost::Message;
use tokio::io::AsyncWriteExt;

/// A fixed peer id (identity multihash of an Ed25519 public key of `b` bytes).
fn peer(b: u8) -> libp2p::PeerId {
    let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    bytes.extend_from_slice(&[b; 32]);
    libp2p::PeerId::from_bytes(&bytes).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let opening = wire::Opening::decode(data);
    let hello = wire::Hello::decode(data);
    let _ = wire::Confirm::decode(data);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let (s, r) = (peer(1), peer(2));
        // The sender, given the receiver's Hello; the receiver then hangs up.
        if let Ok(wire::Opening {
            kind: Some(wire::opening::Kind::Hello(h)),
        }) = opening
        {
            let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
            let _ = theirs.shutdown().await;
            let p = HandshakeParams::with_code("a-b-c", Role::Sender, s, r);
            let _ = handshake(&mut ours, p, Some(h)).await;
        }
        // The receiver, given this as the sender's Hello frame; the sender then hangs up.
        if hello.is_ok() {
            let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
            let _ = wire::write_frame(&mut theirs, data).await;
            let _ = theirs.shutdown().await;
            let p = HandshakeParams::with_code("a-b-c", Role::Receiver, s, r);
            let _ = handshake(&mut ours, p, None).await;
        }
    });
});
