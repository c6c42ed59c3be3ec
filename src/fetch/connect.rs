//! From a code to an authenticated session: gather candidate senders (given addresses or
//! discovery), dial them, and run the handshake; the first sender that authenticates wins.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use crate::code::Code;
use crate::error::{Error, Result};
use crate::fetch::Session;
use crate::net::discovery::{Candidate, Clock, DhtBrowser, Discovery, MdnsBrowser, Method};
use crate::net::{peer_of, Node, Role};

/// How to look for the sender.
#[derive(Clone)]
pub struct FindOptions {
    /// Dial these instead of discovering (authentication is still required).
    pub peers: Vec<Multiaddr>,
    pub methods: Vec<Method>,
    /// Give up after this long without an authenticated sender.
    pub wait: Duration,
    pub clock: Clock,
    /// Accept a relayed connection when hole punching fails (relays cap what they carry).
    pub allow_relay: bool,
}

/// An authenticated session and how it was reached.
pub struct Found {
    pub session: Session,
    /// "the local network (mDNS)", "the given address", ...
    pub via: &'static str,
    /// "TCP via /ip4/..." for the user.
    pub connection: String,
    /// Addresses the sender was reached at, for reconnecting.
    pub addrs: Vec<Multiaddr>,
}

/// How long to wait for hole punching to turn a relayed connection into a direct one.
const HOLE_PUNCH_WAIT: Duration = Duration::from_secs(15);

/// Makes sure file data will not go through a relay unless allowed: waits for a direct
/// connection (DCUtR runs by itself on a relayed one) and then drops the relayed one.
async fn prefer_direct(node: &Node, peer: libp2p::PeerId, allow_relay: bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + HOLE_PUNCH_WAIT;
    loop {
        match node.connection(peer).await? {
            Some(c) if !c.relayed => {
                node.close_relayed(peer).await?;
                return Ok(());
            }
            Some(_) if tokio::time::Instant::now() >= deadline => {
                return if allow_relay {
                    Ok(())
                } else {
                    Err(Error::Network(
                        "only a relayed connection to the sender could be made (hole punching failed); \
                         relays cap what they carry, so pcp does not send files through them unless you pass --allow-relay"
                            .into(),
                    ))
                };
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            None => {
                return Err(Error::ConnectionLost(
                    "the connection to the sender closed".into(),
                ))
            }
        }
    }
}

/// Senders a receive tries the code on, at most, however many candidates discovery yields:
/// each gets one online guess, so impostors that announce themselves cost at most this many.
pub const MAX_GUESSES: usize = 5;

/// The peers the code was tried on in this run: one guess per peer, whatever number of
/// addresses or discovery methods led to it, and at most [`MAX_GUESSES`] in all.
#[derive(Clone, Default)]
struct Guesses(Arc<Mutex<HashSet<PeerId>>>);

impl Guesses {
    /// Claims the guess on `peer`; false if it had one already or the budget is spent.
    fn claim(&self, peer: PeerId) -> bool {
        let mut g = self.0.lock().expect("lock");
        g.len() < MAX_GUESSES && g.insert(peer)
    }

    fn spent(&self) -> bool {
        self.0.lock().expect("lock").len() >= MAX_GUESSES
    }
}

/// How often a sender that is busy with another receiver is asked again.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Whether a sender was found busy with another receiver, and the one line that says so.
#[derive(Clone)]
struct Busy {
    seen: Arc<std::sync::atomic::AtomicBool>,
    status: mpsc::Sender<String>,
}

impl Busy {
    async fn found(&self, via: &str) {
        if !self.seen.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let _ = self
                .status
                .send(format!(
                    "Found the sender on {via}, but it is busy with other receivers (a share \
                     serves one at a time unless sent with --keep); waiting for it to be free..."
                ))
                .await;
        }
    }

    fn seen(&self) -> bool {
        self.seen.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Runs the handshake with `peer`; while the sender closes our handshake streams unanswered (it
/// serves another receiver: no guess is made), asks again every [`BUSY_RETRY`], redialing
/// `addr` if the idle connection went away. The caller's deadline bounds the wait.
async fn authenticate_when_free(
    node: &Node,
    peer: PeerId,
    addr: &Multiaddr,
    code: &Code,
    busy: &Busy,
    via: &str,
) -> Result<Session> {
    loop {
        match Session::authenticate(node, peer, code).await {
            Err(Error::Unanswered(why)) => {
                tracing::debug!(%peer, "the sender did not take the handshake: {why}");
                busy.found(via).await;
                tokio::time::sleep(BUSY_RETRY).await;
                if node.connection(peer).await?.is_none() {
                    node.dial(addr.clone()).await?;
                }
            }
            other => return other,
        }
    }
}

async fn attempt(
    node: Node,
    code: Code,
    c: Candidate,
    allow_relay: bool,
    guesses: Guesses,
    busy: Busy,
) -> Result<Found> {
    let mut last = Error::Network("no address to dial".into());
    for addr in &c.addrs {
        match node.dial(addr.clone()).await {
            Ok(peer) => {
                if c.peer.is_some_and(|p| p != peer) {
                    last = Error::Network(format!("{addr} is another peer"));
                    continue;
                }
                if !guesses.claim(peer) {
                    // Another candidate leads to the same sender (or the budget is spent): the
                    // attempt under way there decides; this one leaves it alone.
                    return Err(Error::Network(format!(
                        "{peer} was tried already in this run"
                    )));
                }
                prefer_direct(&node, peer, allow_relay).await?;
                let session =
                    authenticate_when_free(&node, peer, addr, &code, &busy, c.via).await?;
                let connection = match node.connection(peer).await {
                    Ok(Some(info)) => format!(
                        "{}{} via {}",
                        if info.relayed { "relayed " } else { "direct " },
                        info.transport(),
                        info.remote
                    ),
                    _ => "unknown connection".into(),
                };
                let mut addrs = vec![addr.clone()];
                addrs.extend(c.addrs.iter().filter(|a| *a != addr).cloned());
                return Ok(Found {
                    session,
                    via: c.via,
                    connection,
                    addrs,
                });
            }
            Err(e) => {
                tracing::debug!(%addr, "dial failed: {e}");
                last = e.after(Some(last));
            }
        }
    }
    Err(last)
}

/// Finds and authenticates the sender for `code`. `status` receives lines for the user.
pub async fn find(
    node: &Node,
    code: &Code,
    opts: &FindOptions,
    status: mpsc::Sender<String>,
) -> Result<Found> {
    let (mut rx, _sources) = sources(node, code, opts, &status).await?;
    try_candidates(node, code, opts, &mut rx, &status).await
}

/// Where candidates come from while they are tried: the discovery that is running.
struct Sources {
    _mdns: Option<MdnsBrowser>,
    _dht: Option<DhtBrowser>,
}

/// Starts the sources of candidates: the given addresses (all queued at once), or discovery.
async fn sources(
    node: &Node,
    code: &Code,
    opts: &FindOptions,
    status: &mpsc::Sender<String>,
) -> Result<(mpsc::Receiver<Candidate>, Sources)> {
    // Room for every given address, so queueing them never waits for the search to start.
    let (tx, rx) = mpsc::channel::<Candidate>(16 + opts.peers.len());
    let mut _browser = None;
    let mut _dht = None;
    if !opts.peers.is_empty() {
        for a in &opts.peers {
            let peer = peer_of(a);
            let _ = tx
                .send(Candidate {
                    peer,
                    addrs: vec![a.clone()],
                    via: "the given address",
                })
                .await;
        }
        let _ = status
            .send(format!(
                "Connecting to {} given address(es)...",
                opts.peers.len()
            ))
            .await;
    } else {
        if opts.methods.contains(&Method::Mdns) {
            _browser = Some(MdnsBrowser::start(
                code.channel(),
                opts.clock.clone(),
                tx.clone(),
            )?);
            let _ = status
                .send("Looking for the sender on the local network (mDNS)...".into())
                .await;
        }
        if opts.methods.contains(&Method::Dht) {
            _dht = Some(DhtBrowser::start(
                node.clone(),
                code.channel(),
                opts.clock.clone(),
                tx.clone(),
                status.clone(),
            ));
            let _ = status
                .send("Joining the DHT and looking for the sender there...".into())
                .await;
        }
        if _browser.is_none() && _dht.is_none() {
            return Err(Error::Network(
                "no way to find the sender: pass --peer ADDRESS or use --discovery mdns,dht".into(),
            ));
        }
    }
    Ok((
        rx,
        Sources {
            _mdns: _browser,
            _dht,
        },
    ))
}

/// Tries candidates as they come, each peer once and at most [`MAX_GUESSES`] of them, until
/// one authenticates, the wait is over, or no candidate is left.
async fn try_candidates(
    node: &Node,
    code: &Code,
    opts: &FindOptions,
    rx: &mut mpsc::Receiver<Candidate>,
    status: &mpsc::Sender<String>,
) -> Result<Found> {
    let deadline = tokio::time::sleep(opts.wait);
    tokio::pin!(deadline);
    let mut attempts = FuturesUnordered::new();
    let guesses = Guesses::default();
    let busy = Busy {
        seen: Arc::default(),
        status: status.clone(),
    };
    let mut last_err: Option<Error> = None;
    let mut open = true;
    loop {
        tokio::select! {
            c = rx.recv(), if open => match c {
                Some(c) => {
                    tracing::debug!(?c, "candidate");
                    if c.peer.is_some_and(|p| guesses.0.lock().expect("lock").contains(&p)) {
                        continue;
                    }
                    if guesses.spent() {
                        tracing::debug!("the guess budget is spent; candidate ignored");
                        continue;
                    }
                    attempts.push(attempt(node.clone(), code.clone(), c, opts.allow_relay, guesses.clone(), busy.clone()));
                }
                None => open = false,
            },
            Some(r) = attempts.next() => match r {
                Ok(found) => return Ok(found),
                // One candidate said the code is wrong: it is out. Tell the user now unless
                // another candidate is still being tried (an impostor cannot end the search).
                Err(Error::WrongCode) => last_err = Some(Error::WrongCode),
                Err(e) => {
                    tracing::debug!("candidate failed: {e}");
                    if !matches!(last_err, Some(Error::WrongCode)) {
                        last_err = Some(e.after(last_err));
                    }
                }
            },
            _ = &mut deadline => {
                // Still waiting on a busy sender (no attempt failed otherwise, say because
                // that sender went away since).
                if busy.seen() && last_err.is_none() {
                    return Err(Error::SenderBusy(opts.wait));
                }
                return Err(last_err.unwrap_or(Error::PeerNotFound(opts.wait)));
            }
        }
        if attempts.is_empty() && matches!(last_err, Some(Error::WrongCode)) {
            return Err(Error::WrongCode);
        }
        if !open && attempts.is_empty() {
            return Err(last_err.unwrap_or(Error::PeerNotFound(opts.wait)));
        }
    }
}

/// Starts the receiving side's node: with discovery it listens too (hole punching needs a
/// socket of its own); with given addresses it only dials and stays off the DHT.
pub async fn start_node(peers: &[Multiaddr], discovery: &Discovery) -> Result<Node> {
    let listen = if peers.is_empty() && !discovery.methods.contains(&Method::None) {
        vec![
            "/ip4/0.0.0.0/tcp/0".parse().expect("valid"),
            "/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("valid"),
        ]
    } else {
        vec![]
    };
    let mut cfg = discovery.node_config(listen, false);
    if !peers.is_empty() {
        cfg.role = Role::Local;
        cfg.bootstrap.clear();
    }
    Node::start(cfg).await
}

/// Where to look for the sender and how long.
#[derive(Clone)]
pub struct Seek {
    /// Dial these instead of discovering (authentication is still required).
    pub peers: Vec<Multiaddr>,
    pub discovery: Discovery,
    /// Give up after this long without an authenticated sender.
    pub wait: Duration,
    /// Accept a relayed connection when hole punching fails.
    pub allow_relay: bool,
}

/// Starts a receiving node and finds and authenticates the sender for `code`; `status` gets
/// lines for the user while it looks.
pub async fn connect(code: &Code, seek: &Seek, status: mpsc::Sender<String>) -> Result<Found> {
    let node = start_node(&seek.peers, &seek.discovery).await?;
    let opts = FindOptions {
        peers: seek.peers.clone(),
        methods: seek.discovery.active(),
        wait: seek.wait,
        clock: seek.discovery.clock.clone(),
        allow_relay: seek.allow_relay,
    };
    find(&node, code, &opts, status).await
}
