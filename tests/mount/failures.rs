//! A mount whose sender vanishes, whose link is cut, or whose files change under it: reads
//! fail with EIO in time, never hang, never mix old and new bytes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sender_killed_mid_read_gives_eio_in_time_and_listing_still_works() {
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    let mut sender = send_loopback(&src.path().join("share"), &[]);
    let addr: libp2p::Multiaddr = sender.loopback_addr().parse().unwrap();
    let code = Code::parse(&sender.code).unwrap();
    let m = mount_addr(&addr, &code, Duration::from_secs(3)).await;
    let mp = m.path();
    // A slow reader: the sender dies while it is still in the middle of the file.
    let reader = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(mp.join("big.bin")).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => std::thread::sleep(Duration::from_millis(30)),
                Err(e) => return Err(e),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender.child.kill().unwrap();
    let _ = sender.child.wait();
    let killed = Instant::now();
    let r = within(30, reader).await.unwrap();
    eprintln!("EIO {:?} after the sender died", killed.elapsed());
    let e = r.expect_err("the read cannot finish without the sender");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    // The tree is still there: it needs no network.
    let mp = m.path();
    let names = blocking(move || std::fs::read_dir(&mp).unwrap().count()).await;
    assert_eq!(names, 5);
}

/// A network namespace holding the sender, joined to this (host) namespace by a veth pair whose
/// host end the test can take down. Removed on drop, even when the test fails.
struct Wire {
    ns: String,
    host_if: String,
}

impl Wire {
    fn new() -> Wire {
        let id = std::process::id() % 10_000;
        let w = Wire {
            ns: format!("pcpcut{id}"),
            host_if: format!("pcpc{id}"),
        };
        ip(&["netns", "add", &w.ns]);
        ip(&[
            "link", "add", &w.host_if, "type", "veth", "peer", "name", "vS", "netns", &w.ns,
        ]);
        ip(&["addr", "add", "10.78.0.1/24", "dev", &w.host_if]);
        ip(&["link", "set", &w.host_if, "up"]);
        ip(&["-n", &w.ns, "addr", "add", "10.78.0.2/24", "dev", "vS"]);
        ip(&["-n", &w.ns, "link", "set", "vS", "up"]);
        ip(&["-n", &w.ns, "link", "set", "lo", "up"]);
        w
    }

    fn set(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_link_gives_eio_and_the_mount_recovers_without_the_code() {
    let wire = Wire::new();
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &wire.ns,
        PCP,
        "send",
        "-v",
        "--no-progress",
        "--discovery",
        "none",
        "--listen",
        "/ip4/10.78.0.2/tcp/0",
    ])
    .arg(src.path().join("share"));
    let sender = Sending::start(c);
    let addr = {
        let mut found = None;
        for _ in 0..50 {
            found = sender.stderr.lock().unwrap().lines().find_map(|l| {
                l.strip_prefix("Listening on ")
                    .filter(|a| a.starts_with("/ip4/10.78.0.2/"))
                    .map(str::to_string)
            });
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.expect("sender address")
    };
    let code = Code::parse(&sender.code).unwrap();
    let timeout = Duration::from_secs(2);
    let m = mount_addr(&addr.parse().unwrap(), &code, timeout).await;
    let mp = m.path();
    let big = Arc::new(std::fs::read(src.path().join("share/big.bin")).unwrap());

    // A read in flight when the link goes down fails with EIO instead of hanging.
    let mp1 = mp.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(mp1.join("big.bin")).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => std::thread::sleep(Duration::from_millis(40)),
                Err(e) => return Err(e),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    wire.set(false);
    let cut = Instant::now();
    let e = within(30, reader)
        .await
        .unwrap()
        .expect_err("no data while the link is down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    eprintln!(
        "EIO {:?} after the cut (timeout {timeout:?})",
        cut.elapsed()
    );
    // Listing works from the manifest.
    let mp2 = mp.clone();
    assert_eq!(
        blocking(move || std::fs::read_dir(&mp2).unwrap().count()).await,
        5
    );

    // Link back: reads succeed again, with no code typed (resumption in the background).
    wire.set(true);
    let (mp3, big3) = (mp.clone(), big.clone());
    let recovered = blocking(move || {
        let f = std::fs::File::open(mp3.join("big.bin")).unwrap();
        let off = 60 << 20;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut buf = vec![0u8; 100_000];
            match f.read_at(&mut buf, off) {
                Ok(n) => {
                    assert_eq!(&buf[..n], &big3[off as usize..off as usize + n]);
                    return true;
                }
                Err(e) if e.raw_os_error() == Some(libc::EIO) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(recovered);
    assert!(
        sender
            .stderr
            .lock()
            .unwrap()
            .contains("Receiver reconnected"),
        "{}",
        sender.stderr.lock().unwrap()
    );
    drop(m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_changed_on_the_sender_reads_as_eio_never_mixed() {
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    let code = Code::generate(4);
    let m = mount_share(&[src.path().join("share")], &code, Duration::from_secs(5)).await;
    // Same size, new content and mtime: the sender refuses it.
    let p = src.path().join("share/sub/mid.bin");
    std::fs::write(&p, bytes(3_000_001, 99)).unwrap();
    let mp = m.path();
    let e = blocking(move || std::fs::read(mp.join("sub/mid.bin")))
        .await
        .expect_err("changed file");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    // Other files still read fine.
    let mp = m.path();
    assert_eq!(
        blocking(move || std::fs::read(mp.join("sub/ünï cödé.txt")).unwrap()).await,
        b"hello\n"
    );
}
