//! The libp2p node. One task owns the `Swarm`; everything else holds a cloneable [`Node`] and
//! talks to that task through a bounded command channel with oneshot replies (the shape of
//! rust-libp2p's file-sharing example). Streams are opened and accepted through
//! `libp2p_stream::Control`, which needs no round trip through the swarm task.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, dcutr, identify, identity, kad, noise, ping, relay, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::wire::PROTOCOL;

pub const STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(NetworkBehaviour)]
struct Behaviour {
    stream: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    relay_client: relay::client::Behaviour,
    relay_server: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
    autonat_client: Toggle<autonat::v2::client::Behaviour>,
    autonat_server: Toggle<autonat::v2::server::Behaviour>,
}

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
    /// DHT bootstrap peers (with `/p2p/`), for the `Peer` and `Helper` roles.
    pub bootstrap: Vec<Multiaddr>,
}

/// Progress of a DHT lookup, for the user.
#[derive(Debug, Clone)]
pub enum DhtUpdate {
    /// Providers found (more may follow).
    Providers(Vec<PeerId>),
    /// How many peers the lookup has asked so far.
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
}

impl ConnectionInfo {
    pub fn transport(&self) -> &'static str {
        if self.remote.iter().any(|p| matches!(p, Protocol::QuicV1)) {
            "QUIC"
        } else {
            "TCP"
        }
    }
}

enum Command {
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Connection {
        peer: PeerId,
        reply: oneshot::Sender<Option<ConnectionInfo>>,
    },
    Disconnect {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    CloseRelayed {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    Provide {
        key: kad::RecordKey,
        reply: oneshot::Sender<Result<()>>,
    },
    StopProviding {
        key: kad::RecordKey,
    },
    GetProviders {
        key: kad::RecordKey,
        updates: mpsc::Sender<DhtUpdate>,
    },
}

/// A cheap handle to the node's swarm task. Dropping every handle stops the task.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    cmds: mpsc::Sender<Command>,
    events: tokio::sync::broadcast::Sender<NetEvent>,
}

impl Node {
    /// Builds the swarm, starts listening and returns once every listener has an address.
    pub async fn start(cfg: NodeConfig) -> Result<Node> {
        let key = identity::Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let net = |e: &dyn std::fmt::Display| Error::Network(e.to_string());
        let role = cfg.role;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| net(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| net(&e))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| net(&e))?
            .with_behaviour(|key, relay_client| {
                let me = key.public().to_peer_id();
                let kad = (role != Role::Local).then(|| {
                    let mut cfg = kad::Config::new(kad::PROTOCOL_NAME);
                    cfg.set_query_timeout(Duration::from_secs(60));
                    let mut k =
                        kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), cfg);
                    // Helpers serve the DHT from the start (a local test network confirms no
                    // external address by itself); senders and receivers only ask.
                    k.set_mode(Some(if role == Role::Helper {
                        kad::Mode::Server
                    } else {
                        kad::Mode::Client
                    }));
                    k
                });
                Behaviour {
                    stream: libp2p_stream::Behaviour::new(),
                    identify: identify::Behaviour::new(
                        identify::Config::new("/ipfs/id/1.0.0".into(), key.public())
                            .with_agent_version(format!("pcp/{}", env!("CARGO_PKG_VERSION"))),
                    ),
                    ping: ping::Behaviour::new(
                        ping::Config::new().with_interval(Duration::from_secs(5)),
                    ),
                    kad: kad.into(),
                    relay_client,
                    relay_server: (role == Role::Helper)
                        .then(|| relay::Behaviour::new(me, relay::Config::default()))
                        .into(),
                    dcutr: dcutr::Behaviour::new(me),
                    autonat_client: matches!(role, Role::Peer { .. })
                        .then(autonat::v2::client::Behaviour::default)
                        .into(),
                    autonat_server: (role == Role::Helper)
                        .then(autonat::v2::server::Behaviour::default)
                        .into(),
                }
            })
            .map_err(|e| net(&e))?
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(Duration::from_secs(if role == Role::Helper {
                    120
                } else {
                    30
                }))
            })
            .build();
        let control = swarm.behaviour().stream.new_control();
        let mut pending = 0usize;
        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Network(format!("cannot listen on {addr}: {e}")))?;
            pending += 1;
        }
        // Wait until each listener reported an address, so callers can announce them.
        let mut listening = std::collections::HashSet::new();
        let mut early = Vec::new();
        while listening.len() < pending {
            match tokio::time::timeout(Duration::from_secs(5), swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                }) => {
                    listening.insert(listener_id);
                    early.push(address);
                }
                Ok(SwarmEvent::ListenerError { error, .. })
                | Ok(SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                }) => return Err(Error::Network(format!("listener failed: {error}"))),
                Ok(_) => {}
                Err(_) => return Err(Error::Network("listeners did not start within 5 s".into())),
            }
        }
        // A wildcard listener reports one address per interface; collect the stragglers too.
        let wildcard = cfg.listen.iter().any(|a| {
            a.iter().any(|p| match p {
                Protocol::Ip4(ip) => ip.is_unspecified(),
                Protocol::Ip6(ip) => ip.is_unspecified(),
                _ => false,
            })
        });
        let settle =
            tokio::time::Instant::now() + Duration::from_millis(if wildcard { 30 } else { 0 });
        while let Ok(ev) = tokio::time::timeout_at(settle, swarm.select_next_some()).await {
            if let SwarmEvent::NewListenAddr { address, .. } = ev {
                early.push(address);
            }
        }
        if role != Role::Local {
            for a in &early {
                advertise(&mut swarm, a);
            }
            for b in &cfg.bootstrap {
                let Some(peer) = b.iter().find_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                }) else {
                    return Err(Error::Network(format!(
                        "bootstrap address {b} lacks /p2p/PEER_ID"
                    )));
                };
                if let Some(k) = swarm.behaviour_mut().kad.as_mut() {
                    let bare: Multiaddr = b
                        .iter()
                        .filter(|p| !matches!(p, Protocol::P2p(_)))
                        .collect();
                    k.add_address(&peer, bare);
                }
                if let Err(e) = swarm.dial(b.clone()) {
                    tracing::debug!(%b, "cannot dial bootstrap peer: {e}");
                }
            }
            if let Some(k) = swarm.behaviour_mut().kad.as_mut() {
                let _ = k.bootstrap();
            }
        }
        let (tx, rx) = mpsc::channel(32);
        let (events, _) = tokio::sync::broadcast::channel(64);
        tokio::spawn(run(swarm, rx, events.clone(), role, early));
        Ok(Node {
            peer_id,
            control,
            cmds: tx,
            events,
        })
    }

    /// Network events for the UI (lossy: a slow subscriber misses some).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<NetEvent> {
        self.events.subscribe()
    }

    /// Announces that we provide `key` on the DHT (and keeps re-announcing until stopped).
    pub async fn provide(&self, key: kad::RecordKey) -> Result<()> {
        self.ask(|reply| Command::Provide { key, reply }).await?
    }

    pub async fn stop_providing(&self, key: kad::RecordKey) {
        let _ = self.cmds.send(Command::StopProviding { key }).await;
    }

    /// Looks up providers of `key`; progress arrives on the returned channel.
    pub async fn get_providers(&self, key: kad::RecordKey) -> Result<mpsc::Receiver<DhtUpdate>> {
        let (tx, rx) = mpsc::channel(32);
        self.cmds
            .send(Command::GetProviders { key, updates: tx })
            .await
            .map_err(|_| Error::Network("the network task stopped".into()))?;
        Ok(rx)
    }

    /// Closes relayed connections to `peer` (once a direct one exists).
    pub async fn close_relayed(&self, peer: PeerId) -> Result<()> {
        self.ask(|reply| Command::CloseRelayed { peer, reply })
            .await
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(make(tx))
            .await
            .map_err(|_| Error::Network("the network task stopped".into()))?;
        rx.await
            .map_err(|_| Error::Network("the network task stopped".into()))
    }

    /// Dials `addr` (with or without a `/p2p/` suffix) and waits until the connection is up.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId> {
        let what = addr.to_string();
        match tokio::time::timeout(
            DIAL_TIMEOUT,
            self.ask(|reply| Command::Dial { addr, reply }),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => Err(Error::Network(format!("dialling {what} timed out"))),
        }
    }

    /// The addresses this node listens on, as others can dial them (`/p2p/` appended).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }

    /// Closes every connection to `peer` (a dead one would otherwise keep receiving streams).
    pub async fn disconnect(&self, peer: PeerId) -> Result<()> {
        self.ask(|reply| Command::Disconnect { peer, reply }).await
    }

    pub async fn connection(&self, peer: PeerId) -> Result<Option<ConnectionInfo>> {
        self.ask(|reply| Command::Connection { peer, reply }).await
    }
}

/// Makes a listen address known as ours to the DHT and peers (provider records carry only
/// these). Loopback and unspecified addresses are useless to others.
fn advertise(swarm: &mut Swarm<Behaviour>, a: &Multiaddr) {
    let useless = a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback() || ip.is_unspecified(),
        // Link-local addresses need a scope id that a multiaddr cannot carry.
        Protocol::Ip6(ip) => ip.is_loopback() || ip.is_unspecified() || ip.is_unicast_link_local(),
        _ => false,
    });
    if !useless {
        swarm.add_external_address(a.clone());
    }
}

const HOP: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");
/// Relays a sender reserves a slot on.
const MAX_RESERVATIONS: usize = 2;

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut cmds: mpsc::Receiver<Command>,
    events: tokio::sync::broadcast::Sender<NetEvent>,
    role: Role,
    mut listening: Vec<Multiaddr>,
) {
    let mut dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId>>> = HashMap::new();
    let mut conns: HashMap<PeerId, Vec<(ConnectionId, ConnectionInfo)>> = HashMap::new();
    let mut provides: HashMap<kad::QueryId, oneshot::Sender<Result<()>>> = HashMap::new();
    let mut lookups: HashMap<kad::QueryId, mpsc::Sender<DhtUpdate>> = HashMap::new();
    let mut reserved: HashSet<PeerId> = HashSet::new();
    let reserve = matches!(
        role,
        Role::Peer {
            reserve_relays: true
        }
    );
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(Command::Dial { addr, reply }) => {
                    let peer = addr.iter().find_map(|p| match p {
                        Protocol::P2p(id) => Some(id),
                        _ => None,
                    });
                    let only_peer = addr.iter().all(|p| matches!(p, Protocol::P2p(_)));
                    let opts = match peer {
                        // A bare /p2p/ID: the behaviours (Kademlia) know its addresses.
                        Some(p) if only_peer => DialOpts::peer_id(p).condition(PeerCondition::Always).build(),
                        Some(p) => DialOpts::peer_id(p)
                            .addresses(vec![addr.clone()])
                            .condition(PeerCondition::Always)
                            .build(),
                        None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
                    };
                    let id = opts.connection_id();
                    match swarm.dial(opts) {
                        Ok(()) => {
                            dials.insert(id, reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(Error::Network(format!("cannot dial {addr}: {e}"))));
                        }
                    }
                }
                Some(Command::ListenAddrs { reply }) => {
                    let me = *swarm.local_peer_id();
                    // Concrete addresses (one per interface for 0.0.0.0), relayed ones too.
                    let mut addrs: Vec<Multiaddr> = listening.clone();
                    for a in swarm.external_addresses() {
                        if !addrs.contains(a) {
                            addrs.push(a.clone());
                        }
                    }
                    let addrs = addrs
                        .into_iter()
                        .map(|a| if a.iter().any(|p| matches!(p, Protocol::P2p(x) if x == me)) && !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)) { a } else { a.with(Protocol::P2p(me)) })
                        .collect();
                    let _ = reply.send(addrs);
                }
                Some(Command::Connection { peer, reply }) => {
                    let info = conns.get(&peer).and_then(|v| {
                        v.iter().find(|(_, c)| !c.relayed).or(v.first()).map(|(_, c)| c.clone())
                    });
                    let _ = reply.send(info);
                }
                Some(Command::Disconnect { peer, reply }) => {
                    let _ = swarm.disconnect_peer_id(peer);
                    let _ = reply.send(());
                }
                Some(Command::CloseRelayed { peer, reply }) => {
                    if let Some(v) = conns.get(&peer) {
                        for (id, c) in v {
                            if c.relayed {
                                swarm.close_connection(*id);
                            }
                        }
                    }
                    let _ = reply.send(());
                }
                Some(Command::Provide { key, reply }) => match swarm.behaviour_mut().kad.as_mut() {
                    Some(k) => match k.start_providing(key) {
                        Ok(q) => {
                            provides.insert(q, reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(Error::Network(format!("cannot provide: {e}"))));
                        }
                    },
                    None => {
                        let _ = reply.send(Err(Error::Network("the DHT is off".into())));
                    }
                },
                Some(Command::StopProviding { key }) => {
                    if let Some(k) = swarm.behaviour_mut().kad.as_mut() {
                        k.stop_providing(&key);
                    }
                }
                Some(Command::GetProviders { key, updates }) => {
                    if let Some(k) = swarm.behaviour_mut().kad.as_mut() {
                        let q = k.get_providers(key);
                        lookups.insert(q, updates);
                    }
                }
            },
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                    let remote = match &endpoint {
                        ConnectedPoint::Dialer { address, .. } => address.clone(),
                        ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                    };
                    let relayed = endpoint.is_relayed();
                    tracing::debug!(%peer_id, %remote, relayed, "connection established");
                    conns.entry(peer_id).or_default().push((connection_id, ConnectionInfo { remote, relayed }));
                    if let Some(reply) = dials.remove(&connection_id) {
                        let _ = reply.send(Ok(peer_id));
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, .. } => {
                    tracing::debug!(%peer_id, ?cause, "connection closed");
                    if let Some(v) = conns.get_mut(&peer_id) {
                        v.retain(|(id, _)| *id != connection_id);
                        if v.is_empty() {
                            conns.remove(&peer_id);
                            reserved.remove(&peer_id);
                        }
                    }
                }
                SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                    if let Some(reply) = dials.remove(&connection_id) {
                        let _ = reply.send(Err(Error::Network(error.to_string())));
                    }
                }
                SwarmEvent::ExpiredListenAddr { address, .. } => {
                    listening.retain(|a| *a != address);
                }
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::debug!(%address, "listening");
                    if !listening.contains(&address) {
                        listening.push(address.clone());
                    }
                    if role != Role::Local {
                        advertise(&mut swarm, &address);
                    }
                    if address.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
                        let _ = events.send(NetEvent::RelayReserved(address));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    if info.protocols.contains(&kad::PROTOCOL_NAME) {
                        if let Some(k) = swarm.behaviour_mut().kad.as_mut() {
                            for a in &info.listen_addrs {
                                k.add_address(&peer_id, a.clone());
                            }
                        }
                    }
                    // Senders take a slot on a couple of relays, so receivers behind NATs can
                    // reach them (and then hole-punch to a direct connection).
                    if reserve && info.protocols.contains(&HOP) && reserved.len() < MAX_RESERVATIONS && !reserved.contains(&peer_id) {
                        if let Some(addr) = conns.get(&peer_id).and_then(|v| v.iter().find(|(_, c)| !c.relayed)).map(|(_, c)| c.remote.clone()) {
                            let base: Multiaddr = addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
                            let circuit = base.with(Protocol::P2p(peer_id)).with(Protocol::P2pCircuit);
                            match swarm.listen_on(circuit.clone()) {
                                Ok(_) => {
                                    reserved.insert(peer_id);
                                    tracing::debug!(%circuit, "asking for a relay reservation");
                                }
                                Err(e) => tracing::debug!(%circuit, "no relay reservation: {e}"),
                            }
                        }
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => match ev {
                    kad::Event::RoutingUpdated { .. } => {
                        let n: usize = swarm
                            .behaviour_mut()
                            .kad
                            .as_mut()
                            .map(|k| k.kbuckets().map(|b| b.num_entries()).sum())
                            .unwrap_or(0);
                        let _ = events.send(NetEvent::DhtPeers(n));
                    }
                    kad::Event::OutboundQueryProgressed { id, result, stats, step } => match result {
                        kad::QueryResult::StartProviding(r) => {
                            if let Some(reply) = provides.remove(&id) {
                                let _ = reply.send(r.map(|_| ()).map_err(|e| Error::Network(format!("publishing to the DHT failed: {e:?}"))));
                            }
                        }
                        kad::QueryResult::GetProviders(r) => {
                            if let Some(tx) = lookups.get(&id) {
                                let _ = tx.try_send(DhtUpdate::Asked(stats.num_requests()));
                                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                                    let _ = tx.try_send(DhtUpdate::Providers(providers.into_iter().collect()));
                                }
                                if step.last {
                                    let _ = tx.try_send(DhtUpdate::Finished);
                                    lookups.remove(&id);
                                }
                            }
                        }
                        _ => {}
                    },
                    _ => {}
                },
                SwarmEvent::Behaviour(BehaviourEvent::AutonatClient(ev)) => {
                    tracing::debug!(addr = %ev.tested_addr, ok = ev.result.is_ok(), "AutoNAT probe");
                    let _ = events.send(NetEvent::Reachability { addr: ev.tested_addr, reachable: ev.result.is_ok() });
                }
                SwarmEvent::Behaviour(BehaviourEvent::Dcutr(ev)) => {
                    match ev.result {
                        Ok(_) => {
                            tracing::debug!(peer = %ev.remote_peer_id, "hole punch succeeded");
                            let _ = events.send(NetEvent::HolePunched(ev.remote_peer_id));
                        }
                        Err(e) => tracing::debug!(peer = %ev.remote_peer_id, "hole punch failed: {e}"),
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::RelayClient(ev)) => tracing::debug!(?ev, "relay client"),
                SwarmEvent::Behaviour(BehaviourEvent::RelayServer(ev)) => tracing::debug!(?ev, "relay server"),
                other => tracing::trace!(?other, "swarm event"),
            }
        }
    }
}
