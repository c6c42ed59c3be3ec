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
        mdns: bool,
    ) -> DhtAnnouncer {
        let task = tokio::spawn(async move {
            // Said once: whether a peer ever stored the record (or none could be reached).
            let mut said: Option<bool> = None;
            loop {
                let slot = slot_of(clock());
                let key = dht_key(&identifier(slot, channel));
                // Publishing can fail while the node is still joining: retry a few times. It
                // counts only when a DHT peer stored the record.
                let mut stored = 0;
                for attempt in 0..5u64 {
                    match node.provide(key.clone()).await {
                        Ok(n) if n > 0 => {
                            stored = n;
                            break;
                        }
                        Ok(_) => tracing::debug!("no DHT peer stored the record"),
                        Err(e) => tracing::debug!("DHT publication failed: {e}"),
                    }
                    tokio::time::sleep(Duration::from_secs(1 + attempt)).await;
                }
                let line = if stored > 0 {
                    (said != Some(true)).then(|| {
                        format!("Published on the DHT ({stored} peers stored the record).")
                    })
                } else {
                    said.is_none().then(|| {
                        let instead = if mdns {
                            " (receivers on this network still find the share by mDNS)"
                        } else {
                            ""
                        };
                        format!("Not published on the DHT: no DHT peer could be reached{instead}.")
                    })
                };
                if let Some(line) = line {
                    let _ = status.send(line).await;
                }
                if stored > 0 || said.is_none() {
                    said = Some(stored > 0);
                }
                // The previous slot's record is left to expire: receivers look at it for one
                // more slot.
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
            let mut last_said = 0;
            let mut said_unreachable = false;
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
                loop {
                    tokio::select! {
                        u = rx.recv() => match u {
                            Some((i, DhtUpdate::Asked(n))) => {
                                asked[i as usize] = asked[i as usize].max(n);
                                // Counts of peers that answered, said when they grew by 10
                                // (lookups repeat every few seconds; the same count is not
                                // said again).
                                let total = asked[0] + asked[1];
                                if total >= last_said + 10 {
                                    last_said = total;
                                    let _ = status.try_send(format!("{total} DHT peers answered; no sender there yet..."));
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
                if asked == [0, 0] && !joined && !said_unreachable {
                    said_unreachable = true;
                    let _ = status.try_send(
                        "No DHT peer answered (the DHT is out of reach from here); still looking."
                            .to_string(),
                    );
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
