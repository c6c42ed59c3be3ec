//! Finding the other side. A sender is announced under the identifier `/pcp/{slot}/{channel}`
//! (the channel is the code's first word; no secret word is ever published): on the LAN by
//! mDNS ([`mdns`]), on the internet as a provider record in the Kademlia DHT ([`dht`]). Each
//! yields [`Candidate`]s; which one to trust is decided by the handshake, not here.

mod ask;
pub mod dht;
pub mod mdns;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use libp2p::{Multiaddr, PeerId};

use super::{NodeConfig, Role};

pub use dht::{DhtAnnouncer, DhtBrowser};
pub use mdns::{MdnsAnnouncer, MdnsBrowser};

/// Where "now" comes from (injectable, so slot changes can be tested).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system clock shifted by `offset_secs` (0 for the real one): tests start a sender just
/// before a slot boundary with it.
pub fn shifted_clock(offset_secs: i64) -> Clock {
    Arc::new(move || {
        let now = SystemTime::now();
        if offset_secs >= 0 {
            now + Duration::from_secs(offset_secs as u64)
        } else {
            now - Duration::from_secs(offset_secs.unsigned_abs())
        }
    })
}

/// The DHT key of an identifier: the multihash bytes (SHA-256, code 0x12, length 32) of the
/// CIDv1 (raw codec) of `/pcp/{slot}/{channel}`, which is how IPFS keys provider records, so
/// any IPFS DHT implementation can store and find it.
pub fn dht_key(identifier: &str) -> libp2p::kad::RecordKey {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(identifier.as_bytes());
    let mut mh = vec![0x12, 0x20];
    mh.extend_from_slice(&digest);
    libp2p::kad::RecordKey::new(&mh)
}

/// A discovery method a user can choose with `--discovery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Method {
    /// Multicast DNS on the local network.
    Mdns,
    /// The IPFS Kademlia DHT (or the helper nodes given with --bootstrap).
    Dht,
    /// No discovery: only --listen / --peer addresses.
    None,
}

/// A possible sender, with the addresses to dial it on.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Unknown for a bare `--peer` address; learned when the connection is up.
    pub peer: Option<PeerId>,
    pub addrs: Vec<Multiaddr>,
    pub via: &'static str,
}

/// How to find the other side, as the user chose it.
#[derive(Clone)]
pub struct Discovery {
    pub methods: Vec<Method>,
    /// DHT bootstrap peers (the IPFS ones unless replaced).
    pub bootstrap: Vec<Multiaddr>,
    pub clock: Clock,
}

impl Discovery {
    /// Whether `m` is on (`none` turns everything off).
    pub fn uses(&self, m: Method) -> bool {
        self.methods.contains(&m) && !self.methods.contains(&Method::None)
    }

    /// The methods that are on.
    pub fn active(&self) -> Vec<Method> {
        self.methods
            .iter()
            .copied()
            .filter(|m| self.uses(*m))
            .collect()
    }

    /// A node that listens on `listen` and joins the DHT if it is on; a sender also takes
    /// relay reservations.
    pub fn node_config(&self, listen: Vec<Multiaddr>, sender: bool) -> NodeConfig {
        let dht = self.uses(Method::Dht);
        NodeConfig {
            listen,
            role: if dht {
                Role::Peer {
                    reserve_relays: sender,
                }
            } else {
                Role::Local
            },
            bootstrap: if dht { self.bootstrap.clone() } else { vec![] },
            announce: sender,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dht_keys_are_ipfs_multihashes_of_the_identifier() {
        let k = dht_key("/pcp/2/7");
        assert_eq!(&k.as_ref()[..2], &[0x12, 0x20]);
        assert_eq!(k.as_ref().len(), 34);
        assert_ne!(k, dht_key("/pcp/3/7"));
    }

    #[test]
    fn a_shifted_clock_is_shifted() {
        let d = shifted_clock(600)()
            .duration_since(shifted_clock(0)())
            .unwrap_or_default();
        assert!(d >= Duration::from_secs(599), "{d:?}");
    }
}
