//! Issue "Security": the guess budget holds however many handshakes arrive at once, and
//! impostor candidates cost a receiver at most its own budget.
use super::*;
use pcp::crypto::{self, HandshakeParams};
use pcp::fetch::connect::{find, FindOptions, MAX_GUESSES};
use pcp::net::{Node, NodeConfig, STREAM_PROTOCOL};
use pcp::proto::{opening, Role};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// One wrong guess over a new stream; `Some(true)` when the sender said "wrong code".
async fn guess(node: &Node, peer: libp2p::PeerId, phrase: &str) -> Option<bool> {
    let mut io = node
        .control()
        .open_stream(peer, STREAM_PROTOCOL)
        .await
        .ok()?
        .compat();
    let p = HandshakeParams::with_code(phrase, Role::Receiver, peer, node.peer_id());
    let r = tokio::time::timeout(Duration::from_secs(20), crypto::handshake(&mut io, p, None))
        .await
        .ok()?;
    Some(matches!(r, Err(Error::WrongCode)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_handshakes_at_once_get_at_most_three_verdicts() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"secret").unwrap();
    let code = Code::parse("bubble-enemy-result-increase").unwrap();
    let mut sender = start_sender(&[src.path().join("f")], &code).await;
    let node = Node::start(NodeConfig::default()).await.unwrap();
    let peer = node.dial(sender.addr.clone()).await.unwrap();
    let wrong = "bubble-abandon-ability-able";
    let wave: Vec<_> = (0..50)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { guess(&node, peer, wrong).await })
        })
        .collect();
    let mut verdicts = 0;
    for t in wave {
        if t.await.unwrap() == Some(true) {
            verdicts += 1;
        }
    }
    assert!(verdicts <= 3, "{verdicts} verdicts for 50 parallel guesses");
    // Guess on, one at a time, until the share stops: 3 verdicts in all, never more.
    for _ in 0..10 {
        if sender.task.is_finished() {
            break;
        }
        if guess(&node, peer, wrong).await == Some(true) {
            verdicts += 1;
        }
    }
    let end = within(20, &mut sender.task).await.unwrap();
    assert!(matches!(end, Err(Error::TooManyAttempts(3))), "{end:?}");
    assert_eq!(verdicts, 3);
}

/// A node that answers every handshake as a sender with another code, counting them.
async fn impostor(count: Arc<AtomicUsize>) -> libp2p::Multiaddr {
    let (node, addr) = loopback_node().await;
    let mut incoming = node.control().accept(STREAM_PROTOCOL).unwrap();
    tokio::spawn(async move {
        use futures::StreamExt;
        let me = node.peer_id();
        let _node = node;
        while let Some((peer, stream)) = incoming.next().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut io = stream.compat();
                if let Ok(opening::Kind::Hello(h)) = pcp::proto::read_opening(&mut io).await {
                    count.fetch_add(1, Ordering::SeqCst);
                    let p =
                        HandshakeParams::with_code("zoo-zoo-zoo-abandon", Role::Sender, me, peer);
                    let _ = crypto::handshake(&mut io, p, Some(h)).await;
                }
            });
        }
    });
    addr
}

fn options(peers: Vec<libp2p::Multiaddr>) -> FindOptions {
    FindOptions {
        peers,
        methods: vec![],
        wait: Duration::from_secs(20),
        clock: pcp::net::discovery::shifted_clock(0),
        allow_relay: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_cost_at_most_the_guess_budget_and_cannot_end_the_search() {
    let code = Code::parse("bubble-enemy-result-increase").unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let mut fakes = Vec::new();
    for _ in 0..20 {
        fakes.push(impostor(count.clone()).await);
    }
    let node = Node::start(NodeConfig::default()).await.unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel(64);
    let r = within(30, find(&node, &code, &options(fakes.clone()), tx)).await;
    assert!(matches!(r, Err(Error::WrongCode)), "{:?}", r.err());
    let tried = count.load(Ordering::SeqCst);
    assert!(tried <= MAX_GUESSES, "{tried} impostors got a guess");
    // Among a few impostors, the real sender is still found.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"real").unwrap();
    let sender = start_sender(&[src.path().join("f")], &code).await;
    let mut peers = fakes[..MAX_GUESSES - 1].to_vec();
    peers.push(sender.addr.clone());
    let node = Node::start(NodeConfig::default()).await.unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel(64);
    let found = within(30, find(&node, &code, &options(peers), tx)).await;
    assert!(found.is_ok(), "{:?}", found.err());
}
