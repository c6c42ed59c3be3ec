//! The filesystem logic without FUSE or a network: a fake source that records requests.

use super::*;
use crate::mount::tree::ROOT_INO;
use crate::proto::MAX_READ;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

#[test]
fn a_failure_is_said_once_while_it_repeats() {
    let f = Failures::default();
    let said = |f: &Failures| f.0.lock().unwrap().clone().map(|(w, _, n)| (w, n));
    for _ in 0..3 {
        assert_eq!(f.eio("read failed: gone".into()), libc::EIO);
    }
    assert_eq!(said(&f), Some(("read failed: gone".into(), 2)));
    f.eio("a read waited 30s".into());
    assert_eq!(said(&f), Some(("a read waited 30s".into(), 0)));
    // Said again once it has been quiet that long.
    f.0.lock().unwrap().as_mut().unwrap().1 -= Failures::QUIET;
    f.eio("a read waited 30s".into());
    assert_eq!(said(&f), Some(("a read waited 30s".into(), 0)));
}

#[derive(Clone, Default)]
struct Fake {
    files: Arc<HashMap<u64, Vec<u8>>>,
    log: Arc<Mutex<Vec<(u64, u64, u32)>>>,
    hangs: Arc<AtomicU64>,
    /// What a `Seek` is answered with (`None`: the source cannot tell), and how many came.
    seek: Arc<Mutex<(Option<crate::fetch::SeekAnswer>, u32)>>,
}

impl FileSource for Fake {
    async fn read(
        &self,
        file: u64,
        offset: u64,
        len: u32,
    ) -> crate::Result<(Bytes, Option<[u8; 32]>)> {
        self.log.lock().unwrap().push((file, offset, len));
        // An answer comes later, as over a network: other tasks (spawned fetches) run.
        tokio::task::yield_now().await;
        if self.hangs.load(Ordering::SeqCst) == 1 {
            futures::future::pending::<()>().await;
        }
        let d = &self.files[&file];
        let lo = (offset as usize).min(d.len());
        let hi = (lo + len as usize).min(d.len());
        Ok((Bytes::copy_from_slice(&d[lo..hi]), None))
    }
    async fn hash(&self, file: u64) -> crate::Result<[u8; 32]> {
        Ok(*blake3::hash(&self.files[&file]).as_bytes())
    }
    async fn range_hash(&self, file: u64, offset: u64, len: u64) -> crate::Result<[u8; 32]> {
        let d = &self.files[&file];
        Ok(*blake3::hash(&d[offset as usize..(offset + len) as usize]).as_bytes())
    }
    async fn seek(
        &self,
        _file: u64,
        _offset: u64,
        _hole: bool,
    ) -> crate::Result<Option<crate::fetch::SeekAnswer>> {
        let mut s = self.seek.lock().unwrap();
        s.1 += 1;
        Ok(s.0.clone())
    }
}

fn entry(id: u64, parent: u64, name: &str, kind: Kind, size: u64) -> Entry {
    crate::manifest::test_entry(id, parent, name.as_bytes(), kind, size)
}

/// A share of one folder `d` with a big file, a symlink, and 10 small files.
fn setup(timeout: Duration) -> (Arc<MountFs<Fake>>, Fake, Vec<u8>) {
    setup_with_cache(timeout, 64 << 20)
}

fn setup_with_cache(timeout: Duration, cache: u64) -> (Arc<MountFs<Fake>>, Fake, Vec<u8>) {
    let big: Vec<u8> = (0..(8u64 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    let mut entries = vec![
        entry(1, 0, "d", Kind::Dir, 0),
        entry(2, 1, "big", Kind::File, big.len() as u64),
        entry(3, 1, "link", Kind::Symlink, 0),
    ];
    let mut files = HashMap::from([(2, big.clone())]);
    for i in 0..10u64 {
        entries.push(entry(4 + i, 1, &format!("s{i}"), Kind::File, 1000 + i));
        files.insert(4 + i, vec![i as u8; 1000 + i as usize]);
    }
    let m = Arc::new(Manifest::validate(entries).unwrap());
    let fake = Fake {
        files: Arc::new(files),
        ..Default::default()
    };
    (MountFs::new(m, fake.clone(), cache, timeout), fake, big)
}

#[tokio::test]
async fn tree_needs_no_requests() {
    let (fs, fake, _) = setup(Duration::from_secs(5));
    // The single shared folder is the root.
    let root = fs.getattr(ROOT_INO).unwrap();
    assert_eq!(root.kind, Kind::Dir);
    let big = fs.lookup(ROOT_INO, b"big").unwrap();
    assert_eq!((big.size, big.perm, big.kind), (8 << 20, 0o644, Kind::File));
    assert_eq!(big.mtime, UNIX_EPOCH + Duration::new(1_600_000_000, 5));
    assert_eq!(fs.lookup(ROOT_INO, b"nope"), Err(libc::ENOENT));
    assert_eq!(fs.lookup(big.ino, b"x"), Err(libc::ENOTDIR));
    let link = fs.lookup(ROOT_INO, b"link").unwrap();
    assert_eq!(fs.readlink(link.ino).unwrap(), b"big");
    let list = |off| -> Vec<(u64, Kind, Vec<u8>)> {
        let l = fs.readdir(ROOT_INO, off).unwrap();
        l.map(|(i, k, n)| (i, k, n.to_vec())).collect()
    };
    let all = list(0);
    assert_eq!(all.len(), 2 + 12);
    assert_eq!(all[0].2, b".");
    assert_eq!(all[1].2, b"..");
    // Offsets resume where the kernel left off.
    assert_eq!(list(5), all[5..].to_vec());
    assert_eq!(fs.read(ROOT_INO, 0, 10).await, Err(libc::EISDIR));
    assert!(fake.log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn random_reads_fetch_only_what_they_touch() {
    let (fs, fake, big) = setup(Duration::from_secs(5));
    let ino = fs.lookup(ROOT_INO, b"big").unwrap().ino;
    // Two reads far apart, neither at offset 0: one block each, no read-ahead.
    for off in [5_000_000u64, 1_234_567] {
        let got = fs.read(ino, off, 4096).await.unwrap();
        assert_eq!(&got[..], &big[off as usize..off as usize + 4096]);
    }
    let log = fake.log.lock().unwrap().clone();
    assert_eq!(log.len(), 2, "{log:?}");
    // A 4 KiB read not aligned to a page touches two pages, and gets just those.
    assert!(
        log.iter().all(|&(_, _, len)| len as u64 == 2 * BLOCK),
        "{log:?}"
    );
    // A read across a block boundary is assembled from two blocks.
    let off = 3 * BLOCK - 10;
    assert_eq!(
        &fs.read(ino, off, 20).await.unwrap()[..],
        &big[off as usize..off as usize + 20]
    );
    // Reads past the end are short or empty.
    let end = big.len() as u64;
    assert_eq!(fs.read(ino, end - 5, 100).await.unwrap().len(), 5);
    assert!(fs.read(ino, end + 5, 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn sequential_reads_grow_a_read_ahead_window() {
    // The default cache and caches smaller than the largest window (8 MiB file).
    for cache in [64 << 20, 4 << 20, 1 << 20, 256 << 10] {
        let (fs, fake, big) = setup_with_cache(Duration::from_secs(5), cache);
        let ino = fs.lookup(ROOT_INO, b"big").unwrap().ino;
        let mut off = 0u64;
        while off < big.len() as u64 {
            let got = fs.read(ino, off, 128 * 1024).await.unwrap();
            assert_eq!(&got[..], &big[off as usize..off as usize + got.len()]);
            off += got.len() as u64;
        }
        let log = fake.log.lock().unwrap().clone();
        // Each byte fetched once: read-ahead never brings in more than the cache keeps
        // until the reader gets there.
        let fetched: u64 = log.iter().map(|r| r.2 as u64).sum();
        assert_eq!(fetched, big.len() as u64, "cache {cache}: {log:?}");
        if cache >= 4 << 20 {
            // 8 MiB in far fewer requests than 128 KiB reads ...
            assert!(log.len() < 30, "cache {cache}: {} requests", log.len());
        }
        if cache >= 64 << 20 {
            // ... and with a window of 4 MiB or more, in full-size requests.
            assert!(
                log.iter().filter(|r| r.2 == MAX_READ).count() >= 4,
                "cache {cache}: {log:?}"
            );
        }
    }
}

#[tokio::test]
async fn small_files_come_whole_and_their_neighbours_follow() {
    let (fs, fake, _) = setup(Duration::from_secs(5));
    let s0 = fs.lookup(ROOT_INO, b"s0").unwrap().ino;
    assert_eq!(&fs.read(s0, 0, 10).await.unwrap()[..], &[0u8; 10]);
    // Give the background prefetch a moment, then read the rest from the cache.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = fake.log.lock().unwrap().len();
    assert_eq!(before, 10, "s0 and its 9 neighbours, one request each");
    for i in 1..10u8 {
        let ino = fs.lookup(ROOT_INO, format!("s{i}").as_bytes()).unwrap().ino;
        let got = fs.read(ino, 0, 4096).await.unwrap();
        assert_eq!(got.len(), 1000 + i as usize);
        assert!(got.iter().all(|&b| b == i));
    }
    assert_eq!(
        fake.log.lock().unwrap().len(),
        before,
        "served from the cache"
    );
}

#[tokio::test]
async fn small_files_prefetched_at_mount_come_within_the_budget() {
    let (fs, fake, _) = setup(Duration::from_secs(5));
    // A budget of 3 files' worth asks for the first files in manifest order, one more
    // than fits (a batch stops once it reaches the budget); at most as many files as
    // allowed, whatever the bytes.
    assert_eq!(fs.prefetch_small_files(3000, 1), 1000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.log.lock().unwrap().len(), 1);
    assert_eq!(fs.prefetch_small_files(3000, 100), 1000 + 1001 + 1002);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.log.lock().unwrap().len(), 3);
    let s1 = fs.lookup(ROOT_INO, b"s1").unwrap().ino;
    assert_eq!(fs.read(s1, 0, 4096).await.unwrap().len(), 1001);
    assert_eq!(fake.log.lock().unwrap().len(), 3, "served from the cache");
}

#[tokio::test]
async fn cached_reads_are_answered_at_once() {
    let (fs, fake, big) = setup(Duration::from_secs(5));
    let ino = fs.lookup(ROOT_INO, b"big").unwrap().ino;
    // A miss has to wait for the sender ...
    let Reading::Wait(f) = fs.begin_read(ino, 1 << 20, 8192) else {
        panic!("a miss answered at once")
    };
    assert_eq!(&f.await.unwrap()[..], &big[1 << 20..(1 << 20) + 8192]);
    // ... a read of the same blocks (another slice of them) does not, nor asks anything.
    let asked = fake.log.lock().unwrap().len();
    let Reading::Done(Ok(got)) = fs.begin_read(ino, (1 << 20) + 100, 5000) else {
        panic!("a cached read waited")
    };
    assert_eq!(&got[..], &big[(1 << 20) + 100..(1 << 20) + 5100]);
    assert_eq!(fake.log.lock().unwrap().len(), asked);
    // Errors are immediate too.
    assert!(matches!(
        fs.begin_read(ROOT_INO, 0, 10),
        Reading::Done(Err(libc::EISDIR))
    ));
}

#[tokio::test]
async fn aligned_reads_share_the_answer_and_memory_stays_bounded() {
    let (fs, _, big) = setup(Duration::from_secs(5));
    let ino = fs.lookup(ROOT_INO, b"big").unwrap().ino;
    // A 1 MiB read at a 1 MiB boundary is one answer: a slice of it, not a copy.
    let a = fs.read(ino, 2 << 20, MAX_READ).await.unwrap();
    let b = fs.read(ino, 2 << 20, MAX_READ).await.unwrap();
    assert_eq!(&a[..], &big[2 << 20..3 << 20]);
    assert_eq!(a.as_ptr(), b.as_ptr());
    drop((a, b));

    // A cache of 1 MiB holds at most 1 MiB of answers, whatever the reads keep of them.
    let m = fs.manifest().clone();
    let fake = fs.source().clone();
    let small = MountFs::new(m, fake, 1 << 20, Duration::from_secs(5));
    let ino = small.lookup(ROOT_INO, b"big").unwrap().ino;
    for round in 0..2 {
        for k in 0..big.len() as u64 / MAX_READ as u64 {
            let off = k * MAX_READ as u64;
            let got = small.read(ino, off, MAX_READ).await.unwrap();
            assert_eq!(&got[..], &big[off as usize..off as usize + got.len()]);
            drop(got);
            // Keep one page of every answer so far in use: the rest of them is not.
            for j in 0..=k {
                let off = (j * MAX_READ as u64) as usize;
                let page = small.read(ino, off as u64, 4096).await.unwrap();
                assert_eq!(&page[..], &big[off..off + 4096], "{round}");
            }
        }
        // Let read-ahead still on its way land, then measure.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let held = small.blocks.held();
        assert!(held <= 1 << 20, "{held} bytes held by a 1 MiB cache");
    }
}

#[tokio::test]
async fn a_stalled_sender_gives_eio_within_the_timeout() {
    let (fs, fake, _) = setup(Duration::from_millis(300));
    fake.hangs.store(1, Ordering::SeqCst);
    let ino = fs.lookup(ROOT_INO, b"big").unwrap().ino;
    let r = tokio::time::timeout(Duration::from_secs(5), fs.read(ino, 0, 4096)).await;
    assert_eq!(r.expect("bounded"), Err(libc::EIO));
    // Metadata still answers.
    assert!(fs.getattr(ino).is_ok());
}

/// `lseek` SEEK_DATA / SEEK_HOLE: files that have no holes (or whose sender did not say) are
/// answered without a request; a sparse one asks, and an answer out of range or none at all
/// counts the file as all data.
#[tokio::test]
async fn seeks_ask_the_sender_only_for_sparse_files_and_check_its_answer() {
    let mut sparse = entry(2, 1, "sparse", Kind::File, 1 << 20);
    sparse.allocated = Some(8192);
    let mut dense = entry(3, 1, "dense", Kind::File, 1 << 20);
    dense.allocated = Some(1 << 20);
    let entries = vec![
        entry(1, 0, "d", Kind::Dir, 0),
        sparse,
        dense,
        entry(4, 1, "unsaid", Kind::File, 1 << 20),
    ];
    let fake = Fake {
        files: Arc::new(HashMap::from([(2, vec![0; 1 << 20])])),
        ..Fake::default()
    };
    let m = Arc::new(Manifest::validate(entries).unwrap());
    let fs = MountFs::new(m, fake.clone(), 1 << 20, Duration::from_secs(5));
    let seek = |name: &[u8], off: i64, hole: bool| {
        let started = fs.begin_seek(fs.lookup(ROOT_INO, name).unwrap().ino, off, hole);
        async move {
            match started {
                Seeking::Done(r) => r,
                Seeking::Wait(f) => f.await,
            }
        }
    };
    let blocks = |name: &[u8]| fs.lookup(ROOT_INO, name).unwrap().blocks;
    assert_eq!(
        (blocks(b"sparse"), blocks(b"dense"), blocks(b"unsaid")),
        (16, 2048, 2048)
    );
    for name in [&b"dense"[..], b"unsaid"] {
        assert_eq!(seek(name, 100, false).await, Ok(100));
        assert_eq!(seek(name, 100, true).await, Ok(1 << 20));
    }
    let asked = || fake.seek.lock().unwrap().1;
    assert_eq!(asked(), 0, "no request");
    let says = |position: u64, edges: &[u64]| {
        fake.seek.lock().unwrap().0 = Some(crate::fetch::SeekAnswer {
            position,
            edges: edges.to_vec(),
        })
    };
    // Data at 64 KiB to 128 KiB and at 192 KiB to 256 KiB, then none: walked as `cp` does,
    // SEEK_DATA and SEEK_HOLE by turns, with one request.
    let k = 1024;
    says(64 * k, &[128 * k, 192 * k, 256 * k, 1 << 20]);
    let mut walked = vec![];
    let mut at = 100;
    while let Ok(data) = seek(b"sparse", at, false).await {
        at = seek(b"sparse", data as i64, true).await.unwrap() as i64;
        walked.push((data, at as u64));
    }
    assert_eq!(walked, [(64 * k, 128 * k), (192 * k, 256 * k)]);
    assert_eq!(asked(), 1);
    // The data found was fetched at once, for the reader that comes next, and the holes not.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut reads = fake.log.lock().unwrap().clone();
    reads.sort();
    assert_eq!(
        reads,
        [(2, 64 * k, 64 * k as u32), (2, 192 * k, 64 * k as u32)]
    );
    assert_eq!(seek(b"sparse", 150 * k as i64, true).await, Ok(150 * k));
    // Before what was said: asked again. The sender's size for data: none after the offset.
    says(1 << 20, &[]);
    assert_eq!(seek(b"sparse", 10, false).await, Err(libc::ENXIO));
    assert_eq!(seek(b"sparse", 10, true).await, Ok(10));
    assert_eq!(asked(), 2);
    // Out of range (before the offset, past the end) or no answer: all data, nothing kept.
    for lie in [Some(5), Some(2 << 20), None] {
        fake.seek.lock().unwrap().0 = lie.map(|p| crate::fetch::SeekAnswer {
            position: p,
            edges: vec![],
        });
        assert_eq!(seek(b"sparse", 7, false).await, Ok(7), "{lie:?}");
        assert_eq!(seek(b"sparse", 7, true).await, Ok(1 << 20), "{lie:?}");
    }
    assert_eq!(asked(), 8);
    // At or past the end, or before the start: ENXIO, asked of no one; a folder: EINVAL.
    for off in [1 << 20, 5 << 20, -1] {
        assert_eq!(seek(b"sparse", off, false).await, Err(libc::ENXIO));
    }
    assert_eq!(asked(), 8);
    assert!(matches!(
        fs.begin_seek(ROOT_INO, 0, false),
        Seeking::Done(Err(libc::EINVAL))
    ));
}
