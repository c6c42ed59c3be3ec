//! Send and receive between two real libp2p nodes in one process, over loopback.

#[path = "../common/mod.rs"]
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
    let progress = Arc::new(Progress::default());
    let opts = ReceiveOptions {
        out: out.path().to_path_buf(),
        overwrite: false,
    };
    let r = within(60, receive::receive_all(&cut, &m, &opts, progress.clone())).await;
    assert!(r.is_err(), "the cut must fail the first run");
    sender.task.abort();
    // Nothing incomplete under a final name; the partial data is kept for later.
    assert!(!out.path().join("data/big").exists());
    assert!(part_of(&out.path().join("data"), "big").exists());
    // What the run counts as kept (what an interrupted receive's message says) is on the
    // disk: whole files under their names, and the sender's bytes from the start of each
    // temporary file.
    let mut on_disk = 0u64;
    for e in std::fs::read_dir(&d).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let theirs = std::fs::read(d.join(&name)).unwrap();
        let whole = out.path().join("data").join(&name);
        if whole.exists() {
            on_disk += std::fs::metadata(&whole).unwrap().len();
        } else if let Ok(ours) = std::fs::read(part_of(&out.path().join("data"), &name)) {
            on_disk += ours.iter().zip(&theirs).take_while(|(a, b)| a == b).count() as u64;
        }
    }
    assert!(
        progress.kept() <= on_disk,
        "counted {} as kept, the disk holds {on_disk}",
        progress.kept()
    );

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

mod hostile;

mod hostile_receiver;

mod faults;

mod post_quantum;

mod guesses;

/// A sparse file (holes, and a run of zeros written out) arrives identical and sparse: every
/// run of zeros crosses the wire as its count (the bytes a read returns are the shared zeros,
/// not a buffer that came over the network) and becomes a hole on the receiver's disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_file_arrives_sparse_and_its_zeros_as_counts() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let src = tempfile::tempdir().unwrap();
    let share = src.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let f = std::fs::File::create(share.join("disk.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(&bytes(1 << 20, 1), 0).unwrap();
    f.write_all_at(&bytes(100_000, 2), (20 << 20) + 123)
        .unwrap();
    f.write_all_at(&vec![0; 2 << 20], 40 << 20).unwrap();
    f.write_all_at(&bytes(4096, 3), (64 << 20) - 4096).unwrap();
    drop(f);
    let (_sender, mut session, m) = accepted(std::slice::from_ref(&share)).await;
    let client = session.client(4).await.unwrap();
    let id = m
        .entries()
        .iter()
        .find(|e| e.name == b"disk.img")
        .unwrap()
        .id;
    let shared_zeros = pcp::pages::zeros(1).as_ptr();
    for (off, zeros) in [
        (0, false),
        (8 << 20, true),
        (20 << 20, false),
        (40 << 20, true),
    ] {
        let (b, _) = within(10, client.read(id, off, 1 << 20)).await.unwrap();
        assert_eq!(b.len(), 1 << 20);
        assert_eq!(b.as_ptr() == shared_zeros, zeros, "read at {off}");
    }
    let out = tempfile::tempdir().unwrap();
    receive_into(&client, &m, out.path()).await.unwrap();
    let got = out.path().join("share/disk.img");
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(share.join("disk.img")).unwrap()
    );
    let md = std::fs::metadata(&got).unwrap();
    assert_eq!(md.len(), 64 << 20);
    // Data: about 1.1 MiB and a page; the filesystem may round each piece up a little.
    assert!(
        md.blocks() * 512 < 8 << 20,
        "{} bytes on disk",
        md.blocks() * 512
    );
}

/// With compression asked for, a file that compresses crosses compressed and one that does not
/// crosses as it is; both arrive identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressible_files_cross_compressed_when_asked() {
    let src = tempfile::tempdir().unwrap();
    let share = src.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let log: Vec<u8> = (0..300_000u32)
        .flat_map(|i| format!("{i:08} GET /index.html 200\n").into_bytes())
        .take(5 << 20)
        .collect();
    std::fs::write(share.join("access.log"), &log).unwrap();
    std::fs::write(share.join("noise.bin"), bytes(3 << 20, 5)).unwrap();
    let (_sender, mut session, m) = accepted(std::slice::from_ref(&share)).await;
    session.compress(true);
    let packed = session.packed().unwrap();
    let client = session.client(4).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    receive_into(&client, &m, out.path()).await.unwrap();
    assert_eq!(snapshot(&share), snapshot(&out.path().join("share")));
    let (raw, wire) = packed.totals();
    assert_eq!(
        raw,
        log.len() as u64,
        "the log and nothing else came compressed"
    );
    assert!(wire < raw / 4, "{raw} bytes as {wire}");
}
