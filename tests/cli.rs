//! The real `pcp` binary: on loopback with --discovery none, and in two network namespaces
//! joined by a veth pair where the receiver finds the sender by mDNS.

mod common;

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
    // The code comes from PCP_CODE, in upper case with spaces: it need not appear in `ps`.
    let r = receive_cmd(&addr, out.path())
        .env("PCP_CODE", s.code.replace('-', " ").to_uppercase())
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
