//! `pcp node`: a helper node (DHT server, circuit relay v2, AutoNAT v2) that prints its
//! addresses on stdout and runs until Ctrl-C or SIGTERM. With `--key FILE` its identity (and so
//! its `/p2p/` addresses) survives restarts, as a service needs.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use libp2p::Multiaddr;

use super::interrupted;
use crate::error::{Error, Result};
use crate::net::discovery::{Discovery, Method};
use crate::net::identity::{self, KeyOrigin};
use crate::net::{Node, NodeConfig, Role};

#[derive(Args, Debug)]
pub(super) struct NodeArgs {
    /// Listen address (repeatable). Default: all interfaces, TCP and QUIC, port 4001.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Keep the node's identity (an Ed25519 libp2p keypair) in FILE, so its peer ID stays the
    /// same across restarts: created with mode 0600 if missing; refused if group or others may
    /// access it. Without it, every start has a new peer ID.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

pub(super) async fn helper_node(a: NodeArgs, discovery: Discovery) -> Result<()> {
    let listen = if a.listen.is_empty() {
        ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
            .iter()
            .map(|s| s.parse().expect("valid"))
            .collect()
    } else {
        a.listen
    };
    let key = match &a.key {
        None => libp2p::identity::Keypair::generate_ed25519(),
        Some(path) => {
            let (key, origin) = identity::load_or_create(path)?;
            let peer = key.public().to_peer_id();
            match origin {
                KeyOrigin::Created => {
                    say!(
                        "Created a new node key in {} (peer ID {peer}).",
                        path.display()
                    )
                }
                KeyOrigin::Loaded => {
                    say!(
                        "Loaded the node key from {} (peer ID {peer}).",
                        path.display()
                    )
                }
            }
            key
        }
    };
    let cfg = NodeConfig {
        listen,
        role: Role::Helper,
        // Helpers join each other (or the IPFS DHT) like everyone else.
        bootstrap: if discovery.methods.contains(&Method::None) {
            vec![]
        } else {
            discovery.bootstrap
        },
        announce: true,
    };
    let node = Node::start_with_key(cfg, key).await?;
    let addrs = node.listen_addrs().await?;
    let mut out = std::io::stdout().lock();
    for addr in addrs {
        let _ = writeln!(out, "{addr}");
    }
    let _ = out.flush();
    drop(out);
    say!("pcp node running: DHT server, circuit relay v2, AutoNAT v2. Ctrl-C to stop.");
    interrupted().await;
    Err(Error::Interrupted)
}
