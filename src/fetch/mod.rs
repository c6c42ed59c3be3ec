//! The fetching side: from a code to an authenticated session ([`connect`]: candidates from
//! discovery or given addresses, dialled and tried), the session's control stream
//! ([`session`]: offer, manifest, ending), requests over its data streams ([`client`]), a
//! sender that may come and go ([`remote`]: reconnecting with the resumption ticket), and the
//! [`FileSource`] port every reader of a share goes through ([`source`]).

mod client;
pub mod connect;
mod remote;
mod session;
mod source;

pub use client::Client;
pub use remote::{Remote, RemoteEvent};
pub use session::Session;
pub use source::FileSource;

use libp2p::PeerId;

use crate::error::Error;
use crate::net::lazy::Opened;
use crate::net::{Node, STREAM_PROTOCOL_1};

/// How long the probe for protocol 1 waits for the sender's verdict.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Says why a sender refused our protocol: if it still negotiates protocol 1's id, it runs an
/// older pcp (nothing is sent on that stream; the sender drops it when it ends). Streams are
/// negotiated lazily, so the probe closes its side at once (which sends the protocol id) and
/// reads: a refusal fails the read, while a sender that took the stream answers or closes it.
pub(crate) async fn incompatible_sender(node: &Node, peer: PeerId) -> Error {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = Opened::new(
            node.control()
                .open_stream(peer, STREAM_PROTOCOL_1)
                .await
                .ok()?,
        );
        let _ = s.close().await;
        let mut byte = [0u8; 1];
        match s.read(&mut byte).await {
            Err(_) if s.refused() => None,
            _ => Some(1),
        }
    };
    let theirs = tokio::time::timeout(PROBE_WAIT, probe).await.ok().flatten();
    Error::IncompatibleVersion {
        peer: "sender",
        theirs,
        ours: crate::proto::VERSION,
    }
}
