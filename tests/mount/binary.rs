//! `pcp mount` run as a user runs it (the binary): signals, a busy sender, a stale
//! mountpoint, copy-out, the sender's Ctrl-C.

use super::*;

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
        let stderr = drain(child.stderr.take().unwrap());
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
        assert!(
            !err.lines().any(|l| l.contains("WARN")
                || (l.starts_with("warning:") && !l.contains("code on the command line"))),
            "{err}"
        );
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
                && done.contains(" sent")
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

/// A copy-out cut short by the unmount says what it kept and how to go on; the next mount with
/// the same `--copy-out` resumes from it and ends with the whole share, verified.
#[test]
fn a_copy_out_stopped_by_the_unmount_is_resumed_by_the_next_mount() {
    let src = tempfile::tempdir().unwrap();
    let share = src.path().join("share");
    std::fs::create_dir(&share).unwrap();
    // Large enough that the copy-out is still running when the signal comes.
    let data = bytes(256 << 20, 7);
    std::fs::write(share.join("big.bin"), &data).unwrap();
    std::fs::write(share.join("small.txt"), b"small\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    let sender = send_loopback(&share, &["--keep"]);
    let addr = sender.loopback_addr();
    let mut m = MountProc::start(&addr, &sender.code, &["--copy-out", dest.to_str().unwrap()]);
    // Some of the big file is on disk (its temporary file grows), but not all of it.
    let started = Instant::now();
    let partial = || {
        std::fs::read_dir(dest.join("share"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().ends_with(".part")
                    && e.metadata().is_ok_and(|md| md.len() > 0)
            })
    };
    while !partial() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no partial file"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(m.child.id() as i32, libc::SIGINT) };
    assert_eq!(m.exit_code(10), Some(0), "{}", m.stderr.lock().unwrap());
    let said = m.stderr.lock().unwrap().clone();
    assert!(!said.contains("Copy-out finished"), "{said}");
    assert!(
        said.contains("Copy-out stopped before the end: ")
            && said.contains(&format!(
                "received so far are kept in {}: run `pcp mount` again with `--copy-out {}` to go on",
                dest.display(),
                dest.display()
            )),
        "{said}"
    );
    drop(m);
    let m = MountProc::start(&addr, &sender.code, &["--copy-out", dest.to_str().unwrap()]);
    m.wait_for("Copy-out finished");
    let said = m.stderr.lock().unwrap().clone();
    assert!(
        said.contains(&format!(
            "Copy-out finished: 2 files (256.00 MiB, all verified) in {}; ",
            dest.display()
        )) && said.contains("were already there and verified."),
        "{said}"
    );
    assert_eq!(snapshot(&share), snapshot(&dest.join("share")));
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
