//! Receivers that hold the code (or only the channel) and misbehave.
use super::*;
use pcp::net::{Node, NodeConfig, STREAM_PROTOCOL};
use pcp::proto::{opening, Join};
use tokio_util::compat::FuturesAsyncReadCompatExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_and_others_are_unaffected() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    std::fs::write(src.path().join("d/f"), bytes(3 << 20, 41)).unwrap();
    let code = Code::generate(4);
    // Several receivers at once (`--keep`): a misbehaving one cannot hurt the others.
    let keep = pcp::share::ServeOptions {
        keep: true,
        ..Default::default()
    };
    let sender = start_sender_with(&[src.path().join("d")], &code, keep).await;

    let mut bad = within(20, connect(&sender.addr, &code)).await.unwrap();
    let m = bad.accept(false).await.unwrap();
    let file = m.entries().iter().find(|e| e.name == b"f").unwrap().id;
    let c = bad.client(4).await.unwrap();
    let remote = |r: pcp::Result<_>| match r {
        Err(Error::Remote(m)) => m,
        Err(e) => panic!("expected an error reply, got {e}"),
        Ok(_) => panic!("expected an error reply"),
    };
    // Unknown ids (a directory's id too), offsets past the end, huge lengths, bad ranges.
    assert!(remote(c.read(9999, 0, 10).await.map(|_| ())).contains("no file"));
    assert!(remote(c.read(1, 0, 10).await.map(|_| ())).contains("no file"));
    assert!(remote(c.read(file, (3 << 20) + 1, 10).await.map(|_| ())).contains("past the end"));
    assert!(remote(c.read(file, 0, u32::MAX).await.map(|_| ())).contains("exceeds"));
    assert!(
        remote(c.range_hash(file, u64::MAX - 1, 10).await.map(|_| ())).contains("out of bounds")
    );
    assert!(remote(c.range_hash(file, 0, 1 << 40).await.map(|_| ())).contains("out of bounds"));
    // Thousands of requests in flight at once: all answered, correctly.
    let want = std::fs::read(src.path().join("d/f")).unwrap();
    let mut tasks = Vec::new();
    for i in 0..3000u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let off = (i * 997) % (3 << 20);
            (off, c.read(file, off, 1000).await.unwrap().0)
        }));
    }
    for t in tasks {
        let (off, data) = within(60, t).await.unwrap();
        let off = off as usize;
        assert_eq!(&data[..], &want[off..(off + 1000).min(want.len())]);
    }
    // Meanwhile another receiver gets everything.
    let out = tempfile::tempdir().unwrap();
    let mut good = within(20, connect(&sender.addr, &code)).await.unwrap();
    let m2 = good.accept(false).await.unwrap();
    let gc = good.client(2).await.unwrap();
    receive_into(&gc, &m2, out.path()).await.unwrap();
    assert_eq!(std::fs::read(out.path().join("d/f")).unwrap(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_with_only_the_channel_gets_nothing() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("secret-name.txt"), b"secret bytes").unwrap();
    let code = Code::parse("bubble-enemy-result-increase").unwrap();
    let mut sender = start_sender(&[src.path().join("secret-name.txt")], &code).await;
    // It knows the channel (the first word), so it tries the other words.
    let guess = Code::parse("bubble-abandon-ability-able").unwrap();
    let err = within(10, connect(&sender.addr, &guess))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::WrongCode), "{err}");
    // Joining a session it does not have: the stream is closed, nothing comes back.
    let node = Node::start(NodeConfig::default()).await.unwrap();
    let peer = node.dial(sender.addr.clone()).await.unwrap();
    let mut io = node
        .control()
        .open_stream(peer, STREAM_PROTOCOL)
        .await
        .unwrap()
        .compat();
    pcp::proto::write_opening(
        &mut io,
        opening::Kind::Join(Join {
            session: vec![7; 16],
            index: 1,
        }),
    )
    .await
    .unwrap();
    let got = within(10, pcp::proto::read_frame(&mut io, 1 << 20)).await;
    assert!(matches!(got, Ok(None) | Err(_)), "{got:?}");
    // Its failed guess counted towards the limit of three.
    match within(5, sender.events.recv()).await {
        Some(pcp::share::ShareEvent::WrongCode { attempts: 1 }) => {}
        other => panic!("{other:?}"),
    }
}
