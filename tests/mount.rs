//! `pcp mount` on real kernel FUSE mounts. These need root and /dev/fuse; a mount that cannot
//! be made fails the test (it never skips).

mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pcp::code::Code;
use pcp::fetch::Remote;
use pcp::mount::MountFs;
use pcp::mount::{self as fuse, MountOptions, Mounted};

struct Mount {
    dir: tempfile::TempDir,
    mounted: Option<Mounted>,
    remote: Arc<Remote>,
    _fs: Arc<MountFs<Arc<Remote>>>,
    _sender: Option<Sender>,
}

impl Mount {
    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        drop(self.mounted.take());
    }
}

async fn mount_share(paths: &[PathBuf], code: &Code, timeout: Duration) -> Mount {
    mount_share_with(paths, code, timeout, Default::default()).await
}

/// [`mount_share`] from a sender serving as `opts` says (`keep`: other receivers too).
async fn mount_share_with(
    paths: &[PathBuf],
    code: &Code,
    timeout: Duration,
    opts: pcp::share::ServeOptions,
) -> Mount {
    let sender = start_sender_with(paths, code, opts).await;
    let mut m = mount_addr(&sender.addr, code, timeout).await;
    m._sender = Some(sender);
    m
}

async fn mount_addr(addr: &libp2p::Multiaddr, code: &Code, timeout: Duration) -> Mount {
    let node = pcp::net::Node::start(pcp::net::NodeConfig::default())
        .await
        .unwrap();
    let peer = node.dial(addr.clone()).await.unwrap();
    let mut session = pcp::fetch::Session::authenticate(&node, peer, code)
        .await
        .unwrap();
    let manifest = Arc::new(session.accept(true).await.unwrap());
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    std::mem::forget(_rx);
    let remote = Remote::new(node, session, vec![addr.clone()], timeout, tx)
        .await
        .unwrap();
    let fs = MountFs::new(manifest, remote.clone(), 64 << 20, timeout);
    let dir = tempfile::tempdir().unwrap();
    let mounted = fuse::mount(
        fs.clone(),
        dir.path(),
        &MountOptions::default(),
        tokio::runtime::Handle::current(),
    )
    .expect("mounting must work here (root, /dev/fuse)");
    Mount {
        dir,
        mounted: Some(mounted),
        remote,
        _fs: fs,
        _sender: None,
    }
}

fn in_mounts(p: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(p.to_str().unwrap()))
}

/// Runs blocking file work off the runtime (the FUSE replies come from the runtime).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn tree(root: &Path) {
    let d = root.join("share");
    std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(d.join("empty dir")).unwrap();
    std::fs::write(d.join("big.bin"), bytes(64 << 20, 11)).unwrap();
    std::fs::write(d.join("empty"), b"").unwrap();
    std::fs::write(d.join("sub/ünï cödé.txt"), b"hello\n").unwrap();
    for i in 0..40 {
        std::fs::write(
            d.join(format!("sub/deeper/f{i:03}")),
            bytes(1000 + i * 997, i as u64),
        )
        .unwrap();
    }
    std::fs::write(d.join("sub/mid.bin"), bytes(3_000_001, 12)).unwrap();
    std::os::unix::fs::symlink("big.bin", d.join("link")).unwrap();
    // Modes a copy must keep: private, executable, group-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode("empty", 0o600);
    mode("sub/mid.bin", 0o755);
    mode("sub/deeper", 0o750);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mount_reads_everything_right_and_refuses_changes() {
    logs();
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    let code = Code::generate(4);
    let m = mount_share(&[src.path().join("share")], &code, Duration::from_secs(20)).await;
    let (mp, share) = (m.path(), src.path().join("share"));
    assert!(in_mounts(&mp));

    // Every file, byte for byte, with modes and mtimes (the single shared folder is the root).
    let (a, b) = (share.clone(), mp.clone());
    let (want, got) = blocking(move || (snapshot(&a), snapshot(&b))).await;
    // The sender's modes, unchanged (the kernel refuses writes on the read-only mount).
    let (want, got): (Vec<_>, Vec<_>) = (want.into_iter().collect(), got.into_iter().collect());
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        if g.0.as_os_str().is_empty() {
            continue; // the mount root's own mode and mtime are the mountpoint's
        }
        assert_eq!(w, g);
    }
    let out = tempfile::tempdir().unwrap();
    let (mp2, o2, s2) = (mp.clone(), out.path().to_path_buf(), share.clone());
    blocking(move || {
        assert!(Command::new("diff")
            .arg("-r")
            .arg(&s2)
            .arg(&mp2)
            .status()
            .unwrap()
            .success());
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&mp2)
            .arg(o2.join("copy"))
            .status()
            .unwrap()
            .success());
        // `cp -a` out of the mount gives the sender's tree: bytes, modes, mtimes, links.
        let (mut want, mut got) = (snapshot(&s2), snapshot(&o2.join("copy")));
        want.remove(Path::new(""));
        got.remove(Path::new(""));
        assert_eq!(want, got);
        let link = std::fs::symlink_metadata(mp2.join("link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(link.permissions().mode() & 0o7777, 0o777, "lrwxrwxrwx");
    })
    .await;

    // Nothing can be changed.
    let mp3 = mp.clone();
    blocking(move || {
        let erofs = |r: std::io::Result<()>, what: &str| {
            let e = r.expect_err(what);
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
        };
        erofs(std::fs::write(mp3.join("new"), b"x"), "create");
        erofs(
            std::fs::OpenOptions::new()
                .write(true)
                .open(mp3.join("big.bin"))
                .map(drop),
            "open for writing",
        );
        erofs(std::fs::create_dir(mp3.join("d")), "mkdir");
        erofs(std::fs::remove_file(mp3.join("empty")), "unlink");
        erofs(std::fs::remove_dir(mp3.join("empty dir")), "rmdir");
        erofs(std::fs::rename(mp3.join("empty"), mp3.join("e2")), "rename");
        erofs(
            std::fs::hard_link(mp3.join("empty"), mp3.join("e3")),
            "link",
        );
        erofs(std::os::unix::fs::symlink("x", mp3.join("l2")), "symlink");
        use std::os::unix::fs::PermissionsExt;
        erofs(
            std::fs::set_permissions(mp3.join("empty"), std::fs::Permissions::from_mode(0o777)),
            "chmod",
        );
        let c = std::ffi::CString::new(mp3.join("empty").to_str().unwrap()).unwrap();
        // SAFETY: valid C strings and buffer.
        let r =
            unsafe { libc::setxattr(c.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
        assert_eq!(
            (r, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::EROFS))
        );
        let r = unsafe { libc::truncate(c.as_ptr(), 0) };
        assert_eq!(
            (r, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::EROFS))
        );
    })
    .await;

    // No word of the code in the mount table: not in the mount's source, type or options (the
    // mountpoint is the test's own temporary name; other mounts' lines can hold a word by
    // chance, as "devices" holds "ice").
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(mp.to_str().unwrap()))
        .unwrap()
        .to_string();
    assert!(line.contains(" ro,"), "{line}");
    let fields: Vec<&str> = line.split(' ').collect();
    for w in code.words() {
        for f in [fields[0], fields[2], fields[3]] {
            assert!(!f.contains(w), "{w} appears in /proc/mounts: {line}");
        }
    }
    drop(m);
    assert!(!in_mounts(&mp), "unmounted when dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_preads_and_concurrent_readers() {
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    let code = Code::generate(4);
    let m = mount_share(&[src.path().join("share")], &code, Duration::from_secs(20)).await;
    let (mp, share) = (m.path(), src.path().join("share"));
    let big = std::fs::read(share.join("big.bin")).unwrap();
    let big = Arc::new(big);
    let (mp1, big1) = (mp.clone(), big.clone());
    blocking(move || {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let f = std::fs::File::open(mp1.join("big.bin")).unwrap();
        for _ in 0..1000 {
            let off = rng.gen_range(0..big1.len() as u64 + 10);
            let len = rng.gen_range(1..300_000usize);
            let mut buf = vec![0u8; len];
            let n = read_full_at(&f, &mut buf, off);
            let lo = (off as usize).min(big1.len());
            let hi = (lo + len).min(big1.len());
            assert_eq!(&buf[..n], &big1[lo..hi], "pread at {off} len {len}");
        }
    })
    .await;

    // 8 readers at once: 4 on the same big file, 4 on different files.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (mp, share) = (mp.clone(), share.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let name = if i < 4 {
                "big.bin".to_string()
            } else {
                ["sub/mid.bin", "sub/deeper/f005", "sub/deeper/f039", "link"][i - 4].to_string()
            };
            let mut got = Vec::new();
            std::fs::File::open(mp.join(&name))
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert!(
                got == std::fs::read(share.join(&name)).unwrap(),
                "reader {i} of {name}"
            );
        }));
    }
    for t in tasks {
        within(120, t).await.unwrap();
    }
    drop(m);
}

fn read_full_at(f: &std::fs::File, buf: &mut [u8], off: u64) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_a_20000_entry_tree_sends_no_data_request() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("many");
    for d in 0..100 {
        let dir = root.join(format!("dir{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..199 {
            std::fs::write(dir.join(format!("file{f:03}")), b"x").unwrap();
        }
    }
    let code = Code::generate(4);
    let m = mount_share(&[root], &code, Duration::from_secs(20)).await;
    let mp = m.path();
    let out = blocking(move || {
        Command::new("find")
            .arg(&mp)
            .arg("-printf")
            .arg("%s %m %T@\n")
            .output()
            .unwrap()
    })
    .await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1 + 100 + 100 * 199
    );
    let mp = m.path();
    let n = blocking(move || {
        let mut n = 0;
        for d in std::fs::read_dir(&mp).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                let md = std::fs::symlink_metadata(f.unwrap().path()).unwrap();
                assert_eq!(md.len(), 1);
                n += 1;
            }
        }
        n
    })
    .await;
    assert_eq!(n, 19_900);
    assert_eq!(
        m.remote.requests(),
        0,
        "listing and stat must not touch the network"
    );
    // Reading one file does send a request (the counter works).
    let mp = m.path();
    blocking(move || assert_eq!(std::fs::read(mp.join("dir000/file000")).unwrap(), b"x")).await;
    assert!(m.remote.requests() > 0);
}

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

/// `pcp mount` as a user runs it; killed on drop, and its mountpoint cleared even on failure.
struct MountProc {
    child: std::process::Child,
    dir: tempfile::TempDir,
    stderr: Arc<std::sync::Mutex<String>>,
}

impl MountProc {
    fn start(addr: &str, code: &str, extra: &[&str]) -> MountProc {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(PCP)
            .args([
                "mount",
                "--no-progress",
                "--discovery",
                "none",
                "--peer",
                addr,
            ])
            .args(extra)
            .arg(code)
            .arg(dir.path())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let p = MountProc { child, dir, stderr };
        p.wait_for("Mounted ");
        p
    }

    fn wait_for(&self, what: &str) {
        for _ in 0..200 {
            if self.stderr.lock().unwrap().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no {what:?} from pcp mount: {}",
            self.stderr.lock().unwrap()
        );
    }

    fn exit_code(&mut self, secs: u64) -> Option<i32> {
        for _ in 0..secs * 20 {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for MountProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if in_mounts(self.dir.path()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[test]
fn signals_unmount_cleanly_and_stop_the_sender() {
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    // 0: an outside `umount` instead of a signal.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, 0] {
        let mut sender = send_loopback(&src.path().join("share"), &[]);
        let addr = sender.loopback_addr();
        let mut m = MountProc::start(&addr, &sender.code, &[]);
        assert!(in_mounts(m.dir.path()));
        assert_eq!(
            std::fs::read(m.dir.path().join("sub/ünï cödé.txt")).unwrap(),
            b"hello\n"
        );
        if sig == 0 {
            let st = Command::new("umount").arg(m.dir.path()).status().unwrap();
            assert!(st.success());
        } else {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(m.child.id() as i32, sig) };
        }
        assert_eq!(m.exit_code(20), Some(0), "{}", m.stderr.lock().unwrap());
        assert!(
            !in_mounts(m.dir.path()),
            "signal {sig} left the mount behind"
        );
        // How the mount ended, said once, and nothing from the FUSE library.
        let err = m.stderr.lock().unwrap().clone();
        let ends: Vec<&str> = err.lines().filter(|l| l.contains("nmounted")).collect();
        let want = if sig == 0 {
            "was unmounted (from outside pcp)."
        } else {
            "Unmounted "
        };
        assert!(ends.len() == 1 && ends[0].contains(want), "{err}");
        assert!(!err.contains("WARN"), "{err}");
        // The sender stops when the receiver unmounts, and says so: how long it was mounted
        // and what it read (the file, and the small files the mount prefetched), not a
        // transfer rate over the mount's lifetime.
        assert_eq!(
            sender.wait(10),
            Some(0),
            "{}",
            sender.stderr.lock().unwrap()
        );
        let said = sender.stderr.lock().unwrap().clone();
        let done = said.lines().last().unwrap_or_default();
        assert!(
            done.starts_with("Done: the receiver unmounted after ")
                && done.ends_with(" sent).")
                && !done.contains("/s"),
            "{said}"
        );
    }
}

/// A share without --keep serves one receiver: a second one is told at once that the sender is
/// busy, waits (no guess is spent: the sender never warns of a wrong code), and says so when
/// its --wait runs out.
#[test]
fn a_second_receiver_hears_the_sender_is_busy_and_spends_no_guess() {
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    let mut sender = send_loopback(&src.path().join("share"), &[]);
    let addr = sender.loopback_addr();
    let mut m = MountProc::start(&addr, &sender.code, &[]);
    let out = tempfile::tempdir().unwrap();
    let r = receive_cmd(&addr, out.path())
        .args(["--wait", "3s"])
        .arg(&sender.code)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert_eq!(
        err.matches("but it is busy with other receivers").count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("error: the sender was still busy with other receivers after 3s"),
        "{err}"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(m.child.id() as i32, libc::SIGINT) };
    assert_eq!(m.exit_code(20), Some(0));
    assert_eq!(sender.wait(10), Some(0));
    let said = sender.stderr.lock().unwrap().clone();
    assert!(!said.contains("wrong code"), "{said}");
}

#[test]
fn a_stale_mountpoint_is_named_with_the_fix() {
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    let sender = send_loopback(&src.path().join("share"), &[]);
    let addr = sender.loopback_addr();
    let mut m = MountProc::start(&addr, &sender.code, &[]);
    // A crash: the FUSE process dies without unmounting.
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    assert!(fuse::is_stale(m.dir.path()));
    let r = Command::new(PCP)
        .args([
            "mount",
            "--discovery",
            "none",
            "--peer",
            &addr,
            &sender.code,
        ])
        .arg(m.dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        err.contains("stale") && err.contains("fusermount3 -uz"),
        "{err}"
    );
}

#[test]
fn copy_out_downloads_everything_while_mounted() {
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let sender = send_loopback(&src.path().join("share"), &[]);
    let addr = sender.loopback_addr();
    let dest = out.path().join("copy");
    let m = MountProc::start(&addr, &sender.code, &["--copy-out", dest.to_str().unwrap()]);
    // The mount answers while the copy runs.
    assert_eq!(std::fs::read_dir(m.dir.path()).unwrap().count(), 5);
    m.wait_for("Copy-out finished");
    assert_eq!(
        snapshot(&src.path().join("share")),
        snapshot(&dest.join("share"))
    );
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

#[test]
fn sender_ctrl_c_turns_reads_into_eio_and_says_so() {
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    let mut sender = send_loopback(&src.path().join("share"), &[]);
    let addr = sender.loopback_addr();
    let m = MountProc::start(&addr, &sender.code, &["--timeout", "5s"]);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(sender.child.id() as i32, libc::SIGINT) };
    assert_eq!(sender.wait(10), Some(130));
    m.wait_for("the sender stopped sharing");
    let e = std::fs::read(m.dir.path().join("big.bin")).expect_err("no sender, no data");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert_eq!(std::fs::read_dir(m.dir.path()).unwrap().count(), 5);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_mount_readers_and_a_receive_at_once() {
    let src = tempfile::tempdir().unwrap();
    tree(src.path());
    let code = Code::generate(4);
    // A share that serves several receivers (`--keep`): a mount and a receive at once.
    let keep = pcp::share::ServeOptions {
        keep: true,
        ..Default::default()
    };
    let m = mount_share_with(
        &[src.path().join("share")],
        &code,
        Duration::from_secs(30),
        keep,
    )
    .await;
    let share = src.path().join("share");
    let names = [
        "big.bin",
        "sub/mid.bin",
        "link",
        "sub/deeper/f000",
        "sub/deeper/f020",
        "sub/deeper/f039",
        "empty",
        "sub/ünï cödé.txt",
    ];
    let mut readers = Vec::new();
    for i in 0..16 {
        let (mp, share) = (m.path(), share.clone());
        let name = names[i % names.len()];
        readers.push(tokio::task::spawn_blocking(move || {
            let got = std::fs::read(mp.join(name)).unwrap();
            assert!(
                got == std::fs::read(share.join(name)).unwrap(),
                "reader {i} of {name}"
            );
        }));
    }
    // A receive from the same sender at the same time.
    let sender_addr = m._sender.as_ref().unwrap().addr.clone();
    let out = tempfile::tempdir().unwrap();
    let mut s = within(20, connect(&sender_addr, &code)).await.unwrap();
    let manifest = s.accept(false).await.unwrap();
    let client = s.client(4).await.unwrap();
    let opts = pcp::receive::ReceiveOptions {
        out: out.path().to_path_buf(),
        overwrite: false,
    };
    let progress = Arc::new(pcp::receive::Progress::default());
    within(
        120,
        pcp::receive::receive_all(&client, &manifest, &opts, progress),
    )
    .await
    .unwrap();
    assert_eq!(snapshot(&share), snapshot(&out.path().join("share")));
    for r in readers {
        within(120, r).await.unwrap();
    }
}
