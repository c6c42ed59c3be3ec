//! Helpers shared by the integration tests: real libp2p nodes on loopback, real files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use pcp::code::Code;
use pcp::fetch::Session;
use pcp::manifest::LocalTree;
use pcp::net::{Node, NodeConfig};
use pcp::share::{self, ServeOptions, Share, ShareEnd, ShareEvent};
use tokio::sync::mpsc;

/// Collects a pipe's lines into a shared string from a background thread.
pub fn drain(pipe: impl std::io::Read + Send + 'static) -> Arc<std::sync::Mutex<String>> {
    let buf = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = buf.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    buf
}

/// Starts `cmd` with no stdin and its stdout and stderr collected by [`drain`].
pub fn spawn_drained(
    cmd: &mut Command,
) -> (
    Child,
    Arc<std::sync::Mutex<String>>,
    Arc<std::sync::Mutex<String>>,
) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pcp starts");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    (child, out, err)
}

pub fn loopback() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]
}

pub struct Sender {
    pub node: Node,
    pub addr: Multiaddr,
    pub task: tokio::task::JoinHandle<pcp::Result<ShareEnd>>,
    pub events: mpsc::Receiver<ShareEvent>,
    /// What it shares (for its count of bytes served).
    pub share: Arc<Share>,
}

/// A real node listening on loopback, and its address.
pub async fn loopback_node() -> (Node, Multiaddr) {
    let node = Node::start(NodeConfig {
        listen: loopback(),
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = node.listen_addrs().await.unwrap()[0].clone();
    (node, addr)
}

/// Starts a real sender for `paths` on loopback (one receiver, as `pcp send`).
pub async fn start_sender(paths: &[PathBuf], code: &Code) -> Sender {
    start_sender_with(paths, code, ServeOptions::default()).await
}

/// Starts a real sender for `paths` on loopback with `opts` (`keep`: several receivers).
pub async fn start_sender_with(paths: &[PathBuf], code: &Code, opts: ServeOptions) -> Sender {
    let tree = LocalTree::build(paths).unwrap();
    let share = Arc::new(Share::new(tree));
    let (node, addr) = loopback_node().await;
    let (tx, events) = mpsc::channel(64);
    let (n, c, s) = (node.clone(), code.clone(), share.clone());
    let task = tokio::spawn(async move { share::serve(&n, s, &c, tx, opts).await });
    Sender {
        node,
        addr,
        task,
        events,
        share,
    }
}

/// A receiver node that dials `addr` and authenticates with `code`.
pub async fn connect(addr: &Multiaddr, code: &Code) -> pcp::Result<Session> {
    let node = Node::start(NodeConfig::default()).await?;
    let peer = node.dial(addr.clone()).await?;
    Session::authenticate(&node, peer, code).await
}

/// A real sender of `paths` on loopback with a fresh code, and a receiver's session with it
/// that has accepted the offer, with the offer's manifest.
pub async fn accepted(paths: &[PathBuf]) -> (Sender, Session, pcp::manifest::Manifest) {
    let code = Code::generate(4);
    let sender = start_sender(paths, &code).await;
    let mut s = within(20, connect(&sender.addr, &code)).await.unwrap();
    let m = s.accept(false).await.unwrap();
    (sender, s, m)
}

/// Everything observable about a tree: kind, mode bits, mtime, content or link target.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let md = std::fs::symlink_metadata(p).unwrap();
    let rel = p.strip_prefix(root).unwrap().to_path_buf();
    let mode = md.permissions().mode() & 0o7777;
    let desc = if md.file_type().is_symlink() {
        format!(
            "link -> {:?} mtime {}.{}",
            std::fs::read_link(p).unwrap(),
            md.mtime(),
            md.mtime_nsec()
        )
    } else if md.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in &names {
            walk(root, n, out);
        }
        format!("dir {mode:o} mtime {}.{}", md.mtime(), md.mtime_nsec())
    } else {
        let h = blake3::hash(&std::fs::read(p).unwrap());
        format!(
            "file {mode:o} {} bytes {h} mtime {}.{}",
            md.len(),
            md.mtime(),
            md.mtime_nsec()
        )
    };
    out.insert(rel, desc);
}

/// Random bytes, deterministic per seed.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("did not finish in time")
}

/// Logs to the test's captured output when RUST_LOG is set.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub const PCP: &str = env!("CARGO_BIN_EXE_pcp");

/// A running `pcp send`, killed on drop.
pub struct Sending {
    pub child: Child,
    pub code: String,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// The thread copying stderr into `stderr`; joined once the sender has exited, so what it
    /// printed last is there when a test looks.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Sending {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sending {
    pub fn start(mut cmd: Command) -> Sending {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pcp send starts");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let code = line
            .strip_prefix("Code is: ")
            .unwrap_or_else(|| panic!("no code line: {line:?}"))
            .trim()
            .to_string();
        Sending {
            child,
            code,
            stderr,
            reader: Some(reader),
        }
    }

    /// The first /ip4/127.0.0.1 address the sender printed (needs -v).
    pub fn loopback_addr(&self) -> String {
        for _ in 0..50 {
            if let Some(a) = self.stderr.lock().unwrap().lines().find_map(|l| {
                l.strip_prefix("Listening on ")
                    .filter(|a| a.starts_with("/ip4/127.0.0.1/tcp"))
            }) {
                return a.to_string();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sender printed no address: {}", self.stderr.lock().unwrap());
    }

    /// `pcp receive` of this share over loopback (`--peer`), the code in PCP_CODE.
    pub fn receiver(&self, out: &std::path::Path) -> Command {
        let mut c = receive_cmd(&self.loopback_addr(), out);
        c.env("PCP_CODE", &self.code);
        c
    }

    pub fn wait(&mut self, secs: u64) -> Option<i32> {
        for _ in 0..secs * 10 {
            if let Some(st) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

/// `pcp send` on loopback with --discovery none.
pub fn send_loopback(path: &std::path::Path, extra: &[&str]) -> Sending {
    let mut c = send_cmd(extra);
    c.arg(path);
    Sending::start(c)
}

/// `pcp send -v --no-progress --discovery none --listen` loopback with `args` (no path added).
pub fn send_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(PCP);
    c.args(["send", "-v", "--no-progress"])
        .args(LOOPBACK_ONLY)
        .args(args);
    c
}

/// No discovery, listening on a free loopback port.
#[allow(dead_code)] // not every test binary uses every helper
pub const LOOPBACK_ONLY: [&str; 4] = ["--discovery", "none", "--listen", "/ip4/127.0.0.1/tcp/0"];

/// Runs `ip ARGS` (iproute2), failing the test if it fails (the tests run as root).
pub fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(args)
        .status()
        .expect("iproute2 is installed");
    assert!(st.success(), "ip {args:?} failed (tests run as root)");
}

/// Two network namespaces joined by a veth pair, removed on drop (even when a test fails).
pub struct Lan {
    pub a: String,
    pub b: String,
}

impl Lan {
    pub fn new(tag: &str) -> Lan {
        let id = std::process::id() % 100_000;
        let lan = Lan {
            a: format!("pcp{tag}a{id}"),
            b: format!("pcp{tag}b{id}"),
        };
        ip(&["netns", "add", &lan.a]);
        ip(&["netns", "add", &lan.b]);
        ip(&[
            "link", "add", "vA", "netns", &lan.a, "type", "veth", "peer", "name", "vB", "netns",
            &lan.b,
        ]);
        for (ns, dev, addr) in [
            (&lan.a, "vA", "10.77.0.1/24"),
            (&lan.b, "vB", "10.77.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lan
    }

    pub fn exec(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, PCP]);
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

/// `pcp receive --yes` dialling `addr` directly, into `out` (the code is added by the caller).
pub fn receive_cmd(addr: &str, out: &std::path::Path) -> Command {
    let mut c = Command::new(PCP);
    c.args([
        "receive",
        "--yes",
        "--discovery",
        "none",
        "--peer",
        addr,
        "--out",
    ])
    .arg(out);
    c
}
