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

impl Tmpfs {
    fn of_6_mib() -> Tmpfs {
        let disk = Tmpfs(tempfile::tempdir().unwrap());
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
            .arg(disk.0.path())
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs needs root");
        disk
    }
}

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
    let disk = Tmpfs::of_6_mib();
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

/// A file of `size` bytes with `data` written at each of `at` (the rest holes).
fn sparse_file(p: &std::path::Path, size: u64, data: &[u8], at: &[u64]) {
    let f = std::fs::File::create(p).unwrap();
    f.set_len(size).unwrap();
    for &o in at {
        std::os::unix::fs::FileExt::write_all_at(&f, data, o).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_file_needs_room_for_its_data_only_and_stays_sparse() {
    use std::os::unix::fs::MetadataExt;
    let src = tempfile::tempdir().unwrap();
    let (fits, too_big) = (src.path().join("fits"), src.path().join("too_big"));
    // 64 MiB apparent, 2 MiB of data; and 64 MiB with 8 MiB of data.
    sparse_file(&fits, 64 << 20, &bytes(1 << 20, 5), &[3 << 20, 40 << 20]);
    sparse_file(&too_big, 64 << 20, &bytes(4 << 20, 6), &[0, 30 << 20]);
    let disk = Tmpfs::of_6_mib();

    let (sender, mut s, m) = accepted(std::slice::from_ref(&fits)).await;
    let allocated = m.entries()[0].allocated;
    assert!(
        allocated.is_some_and(|a| (2 << 20..6 << 20).contains(&a)),
        "{allocated:?}"
    );
    let c = s.client(2).await.unwrap();
    receive_into(&c, &m, disk.0.path()).await.unwrap();
    let got = disk.0.path().join("fits");
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&fits).unwrap());
    assert!(
        got.metadata().unwrap().blocks() * 512 <= 2 << 20,
        "holes kept"
    );
    drop((s, sender));

    let (sender, mut s, m) = accepted(std::slice::from_ref(&too_big)).await;
    let c = s.client(2).await.unwrap();
    let err = receive_into(&c, &m, disk.0.path())
        .await
        .expect_err("8 MiB of data cannot fit in 6 MiB");
    let text = err.to_string();
    assert!(
        // 8.00 MiB of data on ext4 (a filesystem may allocate a little more).
        text.contains("cannot reserve 8.")
            && text.contains(" MiB on disk for")
            && text.contains("No space left on device"),
        "{text}"
    );
    assert!(sender.share.served() < 1 << 20, "{}", sender.share.served());
}
