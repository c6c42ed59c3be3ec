//! Finding the sender: on the LAN by mDNS (a `_pcp._udp` service whose TXT record carries the
//! identifier `/pcp/{slot}/{channel}`), with the DHT to come. Only the channel number is ever
//! published, never a secret word. The clock is injectable so slot changes can be tested.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;

use crate::code::{identifier, slot_of, until_next_slot};
use crate::error::{Error, Result};

const SERVICE: &str = "_pcp._udp.local.";

/// Where "now" comes from.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system clock, shifted by `PCP_CLOCK_OFFSET_SECS` (signed seconds) when set: tests use
/// it to start a sender just before a slot boundary.
pub fn system_clock() -> Clock {
    let offset: i64 = std::env::var("PCP_CLOCK_OFFSET_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Arc::new(move || {
        let now = SystemTime::now();
        if offset >= 0 {
            now + Duration::from_secs(offset as u64)
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
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

/// Publishes the sender under the current slot's key on the DHT, and under each new slot's key
/// as slots pass, until dropped.
pub struct DhtAnnouncer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DhtAnnouncer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DhtAnnouncer {
    pub fn start(
        node: crate::net::Node,
        channel: u16,
        clock: Clock,
        status: mpsc::Sender<String>,
    ) -> DhtAnnouncer {
        let task = tokio::spawn(async move {
            let mut previous: Option<libp2p::kad::RecordKey> = None;
            loop {
                let slot = slot_of(clock());
                let key = dht_key(&identifier(slot, channel));
                // Publishing can fail while the node is still joining: retry a few times.
                for attempt in 0..5u64 {
                    match node.provide(key.clone()).await {
                        Ok(()) => {
                            let _ = status.send("Published on the DHT.".to_string()).await;
                            break;
                        }
                        Err(e) => {
                            tracing::debug!("DHT publication failed: {e}");
                            tokio::time::sleep(Duration::from_secs(1 + attempt)).await;
                        }
                    }
                }
                // The previous slot's record stays: receivers look at it for one more slot.
                if let Some(old) = previous.replace(key) {
                    let _ = old;
                }
                tokio::time::sleep(until_next_slot(clock()) + Duration::from_millis(50)).await;
            }
        });
        DhtAnnouncer { task }
    }
}

/// Looks for providers of `channel` in the current and the previous slot on the DHT, feeding
/// candidates and status lines, until dropped.
pub struct DhtBrowser {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DhtBrowser {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DhtBrowser {
    pub fn start(
        node: crate::net::Node,
        channel: u16,
        clock: Clock,
        out: mpsc::Sender<Candidate>,
        status: mpsc::Sender<String>,
    ) -> DhtBrowser {
        use crate::net::{DhtUpdate, NetEvent};
        let task = tokio::spawn(async move {
            let mut events = node.subscribe();
            let mut seen = HashSet::new();
            let mut joined = false;
            loop {
                let slot = slot_of(clock());
                let (tx, mut rx) = mpsc::channel::<(u8, DhtUpdate)>(64);
                for (i, s) in [slot, slot.saturating_sub(1)].into_iter().enumerate() {
                    let Ok(mut updates) =
                        node.get_providers(dht_key(&identifier(s, channel))).await
                    else {
                        return;
                    };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        while let Some(u) = updates.recv().await {
                            if tx.send((i as u8, u)).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                drop(tx);
                let mut asked = [0u32; 2];
                let mut last_said = 0;
                loop {
                    tokio::select! {
                        u = rx.recv() => match u {
                            Some((i, DhtUpdate::Asked(n))) => {
                                asked[i as usize] = asked[i as usize].max(n);
                                let total = asked[0] + asked[1];
                                if total >= last_said + 10 {
                                    last_said = total;
                                    let _ = status.try_send(format!("Asked {total} DHT peers..."));
                                }
                            }
                            Some((_, DhtUpdate::Providers(peers))) => {
                                for peer in peers {
                                    if seen.insert(peer) {
                                        let _ = status.try_send("Found a sender on the DHT, connecting...".to_string());
                                        // Kademlia knows the addresses the record came with.
                                        let addr = Multiaddr::empty().with(Protocol::P2p(peer));
                                        let c = Candidate { peer: Some(peer), addrs: vec![addr], via: "the internet (DHT)" };
                                        if out.send(c).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                            Some((_, DhtUpdate::Finished)) => {}
                            None => break,
                        },
                        ev = events.recv() => {
                            if let Ok(NetEvent::DhtPeers(n)) = ev {
                                if !joined && n > 0 {
                                    joined = true;
                                    let _ = status.try_send(format!("Joined the DHT ({n} peers)."));
                                }
                            }
                        }
                    }
                }
                // Nothing (more) found: ask again shortly; the sender may publish late.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        DhtBrowser { task }
    }
}

/// A discovery method a user can choose with `--discovery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Method {
    /// Multicast DNS on the local network.
    Mdns,
    /// The IPFS Kademlia DHT (not available yet in this release).
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

fn mdns_err(e: mdns_sd::Error) -> Error {
    Error::Network(format!("mDNS: {e}"))
}

/// Announces a sender on the LAN until dropped, moving to each new slot as it begins.
pub struct MdnsAnnouncer {
    task: tokio::task::JoinHandle<()>,
    daemon: ServiceDaemon,
}

impl Drop for MdnsAnnouncer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.daemon.shutdown();
    }
}

fn port_of(addrs: &[Multiaddr], quic: bool) -> Option<u16> {
    addrs.iter().find_map(|a| {
        let mut port = None;
        let mut is_quic = false;
        for p in a.iter() {
            match p {
                Protocol::Tcp(p) if !quic => port = Some(p),
                Protocol::Udp(p) if quic => port = Some(p),
                Protocol::QuicV1 => is_quic = true,
                _ => {}
            }
        }
        if quic != is_quic {
            return None;
        }
        port.filter(|p| *p != 0)
    })
}

impl MdnsAnnouncer {
    pub fn start(
        peer: PeerId,
        listen: &[Multiaddr],
        channel: u16,
        clock: Clock,
    ) -> Result<MdnsAnnouncer> {
        let daemon = ServiceDaemon::new().map_err(mdns_err)?;
        // Notice interfaces that come up after we start (a laptop joining Wi-Fi) within a second.
        let _ = daemon.set_ip_check_interval(1);
        let tcp = port_of(listen, false);
        let quic = port_of(listen, true);
        let Some(main_port) = tcp.or(quic) else {
            return Err(Error::Network(
                "mDNS needs a TCP or QUIC listen address".into(),
            ));
        };
        let d = daemon.clone();
        // Lower case: mdns-sd lower-cases names internally and would miss re-announcements.
        let short: String = peer
            .to_base58()
            .chars()
            .rev()
            .take(10)
            .collect::<String>()
            .to_lowercase();
        let task = tokio::spawn(async move {
            let mut registered: Option<String> = None;
            loop {
                let now = clock();
                let slot = slot_of(now);
                let id = identifier(slot, channel);
                let mut props = vec![("id", id.clone()), ("peer", peer.to_base58())];
                if let Some(t) = tcp {
                    props.push(("tcp", t.to_string()));
                }
                if let Some(q) = quic {
                    props.push(("quic", q.to_string()));
                }
                let instance = format!("pcp-{slot}-{channel}-{short}");
                let host = format!("pcp-{short}.local.");
                match ServiceInfo::new(SERVICE, &instance, &host, "", main_port, &props[..]) {
                    Ok(info) => {
                        let info = info.enable_addr_auto();
                        let fullname = info.get_fullname().to_string();
                        if let Some(old) = registered.take() {
                            let _ = d.unregister(&old);
                        }
                        match d.register(info) {
                            Ok(()) => {
                                tracing::debug!(%id, "announced on mDNS");
                                registered = Some(fullname);
                            }
                            Err(e) => tracing::warn!("mDNS announcement failed: {e}"),
                        }
                    }
                    Err(e) => tracing::warn!("mDNS announcement failed: {e}"),
                }
                tokio::time::sleep(until_next_slot(clock()) + Duration::from_millis(50)).await;
            }
        });
        Ok(MdnsAnnouncer { task, daemon })
    }
}

/// Looks for senders on `channel` in the current and the previous slot; candidates arrive on
/// the returned channel until the browser is dropped.
pub struct MdnsBrowser {
    daemon: ServiceDaemon,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MdnsBrowser {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.daemon.shutdown();
    }
}

impl MdnsBrowser {
    pub fn start(channel: u16, clock: Clock, out: mpsc::Sender<Candidate>) -> Result<MdnsBrowser> {
        let daemon = ServiceDaemon::new().map_err(mdns_err)?;
        // Notice interfaces that come up after we start (a laptop joining Wi-Fi) within a second.
        let _ = daemon.set_ip_check_interval(1);
        let events = daemon.browse(SERVICE).map_err(mdns_err)?;
        let task = tokio::spawn(async move {
            let mut seen = HashSet::new();
            while let Ok(ev) = events.recv_async().await {
                let ServiceEvent::ServiceResolved(info) = ev else {
                    continue;
                };
                let slot = slot_of(clock());
                let wanted = [
                    identifier(slot, channel),
                    identifier(slot.saturating_sub(1), channel),
                ];
                let Some(id) = info.get_property_val_str("id") else {
                    continue;
                };
                if !wanted.iter().any(|w| w == id) {
                    continue;
                }
                let Some(peer) = info
                    .get_property_val_str("peer")
                    .and_then(|p| p.parse::<PeerId>().ok())
                else {
                    continue;
                };
                let tcp = info
                    .get_property_val_str("tcp")
                    .and_then(|p| p.parse::<u16>().ok());
                let quic = info
                    .get_property_val_str("quic")
                    .and_then(|p| p.parse::<u16>().ok());
                let mut addrs = Vec::new();
                for ip in info.get_addresses().iter().map(|a| a.to_ip_addr()) {
                    let base = match ip {
                        IpAddr::V4(v4) => Multiaddr::empty().with(Protocol::Ip4(v4)),
                        IpAddr::V6(v6) => Multiaddr::empty().with(Protocol::Ip6(v6)),
                    };
                    if let Some(t) = tcp {
                        addrs.push(
                            base.clone()
                                .with(Protocol::Tcp(t))
                                .with(Protocol::P2p(peer)),
                        );
                    }
                    if let Some(q) = quic {
                        addrs.push(
                            base.with(Protocol::Udp(q))
                                .with(Protocol::QuicV1)
                                .with(Protocol::P2p(peer)),
                        );
                    }
                }
                // TCP first (faster here), IPv4 before IPv6.
                addrs.sort_by_key(|a| {
                    let quic = a.iter().any(|p| matches!(p, Protocol::QuicV1));
                    let v6 = a.iter().any(|p| matches!(p, Protocol::Ip6(_)));
                    (quic, v6)
                });
                if addrs.is_empty() || !seen.insert((peer, addrs.clone())) {
                    continue;
                }
                tracing::debug!(%peer, ?addrs, "found a sender by mDNS");
                if out
                    .send(Candidate {
                        peer: Some(peer),
                        addrs,
                        via: "the local network (mDNS)",
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(MdnsBrowser { daemon, task })
    }
}
