//! The libp2p node. One task owns the `Swarm`; everything else holds a cloneable [`Node`] and
//! talks to that task through a bounded command channel with oneshot replies (the shape of
//! rust-libp2p's file-sharing example). Streams are opened and accepted through
//! `libp2p_stream::Control`, which needs no round trip through the swarm task.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    identify, identity, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
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
}

/// Settings for a node.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// Addresses to listen on; empty means none (a receiver that only dials).
    pub listen: Vec<Multiaddr>,
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
}

/// A cheap handle to the node's swarm task. Dropping every handle stops the task.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    cmds: mpsc::Sender<Command>,
}

impl Node {
    /// Builds the swarm, starts listening and returns once every listener has an address.
    pub async fn start(cfg: NodeConfig) -> Result<Node> {
        let key = identity::Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let net = |e: &dyn std::fmt::Display| Error::Network(e.to_string());
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
            .with_behaviour(|key| Behaviour {
                stream: libp2p_stream::Behaviour::new(),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/pcp/id/1".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_secs(5)),
                ),
            })
            .map_err(|e| net(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
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
        while listening.len() < pending {
            match tokio::time::timeout(Duration::from_secs(5), swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { listener_id, .. }) => {
                    listening.insert(listener_id);
                }
                Ok(SwarmEvent::ListenerError { error, .. })
                | Ok(SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                }) => return Err(Error::Network(format!("listener failed: {error}"))),
                Ok(_) => {}
                Err(_) => return Err(Error::Network("listeners did not start within 5 s".into())),
            }
        }
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(run(swarm, rx));
        Ok(Node {
            peer_id,
            control,
            cmds: tx,
        })
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

async fn run(mut swarm: Swarm<Behaviour>, mut cmds: mpsc::Receiver<Command>) {
    let mut dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId>>> = HashMap::new();
    let mut conns: HashMap<PeerId, Vec<(ConnectionId, ConnectionInfo)>> = HashMap::new();
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(Command::Dial { addr, reply }) => {
                    let peer = addr.iter().find_map(|p| match p {
                        Protocol::P2p(id) => Some(id),
                        _ => None,
                    });
                    let opts = match peer {
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
                    let addrs = swarm
                        .listeners()
                        .cloned()
                        .map(|a| a.with(Protocol::P2p(me)))
                        .collect();
                    let _ = reply.send(addrs);
                }
                Some(Command::Disconnect { peer, reply }) => {
                    let _ = swarm.disconnect_peer_id(peer);
                    let _ = reply.send(());
                }
                Some(Command::Connection { peer, reply }) => {
                    let info = conns.get(&peer).and_then(|v| {
                        v.iter().find(|(_, c)| !c.relayed).or(v.first()).map(|(_, c)| c.clone())
                    });
                    let _ = reply.send(info);
                }
            },
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                    let remote = match &endpoint {
                        ConnectedPoint::Dialer { address, .. } => address.clone(),
                        ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                    };
                    let relayed = remote.iter().any(|p| matches!(p, Protocol::P2pCircuit));
                    tracing::debug!(%peer_id, %remote, "connection established");
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
                        }
                    }
                }
                SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                    if let Some(reply) = dials.remove(&connection_id) {
                        let _ = reply.send(Err(Error::Network(error.to_string())));
                    }
                }
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::debug!(%address, "listening");
                }
                other => tracing::trace!(?other, "swarm event"),
            }
        }
    }
}
