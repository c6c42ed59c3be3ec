//! The libp2p layer: one task owns the `Swarm` ([`event_loop`]); everyone else holds a cloneable
//! [`Node`] and talks to that task through a bounded command channel with oneshot replies (the
//! shape of rust-libp2p's file-sharing example). Streams are opened and accepted through
//! `libp2p_stream::Control`, which needs no round trip through the swarm task. Finding the other
//! side (mDNS, the DHT) is in [`discovery`]. Knows nothing of sessions or files.

mod coalesce;
pub mod discovery;
mod event_loop;
pub mod identity;
mod lazy;
mod node;
mod tcp;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};

pub use node::Node;

/// The libp2p protocol of pcp's streams.
pub const STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new(crate::proto::PROTOCOL);
/// Protocol version 1's id, no longer spoken: only probed for, and refused (see
/// [`crate::proto::PROTOCOL_1`]).
pub const STREAM_PROTOCOL_1: StreamProtocol = StreamProtocol::new(crate::proto::PROTOCOL_1);

/// The default IPFS bootstrap peers (replaced by `--bootstrap` / `PCP_BOOTSTRAP`).
pub const IPFS_BOOTSTRAP: &[&str] = &[
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA5gU1ZJYmjqvnijN",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

/// What part the node plays on the internet side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// A LAN-only or directly dialled peer: no DHT, no relays.
    #[default]
    Local,
    /// A sender or receiver using the DHT: a Kademlia client that takes relay reservations
    /// (senders) and hole-punches.
    Peer { reserve_relays: bool },
    /// `pcp node`: a DHT server, circuit relay and AutoNAT server.
    Helper,
}

/// Settings for a node.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// Addresses to listen on; empty means none (a receiver that only dials).
    pub listen: Vec<Multiaddr>,
    pub role: Role,
    /// DHT bootstrap peers, for the `Peer` and `Helper` roles. An address without `/p2p/` is
    /// dialled as it is and its peer learnt from the connection.
    pub bootstrap: Vec<Multiaddr>,
    /// Its addresses are announced as soon as the node starts (a sender's mDNS record, `pcp
    /// node`'s printout): a wildcard listener's addresses on every interface are awaited first.
    /// A receiver does not wait (the ones that come later are still used).
    pub announce: bool,
}

/// Progress of a DHT lookup, for the user.
#[derive(Debug, Clone)]
pub enum DhtUpdate {
    /// Providers found (more may follow).
    Providers(Vec<PeerId>),
    /// How many peers have answered the lookup so far.
    Asked(u32),
    /// The lookup ended.
    Finished,
}

/// Things the node noticed, for the UI.
#[derive(Debug, Clone)]
pub enum NetEvent {
    /// Peers in the DHT routing table.
    DhtPeers(usize),
    /// A relay accepted our reservation; we are reachable through it.
    RelayReserved(Multiaddr),
    /// AutoNAT result for one of our addresses.
    Reachability { addr: Multiaddr, reachable: bool },
    /// A relayed connection was upgraded to a direct one.
    HolePunched(PeerId),
}

/// How a connection to a peer runs, for the user.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub remote: Multiaddr,
    pub relayed: bool,
    /// The last round trip libp2p's ping measured on it (the first right after it opened).
    pub rtt: Option<std::time::Duration>,
}

impl ConnectionInfo {
    pub fn transport(&self) -> &'static str {
        if self.remote.iter().any(|p| matches!(p, Protocol::QuicV1)) {
            "QUIC"
        } else {
            "TCP"
        }
    }

    /// The transport's own key exchange: on QUIC TLS 1.3 (libp2p-tls with rustls on aws-lc-rs,
    /// which offers the hybrid X25519MLKEM768 first, so two pcp peers agree on it); on TCP what
    /// the connection negotiated (`tcp.rs`: TLS 1.3 with AES-GCM first and X25519MLKEM768, or
    /// Noise XX with X25519 from a Noise-only peer); on relayed connections Noise XX with X25519
    /// (not post-quantum; pcp's own session keys add ML-KEM-768 on every transport).
    pub fn key_exchange(&self) -> String {
        if self.relayed {
            "Noise XX with X25519".into()
        } else if self.transport() == "QUIC" {
            "TLS 1.3 with X25519MLKEM768".into()
        } else {
            tcp::negotiated(&self.remote).unwrap_or_else(|| "TLS 1.3 or Noise".into())
        }
    }
}

/// The peer id a multiaddr ends with (`/p2p/ID`), if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}
