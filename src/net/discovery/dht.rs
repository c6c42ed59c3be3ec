//! Discovery through the Kademlia DHT: the sender publishes a provider record under the key of
//! each slot's identifier; the receiver looks for providers of the current and previous slot.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::sync::mpsc;

use super::{dht_key, Candidate, Clock};
use crate::code::{identifier, slot_of, until_next_slot};
use crate::net::{DhtUpdate, NetEvent, Node};
use crate::task::AbortOnDrop;

/// Publishes the sender under the current slot's key on the DHT, and under each new slot's key
/// as slots pass, until dropped.
pub struct DhtAnnouncer {
    _task: AbortOnDrop<()>,
}

impl DhtAnnouncer {
    pub fn start(
        node: Node,
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
        DhtAnnouncer {
            _task: AbortOnDrop(task),
        }
    }
}

/// Looks for providers of `channel` in the current and the previous slot on the DHT, feeding
/// candidates and status lines, until dropped.
pub struct DhtBrowser {
    _task: AbortOnDrop<()>,
}

impl DhtBrowser {
    pub fn start(
        node: Node,
        channel: u16,
        clock: Clock,
        out: mpsc::Sender<Candidate>,
        status: mpsc::Sender<String>,
    ) -> DhtBrowser {
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
        DhtBrowser {
            _task: AbortOnDrop(task),
        }
    }
}
