//! The real `pcp` binary: on loopback with --discovery none, and in two network namespaces
//! joined by a veth pair where the receiver finds the sender by mDNS.

#[path = "../common/mod.rs"]
mod common;
mod prompt;

use std::process::Command;

use common::{receive_cmd, send_loopback, snapshot, Lan, Sending, PCP};

#[test]
fn receive_by_the_binary_on_loopback() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    std::fs::write(src.path().join("d/a b.txt"), b"hello").unwrap();
    std::fs::write(src.path().join("d/data"), common::bytes(3 << 20, 5)).unwrap();
    let mut s = send_loopback(&src.path().join("d"), &[]);
    let addr = s.loopback_addr();
    // The code comes from PCP_CODE, in upper case with spaces and each word cut to its first
    // four letters (enough to name a BIP39 word): it need not appear in `ps`.
    let typed: Vec<String> = s
        .code
        .split('-')
        .map(|w| w.chars().take(4).collect())
        .collect();
    let r = receive_cmd(&addr, out.path())
        .env("PCP_CODE", typed.join(" ").to_uppercase())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("all verified"), "{err}");
    assert!(r.stdout.is_empty());
    assert_eq!(s.wait(10), Some(0), "sender: {}", s.stderr.lock().unwrap());
    assert_eq!(
        snapshot(&src.path().join("d")),
        snapshot(&out.path().join("d"))
    );
    // The sender counts what this receiver was sent, over the transfer's own time.
    let sent = s.stderr.lock().unwrap().clone();
    assert!(
        sent.contains("Done: the receiver has everything (3.00 MiB sent in "),
        "{sent}"
    );
}

#[test]
fn errors_say_their_cause_once_and_nothing_is_not_shared() {
    let r = Command::new(PCP)
        .args(["send", "--discovery", "none", "/nonexistent/pcp-test"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot share /nonexistent/pcp-test"),
        "{err}"
    );
    // Nothing but a device: no code is printed for an empty share.
    let r = Command::new(PCP)
        .args([
            "send",
            "--discovery",
            "none",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .arg("/dev/null")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        r.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert!(
        err.contains("error: nothing to share") && err.contains("special file /dev/null"),
        "{err}"
    );
    // A port another sender listens on: refused (libp2p's listeners share ports, so the
    // kernel would otherwise split receivers between the two shares).
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("f"), b"x").unwrap();
    let first = send_loopback(shared.path(), &[]);
    let taken = first.loopback_addr();
    let taken = taken.split("/p2p/").next().unwrap();
    let r = Command::new(PCP)
        .args(["send", "--discovery", "none", "--listen", taken])
        .arg(shared.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {taken}: another program")),
        "{err}"
    );
    drop(first);
    // An --out under a file: refused before the code is asked for or anyone is dialed.
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("file"), b"x").unwrap();
    let r = receive_cmd("/ip4/127.0.0.1/tcp/1", &out.path().join("file/below"))
        .arg("-")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: cannot receive into "), "{err}");
    assert!(
        !err.contains("Enter the code") && !err.contains("connect"),
        "{err}"
    );
    // Addresses nobody listens on: each with its cause, on one line, not libp2p's nested dump.
    let r = receive_cmd("/ip4/127.0.0.1/tcp/1", out.path())
        .args(["--peer", "/ip4/127.0.0.1/tcp/2", "--no-progress", "-"])
        .env("PCP_CODE", "slide-warfare-sponsor-fog")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("error: cannot connect to /ip4/127.0.0.1/tcp/"),
        "{err}"
    );
    for port in [1, 2] {
        let each = format!("/ip4/127.0.0.1/tcp/{port}: Connection refused (os error 111)");
        assert_eq!(line.matches(&each).count(), 1, "{err}");
    }
}

#[test]
fn wrong_code_by_the_binary() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    let mut s = send_loopback(
        &src.path().join("f"),
        &["--code", "bubble-enemy-result-increase"],
    );
    let addr = s.loopback_addr();
    let out = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let r = receive_cmd(&addr, out.path())
            .arg("bubble-enemy-result-pencil")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{err}");
        assert!(
            err.contains("the code did not match") && err.contains("someone may be guessing"),
            "{err}"
        );
    }
    assert_eq!(s.wait(10), Some(1));
    let err = s.stderr.lock().unwrap().clone();
    assert!(
        err.contains("failed attempts") && err.contains("Start a new share"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn interrupt_exits_130() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    let mut s = send_loopback(&src.path().join("f"), &[]);
    let _ = s.loopback_addr();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGINT) };
    assert_eq!(s.wait(10), Some(130));
    // The terminal closing (SIGHUP) stops it the same way, unless it was started with SIGHUP
    // ignored, as `nohup` does.
    for nohup in [false, true] {
        let mut c = common::send_cmd(&[]);
        c.arg(src.path().join("f"));
        if nohup {
            use std::os::unix::process::CommandExt;
            // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
            unsafe {
                c.pre_exec(|| {
                    libc::signal(libc::SIGHUP, libc::SIG_IGN);
                    Ok(())
                })
            };
        }
        let mut s = common::Sending::start(c);
        let _ = s.loopback_addr();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) };
        if nohup {
            assert_eq!(s.wait(1), None, "nohup: SIGHUP stopped it");
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(s.child.id() as i32, libc::SIGINT) };
        }
        assert_eq!(s.wait(10), Some(130));
    }
}

#[test]
fn bad_codes_are_refused_clearly() {
    let r = Command::new(PCP)
        .args([
            "receive",
            "--discovery",
            "none",
            "--peer",
            "/ip4/127.0.0.1/tcp/9",
            "bubble-enemy-resultt-increase",
        ])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("'resultt' is not a word"));
    // A word missing is refused before anything is tried (no attempt spent on the sender).
    let r = Command::new(PCP)
        .args([
            "receive",
            "--discovery",
            "none",
            "--peer",
            "/ip4/127.0.0.1/tcp/9",
        ])
        .args(["bubble", "enemy", "result"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("4 to 12 words") && err.contains("this one has 3"),
        "{err}"
    );
    let r = Command::new(PCP)
        .args(["send", "--code", "bubble-enemy", "/"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
}

#[test]
fn found_by_mdns_across_a_veth_lan() {
    let lan = Lan::new("m");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("share")).unwrap();
    std::fs::write(src.path().join("share/one"), common::bytes(1 << 20, 9)).unwrap();
    std::fs::write(src.path().join("share/two"), b"two").unwrap();
    // Default discovery (mDNS and DHT); the namespaces have no route to anywhere else.
    let mut c = lan.exec(&lan.a);
    c.args(["send", "--no-progress"])
        .arg(src.path().join("share"));
    let mut s = Sending::start(c);
    let r = lan
        .exec(&lan.b)
        .args([
            "receive",
            "--yes",
            "--no-progress",
            "--wait",
            "30s",
            "--out",
        ])
        .arg(out.path())
        .arg(&s.code)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        r.status.success(),
        "receiver: {err}\nsender: {}",
        s.stderr.lock().unwrap()
    );
    assert!(err.contains("local network (mDNS)"), "{err}");
    assert_eq!(s.wait(10), Some(0));
    assert_eq!(
        snapshot(&src.path().join("share")),
        snapshot(&out.path().join("share"))
    );
}

/// Bytes the process has read with read(2)-like calls, files and sockets alike.
fn rchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// The sender puts a large file's hash together from the reads that serve it: a receive reads
/// the file from the sender's disk once, not once to send and once more to hash (which, for a
/// file larger than the page cache, doubles the disk's work). The hash still comes, and is
/// checked: a second receive gets it without the file being read again for it.
#[test]
fn a_receive_reads_a_large_file_once_on_the_sender() {
    let src = tempfile::tempdir().unwrap();
    let size = 24 << 20;
    std::fs::write(src.path().join("big"), common::bytes(size, 3)).unwrap();
    let s = send_loopback(&src.path().join("big"), &["--keep"]);
    let pid = s.child.id();
    let before = rchar(pid);
    for n in 1..=2u64 {
        let out = tempfile::tempdir().unwrap();
        let r = s.receiver(out.path()).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success() && err.contains("all verified"), "{err}");
        assert_eq!(
            std::fs::read(out.path().join("big")).unwrap(),
            common::bytes(size, 3)
        );
        let read = rchar(pid) - before;
        assert!(
            read < n * size as u64 + (size as u64) / 4,
            "receive {n}: the sender read {read} bytes for {size}-byte files"
        );
    }
}

#[test]
fn a_kept_share_serves_several_receivers_at_once_until_ctrl_c() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    std::fs::write(src.path().join("d/data"), common::bytes(4 << 20, 7)).unwrap();
    std::fs::write(src.path().join("d/note"), b"for everyone").unwrap();
    let mut s = send_loopback(&src.path().join("d"), &["--keep"]);
    let addr = s.loopback_addr();
    // One wrong code first: it counts, but the share goes on.
    let out = tempfile::tempdir().unwrap();
    let wrong = receive_cmd(&addr, out.path())
        .arg("abandon-ability-able-about")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    // Four receivers at once, each into its own folder.
    let outs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let runs: Vec<_> = outs
        .iter()
        .map(|o| {
            s.receiver(o.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (r, o) in runs.into_iter().zip(&outs) {
        let r = r.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "{err}");
        assert!(err.contains("all verified"), "{err}");
        assert_eq!(
            snapshot(&src.path().join("d")),
            snapshot(&o.path().join("d"))
        );
    }
    // Still sharing: one more receiver later.
    assert_eq!(s.wait(1), None, "{}", s.stderr.lock().unwrap());
    let late = tempfile::tempdir().unwrap();
    let r = s.receiver(late.path()).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGINT) };
    assert_eq!(s.wait(10), Some(0), "{}", s.stderr.lock().unwrap());
    let err = s.stderr.lock().unwrap().clone();
    for n in 1..=5 {
        assert!(
            err.contains(&format!("Receiver {n} is done (4.00 MiB sent in ")),
            "{err}"
        );
    }
    assert!(err.contains("1 of 3 attempts"), "{err}");
    assert!(
        err.contains("Stopped sharing: 5 receivers finished, 0 declined."),
        "{err}"
    );
}

/// The `--json` lines of `out`, each parsed (a line that is not a JSON object fails the test).
fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["event"].is_string(), "no event name: {l}");
            v
        })
        .collect()
}

fn names(events: &[serde_json::Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

#[test]
fn json_events_on_both_sides_and_nothing_else_on_stdout() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    std::fs::write(src.path().join("d/data"), common::bytes(2 << 20, 3)).unwrap();
    let mut send = Command::new(PCP)
        .args(["--json", "-v", "--discovery", "none", "send", "--listen"])
        .args(["/ip4/127.0.0.1/tcp/0"])
        .arg(src.path().join("d"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(send.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let code: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(code["event"], "code", "{first}");
    assert_eq!(
        (code["files"].as_u64(), code["bytes"].as_u64()),
        (Some(1), Some(2 << 20))
    );
    assert_eq!(code["roots"][0], "d/", "folders end with /");
    let phrase = code["code"].as_str().unwrap().to_string();
    let mut err = BufReader::new(send.stderr.take().unwrap());
    let addr = loop {
        let mut l = String::new();
        assert!(err.read_line(&mut l).unwrap() > 0, "no address");
        if let Some(a) = l.trim().strip_prefix("Listening on ") {
            if a.starts_with("/ip4/127.0.0.1/tcp") {
                break a.to_string();
            }
        }
    };
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let dst = tempfile::tempdir().unwrap();
    let r = receive_cmd(&addr, dst.path())
        .arg("--json")
        .env("PCP_CODE", &phrase)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let ev = json_lines(&r.stdout);
    let n = names(&ev);
    assert_eq!(&n[..3], ["found", "compression", "offer"], "{n:?}");
    // On loopback the round trip is far below 5 ms (unless a busy machine delays the ping).
    assert!(ev[1]["on"].is_boolean(), "{}", ev[1]);
    assert!(
        ev[1]["round_trip_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{}",
        ev[1]
    );
    assert_eq!(ev[2]["bytes"], 2 << 20);
    let done = ev.last().unwrap();
    assert_eq!(done["event"], "done", "{n:?}");
    assert_eq!(done["exit_code"], 0);
    assert_eq!(
        (done["files"].as_u64(), done["bytes"].as_u64()),
        (Some(1), Some(2 << 20))
    );
    assert!(n[3..n.len() - 1].iter().all(|e| *e == "progress"), "{n:?}");
    assert!(send.wait().unwrap().success());
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut out, &mut rest).unwrap();
    let ev = json_lines(&rest);
    let n: Vec<&str> = names(&ev)
        .into_iter()
        .filter(|e| *e != "progress")
        .collect();
    assert_eq!(
        n,
        [
            "receiver_authenticated",
            "receiver_accepted",
            "receiver_done",
            "done"
        ],
        "{ev:?}"
    );
    let done = ev.last().unwrap();
    assert_eq!(
        (done["exit_code"].as_u64(), done["bytes"].as_u64()),
        (Some(0), Some(2 << 20))
    );
    // An error is an event too, with its exit code.
    let r = Command::new(PCP)
        .args([
            "--json",
            "--discovery",
            "none",
            "send",
            "/nonexistent/pcp-json",
        ])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    let ev = json_lines(&r.stdout);
    assert_eq!(names(&ev), ["error"]);
    assert_eq!(ev[0]["exit_code"], 1);
    assert!(ev[0]["message"].as_str().unwrap().contains("cannot share"));
}

#[test]
fn a_text_message_is_a_json_event_with_its_bytes_unchanged() {
    let text = "two lines\nand an escape \u{1b}[31m, kept as sent";
    let mut c = Command::new(PCP);
    c.args(["send", "-v", "--no-progress", "--discovery", "none"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--text", text]);
    let mut s = Sending::start(c);
    let addr = s.loopback_addr();
    let dst = tempfile::tempdir().unwrap();
    let r = receive_cmd(&addr, dst.path())
        .arg("--json")
        .env("PCP_CODE", &s.code)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let ev = json_lines(&r.stdout);
    let t = ev
        .iter()
        .find(|e| e["event"] == "text")
        .expect("a text event");
    assert_eq!(t["text"], text);
    assert_eq!(ev.last().unwrap()["event"], "done");
    assert_eq!(std::fs::read_dir(dst.path()).unwrap().count(), 0, "no file");
    assert_eq!(s.wait(10), Some(0));
}

/// `pcp send 2>&1 | head`: the sender's stderr goes away early. It must go on serving (no
/// panic on a failed write, exit 0), and the receive must succeed.
#[test]
fn a_sender_whose_stderr_was_closed_still_serves() {
    use std::io::BufRead;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"hello").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut s = Command::new(PCP)
        .args(["send", "--discovery", "none", "--listen", &addr])
        .arg(src.path().join("f"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(s.stderr.take());
    let mut line = String::new();
    std::io::BufReader::new(s.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let code = line.trim().strip_prefix("Code is: ").unwrap().to_string();
    let r = receive_cmd(&addr, out.path()).arg(&code).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(out.path().join("f")).unwrap(), b"hello");
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(st) = s.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed().as_secs() < 10, "the sender did not exit");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
