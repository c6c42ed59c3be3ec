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

/// How the fake sender answers a read of `len` bytes at `offset`: data, optional hash, a
/// count of zeros sent instead of data (`Response.zeros`), and the length the data
/// decompresses to if it is compressed (`Response.compressed`).
type Answer = fn(u64, u32) -> (Vec<u8>, Vec<u8>, u64, u64);

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
                            let (data, hash, zeros, compressed) = match req.op {
                                Some(pcp::proto::request::Op::Read(rd)) => {
                                    answer(rd.offset, rd.len)
                                }
                                _ => (vec![], vec![0; 32], 0, 0),
                            };
                            let resp = Response {
                                id: req.id,
                                data: data.into(),
                                hash,
                                error: None,
                                zeros,
                                compressed,
                                position: 0,
                                extents: vec![],
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

fn honest(_off: u64, len: u32) -> (Vec<u8>, Vec<u8>, u64, u64) {
    let data = vec![7u8; len as usize];
    let hash = blake3::hash(&data).as_bytes().to_vec();
    (data, hash, 0, 0)
}

/// Runs a receive against a fake sender; returns the error and checks nothing escaped.
async fn receive_from(entries: Vec<Entry>, answer: Answer) -> Error {
    receive_asking(entries, answer, true).await
}

/// [`receive_from`], the reads asking for compressed data or not.
async fn receive_asking(entries: Vec<Entry>, answer: Answer, compress: bool) -> Error {
    let code = Code::generate(4);
    let addr = fake_sender(&code, entries, answer).await;
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let result = within(20, async {
        let mut s = connect(&addr, &code).await?;
        // The fake sender answers as it likes, asked or not.
        s.compress(compress);
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
    let short: Answer = |_, len| (vec![1; len as usize / 2], vec![], 0, 0);
    let err = receive_from(vec![entry(1, 0, b"f", Kind::File, 100)], short).await;
    assert!(matches!(err, Error::InvalidManifest(_)), "{err}");
    // More data than asked.
    let long: Answer = |_, len| (vec![1; len as usize + 1], vec![], 0, 0);
    let err = receive_from(vec![entry(1, 0, b"f", Kind::File, 100)], long).await;
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    // Data that does not match the hash.
    let wrong_hash: Answer = |_, len| (vec![1; len as usize], vec![9; 32], 0, 0);
    let err = receive_from(vec![entry(1, 0, b"f", Kind::File, 100)], wrong_hash).await;
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    // A large file whose separate hash answer is wrong.
    let err = receive_from(vec![entry(1, 0, b"big", Kind::File, 3 << 20)], honest).await;
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    // More zeros than asked, or zeros and data at once.
    let many_zeros: Answer = |_, len| (vec![], vec![], len as u64 + 1, 0);
    let err = receive_from(vec![entry(1, 0, b"f", Kind::File, 100)], many_zeros).await;
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    let both: Answer = |_, len| (vec![1], vec![], len as u64 - 1, 0);
    let err = receive_from(vec![entry(1, 0, b"f", Kind::File, 100)], both).await;
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    // Zeros where the file is not zero: the hash says so, and nothing is kept under its name.
    let false_zeros: Answer = |_, len| (vec![], vec![], len as u64, 0);
    let err = receive_from(vec![entry(1, 0, b"big", Kind::File, 3 << 20)], false_zeros).await;
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    // Compressed data that is no zstd frame, that gives fewer bytes than it says, that says
    // more than asked, or that comes with zeros: protocol errors.
    let garbage: Answer = |_, len| (b"not zstd".to_vec(), vec![], 0, len as u64);
    let short_frame: Answer = |_, len| {
        let packed = zstd::bulk::compress(&vec![1; len as usize / 2], 1).unwrap();
        (packed, vec![], 0, len as u64)
    };
    let too_long: Answer = |_, len| {
        let packed = zstd::bulk::compress(&vec![1; len as usize + 1], 1).unwrap();
        (packed, vec![], 0, len as u64 + 1)
    };
    let with_zeros: Answer = |_, len| {
        let packed = zstd::bulk::compress(&vec![0; len as usize], 1).unwrap();
        (packed, vec![], len as u64, len as u64)
    };
    for lie in [garbage, short_frame, too_long, with_zeros] {
        let err = receive_from(vec![entry(1, 0, b"f", Kind::File, 100)], lie).await;
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }
    // Well-formed compressed bytes, not asked for: refused all the same.
    let unasked: Answer = |_, len| {
        let packed = zstd::bulk::compress(&vec![1; len as usize], 1).unwrap();
        (packed, vec![], 0, len as u64)
    };
    let err = receive_asking(vec![entry(1, 0, b"f", Kind::File, 100)], unasked, false).await;
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    // Well-formed compressed bytes that are not the file's: the hash says so.
    let wrong: Answer = |_, len| {
        let packed = zstd::bulk::compress(&vec![1; len as usize], 1).unwrap();
        (packed, vec![9; 32], 0, len as u64)
    };
    let err = receive_from(vec![entry(1, 0, b"f", Kind::File, 100)], wrong).await;
    assert!(matches!(err, Error::Integrity(_)), "{err}");
}
