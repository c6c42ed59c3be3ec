//! `pcp node` as a service: an identity kept in a key file, refused when others can read it,
//! and bootstrapping from a plain address.

use super::*;

/// A running `pcp node` on loopback, killed on drop.
struct HelperNode {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for HelperNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HelperNode {
    /// `pcp node --listen /ip4/127.0.0.1/tcp/0` with `args`; PCP_BOOTSTRAP is cleared, so it
    /// dials nothing unless `args` say so.
    fn start(args: &[&str]) -> HelperNode {
        let (child, stdout, stderr) = common::spawn_drained(
            Command::new(PCP)
                .arg("node")
                .args(args)
                .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
                .env_remove("PCP_BOOTSTRAP")
                .env_remove("RUST_LOG"),
        );
        HelperNode {
            child,
            stdout,
            stderr,
        }
    }

    /// The `/ip4/127.0.0.1/tcp/PORT/p2p/ID` address it printed.
    fn addr(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(a) = self
                .stdout
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.starts_with("/ip4/127.0.0.1/tcp/") && l.contains("/p2p/"))
            {
                return a.trim().to_string();
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("pcp node exited ({st}): {}", self.stderr.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "pcp node printed no address: {}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and returns the exit code.
    fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pcp node did not stop within 10 s of SIGTERM");
    }

    /// Waits until stderr contains `what`.
    fn wait_for_log(&mut self, what: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.stderr.lock().unwrap().contains(what) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("pcp node exited ({st}): {}", self.stderr.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} within {secs} s in:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn peer_id(addr: &str) -> &str {
    addr.rsplit_once("/p2p/").expect("a /p2p/ address").1
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_node_with_a_key_file_keeps_its_peer_id_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let key_arg = key.to_str().unwrap();
    let args = ["--key", key_arg, "--discovery", "none"];

    let mut first = HelperNode::start(&args);
    let a = first.addr();
    assert_eq!(first.terminate(), Some(130));
    assert!(
        first
            .stderr
            .lock()
            .unwrap()
            .contains("Created a new node key"),
        "{}",
        first.stderr.lock().unwrap()
    );
    assert_eq!(mode(&key), 0o600, "the key file is private");

    let mut second = HelperNode::start(&args);
    let b = second.addr();
    assert_eq!(peer_id(&a), peer_id(&b), "same identity after a restart");
    assert!(second
        .stderr
        .lock()
        .unwrap()
        .contains("Loaded the node key"));
    assert_eq!(second.terminate(), Some(130));

    // Without --key, every start is someone new.
    let mut other = HelperNode::start(&["--discovery", "none"]);
    assert_ne!(peer_id(&other.addr()), peer_id(&a));
}

#[test]
fn a_node_refuses_a_key_file_others_can_read_or_that_is_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let bytes = libp2p::identity::Keypair::generate_ed25519()
        .to_protobuf_encoding()
        .unwrap();
    std::fs::write(&key, &bytes).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key_arg = key.to_str().unwrap();
    let run = || {
        pcp(&[
            "node",
            "--key",
            key_arg,
            "--discovery",
            "none",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
    };
    let r = run();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(r.stdout.is_empty(), "no address printed");
    assert!(
        err.contains("refusing the node key") && err.contains("mode 0644"),
        "{err}"
    );
    assert!(err.contains(&format!("chmod 600 {key_arg}")), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), bytes, "left as it was");

    std::fs::write(&key, b"garbage").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("not a libp2p keypair"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), b"garbage", "left as it was");
}

#[test]
fn a_node_bootstraps_from_an_address_without_a_peer_id() {
    let mut first = HelperNode::start(&["--discovery", "none"]);
    let a = first.addr();
    let bare = a.rsplit_once("/p2p/").unwrap().0.to_string();
    // A dead plain address beside it (port 1 on loopback: refused at once) must not stop the
    // node or the join through the live one.
    let boot = format!("/ip4/127.0.0.1/tcp/1,{bare}");
    let mut second = HelperNode::start(&["-v", "--discovery", "dht", "--bootstrap", &boot]);
    second.addr();
    second.wait_for_log(&format!("joined the DHT through {}", peer_id(&a)), 20);
    second.wait_for_log("cannot reach bootstrap address /ip4/127.0.0.1/tcp/1", 20);
}
