//! `pcp mount` on real kernel FUSE mounts. These need root and /dev/fuse; a mount that cannot
//! be made fails the test (it never skips).

mod binary;
#[path = "../common/mod.rs"]
mod common;
mod failures;

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
        // A folder's link count is 2 plus its folders, as on the sender's disk.
        use std::os::unix::fs::MetadataExt;
        for dir in ["", "sub", "sub/deeper"] {
            let nlink = |root: &Path| std::fs::metadata(root.join(dir)).unwrap().nlink();
            assert_eq!(nlink(&mp2), nlink(&s2), "{dir}");
        }
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
    // Words, not substrings ("fault" is in "default_permissions"); the options are all known
    // ones with numeric values ("user" and "group" are words of the list too).
    for w in code.words() {
        for f in [fields[0], fields[2]] {
            let mut tokens = f.split(|c: char| !c.is_ascii_alphabetic());
            assert!(
                !tokens.any(|t| t == w),
                "{w} appears in /proc/mounts: {line}"
            );
        }
    }
    let known = [
        "ro",
        "nosuid",
        "nodev",
        "noatime",
        "user_id",
        "group_id",
        "default_permissions",
        "allow_other",
        "max_read",
        "blksize",
    ];
    for o in fields[3].split(',') {
        let (k, v) = o.split_once('=').unwrap_or((o, "0"));
        assert!(
            known.contains(&k) && v.bytes().all(|b| b.is_ascii_digit()),
            "unexpected mount option {o}: {line}"
        );
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

/// `lseek(fd, offset, SEEK_DATA or SEEK_HOLE)`, `None` for ENXIO.
fn seek(f: &std::fs::File, offset: u64, hole: bool) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let whence = if hole {
        libc::SEEK_HOLE
    } else {
        libc::SEEK_DATA
    };
    // SAFETY: lseek on an open descriptor.
    let r = unsafe { libc::lseek(f.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "{e}");
        return None;
    }
    Some(r as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sparse_files_show_their_holes_to_stat_lseek_and_cp() {
    use std::os::unix::fs::MetadataExt;
    let src = tempfile::tempdir().unwrap();
    let d = src.path().join("share");
    std::fs::create_dir(&d).unwrap();
    // 96 MiB with data at 8 MiB and 40 MiB (1 MiB each) and a hole at its end; a dense file.
    let f = std::fs::File::create(d.join("disk.img")).unwrap();
    f.set_len(96 << 20).unwrap();
    for at in [8u64 << 20, 40 << 20] {
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes(1 << 20, at), at).unwrap();
    }
    drop(f);
    std::fs::write(d.join("dense.bin"), bytes(3 << 20, 9)).unwrap();
    let code = Code::generate(4);
    let m = mount_share(std::slice::from_ref(&d), &code, Duration::from_secs(20)).await;
    let mp = m.path();
    blocking(move || {
        for name in ["disk.img", "dense.bin"] {
            let (local, mounted) = (d.join(name), mp.join(name));
            // stat's blocks are the sender's (du shows what the file takes there).
            assert_eq!(
                mounted.metadata().unwrap().blocks(),
                local.metadata().unwrap().blocks(),
                "{name}"
            );
            // SEEK_DATA and SEEK_HOLE find what they find on the sender's disk.
            let (lf, mf) = (
                std::fs::File::open(&local).unwrap(),
                std::fs::File::open(&mounted).unwrap(),
            );
            let size = lf.metadata().unwrap().len();
            for off in [
                0,
                1,
                8 << 20,
                (8 << 20) + 5,
                9 << 20,
                20 << 20,
                41 << 20,
                size - 1,
            ] {
                if off >= size {
                    continue;
                }
                for hole in [false, true] {
                    assert_eq!(
                        seek(&mf, off, hole),
                        seek(&lf, off, hole),
                        "{name} at {off}, hole {hole}"
                    );
                }
            }
            assert_eq!(seek(&mf, size, false), None, "past the end");
            // cp keeps the holes and the bytes.
            let out = tempfile::tempdir().unwrap();
            let st = Command::new("cp")
                .arg(&mounted)
                .arg(out.path())
                .status()
                .unwrap();
            assert!(st.success());
            let copy = out.path().join(name);
            assert!(std::fs::read(&copy).unwrap() == std::fs::read(&local).unwrap());
            if name == "disk.img" {
                assert!(
                    copy.metadata().unwrap().blocks() * 512 <= 4 << 20,
                    "holes kept"
                );
            }
        }
    })
    .await;
    drop(m);
}
