//! The resumption handshake (`resume_handshake`): arbitrary bytes as the peer's side of the
//! stream, over a tokio duplex, for both roles. As the receiver the input is what the sender
//! says (its Hello and Confirm); as the sender it is what the receiver says (its opening, read
//! as the real sender does, and its Confirm). Must never panic or hang: the input ends, and
//! then the stream does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pcp::crypto::{resume_handshake, ResumeTicket};
use pcp::proto::{self as wire, Role};
use tokio::io::{AsyncWriteExt, DuplexStream};

/// A fixed peer id (identity multihash of an Ed25519 public key of `b` bytes).
fn peer(b: u8) -> libp2p::PeerId {
    let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    bytes.extend_from_slice(&[b; 32]);
    libp2p::PeerId::from_bytes(&bytes).unwrap()
}

/// Our end of a stream whose other end says `data` and then closes its side. The buffer holds
/// all of it and everything we write, so no write waits for a reader.
async fn peer_says(data: &[u8]) -> (DuplexStream, DuplexStream) {
    let (ours, mut theirs) = tokio::io::duplex(1 << 17);
    theirs.write_all(data).await.unwrap();
    theirs.shutdown().await.unwrap();
    (ours, theirs)
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 1 << 16 {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let (s, r) = (peer(1), peer(2));
        let ticket = ResumeTicket {
            session: [5; 16],
            secret: [6; 32],
        };
        // As the receiver.
        let (mut io, _theirs) = peer_says(data).await;
        let _ = resume_handshake(&mut io, Role::Receiver, s, r, &ticket, None).await;
        // As the sender (which looks the ticket up by `resume` before this; here any id goes).
        let (mut io, _theirs) = peer_says(data).await;
        if let Ok(wire::opening::Kind::Hello(h)) = wire::read_opening(&mut io).await {
            let _ = resume_handshake(&mut io, Role::Sender, s, r, &ticket, Some(h)).await;
        }
    });
});
