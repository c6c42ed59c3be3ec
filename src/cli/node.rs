//! `pcp node`: a helper node (DHT server, circuit relay v2, AutoNAT v2) that prints its
//! addresses on stdout and runs until Ctrl-C.

use std::io::Write;

use clap::Args;
use libp2p::Multiaddr;

use super::interrupted;
use crate::error::{Error, Result};
use crate::net::discovery::{Discovery, Method};
use crate::net::{Node, NodeConfig, Role};

#[derive(Args, Debug)]
pub(super) struct NodeArgs {
    /// Listen address (repeatable). Default: all interfaces, TCP and QUIC, port 4001.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
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
    let node = Node::start(NodeConfig {
        listen,
        role: Role::Helper,
        // Helpers join each other (or the IPFS DHT) like everyone else.
        bootstrap: if discovery.methods.contains(&Method::None) {
            vec![]
        } else {
            discovery.bootstrap
        },
    })
    .await?;
    for addr in node.listen_addrs().await? {
        println!("{addr}");
    }
    let _ = std::io::stdout().flush();
    say!("pcp node running: DHT server, circuit relay v2, AutoNAT v2. Ctrl-C to stop.");
    interrupted().await;
    Err(Error::Interrupted)
}
