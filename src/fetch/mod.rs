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
pub use source::{FileSource, SeekAnswer};

use libp2p::PeerId;

use crate::error::Error;
use crate::net::{Node, STREAM_PROTOCOL_1};

/// Says why a sender refused our protocol: if it still negotiates protocol 1's id, it runs an
/// older pcp (nothing is sent on that stream; the sender drops it when it ends).
pub(crate) async fn incompatible_sender(node: &Node, peer: PeerId) -> Error {
    let theirs = match node.control().open_stream(peer, STREAM_PROTOCOL_1).await {
        Ok(_) => Some(1),
        Err(_) => None,
    };
    Error::IncompatibleVersion {
        peer: "sender",
        theirs,
        ours: crate::proto::VERSION,
    }
}
