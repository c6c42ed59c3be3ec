//! The kinds of share: a text, standard input, `--stdout`, `--exclude` and `--gitignore`, and
//! what the sender cannot read.

use super::*;

/// `pcp receive --yes --stdout` dialling `addr`, with the code in PCP_CODE.
fn receive_stdout(addr: &str, code: &str) -> Command {
    let mut c = Command::new(PCP);
    c.args([
        "receive",
        "--yes",
        "--stdout",
        "--discovery",
        "none",
        "--peer",
        addr,
    ])
    .env("PCP_CODE", code)
    .stdin(Stdio::null());
    c
}

/// Waits until the sender's stderr holds `what`.
fn sender_says(s: &Sending, what: &str) -> String {
    for _ in 0..100 {
        let err = s.stderr.lock().unwrap().clone();
        if err.contains(what) {
            return err;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the sender never said {what:?}: {}",
        s.stderr.lock().unwrap()
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir, dir);
    v.sort();
    v
}

fn walk(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            out.push(format!("{rel}/"));
            out.extend(walk(root, &p));
        } else {
            out.push(rel);
        }
    }
    out
}

#[test]
fn the_help_tells_of_text_pipes_and_excluding() {
    let send = stdout(&pcp(&["send", "--help"]));
    for opt in [
        "--text <TEXT>",
        "--name <NAME>",
        "--exclude <PATTERN>",
        "--gitignore",
    ] {
        assert!(send.contains(opt), "no {opt} in:\n{send}");
    }
    assert!(send.contains("standard input"), "{send}");
    let receive = stdout(&pcp(&["receive", "--help"]));
    assert!(receive.contains("--stdout"), "{receive}");
}

#[test]
fn a_text_is_printed_by_the_receiver_raw_into_a_pipe_and_no_file_is_written() {
    // Escapes and a bidi override: raw into a pipe (a terminal would get them escaped).
    let text = "héllo \u{1b}[2J\u{202e}\nsecond line";
    let mut s = Sending::start(send_cmd(&["--text", text]));
    let out = tempfile::tempdir().unwrap();
    let r = s
        .receiver(out.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&r.stdout), text);
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    assert_eq!(s.wait(10), Some(0), "{}", s.stderr.lock().unwrap());
    let said = s.stderr.lock().unwrap().clone();
    let size = format!("Sharing a text message ({} B)", text.len());
    assert!(said.contains(&size), "{said}");
    assert!(said.contains("the receiver has the text"), "{said}");

    let long = "x".repeat(64 * 1024 + 1);
    let o = pcp(&[
        "send",
        "--discovery",
        "none",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--text",
        &long,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("at most 64 KiB"));
}

#[test]
fn standard_input_is_spooled_unnamed_and_received_on_stdout_verified() {
    use std::io::Write;
    let data = common::bytes((3 << 20) + 5, 7);
    let tmp = tempfile::tempdir().unwrap();
    let (r, mut w) = std::io::pipe().unwrap();
    let mut c = send_cmd(&["-", "--name", "data.bin"]);
    c.stdin(r).env("TMPDIR", tmp.path());
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        // In pieces, as a slow producer would.
        for piece in sent.chunks(100_000) {
            w.write_all(piece).unwrap();
        }
    });
    let mut s = Sending::start(c);
    writer.join().unwrap();
    let addr = s.loopback_addr();
    let said = sender_says(&s, "Sharing data.bin (1 file, 3.00 MiB)");
    assert!(said.contains("Reading standard input"), "{said}");
    // The spool has no name: nothing in TMPDIR while it is shared.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    let r = receive_stdout(&addr, &s.code).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        r.stdout == data,
        "stdout differs ({} bytes): {err}",
        r.stdout.len()
    );
    assert!(
        err.contains("Received data.bin (3.00 MiB, verified)")
            && err.contains("written to standard output"),
        "{err}"
    );
    assert_eq!(s.wait(10), Some(0), "{}", s.stderr.lock().unwrap());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    // No PATH and standard input not a terminal: shared as `stdin`, received as a file.
    let src = tempfile::tempdir().unwrap();
    let input = src.path().join("input");
    std::fs::write(&input, b"piped\n").unwrap();
    let mut c = send_cmd(&[]);
    c.stdin(std::fs::File::open(&input).unwrap());
    let mut s = Sending::start(c);
    let out = tempfile::tempdir().unwrap();
    let r = s
        .receiver(out.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(r.stdout.is_empty());
    assert_eq!(std::fs::read(out.path().join("stdin")).unwrap(), b"piped\n");
    assert_eq!(s.wait(10), Some(0));

    // A name that is no file name is refused before anything is read or announced.
    for bad in ["../x", "a/b", ".pcp-unfinished"] {
        let o = Command::new(PCP)
            .args([
                "send",
                "--discovery",
                "none",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
            ])
            .args(["-", "--name", bad])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(o.stdout.is_empty(), "{bad}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--name"),
            "{bad}"
        );
    }
}

#[test]
fn receive_stdout_refuses_a_share_that_is_not_one_file_before_accepting() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    std::fs::write(src.path().join("d/a"), b"a").unwrap();
    std::fs::write(src.path().join("d/b"), b"b").unwrap();
    let s = common::send_loopback(&src.path().join("d"), &[]);
    let addr = s.loopback_addr();
    let r = receive_stdout(&addr, &s.code).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(r.stdout.is_empty());
    assert!(
        err.contains("--stdout takes a share of exactly one file, and this one holds 3 entries"),
        "{err}"
    );
    // The sender hears why and goes on sharing; nothing was sent.
    let said = sender_says(&s, "The receiver stopped: the receiver wants one file");
    assert!(said.contains("Still sharing"), "{said}");
    assert!(!said.contains("Receiver accepted"), "{said}");
}

#[test]
fn exclude_and_gitignore_leave_entries_out_and_the_sender_counts_them() {
    let src = tempfile::tempdir().unwrap();
    let repo = src.path().join("repo");
    for d in [".git/info", "build", "sub/deep", "sub/docs", "docs"] {
        std::fs::create_dir_all(repo.join(d)).unwrap();
    }
    for (f, body) in [
        (".git/HEAD", "ref: refs/heads/main\n"),
        (".git/info/exclude", "local.txt\n"),
        (".gitignore", "*.log\nbuild/\n!keep.log\n"),
        ("sub/.ignore", "secret*\n"),
        ("a.txt", "a"),
        ("x.log", "x"),
        ("keep.log", "k"),
        ("build/out.o", "o"),
        ("local.txt", "l"),
        ("sub/b.txt", "b"),
        ("sub/secret.key", "s"),
        ("sub/deep/c.tmp", "c"),
        ("sub/docs/e.md", "e"),
        ("docs/d.md", "d"),
    ] {
        std::fs::write(repo.join(f), body).unwrap();
    }
    let mut s = common::send_loopback(
        &repo,
        &["--gitignore", "--exclude", "*.tmp", "--exclude", "/docs"],
    );
    let out = tempfile::tempdir().unwrap();
    let r = s
        .receiver(out.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(s.wait(10), Some(0));
    assert_eq!(
        names(out.path()),
        [
            "repo/",
            "repo/.gitignore",
            "repo/a.txt",
            "repo/keep.log",
            "repo/sub/",
            "repo/sub/.ignore",
            "repo/sub/b.txt",
            "repo/sub/deep/",
            "repo/sub/docs/",
            "repo/sub/docs/e.md",
        ]
    );
    // .git, x.log, build/, local.txt, secret.key, c.tmp, docs/
    let said = s.stderr.lock().unwrap().clone();
    assert!(
        said.contains("Left out 7 entries (--exclude, --gitignore)."),
        "{said}"
    );

    // A bad pattern is refused before anything is shared.
    let o = pcp(&[
        "send",
        "--discovery",
        "none",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--exclude",
        "[z-a]",
        &repo.to_string_lossy(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("invalid --exclude pattern: error parsing glob '[z-a]'"),
        "{err}"
    );
}

/// What the sending user cannot read is left out with a warning, not offered and then failed
/// on at every receive. Runs the sender as `nobody` (root reads everything), from a copy of
/// the binary that user can run.
#[test]
fn what_the_sender_cannot_read_is_left_out_and_said() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("pcp");
    if std::fs::hard_link(PCP, &bin).is_err() {
        std::fs::copy(PCP, &bin).unwrap();
    }
    let share = dir.path().join("share");
    std::fs::create_dir_all(share.join("locked")).unwrap();
    std::fs::write(share.join("open.txt"), "abc").unwrap();
    std::fs::write(share.join("secret.txt"), "s").unwrap();
    std::fs::write(share.join("locked/x"), "x").unwrap();
    for (p, mode) in [("", 0o755), ("open.txt", 0o644), ("secret.txt", 0o600)] {
        std::fs::set_permissions(share.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(share.join("locked"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("send")
        .args(common::LOOPBACK_ONLY)
        .arg(&share)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) runs");
    let mut said = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.starts_with("Sharing ") || line.starts_with("error") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(said.contains("warning: skipped unreadable file "), "{said}");
    assert!(
        said.contains("warning: skipped unreadable folder "),
        "{said}"
    );
    assert!(said.contains("Sharing share/ (1 file, 3 B)."), "{said}");
}

/// `--limit-rate` holds over a whole receive (eight data streams at once), on the sender (which
/// says it) or on the receiver, and the file still arrives whole; a rate below 1K is refused
/// before anything starts.
#[test]
fn a_limited_sender_or_receiver_moves_no_faster_than_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("eight.bin"), common::bytes(8 << 20, 3)).unwrap();
    // The whole share received, verified; what the sender said.
    let limited = |send: &[&str], receive: &[&str]| {
        let mut s = common::send_loopback(&share, send);
        let out = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let r = s.receiver(out.path()).args(receive).output().unwrap();
        let took = started.elapsed();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(s.wait(10), Some(0));
        // 8 MiB at 4 MiB/s: the last 1 MiB may leave 7/4 s after the first.
        assert!(took >= Duration::from_millis(1700), "took {took:?}");
        assert_eq!(
            common::snapshot(&share),
            common::snapshot(&out.path().join("share"))
        );
        let said = s.stderr.lock().unwrap().clone();
        said
    };
    let said = limited(&["--limit-rate", "4M"], &[]);
    assert!(
        said.contains("(1 file, 8.00 MiB), at most 4.00 MiB/s."),
        "{said}"
    );
    limited(&[], &["--limit-rate", "4M"]);
    let low = pcp(&["send", "--limit-rate", "100", "--discovery", "none", "."]);
    assert!(!low.status.success());
    assert!(String::from_utf8_lossy(&low.stderr).contains("lowest rate, 1K"));
}

/// A sparse file through the binary: both sides say how much of what moved was zeros sent as
/// their length, and the copy is as sparse as the original.
#[test]
fn both_sides_say_how_much_of_a_sparse_file_moved_as_zeros() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let f = std::fs::File::create(share.join("disk.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    f.write_all_at(b"end", (8 << 20) - 3).unwrap();
    drop(f);
    let mut s = common::send_loopback(&share, &[]);
    let out = tempfile::tempdir().unwrap();
    let r = s.receiver(out.path()).output().unwrap();
    let said = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{said}");
    assert_eq!(s.wait(10), Some(0));
    // Seven whole MiB of zeros; the last read holds the data.
    let zeros = "7.00 MiB of it runs of zeros sent as their length)";
    assert!(said.contains(zeros), "{said}");
    assert!(
        s.stderr.lock().unwrap().contains(zeros),
        "{}",
        s.stderr.lock().unwrap()
    );
    let got = out.path().join("share/disk.img");
    assert_eq!(
        common::snapshot(&share),
        common::snapshot(&out.path().join("share"))
    );
    assert!(std::fs::metadata(&got).unwrap().blocks() * 512 < 2 << 20);
    // The same file to standard output: every byte, and the same remark.
    let mut s = common::send_loopback(&share.join("disk.img"), &[]);
    let r = receive_stdout(&s.loopback_addr(), &s.code)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{said}");
    assert_eq!(s.wait(10), Some(0));
    assert!(r.stdout == std::fs::read(&got).unwrap());
    assert!(said.contains(zeros), "{said}");
}

/// `--compress`: what compresses crosses compressed, both sides say how much, the receive's
/// JSON counts it, and the files arrive identical; with `--compress=no`, or from a sender with
/// `--no-compress`, nothing is compressed.
#[test]
fn both_sides_say_how_much_crossed_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("{i:07} a line of a log\n").into_bytes())
        .take(2 << 20)
        .collect();
    std::fs::write(share.join("app.log"), &text).unwrap();
    std::fs::write(share.join("noise.bin"), common::bytes(1 << 20, 9)).unwrap();
    let mut s = common::send_loopback(&share, &[]);
    let out = tempfile::tempdir().unwrap();
    let r = s
        .receiver(out.path())
        .args(["--compress", "--json"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{said}");
    assert_eq!(s.wait(10), Some(0));
    assert_eq!(
        common::snapshot(&share),
        common::snapshot(&out.path().join("share"))
    );
    let done: serde_json::Value = String::from_utf8_lossy(&r.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "done")
        .expect("a done event");
    assert_eq!(done["compressed"], 2 << 20, "{done}");
    let wire = done["compressed_wire"].as_u64().unwrap();
    assert!(wire > 0 && wire < 1 << 20, "{done}");
    let sent = s.stderr.lock().unwrap().clone();
    assert!(sent.contains("; 2.00 MiB of it compressed to "), "{sent}");
    // Turned off: as they are (on loopback `auto` is off too, unless a busy machine makes the
    // first ping take 5 ms).
    let mut s = common::send_loopback(&share, &[]);
    let again = tempfile::tempdir().unwrap();
    let r = s
        .receiver(again.path())
        .arg("--compress=no")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success() && !said.contains("compressed"), "{said}");
    assert_eq!(s.wait(10), Some(0));
    assert!(!s.stderr.lock().unwrap().contains("compressed"));
    // A sender with --no-compress sends the bytes as they are, asked or not, and says so.
    let mut s = common::send_loopback(&share, &["--no-compress"]);
    let third = tempfile::tempdir().unwrap();
    let r = s.receiver(third.path()).arg("--compress").output().unwrap();
    let said = String::from_utf8_lossy(&r.stderr);
    assert!(
        r.status.success() && !said.contains("compressed to"),
        "{said}"
    );
    assert_eq!(s.wait(10), Some(0));
    let sent = s.stderr.lock().unwrap().clone();
    assert!(
        sent.contains(", never compressed.") && !sent.contains("compressed to"),
        "{sent}"
    );
    assert_eq!(
        common::snapshot(&share),
        common::snapshot(&third.path().join("share"))
    );
}

/// A file changed after the share started: without `-v` the sender's warning is a plain
/// `warning:` line like its others (no log timestamp or level), said once however many reads
/// the receiver makes of it, and the receiver names the cause once.
#[test]
fn a_changed_file_is_said_once_in_plain_words_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.bin");
    std::fs::write(&f, common::bytes(6 << 20, 3)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut cmd = Command::new(PCP);
    cmd.args(["send", "--no-progress", "--discovery", "none", "--listen"])
        .arg(&addr)
        .arg(&f);
    let mut s = Sending::start(cmd);
    // Changed after the scan: every read of it is refused.
    std::fs::write(&f, common::bytes(6 << 20, 4)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let r = common::receive_cmd(&addr, out.path())
        .env("PCP_CODE", &s.code)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{said}");
    assert_eq!(said.matches("changed on the sender").count(), 1, "{said}");
    let _ = s.child.kill();
    s.wait(10);
    let sent = s.stderr.lock().unwrap().clone();
    let warned: Vec<&str> = sent
        .lines()
        .filter(|l| l.contains("changed since the share started"))
        .collect();
    assert_eq!(warned.len(), 1, "{sent}");
    assert!(
        warned[0].starts_with("warning: ") && warned[0].contains("notes.bin"),
        "{sent}"
    );
    assert!(!sent.contains(" WARN "), "{sent}");
}
