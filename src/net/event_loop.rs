//! The task that owns the `Swarm`: it runs commands from [`Node`](super::Node) handles and
//! turns swarm events into replies, DHT progress and [`NetEvent`]s. Pending dials and queries
//! wait in maps keyed by their id until the swarm answers them.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{identify, kad, ping, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::node::{advertise, Behaviour, BehaviourEvent, Command};
use super::{peer_of, ConnectionInfo, DhtUpdate, NetEvent, Role};
use crate::error::{Error, Result};

const HOP: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");
/// Relays a sender reserves a slot on.
const MAX_RESERVATIONS: usize = 2;

pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    cmds: mpsc::Receiver<Command>,
    events: broadcast::Sender<NetEvent>,
    role: Role,
    /// Our listen addresses (one per interface for a wildcard listener).
    listening: Vec<Multiaddr>,
    dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId>>>,
    conns: HashMap<PeerId, Vec<(ConnectionId, ConnectionInfo)>>,
    provides: HashMap<kad::QueryId, oneshot::Sender<Result<u32>>>,
    lookups: HashMap<kad::QueryId, mpsc::Sender<DhtUpdate>>,
    /// Relays we asked for a reservation.
    reserved: HashSet<PeerId>,
    /// Dials to bootstrap addresses given without `/p2p/` (at most one per address given):
    /// whoever answers joins Kademlia with that address.
    bare_bootstrap: HashMap<ConnectionId, Multiaddr>,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        cmds: mpsc::Receiver<Command>,
        events: broadcast::Sender<NetEvent>,
        role: Role,
        listening: Vec<Multiaddr>,
        bare_bootstrap: HashMap<ConnectionId, Multiaddr>,
    ) -> EventLoop {
        EventLoop {
            swarm,
            cmds,
            events,
            role,
            listening,
            dials: HashMap::new(),
            conns: HashMap::new(),
            provides: HashMap::new(),
            lookups: HashMap::new(),
            reserved: HashSet::new(),
            bare_bootstrap,
        }
    }

    /// Runs until every [`Node`](super::Node) handle is gone.
    pub(super) async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    None => break,
                    Some(cmd) => self.handle_command(cmd),
                },
                ev = self.swarm.select_next_some() => self.handle_event(ev),
            }
        }
    }

    fn kad(&mut self) -> Option<&mut kad::Behaviour<kad::store::MemoryStore>> {
        self.swarm.behaviour_mut().kad.as_mut()
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs());
            }
            Command::Connection { peer, reply } => {
                let info = self.conns.get(&peer).and_then(|v| {
                    let mut info = v
                        .iter()
                        .find(|(_, c)| !c.relayed)
                        .or(v.first())
                        .map(|(_, c)| c.clone())?;
                    // A connection that has not been pinged yet: another one's round trip to
                    // the same peer (a second address, a redial) says as much.
                    if info.rtt.is_none() {
                        info.rtt = v.iter().filter_map(|(_, c)| c.rtt).min();
                    }
                    Some(info)
                });
                let _ = reply.send(info);
            }
            Command::Disconnect { peer, reply } => {
                let _ = self.swarm.disconnect_peer_id(peer);
                let _ = reply.send(());
            }
            Command::CloseRelayed { peer, reply } => {
                if let Some(v) = self.conns.get(&peer) {
                    for (id, c) in v {
                        if c.relayed {
                            self.swarm.close_connection(*id);
                        }
                    }
                }
                let _ = reply.send(());
            }
            Command::Provide { key, reply } => match self.kad().map(|k| k.start_providing(key)) {
                Some(Ok(q)) => {
                    self.provides.insert(q, reply);
                }
                Some(Err(e)) => {
                    let _ = reply.send(Err(Error::Network(format!("cannot provide: {e}"))));
                }
                None => {
                    let _ = reply.send(Err(Error::Network("the DHT is off".into())));
                }
            },
            Command::StopProviding { key } => {
                if let Some(k) = self.kad() {
                    k.stop_providing(&key);
                }
            }
            Command::GetProviders { key, updates } => {
                if let Some(q) = self.kad().map(|k| k.get_providers(key)) {
                    self.lookups.insert(q, updates);
                }
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<PeerId>>) {
        let only_peer = addr.iter().all(|p| matches!(p, Protocol::P2p(_)));
        let opts = match peer_of(&addr) {
            // A bare /p2p/ID: the behaviours (Kademlia) know its addresses.
            Some(p) if only_peer => DialOpts::peer_id(p)
                .condition(PeerCondition::Always)
                .build(),
            Some(p) => DialOpts::peer_id(p)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Network(format!("cannot dial {addr}: {e}"))));
            }
        }
    }

    /// Concrete addresses (one per interface for 0.0.0.0) and relayed ones, with `/p2p/` ours.
    fn listen_addrs(&self) -> Vec<Multiaddr> {
        let me = *self.swarm.local_peer_id();
        let mut addrs: Vec<Multiaddr> = self.listening.clone();
        for a in self.swarm.external_addresses() {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        addrs
            .into_iter()
            .map(|a| {
                let ours = a.iter().any(|p| matches!(p, Protocol::P2p(x) if x == me));
                let circuit = a.iter().any(|p| matches!(p, Protocol::P2pCircuit));
                if ours && !circuit {
                    a
                } else {
                    a.with(Protocol::P2p(me))
                }
            })
            .collect()
    }

    fn handle_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let remote = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                let relayed = endpoint.is_relayed();
                let info = ConnectionInfo {
                    remote,
                    relayed,
                    rtt: None,
                };
                let dialled = self.dials.remove(&connection_id);
                // Connections pcp dialled itself (a receiver's sender) and inbound ones (a
                // sender's receivers) carry sessions: say how the transport protects them.
                if dialled.is_some() || endpoint.is_listener() {
                    tracing::info!(
                        %peer_id,
                        remote = %info.remote,
                        "transport keys: {} ({}{})",
                        info.key_exchange(),
                        if relayed { "relayed " } else { "" },
                        info.transport()
                    );
                } else {
                    tracing::debug!(%peer_id, remote = %info.remote, relayed, "connection established");
                }
                self.conns
                    .entry(peer_id)
                    .or_default()
                    .push((connection_id, info));
                if let Some(reply) = dialled {
                    let _ = reply.send(Ok(peer_id));
                }
                if let Some(addr) = self.bare_bootstrap.remove(&connection_id) {
                    self.bootstrap_through(peer_id, addr);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                tracing::debug!(%peer_id, ?cause, "connection closed");
                if let Some(v) = self.conns.get_mut(&peer_id) {
                    v.retain(|(id, _)| *id != connection_id);
                    if v.is_empty() {
                        self.conns.remove(&peer_id);
                        self.reserved.remove(&peer_id);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(dial_failure(&error)));
                }
                if let Some(addr) = self.bare_bootstrap.remove(&connection_id) {
                    tracing::info!("cannot reach bootstrap address {addr}: {error}");
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listening.retain(|a| *a != address);
            }
            SwarmEvent::NewListenAddr { address, .. } => self.new_listen_addr(address),
            SwarmEvent::Behaviour(ev) => self.handle_behaviour(ev),
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    /// A bootstrap address given without `/p2p/` answered as `peer`: Kademlia learns it there
    /// and looks for the peers near us through it.
    fn bootstrap_through(&mut self, peer: PeerId, addr: Multiaddr) {
        let Some(k) = self.kad() else { return };
        match k.add_address(&peer, addr.clone()) {
            kad::RoutingUpdate::Success => {
                let _ = k.bootstrap();
                tracing::info!("joined the DHT through {peer} (bootstrap address {addr})");
            }
            other => tracing::info!(
                "bootstrap peer {peer} at {addr} not added to the DHT routing table: {other:?}"
            ),
        }
    }

    fn new_listen_addr(&mut self, address: Multiaddr) {
        tracing::debug!(%address, "listening");
        if !self.listening.contains(&address) {
            self.listening.push(address.clone());
        }
        if self.role != Role::Local {
            advertise(&mut self.swarm, &address);
        }
        if address.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            let _ = self.events.send(NetEvent::RelayReserved(address));
        }
    }

    fn handle_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.identified(peer_id, info)
            }
            BehaviourEvent::Kad(ev) => self.handle_kad(ev),
            BehaviourEvent::AutonatClient(ev) => {
                tracing::debug!(addr = %ev.tested_addr, ok = ev.result.is_ok(), "AutoNAT probe");
                let _ = self.events.send(NetEvent::Reachability {
                    addr: ev.tested_addr,
                    reachable: ev.result.is_ok(),
                });
            }
            BehaviourEvent::Dcutr(ev) => match ev.result {
                Ok(_) => {
                    tracing::debug!(peer = %ev.remote_peer_id, "hole punch succeeded");
                    let _ = self.events.send(NetEvent::HolePunched(ev.remote_peer_id));
                }
                Err(e) => tracing::debug!(peer = %ev.remote_peer_id, "hole punch failed: {e}"),
            },
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Ok(rtt),
            }) => {
                if let Some(v) = self.conns.get_mut(&peer) {
                    for (id, c) in v.iter_mut() {
                        if *id == connection {
                            c.rtt = Some(rtt);
                        }
                    }
                }
            }
            BehaviourEvent::RelayClient(ev) => tracing::debug!(?ev, "relay client"),
            BehaviourEvent::RelayServer(ev) => tracing::debug!(?ev, "relay server"),
            _ => {}
        }
    }

    /// Feeds a DHT server's addresses to Kademlia, and (senders) takes a slot on a relay.
    fn identified(&mut self, peer_id: PeerId, info: identify::Info) {
        if info.protocols.contains(&kad::PROTOCOL_NAME) {
            if let Some(k) = self.kad() {
                for a in &info.listen_addrs {
                    k.add_address(&peer_id, a.clone());
                }
            }
        }
        let reserve = matches!(
            self.role,
            Role::Peer {
                reserve_relays: true
            }
        );
        // Senders take a slot on a couple of relays, so receivers behind NATs can reach them
        // (and then hole-punch to a direct connection).
        if !reserve
            || !info.protocols.contains(&HOP)
            || self.reserved.len() >= MAX_RESERVATIONS
            || self.reserved.contains(&peer_id)
        {
            return;
        }
        let Some(addr) = self
            .conns
            .get(&peer_id)
            .and_then(|v| v.iter().find(|(_, c)| !c.relayed))
            .map(|(_, c)| c.remote.clone())
        else {
            return;
        };
        let base: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        let circuit = base.with(Protocol::P2p(peer_id)).with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(_) => {
                self.reserved.insert(peer_id);
                tracing::debug!(%circuit, "asking for a relay reservation");
            }
            Err(e) => tracing::debug!(%circuit, "no relay reservation: {e}"),
        }
    }

    fn handle_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::RoutingUpdated { .. } => {
                let n: usize = self
                    .kad()
                    .map(|k| k.kbuckets().map(|b| b.num_entries()).sum())
                    .unwrap_or(0);
                let _ = self.events.send(NetEvent::DhtPeers(n));
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                stats,
                step,
            } => match result {
                kad::QueryResult::StartProviding(r) => {
                    if let Some(reply) = self.provides.remove(&id) {
                        // Peers that answered the publication (stored the record).
                        let stored = stats.num_successes();
                        let _ = reply.send(r.map(|_| stored).map_err(|e| {
                            Error::Network(format!("publishing to the DHT failed: {e:?}"))
                        }));
                    }
                }
                kad::QueryResult::GetProviders(r) => {
                    if let Some(tx) = self.lookups.get(&id) {
                        let _ = tx.try_send(DhtUpdate::Asked(stats.num_successes()));
                        if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                            let _ =
                                tx.try_send(DhtUpdate::Providers(providers.into_iter().collect()));
                        }
                        if step.last {
                            let _ = tx.try_send(DhtUpdate::Finished);
                            self.lookups.remove(&id);
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// What a failed dial says to a user: each address with its deepest cause only
/// ("/ip4/10.0.0.2/tcp/1: Connection refused (os error 111)"), instead of libp2p's nested
/// "Failed to negotiate transport protocol(s): [(ADDR: : Multiple dial errors occurred: ...)]".
fn dial_failure(error: &DialError) -> Error {
    match error {
        DialError::Transport(tried) if !tried.is_empty() => Error::Unreachable(
            tried
                .iter()
                .take(Error::UNREACHABLE_SHOWN)
                .map(|(addr, e)| format!("{addr}: {}", deepest(e)))
                .collect(),
        ),
        other => Error::Network(other.to_string()),
    }
}

/// The innermost cause of `e`, looking inside `io::Error`s that wrap another error.
fn deepest(e: &(dyn std::error::Error + 'static)) -> String {
    let mut at = e;
    loop {
        let inner = match at.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|r| r as &(dyn std::error::Error + 'static)),
            None => at.source(),
        };
        match inner {
            Some(next) => at = next,
            None => break,
        }
    }
    at.to_string().replace('\n', " ")
}
