//! `pcp send` as a library type: scan what is shared, start a node (all interfaces, IPv4 only
//! where IPv6 is off), announce it by mDNS and on the DHT, and serve receivers until one has
//! finished, reporting [`SendEvent`]s. The CLI only prints them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use libp2p::Multiaddr;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::serve::{serve, ServeOptions, ShareEnd, ShareEvent};
use super::spool::Spool;
use super::store::Share;
use crate::code::Code;
use crate::error::{Error, Result};
use crate::manifest::{LocalTree, Root, Rules};
use crate::net::discovery::{DhtAnnouncer, Discovery, MdnsAnnouncer, Method};
use crate::net::{NetEvent, Node};
use crate::proto::{Offer, MAX_TEXT};

/// What `pcp send` reports while it runs.
#[derive(Debug, Clone)]
pub enum SendEvent {
    /// Something happened with a receiver.
    Share(ShareEvent),
    /// A line about publishing on the DHT.
    Dht(String),
    /// A relay accepted our reservation: reachable through it at this address.
    RelayReserved(Multiaddr),
}

/// What `pcp send` shares.
#[derive(Debug)]
pub enum Shared {
    /// Files and folders, scanned with these rules.
    Paths(Vec<PathBuf>, Rules),
    /// Bytes spooled from a stream (standard input), as one file of this name.
    Spooled(Spool, OsString),
    /// A text message: one small file (`message.txt`) whose content the receiver prints.
    Text(Spool),
}

/// The name of a text message's one file: what a receiver that does not know text messages
/// writes.
pub const TEXT_NAME: &str = "message.txt";

impl Shared {
    /// Scans what is shared (blocking). A spool keeps its spooled bytes alive.
    fn scan(self) -> Result<(LocalTree, Option<Spool>)> {
        let (spool, name, text) = match self {
            Shared::Paths(paths, rules) => {
                let roots: Vec<Root> = paths.into_iter().map(Root::from).collect();
                return Ok((LocalTree::scan(&roots, &rules)?, None));
            }
            Shared::Spooled(spool, name) => (spool, name, false),
            Shared::Text(spool) => (spool, OsString::from(TEXT_NAME), true),
        };
        if text && spool.len() > MAX_TEXT {
            return Err(Error::TextTooLong(spool.len()));
        }
        let root = Root {
            path: spool.path(),
            name: Some(name),
        };
        let mut tree = LocalTree::scan(&[root], &Rules::default())?;
        // The spool is 0600 as it must be; what it carries gets the mode of a new file.
        tree.entries[0].mode = 0o644;
        tree.text = text;
        Ok((tree, Some(spool)))
    }
}

/// A share whose node is up and listening, not yet announced.
pub struct Sender {
    node: Node,
    share: Arc<Share>,
    /// Holds the bytes of standard input or a text message while they are shared.
    _spool: Option<Spool>,
    code: Code,
    discovery: Discovery,
    addrs: Vec<Multiaddr>,
}

/// All interfaces, TCP and QUIC, IPv4 and IPv6, ephemeral ports.
fn default_listen() -> Vec<Multiaddr> {
    [
        "/ip4/0.0.0.0/tcp/0",
        "/ip4/0.0.0.0/udp/0/quic-v1",
        "/ip6/::/tcp/0",
        "/ip6/::/udp/0/quic-v1",
    ]
    .iter()
    .map(|a| a.parse().expect("valid multiaddr"))
    .collect()
}

impl Sender {
    /// Scans what is shared and starts the node on `listen` (empty: all interfaces).
    pub async fn start(
        what: Shared,
        code: Code,
        listen: Vec<Multiaddr>,
        discovery: Discovery,
    ) -> Result<Sender> {
        let (tree, spool) = tokio::task::spawn_blocking(move || what.scan())
            .await
            .map_err(|e| Error::io("scanning the share", std::io::Error::other(e)))??;
        let share = Arc::new(Share::new(tree));
        if let Some(s) = &spool {
            share.set_hash(1, s.hash());
        }
        let node = if listen.is_empty() {
            let mut l = default_listen();
            // IPv6 may be off on this machine; fall back to IPv4 only.
            match Node::start(discovery.node_config(l.clone(), true)).await {
                Ok(n) => n,
                Err(_) => {
                    l.truncate(2);
                    Node::start(discovery.node_config(l, true)).await?
                }
            }
        } else {
            Node::start(discovery.node_config(listen, true)).await?
        };
        let addrs = node.listen_addrs().await?;
        Ok(Sender {
            node,
            share,
            _spool: spool,
            code,
            discovery,
            addrs,
        })
    }

    /// Things skipped while scanning (special files, unreadable folders).
    pub fn warnings(&self) -> &[String] {
        &self.share.tree().warnings
    }

    pub fn offer(&self) -> Offer {
        self.share.offer()
    }

    /// Entries that `--exclude` and `--gitignore` left out.
    pub fn left_out(&self) -> u64 {
        self.share.tree().left_out
    }

    pub fn code(&self) -> &Code {
        &self.code
    }

    /// The addresses receivers can dial (with `/p2p/`).
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }

    /// The share, for counters ([`Share::served`]).
    pub fn share(&self) -> &Arc<Share> {
        &self.share
    }

    /// Announces the share and serves receivers until one has finished or declined (with
    /// `keep`: several receivers, each with its own session, until stopped), or `stop`
    /// is cancelled (receivers are told, and this returns [`Error::Interrupted`] within about a
    /// second). Cancel-safe: dropping the future stops sharing.
    pub async fn run(
        &self,
        events: mpsc::Sender<SendEvent>,
        stop: CancellationToken,
        keep: bool,
        limit_rate: Option<u64>,
    ) -> Result<ShareEnd> {
        let channel = self.code.channel();
        let clock = self.discovery.clock.clone();
        let _mdns = if self.discovery.uses(Method::Mdns) {
            Some(MdnsAnnouncer::start(
                self.node.peer_id(),
                &self.addrs,
                channel,
                clock.clone(),
            )?)
        } else {
            None
        };
        let (status_tx, mut status) = mpsc::channel::<String>(16);
        let mdns = self.discovery.uses(Method::Mdns);
        let _dht = self
            .discovery
            .uses(Method::Dht)
            .then(|| DhtAnnouncer::start(self.node.clone(), channel, clock, status_tx, mdns));
        let mut net_events = self.node.subscribe();
        let (tx, mut rx) = mpsc::channel(16);
        let opts = ServeOptions {
            stop: stop.clone(),
            keep,
            limit_rate,
        };
        let serving = serve(&self.node, self.share.clone(), &self.code, tx, opts);
        tokio::pin!(serving);
        loop {
            tokio::select! {
                r = &mut serving => {
                    // What the share reported just before it ended still reaches the caller.
                    while let Ok(ev) = rx.try_recv() {
                        let _ = events.send(SendEvent::Share(ev)).await;
                    }
                    return r;
                }
                _ = stop.cancelled() => {
                    // Tell connected receivers (a mount then fails reads with EIO and says why).
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut serving).await;
                    return Err(Error::Interrupted);
                }
                Some(ev) = rx.recv() => {
                    let _ = events.send(SendEvent::Share(ev)).await;
                }
                Some(line) = status.recv() => {
                    let _ = events.send(SendEvent::Dht(line)).await;
                }
                Ok(ev) = net_events.recv() => {
                    if let NetEvent::RelayReserved(a) = ev {
                        let _ = events.send(SendEvent::RelayReserved(a)).await;
                    }
                }
            }
        }
    }
}
