//! Discovery on the LAN by mDNS: a `_pcp._udp` service whose TXT record carries the
//! identifier, the sender's peer id and its TCP and QUIC ports.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;

use super::ask::{self, Asker};
use super::{Candidate, Clock};
use crate::code::{identifier, slot_of, until_next_slot};
use crate::error::{Error, Result};
use crate::task::AbortOnDrop;

const SERVICE: &str = "_pcp._udp.local.";

fn mdns_err(e: mdns_sd::Error) -> Error {
    Error::Network(format!("mDNS: {e}"))
}

/// Announces a sender on the LAN until dropped, moving to each new slot as it begins.
pub struct MdnsAnnouncer {
    _running: Running,
}

/// An mDNS daemon and the task that drives it; both stop when this is dropped.
struct Running {
    daemon: ServiceDaemon,
    _task: AbortOnDrop<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

/// A daemon that notices interfaces coming up after we start (a laptop joining Wi-Fi) within a
/// second.
fn daemon() -> Result<ServiceDaemon> {
    let daemon = ServiceDaemon::new().map_err(mdns_err)?;
    let _ = daemon.set_ip_check_interval(1);
    Ok(daemon)
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
        let daemon = daemon()?;
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
                        let mut info = info.enable_addr_auto();
                        // No probing (RFC 6762 §8.1): the instance name carries the slot and
                        // the peer id, so no other responder can hold it, and probing would
                        // hold the first announcement back by ~750 ms.
                        info.set_requires_probe(false);
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
        Ok(MdnsAnnouncer {
            _running: Running {
                daemon,
                _task: AbortOnDrop(task),
            },
        })
    }
}

/// Whether `ip` is an IPv6 link-local address (fe80::/10), unusable without its interface.
fn is_unscoped_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Looks for senders on `channel` in the current and the previous slot; candidates arrive on
/// the returned channel until the browser is dropped.
pub struct MdnsBrowser {
    _running: Running,
}

/// The candidate an announcement describes, if it is a sender on `channel` in the current or
/// the previous slot. `prop` reads its TXT properties; `ips` are its addresses.
fn candidate(
    prop: &dyn Fn(&str) -> Option<String>,
    ips: impl IntoIterator<Item = IpAddr>,
    channel: u16,
    clock: &Clock,
) -> Option<Candidate> {
    let slot = slot_of(clock());
    let wanted = [
        identifier(slot, channel),
        identifier(slot.saturating_sub(1), channel),
    ];
    let id = prop("id")?;
    if !wanted.contains(&id) {
        return None;
    }
    let peer = prop("peer")?.parse::<PeerId>().ok()?;
    let tcp = prop("tcp").and_then(|p| p.parse::<u16>().ok());
    let quic = prop("quic").and_then(|p| p.parse::<u16>().ok());
    let mut addrs = Vec::new();
    for ip in ips {
        // A link-local IPv6 address needs its interface (scope), which a multiaddr cannot
        // carry: TCP refuses it at once and QUIC waits for its handshake timeout (5 s),
        // holding up the one guess this peer gets.
        if is_unscoped_link_local(&ip) {
            continue;
        }
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
    addrs.dedup();
    (!addrs.is_empty()).then_some(Candidate {
        peer: Some(peer),
        addrs,
        via: "the local network (mDNS)",
    })
}

/// The next answers to our one-shot queries, or never if there is no socket for them.
async fn answers(asker: &Option<Asker>) -> std::io::Result<Vec<ask::Answer>> {
    match asker {
        Some(a) => a.answer().await,
        None => std::future::pending().await,
    }
}

impl MdnsBrowser {
    pub fn start(channel: u16, clock: Clock, out: mpsc::Sender<Candidate>) -> Result<MdnsBrowser> {
        let daemon = daemon()?;
        let events = daemon.browse(SERVICE).map_err(mdns_err)?;
        let task = tokio::spawn(async move {
            let mut seen = HashSet::new();
            // One-shot queries beside the browser's (ask.rs): answered at once, even right
            // after the sender announced. Without a socket for them the browser still works.
            let mut asker = Asker::new().await.ok();
            let begun = tokio::time::Instant::now();
            let mut next_ask = 0;
            loop {
                let ask_at = ask::SCHEDULE_MS
                    .get(next_ask)
                    .map(|ms| begun + Duration::from_millis(*ms));
                let found: Vec<Candidate> = tokio::select! {
                    ev = events.recv_async() => {
                        let Ok(ev) = ev else { break };
                        let ServiceEvent::ServiceResolved(info) = ev else {
                            continue;
                        };
                        let prop = |k: &str| info.get_property_val_str(k).map(str::to_string);
                        let ips = info.get_addresses().iter().map(|a| a.to_ip_addr()).collect::<Vec<_>>();
                        candidate(&prop, ips, channel, &clock).into_iter().collect()
                    }
                    _ = tokio::time::sleep_until(ask_at.unwrap_or(begun)), if ask_at.is_some() && asker.is_some() => {
                        if let Some(a) = &asker {
                            let n = a.ask(SERVICE).await;
                            tracing::debug!(interfaces = n, "one-shot mDNS query sent");
                        }
                        next_ask += 1;
                        continue;
                    }
                    got = answers(&asker) => match got {
                        Ok(got) => got
                            .into_iter()
                            .filter_map(|a| {
                                let prop = |k: &str| a.props.get(k).cloned();
                                candidate(&prop, [a.from], channel, &clock)
                            })
                            .collect(),
                        Err(e) => {
                            tracing::debug!("one-shot mDNS queries stop: {e}");
                            asker = None;
                            continue;
                        }
                    },
                };
                for c in found {
                    let Some(peer) = c.peer else { continue };
                    if !seen.insert((peer, c.addrs.clone())) {
                        continue;
                    }
                    tracing::debug!(%peer, addrs = ?c.addrs, "found a sender by mDNS");
                    if out.send(c).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(MdnsBrowser {
            _running: Running {
                daemon,
                _task: AbortOnDrop(task),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_ipv6_is_skipped_and_others_are_kept() {
        let ll: IpAddr = "fe80::98d1:65ff:fe60:d51".parse().unwrap();
        assert!(is_unscoped_link_local(&ll));
        for ok in ["10.66.0.1", "fd00::1", "2001:db8::1", "febf::1"] {
            let ip: IpAddr = ok.parse().unwrap();
            assert_eq!(is_unscoped_link_local(&ip), ok == "febf::1", "{ok}");
        }
    }
}
