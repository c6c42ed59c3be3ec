//! Send and receive between two real libp2p nodes in one process, over loopback.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::sync::Arc;

use common::*;
use pcp::code::Code;
use pcp::error::Error;
use pcp::receive::{self, Progress, ReceiveOptions};
use pcp::share::ShareEnd;

fn set_mtime(p: &std::path::Path, secs: i64, nsec: u32) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs as u64, nsec);
    let f = std::fs::File::options()
        .write(true)
        .open(p)
        .or_else(|_| std::fs::File::open(p))
        .unwrap();
    f.set_modified(t).unwrap();
}

/// The tree the issue asks for: nested folders, empty files and folders, a 50 MiB file,
/// unicode and spaces in names, symlinks inside and pointing outside, unusual modes.
fn make_tree(root: &std::path::Path) {
    let d = root.join("photos");
    std::fs::create_dir_all(d.join("2024/summer trip/ünïcödé ✓")).unwrap();
    std::fs::create_dir_all(d.join("empty folder")).unwrap();
    std::fs::write(d.join("big.bin"), bytes(50 << 20, 1)).unwrap();
    std::fs::write(d.join("empty.txt"), b"").unwrap();
    std::fs::write(
        d.join("2024/summer trip/ünïcödé ✓/café au lait.jpg"),
        bytes(123_457, 2),
    )
    .unwrap();
    std::fs::write(d.join("2024/exactly one chunk"), bytes(1 << 20, 3)).unwrap();
    std::fs::write(d.join("2024/one chunk plus one"), bytes((1 << 20) + 1, 4)).unwrap();
    for i in 0..50 {
        std::fs::write(
            d.join(format!("2024/small {i}.txt")),
            format!("file {i}\n").repeat(i),
        )
        .unwrap();
    }
    std::fs::write(d.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(d.join("script.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(d.join("secret"), b"s").unwrap();
    std::fs::set_permissions(d.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    symlink("big.bin", d.join("link inside")).unwrap();
    symlink("../../../etc/passwd", d.join("2024/link outside")).unwrap();
    symlink("/etc/hostname", d.join("absolute link")).unwrap();
    set_mtime(&d.join("big.bin"), 1_500_000_000, 123_456_789);
    set_mtime(&d.join("empty.txt"), 1_000_000_000, 0);
    std::fs::set_permissions(
        d.join("empty folder"),
        std::fs::Permissions::from_mode(0o705),
    )
    .unwrap();
    let second = root.join("notes.md");
    std::fs::write(&second, b"# notes\n").unwrap();
}

/// Receives everything of `m` from `src` into `out` (no overwriting), within 60 s.
async fn receive_into<S: pcp::fetch::FileSource>(
    src: &S,
    m: &pcp::manifest::Manifest,
    out: &std::path::Path,
) -> pcp::Result<receive::Summary> {
    receive_over(src, m, out, false).await
}

/// [`receive_into`], replacing what is in the way if `overwrite`.
async fn receive_over<S: pcp::fetch::FileSource>(
    src: &S,
    m: &pcp::manifest::Manifest,
    out: &std::path::Path,
    overwrite: bool,
) -> pcp::Result<receive::Summary> {
    let opts = ReceiveOptions {
        out: out.to_path_buf(),
        overwrite,
    };
    within(
        60,
        receive::receive_all(src, m, &opts, Arc::new(Progress::default())),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_tree_arrives_identical() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let code = Code::generate(4);
    let sender = start_sender(
        &[src.path().join("photos"), src.path().join("notes.md")],
        &code,
    )
    .await;

    let mut session = within(20, connect(&sender.addr, &code)).await.unwrap();
    let offer = session.offer().await.unwrap();
    assert_eq!(offer.roots, vec![b"photos/".to_vec(), b"notes.md".to_vec()]);
    let manifest = session.accept(false).await.unwrap();
    let client = session.client(4).await.unwrap();
    let opts = ReceiveOptions {
        out: out.path().to_path_buf(),
        overwrite: false,
    };
    let progress = Arc::new(Progress::default());
    let summary = within(
        120,
        receive::receive_all(&client, &manifest, &opts, progress.clone()),
    )
    .await
    .unwrap();
    session.finish().await.unwrap();
    assert_eq!(
        within(10, sender.task).await.unwrap().unwrap(),
        ShareEnd::Finished
    );

    assert_eq!(summary.bytes, offer.bytes);
    assert_eq!(
        progress.bytes.load(std::sync::atomic::Ordering::Relaxed),
        offer.bytes
    );
    assert_eq!(
        snapshot(&src.path().join("photos")),
        snapshot(&out.path().join("photos"))
    );
    assert_eq!(
        snapshot(&src.path().join("notes.md")),
        snapshot(&out.path().join("notes.md"))
    );
    // No temporary files left behind.
    let leftovers: Vec<_> = snapshot(out.path())
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".pcp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A finished receive leaves no marker: pcp never merges into a folder that is there,
    // a rerun is refused before anything is touched ...
    let err = receive::preflight(&manifest, &opts).unwrap_err();
    assert!(matches!(err, Error::TargetExists(_)), "{err}");
    // ... unless the folder is one an interrupted receive left (it carries the marker): then
    // what is there and identical passes (a rerun skips it) ...
    std::fs::write(out.path().join("photos/.pcp-unfinished"), b"").unwrap();
    receive::preflight(&manifest, &opts).unwrap();
    // ... but a different file of another size in the way stops everything before it starts.
    std::fs::write(out.path().join("photos/empty.txt"), b"not empty").unwrap();
    let err = receive::preflight(&manifest, &opts).unwrap_err();
    assert!(matches!(err, Error::TargetExists(_)), "{err}");
}

/// Fails every read once `budget` bytes have been served: an interrupted transfer.
#[derive(Clone)]
struct Cut {
    inner: pcp::fetch::Client,
    left: Arc<std::sync::atomic::AtomicI64>,
}

impl pcp::fetch::FileSource for Cut {
    async fn read(
        &self,
        file: u64,
        offset: u64,
        len: u32,
    ) -> pcp::Result<(bytes::Bytes, Option<[u8; 32]>)> {
        if self
            .left
            .fetch_sub(len as i64, std::sync::atomic::Ordering::SeqCst)
            <= 0
        {
            return Err(Error::ConnectionLost("cut by the test".into()));
        }
        self.inner.read(file, offset, len).await
    }
    async fn hash(&self, file: u64) -> pcp::Result<[u8; 32]> {
        self.inner.hash(file).await
    }
    async fn range_hash(&self, file: u64, offset: u64, len: u64) -> pcp::Result<[u8; 32]> {
        self.inner.range_hash(file, offset, len).await
    }
}

fn part_of(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let h = blake3::hash(name.as_bytes());
    let hex: String = h.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join(format!(".pcp-{hex}.part"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_receive_resumes_with_a_new_share() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let d = src.path().join("data");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("big"), bytes(96 << 20, 21)).unwrap();
    std::fs::write(d.join("mid"), bytes(20 << 20, 22)).unwrap();
    for i in 0..20 {
        std::fs::write(d.join(format!("small{i}")), bytes(10_000, 100 + i)).unwrap();
    }
    let total: u64 = 96 * (1 << 20) + 20 * (1 << 20) + 20 * 10_000;

    // First run: cut at about half.
    let (sender, mut s, m) = accepted(std::slice::from_ref(&d)).await;
    let cut = Cut {
        inner: s.client(4).await.unwrap(),
        left: Arc::new((total as i64 / 2).into()),
    };
    let r = receive_into(&cut, &m, out.path()).await;
    assert!(r.is_err(), "the cut must fail the first run");
    sender.task.abort();
    // Nothing incomplete under a final name; the partial data is kept for later.
    assert!(!out.path().join("data/big").exists());
    assert!(part_of(&out.path().join("data"), "big").exists());

    // Second run: a new share of the same files (new code), into the same folder.
    let (_sender, mut s, m) = accepted(std::slice::from_ref(&d)).await;
    let client = s.client(4).await.unwrap();
    let summary = receive_into(&client, &m, out.path()).await.unwrap();
    assert_eq!(snapshot(&d), snapshot(&out.path().join("data")));
    let moved = summary.bytes;
    eprintln!(
        "second run moved {moved} of {total} bytes ({:.0}%), reused {}",
        moved as f64 * 100.0 / total as f64,
        summary.reused
    );
    // The cut falls at half of the bytes. What was fetched but not yet written when it fell
    // (up to the receiver's 24 MiB window) and the unverified tail of the partial file (resume
    // keeps whole 16 MiB pieces) are fetched again; the rest is reused.
    assert!(moved <= total / 2 + (40 << 20), "moved {moved} of {total}");
    assert!(summary.reused >= 32 << 20, "reused only {}", summary.reused);
    assert_eq!(moved + summary.reused, total);

    // A third run finds the folder finished: refused, as any folder that is there; with
    // --overwrite it finds every file identical and moves nothing.
    let err = receive_into(&client, &m, out.path()).await.unwrap_err();
    assert!(matches!(err, Error::TargetExists(_)), "{err}");
    let third = receive_over(&client, &m, out.path(), true).await.unwrap();
    assert_eq!((third.bytes, third.reused), (0, total));
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_partial_data_is_not_trusted() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let d = src.path().join("data");
    std::fs::create_dir(&d).unwrap();
    let content = bytes(40 << 20, 31);
    std::fs::write(d.join("f"), &content).unwrap();
    // A leftover temporary file whose second 16 MiB piece is damaged, in the folder an
    // interrupted receive left (with its marker).
    std::fs::create_dir(out.path().join("data")).unwrap();
    std::fs::write(out.path().join("data/.pcp-unfinished"), b"").unwrap();
    let mut bad = content[..(30 << 20)].to_vec();
    bad[(20 << 20) + 5] ^= 0xff;
    let part = part_of(&out.path().join("data"), "f");
    std::fs::write(&part, &bad).unwrap();
    let (_sender, mut s, m) = accepted(std::slice::from_ref(&d)).await;
    let client = s.client(4).await.unwrap();
    let summary = receive_into(&client, &m, out.path()).await.unwrap();
    assert_eq!(std::fs::read(out.path().join("data/f")).unwrap(), content);
    // Only the first, intact piece was kept.
    assert_eq!(summary.reused, 16 << 20);
    assert!(!part.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_code_fails_on_both_sides_and_three_strikes_end_the_share() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"data").unwrap();
    logs();
    let code = Code::parse("bubble-enemy-result-increase").unwrap();
    let wrong = Code::parse("bubble-enemy-result-pencil").unwrap();
    let mut sender = start_sender(&[src.path().join("f")], &code).await;
    for attempt in 1..=3u32 {
        let r = within(5, connect(&sender.addr, &wrong)).await;
        let err = r.err().expect("a wrong code must not authenticate");
        assert!(matches!(err, Error::WrongCode), "{err}");
        assert!(err.to_string().contains("someone may be guessing"));
        match within(5, sender.events.recv()).await {
            Some(pcp::share::ShareEvent::WrongCode { attempts }) => assert_eq!(attempts, attempt),
            other => panic!("expected a wrong-code event, got {other:?}"),
        }
    }
    let end = within(5, sender.task).await.unwrap();
    assert!(matches!(end, Err(Error::TooManyAttempts(3))), "{end:?}");
    // The right code no longer works: the share is gone.
    assert!(within(10, connect(&sender.addr, &code)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declining_stops_the_sender() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"data").unwrap();
    let code = Code::generate(3);
    let sender = start_sender(&[src.path().join("f")], &code).await;
    let mut session = within(30, connect(&sender.addr, &code)).await.unwrap();
    assert_eq!(session.offer().await.unwrap().files, 1);
    session.decline().await.unwrap();
    assert_eq!(
        within(30, sender.task).await.unwrap().unwrap(),
        ShareEnd::Declined
    );
}

mod hostile {
    //! A fake sender that speaks the real protocol with the real keys, but lies.
    use super::*;
    use futures::StreamExt;
    use pcp::crypto::{self, HandshakeParams, SecureReader, SecureWriter};
    use pcp::net::STREAM_PROTOCOL;
    use pcp::proto::{
        envelope::Msg, opening, Entry, Kind, ManifestChunk, Offer, Ready, Response, Role,
    };
    use tokio_util::compat::FuturesAsyncReadCompatExt;

    /// A manifest entry whose symlinks point at /etc/passwd.
    fn entry(id: u64, parent: u64, name: &[u8], kind: Kind, size: u64) -> Entry {
        let e = pcp::manifest::test_entry(id, parent, name, kind, size);
        match kind {
            Kind::Symlink => Entry {
                target: b"/etc/passwd".to_vec(),
                ..e
            },
            _ => e,
        }
    }

    /// How the fake sender answers a read of `len` bytes at `offset`: data and optional hash.
    type Answer = fn(u64, u32) -> (Vec<u8>, Vec<u8>);

    /// Serves `entries` to whoever authenticates with `code`, answering reads with `answer`.
    async fn fake_sender(code: &Code, entries: Vec<Entry>, answer: Answer) -> libp2p::Multiaddr {
        fake_sender_offering(code, entries, answer, None).await
    }

    /// Like `fake_sender`, but its offer may claim `offered` entries.
    async fn fake_sender_offering(
        code: &Code,
        entries: Vec<Entry>,
        answer: Answer,
        offered: Option<u64>,
    ) -> libp2p::Multiaddr {
        let (node, addr) = loopback_node().await;
        let mut incoming = node.control().accept(STREAM_PROTOCOL).unwrap();
        let phrase = code.phrase();
        tokio::spawn(async move {
            let me = node.peer_id();
            let _node = node;
            let mut keys = None;
            while let Some((peer, stream)) = incoming.next().await {
                let mut io = stream.compat();
                match pcp::proto::read_opening(&mut io).await.unwrap() {
                    opening::Kind::Hello(h) => {
                        let k = crypto::handshake(
                            &mut io,
                            HandshakeParams::with_code(&phrase, Role::Sender, me, peer),
                            Some(h),
                        )
                        .await
                        .unwrap();
                        keys = Some(k.clone());
                        let entries = entries.clone();
                        tokio::spawn(async move {
                            let (s, o) = k.stream(0);
                            let (r, w) = tokio::io::split(io);
                            let (mut r, mut w) = (SecureReader::new(r, o), SecureWriter::new(w, s));
                            let files = entries
                                .iter()
                                .filter(|e| e.kind == Kind::File as i32)
                                .count() as u64;
                            w.send_now(Msg::Offer(Offer {
                                entries: offered.unwrap_or(entries.len() as u64),
                                files,
                                bytes: 0,
                                roots: vec![],
                                text: false,
                            }))
                            .await
                            .unwrap();
                            // The manifest right behind the offer; then the answer.
                            w.send_now(Msg::Manifest(ManifestChunk {
                                entries,
                                last: true,
                            }))
                            .await
                            .unwrap();
                            while let Ok(Some(_)) = r.recv().await {}
                        });
                    }
                    opening::Kind::Join(j) => {
                        let k = keys.clone().unwrap();
                        tokio::spawn(async move {
                            let (s, o) = k.stream(j.index);
                            let (r, w) = tokio::io::split(io);
                            let (mut r, mut w) = (SecureReader::new(r, o), SecureWriter::new(w, s));
                            w.send_now(Msg::Ready(Ready {})).await.unwrap();
                            while let Ok(Some(Msg::Request(req))) = r.recv().await {
                                let (data, hash) = match req.op {
                                    Some(pcp::proto::request::Op::Read(rd)) => {
                                        answer(rd.offset, rd.len)
                                    }
                                    _ => (vec![], vec![0; 32]),
                                };
                                let resp = Response {
                                    id: req.id,
                                    data: data.into(),
                                    hash,
                                    error: None,
                                };
                                if w.send_now(Msg::Response(resp)).await.is_err() {
                                    break;
                                }
                            }
                        });
                    }
                }
            }
        });
        addr
    }

    fn honest(_off: u64, len: u32) -> (Vec<u8>, Vec<u8>) {
        let data = vec![7u8; len as usize];
        let hash = blake3::hash(&data).as_bytes().to_vec();
        (data, hash)
    }

    /// Runs a receive against a fake sender; returns the error and checks nothing escaped.
    async fn receive_from(entries: Vec<Entry>, answer: Answer) -> Error {
        let code = Code::generate(4);
        let addr = fake_sender(&code, entries, answer).await;
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let result = within(20, async {
            let mut s = connect(&addr, &code).await?;
            let m = s.accept(false).await?;
            let client = s.client(2).await?;
            let opts = ReceiveOptions {
                out: out.clone(),
                overwrite: false,
            };
            receive::receive_all(&client, &m, &opts, Arc::new(Progress::default())).await
        })
        .await;
        // Nothing was written next to --out, whatever happened inside it.
        let beside: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, vec![std::ffi::OsString::from("out")]);
        // No file that failed verification is kept under its final name.
        for (p, d) in snapshot(&out) {
            assert!(
                !d.starts_with("file")
                    || p.to_string_lossy().contains(".pcp-")
                    || d.contains(" 0 bytes"),
                "kept {p:?}: {d}"
            );
        }
        result.expect_err("a lying sender must fail the receive")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_manifests_are_refused_before_anything_is_written() {
        let cases: Vec<(&str, Vec<Entry>)> = vec![
            ("dotdot", vec![entry(1, 0, b"..", Kind::File, 1)]),
            ("dot", vec![entry(1, 0, b".", Kind::Dir, 0)]),
            ("empty name", vec![entry(1, 0, b"", Kind::File, 1)]),
            ("slash", vec![entry(1, 0, b"a/../../x", Kind::File, 1)]),
            (
                "absolute",
                vec![entry(1, 0, b"/tmp/pcp-escape", Kind::File, 1)],
            ),
            ("nul", vec![entry(1, 0, b"a\0b", Kind::File, 1)]),
            ("long name", vec![entry(1, 0, &[b'n'; 300], Kind::File, 1)]),
            (
                "duplicate",
                vec![
                    entry(1, 0, b"a", Kind::File, 1),
                    entry(2, 0, b"a", Kind::File, 1),
                ],
            ),
            (
                "parent is a file",
                vec![
                    entry(1, 0, b"a", Kind::File, 1),
                    entry(2, 1, b"b", Kind::File, 1),
                ],
            ),
            (
                "parent is a symlink",
                vec![
                    entry(1, 0, b"a", Kind::Symlink, 0),
                    entry(2, 1, b"b", Kind::File, 1),
                ],
            ),
            (
                "forward parent",
                vec![
                    entry(1, 2, b"a", Kind::File, 1),
                    entry(2, 0, b"d", Kind::Dir, 0),
                ],
            ),
            (
                "temp name",
                vec![
                    entry(1, 0, b".pcp-2.part", Kind::Symlink, 0),
                    entry(2, 0, b"f", Kind::File, 1),
                ],
            ),
        ];
        for (what, entries) in cases {
            let err = receive_from(entries, honest).await;
            assert!(matches!(err, Error::InvalidManifest(_)), "{what}: {err}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_offer_of_ten_million_entries_is_refused_at_once() {
        let code = Code::generate(4);
        let addr = fake_sender_offering(
            &code,
            vec![entry(1, 0, b"f", Kind::File, 1)],
            honest,
            Some(10_000_000),
        )
        .await;
        let mut s = within(20, connect(&addr, &code)).await.unwrap();
        let err = within(10, s.accept(false)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidManifest(_)), "{err}");
        assert!(err.to_string().contains("10000000 entries"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lying_data_is_refused() {
        // Shorter data than the manifest promised.
        let short: Answer = |_, len| (vec![1; len as usize / 2], vec![]);
        let err = receive_from(vec![entry(1, 0, b"f", Kind::File, 100)], short).await;
        assert!(matches!(err, Error::InvalidManifest(_)), "{err}");
        // More data than asked.
        let long: Answer = |_, len| (vec![1; len as usize + 1], vec![]);
        let err = receive_from(vec![entry(1, 0, b"f", Kind::File, 100)], long).await;
        assert!(matches!(err, Error::Protocol(_)), "{err}");
        // Data that does not match the hash.
        let wrong_hash: Answer = |_, len| (vec![1; len as usize], vec![9; 32]);
        let err = receive_from(vec![entry(1, 0, b"f", Kind::File, 100)], wrong_hash).await;
        assert!(matches!(err, Error::Integrity(_)), "{err}");
        // A large file whose separate hash answer is wrong.
        let err = receive_from(vec![entry(1, 0, b"big", Kind::File, 3 << 20)], honest).await;
        assert!(matches!(err, Error::Integrity(_)), "{err}");
    }
}

mod hostile_receiver {
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
            remote(c.range_hash(file, u64::MAX - 1, 10).await.map(|_| ()))
                .contains("out of bounds")
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
}

mod faults {
    use super::*;

    /// Rewrites a source file after the first read: the sender must notice.
    #[derive(Clone)]
    struct Meddler {
        inner: pcp::fetch::Client,
        path: std::path::PathBuf,
        done: Arc<std::sync::atomic::AtomicBool>,
    }

    impl pcp::fetch::FileSource for Meddler {
        async fn read(
            &self,
            file: u64,
            offset: u64,
            len: u32,
        ) -> pcp::Result<(bytes::Bytes, Option<[u8; 32]>)> {
            let r = self.inner.read(file, offset, len).await;
            if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let mut data = std::fs::read(&self.path).unwrap();
                let last = data.len() - 1;
                data[last] ^= 1;
                std::fs::write(&self.path, data).unwrap();
            }
            r
        }
        async fn hash(&self, file: u64) -> pcp::Result<[u8; 32]> {
            self.inner.hash(file).await
        }
        async fn range_hash(&self, file: u64, offset: u64, len: u64) -> pcp::Result<[u8; 32]> {
            self.inner.range_hash(file, offset, len).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_changing_while_sent_is_never_kept_mixed() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let f = src.path().join("f");
        std::fs::write(&f, bytes(24 << 20, 51)).unwrap();
        let (_sender, mut s, m) = accepted(std::slice::from_ref(&f)).await;
        let src_ = Meddler {
            inner: s.client(2).await.unwrap(),
            path: f.clone(),
            done: Default::default(),
        };
        let err = receive_into(&src_, &m, out.path())
            .await
            .expect_err("a changed file must not be received");
        assert!(err.to_string().contains("changed on the sender"), "{err}");
        assert!(!out.path().join("f").exists());
    }

    /// Reads as a receive reads (`Read.hash`), but either without the flag, as from a sender
    /// that never sends the hash with its reads (`strip`), or with every hash that comes
    /// flipped.
    #[derive(Clone)]
    struct HashTamper {
        inner: pcp::fetch::Client,
        strip: bool,
    }

    impl pcp::fetch::FileSource for HashTamper {
        async fn read(
            &self,
            file: u64,
            offset: u64,
            len: u32,
        ) -> pcp::Result<(bytes::Bytes, Option<[u8; 32]>)> {
            self.inner.read(file, offset, len).await
        }
        const TOWARD_HASH: bool = true;
        async fn read_toward_hash(
            &self,
            file: u64,
            offset: u64,
            len: u32,
        ) -> pcp::Result<(bytes::Bytes, Option<[u8; 32]>)> {
            if self.strip {
                let (data, _) = self.inner.read(file, offset, len).await?;
                return Ok((data, None));
            }
            let (data, hash) = self.inner.read_toward_hash(file, offset, len).await?;
            Ok((data, hash.map(|h| h.map(|b| !b))))
        }
        async fn hash(&self, file: u64) -> pcp::Result<[u8; 32]> {
            self.inner.hash(file).await
        }
        async fn range_hash(&self, file: u64, offset: u64, len: u64) -> pcp::Result<[u8; 32]> {
            self.inner.range_hash(file, offset, len).await
        }
    }

    /// A large file's hash comes with the read that completes it; when none comes (a sender
    /// that does not put it together) the receiver asks for it and still checks the file, and
    /// a hash that does not match what arrived fails the file and leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hash_that_comes_with_the_reads_is_checked_or_asked_for() {
        let src = tempfile::tempdir().unwrap();
        let f = src.path().join("f");
        std::fs::write(&f, bytes((5 << 20) + 123, 71)).unwrap();
        for strip in [true, false] {
            let out = tempfile::tempdir().unwrap();
            let (_sender, mut s, m) = accepted(std::slice::from_ref(&f)).await;
            let tamper = HashTamper {
                inner: s.client(2).await.unwrap(),
                strip,
            };
            let r = receive_into(&tamper, &m, out.path()).await;
            if strip {
                r.unwrap();
                assert_eq!(
                    std::fs::read(out.path().join("f")).unwrap(),
                    std::fs::read(&f).unwrap()
                );
            } else {
                let err = r.expect_err("a wrong hash must fail the file");
                assert!(matches!(err, Error::Integrity(_)), "{err}");
                assert!(!out.path().join("f").exists());
                assert!(!part_of(out.path(), "f").exists());
            }
        }
    }

    /// A small tmpfs mounted for one test, unmounted even when it fails.
    struct Tmpfs(tempfile::TempDir);

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_is_said_before_the_file_is_fetched_and_keeps_what_was_written() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/small"), b"fits").unwrap();
        std::fs::write(src.path().join("d/big"), bytes(12 << 20, 61)).unwrap();
        let disk = Tmpfs(tempfile::tempdir().unwrap());
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
            .arg(disk.0.path())
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs needs root");
        let (sender, mut s, m) = accepted(&[src.path().join("d")]).await;
        let c = s.client(2).await.unwrap();
        let err = receive_into(&c, &m, disk.0.path())
            .await
            .expect_err("12 MiB cannot fit in 6 MiB");
        let text = err.to_string();
        assert!(
            text.contains("cannot reserve 12.00 MiB on disk for")
                && text.contains("No space left on device"),
            "{text}"
        );
        // Said before any of the big file was fetched: the sender served the small one only.
        assert!(sender.share.served() < 1 << 20, "{}", sender.share.served());
        // Nothing reported complete that is not; the temporary file stays for a later resume.
        assert!(!disk.0.path().join("d/big").exists());
        assert!(std::fs::read_dir(disk.0.path().join("d"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".pcp-")));
    }
}

mod post_quantum {
    //! The hybrid handshake against a real sender over libp2p: a man in the middle who alters
    //! the ML-KEM messages, and peers of protocol version 1.
    use super::*;
    use futures::StreamExt;
    use ml_kem::{ml_kem_768, KeyExport};
    use pcp::crypto::{self, HandshakeParams};
    use pcp::net::{Node, NodeConfig, STREAM_PROTOCOL, STREAM_PROTOCOL_1};
    use pcp::proto::{opening, read_frame, write_frame, Hello, Opening, Role};
    use prost::Message;
    use tokio::io::AsyncWriteExt;
    use tokio_util::compat::FuturesAsyncReadCompatExt;

    /// An encapsulation key and a ciphertext of the man in the middle's own making.
    fn forged_key() -> Vec<u8> {
        let dk = ml_kem_768::DecapsulationKey::from_seed([9u8; 64].into());
        dk.encapsulation_key().to_bytes().to_vec()
    }

    fn forged_ciphertext(to: &[u8]) -> Vec<u8> {
        let key = ml_kem::Key::<ml_kem_768::EncapsulationKey>::try_from(to).unwrap();
        let ek = ml_kem_768::EncapsulationKey::new(&key).unwrap();
        ek.encapsulate_deterministic(&[9u8; 32].into()).0.to_vec()
    }

    /// Forwards one plaintext frame, edited; false once either side is gone.
    async fn forward<R, W>(from: &mut R, to: &mut W, edit: impl FnOnce(Vec<u8>) -> Vec<u8>) -> bool
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let Ok(Some(f)) = read_frame(from, 1 << 20).await else {
            return false;
        };
        write_frame(to, &edit(f)).await.is_ok() && to.flush().await.is_ok()
    }

    /// Runs the real receiver handshake (right code) against the real sender through a relay
    /// on the libp2p stream that replaces the receiver's encapsulation key (`swap_key`) or the
    /// sender's ciphertext, and returns the receiver's result.
    async fn through_a_meddler(addr: &libp2p::Multiaddr, code: &Code, swap_key: bool) -> Error {
        let node = Node::start(NodeConfig::default()).await.unwrap();
        let peer = node.dial(addr.clone()).await.unwrap();
        let mut wire = node
            .control()
            .open_stream(peer, STREAM_PROTOCOL)
            .await
            .unwrap()
            .compat();
        let (mut mine, mut relay_end) = tokio::io::duplex(1 << 16);
        let phrase = code.phrase();
        let me = node.peer_id();
        let receiver = async move {
            let params = HandshakeParams::with_code(&phrase, Role::Receiver, peer, me);
            crypto::handshake(&mut mine, params, None).await
        };
        let relay = async move {
            let mut receiver_ek = Vec::new();
            let _ = forward(&mut relay_end, &mut wire, |f| {
                let mut o = Opening::decode(&f[..]).unwrap();
                let Some(opening::Kind::Hello(h)) = o.kind.as_mut() else {
                    panic!("not a hello")
                };
                receiver_ek = h.kem.clone();
                if swap_key {
                    h.kem = forged_key();
                }
                o.encode_to_vec()
            })
            .await
                && forward(&mut wire, &mut relay_end, |f| {
                    let mut h = Hello::decode(&f[..]).unwrap();
                    if !swap_key {
                        h.kem = forged_ciphertext(&receiver_ek);
                    }
                    h.encode_to_vec()
                })
                .await
                && forward(&mut relay_end, &mut wire, |f| f).await
                && forward(&mut wire, &mut relay_end, |f| f).await;
            drop(node);
        };
        let (got, ()) = tokio::join!(receiver, relay);
        got.expect_err("an altered key exchange must not authenticate")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_man_in_the_middle_who_alters_ml_kem_counts_as_a_wrong_attempt() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), b"data").unwrap();
        let code = Code::generate(4);
        let mut sender = start_sender(&[src.path().join("f")], &code).await;
        for (attempt, swap_key) in [(1u32, true), (2, false)] {
            let err = within(10, through_a_meddler(&sender.addr, &code, swap_key)).await;
            assert!(matches!(err, Error::WrongCode), "{err}");
            match within(5, sender.events.recv()).await {
                Some(pcp::share::ShareEvent::WrongCode { attempts }) => {
                    assert_eq!(attempts, attempt)
                }
                other => panic!("expected a wrong-code event, got {other:?}"),
            }
        }
        // Untouched, the same code still works.
        let mut session = within(20, connect(&sender.addr, &code)).await.unwrap();
        assert_eq!(session.offer().await.unwrap().files, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_of_protocol_1_is_answered_with_version_2() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), b"data").unwrap();
        let code = Code::generate(4);
        let sender = start_sender(&[src.path().join("f")], &code).await;
        let node = Node::start(NodeConfig::default()).await.unwrap();
        let peer = node.dial(sender.addr.clone()).await.unwrap();
        let mut io = node
            .control()
            .open_stream(peer, STREAM_PROTOCOL_1)
            .await
            .unwrap()
            .compat();
        // What a protocol-1 receiver sends: its Hello with a 33-byte SPAKE2 message.
        let old = Hello {
            version: 1,
            role: Role::Receiver as i32,
            spake: vec![0x53; 33],
            ..Default::default()
        };
        pcp::proto::write_opening(&mut io, opening::Kind::Hello(old))
            .await
            .unwrap();
        // It reads at most 1024 bytes and checks the version first.
        let reply = within(10, read_frame(&mut io, 1024))
            .await
            .unwrap()
            .unwrap();
        let hello = Hello::decode(&reply[..]).unwrap();
        assert_eq!(hello.version, 2);
        assert_eq!(within(10, read_frame(&mut io, 1024)).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sender_of_protocol_1_is_named_with_both_versions() {
        // A node that, like a pcp of protocol 1, accepts only "/pcp/1".
        let (old, addr) = loopback_node().await;
        let mut incoming = old.control().accept(STREAM_PROTOCOL_1).unwrap();
        tokio::spawn(async move { while incoming.next().await.is_some() {} });
        let err = within(20, connect(&addr, &Code::generate(4)))
            .await
            .err()
            .expect("no common protocol");
        assert!(
            matches!(
                err,
                Error::IncompatibleVersion {
                    theirs: Some(1),
                    ours: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "the sender runs pcp protocol 1, this pcp speaks protocol 2: both sides need a pcp \
             release with the same protocol"
        );
        // A node with no pcp protocol at all.
        let (_none, addr) = loopback_node().await;
        let err = within(20, connect(&addr, &Code::generate(4)))
            .await
            .err()
            .expect("no pcp at all");
        assert!(
            matches!(err, Error::IncompatibleVersion { theirs: None, .. }),
            "{err}"
        );
        drop(old);
    }
}

mod guesses {
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
                        let p = HandshakeParams::with_code(
                            "zoo-zoo-zoo-abandon",
                            Role::Sender,
                            me,
                            peer,
                        );
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
}
