//! The handle to the swarm task ([`Node`]) and how the swarm is built: transports (TCP with
//! TLS and Yamux (tcp.rs), QUIC, relayed), behaviours by role, listeners, and joining the DHT.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, dcutr, identify, identity, kad, noise, ping, relay, yamux, Multiaddr, PeerId, Swarm,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::event_loop::EventLoop;
use super::{peer_of, ConnectionInfo, DhtUpdate, NetEvent, NodeConfig, Role};
use crate::error::{Error, Result};

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands queued for the swarm task before senders wait.
const COMMAND_QUEUE: usize = 32;
/// Network events kept for slow subscribers (older ones are dropped).
const EVENT_QUEUE: usize = 64;

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) stream: libp2p_stream::Behaviour,
    pub(super) identify: identify::Behaviour,
    ping: ping::Behaviour,
    pub(super) kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    relay_client: relay::client::Behaviour,
    relay_server: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
    autonat_client: Toggle<autonat::v2::client::Behaviour>,
    autonat_server: Toggle<autonat::v2::server::Behaviour>,
}

pub(super) enum Command {
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
        reply: oneshot::Sender<Result<u32>>,
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
    events: broadcast::Sender<NetEvent>,
}

fn net(e: &dyn std::fmt::Display) -> Error {
    Error::Network(e.to_string())
}

fn behaviour(
    key: &identity::Keypair,
    relay_client: relay::client::Behaviour,
    role: Role,
) -> Behaviour {
    let me = key.public().to_peer_id();
    let kad = (role != Role::Local).then(|| {
        let mut cfg = kad::Config::new(kad::PROTOCOL_NAME);
        cfg.set_query_timeout(Duration::from_secs(60));
        let mut k = kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), cfg);
        // Helpers serve the DHT from the start (a local test network confirms no external
        // address by itself); senders and receivers only ask.
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
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5))),
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
}

/// QUIC, as `SwarmBuilder::with_quic` builds it, with pcp's streams negotiated lazily.
fn quic_transport(
    key: &identity::Keypair,
) -> libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)> {
    use libp2p::core::muxing::StreamMuxerBox;
    use libp2p::Transport;
    libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(super::lazy::Lazy::new(muxer))))
        .boxed()
}

fn build_swarm(key: identity::Keypair, role: Role) -> Result<Swarm<Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(quic_transport)
        .map_err(|e| net(&e))?
        .with_other_transport(super::tcp::transport)
        .map_err(|e| net(&e))?
        .with_dns()
        .map_err(|e| net(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| net(&e))?
        .with_behaviour(|key, relay_client| behaviour(key, relay_client, role))
        .map_err(|e| net(&e))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(if role == Role::Helper {
                120
            } else {
                30
            }))
            // A peer dialed at several addresses (a sender found through the DHT, a hole
            // punch): QUIC first, TCP 30 ms (private addresses) or 250 ms (public) later,
            // relays last (libp2p's happy eyeballs). Over the internet QUIC is the better
            // transport since its controller is BBR (vendor/libp2p-quic/PCP-PATCH.md).
            .with_smart_dial()
        })
        .build())
}

/// Refuses a listen address whose port another program already listens on. libp2p's TCP
/// listeners set `SO_REUSEPORT` (to dial out from the listening port for hole punching), so a
/// second `pcp send --listen` on the same port would be accepted, and the kernel would share
/// incoming connections between the two: receivers would meet the wrong share and its
/// wrong-code verdict. A socket bound without `SO_REUSEPORT` finds out first.
fn port_free(addr: &Multiaddr) -> Result<()> {
    let mut it = addr.iter();
    let ip: std::net::IpAddr = match it.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let (kind, port) = match it.next() {
        Some(Protocol::Tcp(port)) if port != 0 => (socket2::Type::STREAM, port),
        Some(Protocol::Udp(port)) if port != 0 => (socket2::Type::DGRAM, port),
        _ => return Ok(()),
    };
    // Bound as libp2p binds (IPv6 only on an IPv6 address, address reuse for TCP's
    // TIME_WAIT), but without SO_REUSEPORT.
    let at = std::net::SocketAddr::new(ip, port);
    let taken = (|| {
        let s = socket2::Socket::new(socket2::Domain::for_address(at), kind, None)?;
        if ip.is_ipv6() {
            s.set_only_v6(true)?;
        }
        if kind == socket2::Type::STREAM {
            s.set_reuse_address(true)?;
        }
        s.bind(&at.into())
    })();
    match taken {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::Network(format!(
            "cannot listen on {addr}: another program (another pcp?) listens on that port; \
             stop it or pick another port"
        ))),
        _ => Ok(()),
    }
}

/// Starts every listener and returns once each has an address (plus, with `all_interfaces`,
/// the other interfaces' addresses a wildcard listener reports just after), so callers can
/// announce them.
async fn listen_all(
    swarm: &mut Swarm<Behaviour>,
    listen: &[Multiaddr],
    all_interfaces: bool,
) -> Result<Vec<Multiaddr>> {
    // All checked before any is bound: our own listeners are no other program.
    for addr in listen {
        port_free(addr)?;
    }
    for addr in listen {
        swarm.listen_on(addr.clone()).map_err(|e| {
            // Some transports' errors print as nothing.
            let why = match e.to_string() {
                s if s.is_empty() => format!("{e:?}"),
                s => s,
            };
            Error::Network(format!("cannot listen on {addr}: {why}"))
        })?;
    }
    let mut listening = HashSet::new();
    let mut early = Vec::new();
    while listening.len() < listen.len() {
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
    // A wildcard listener reports one address per interface; collect the stragglers too when
    // the addresses are announced at once (else the event loop records them as they come).
    let wildcard = all_interfaces
        && listen.iter().any(|a| {
            a.iter().any(|p| match p {
                Protocol::Ip4(ip) => ip.is_unspecified(),
                Protocol::Ip6(ip) => ip.is_unspecified(),
                _ => false,
            })
        });
    let settle = tokio::time::Instant::now() + Duration::from_millis(if wildcard { 30 } else { 0 });
    while let Ok(ev) = tokio::time::timeout_at(settle, swarm.select_next_some()).await {
        if let SwarmEvent::NewListenAddr { address, .. } = ev {
            early.push(address);
        }
    }
    Ok(early)
}

/// Advertises our addresses and dials the bootstrap peers (DHT roles only). A peer given with
/// `/p2p/ID` goes into Kademlia at once; a plain address is dialled, and the event loop adds
/// whoever answers there once the connection is up (the returned dials).
fn join_dht(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[Multiaddr],
    bootstrap: &[Multiaddr],
) -> HashMap<ConnectionId, Multiaddr> {
    for a in addrs {
        advertise(swarm, a);
    }
    let mut bare_dials = HashMap::new();
    for b in bootstrap {
        let Some(peer) = peer_of(b) else {
            let opts = DialOpts::unknown_peer_id().address(b.clone()).build();
            let id = opts.connection_id();
            match swarm.dial(opts) {
                Ok(()) => {
                    bare_dials.insert(id, b.clone());
                }
                Err(e) => tracing::info!(%b, "cannot dial bootstrap address: {e}"),
            }
            continue;
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
        // Fails with no known peer yet (only plain addresses): the event loop bootstraps again
        // when one of those answers.
        let _ = k.bootstrap();
    }
    bare_dials
}

/// Makes a listen address known as ours to the DHT and peers (provider records carry only
/// these). Loopback and unspecified addresses are useless to others.
pub(super) fn advertise(swarm: &mut Swarm<Behaviour>, a: &Multiaddr) {
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

impl Node {
    /// Builds the swarm with a new identity, starts listening and returns once every listener
    /// has an address.
    pub async fn start(cfg: NodeConfig) -> Result<Node> {
        Node::start_with_key(cfg, identity::Keypair::generate_ed25519()).await
    }

    /// [`Node::start`] with a given identity (`pcp node --key`: the same peer ID every start).
    pub async fn start_with_key(cfg: NodeConfig, key: identity::Keypair) -> Result<Node> {
        let peer_id = key.public().to_peer_id();
        let role = cfg.role;
        let mut swarm = build_swarm(key, role)?;
        let control = swarm.behaviour().stream.new_control();
        let listening = listen_all(&mut swarm, &cfg.listen, cfg.announce).await?;
        let bare_bootstrap = if role != Role::Local {
            join_dht(&mut swarm, &listening, &cfg.bootstrap)
        } else {
            HashMap::new()
        };
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        tokio::spawn(
            EventLoop::new(swarm, rx, events.clone(), role, listening, bare_bootstrap).run(),
        );
        Ok(Node {
            peer_id,
            control,
            cmds: tx,
            events,
        })
    }

    /// Network events for the UI (lossy: a slow subscriber misses some).
    pub fn subscribe(&self) -> broadcast::Receiver<NetEvent> {
        self.events.subscribe()
    }

    /// Announces that we provide `key` on the DHT (and keeps re-announcing until stopped);
    /// returns how many DHT peers stored the record.
    pub async fn provide(&self, key: kad::RecordKey) -> Result<u32> {
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
