//! The real `pcp` binary across a small simulated internet built from network namespaces:
//! a "public" segment (a Linux bridge, 10.99.N.0/24, no uplink and no route to the host) with
//! three `pcp node` helpers (DHT servers, circuit relays, AutoNAT servers) as bootstrap peers,
//! and senders/receivers either on that segment or each behind its own masquerading router.
//! Every test builds its own namespaces (names carry the test tag and the pid, subnets differ)
//! and removes them on drop, after killing every process in them, even when the test fails.
//! Nothing here can reach anything but the namespaces it creates: the bootstrap peers are
//! always given explicitly.

#[path = "../common/mod.rs"]
mod common;
mod paths;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{snapshot, spawn_drained, Sending, PCP};

/// Runs a setup command; a failure stops the test with the command and its stderr.
fn sh(prog: &str, args: &[&str]) {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{prog} cannot run ({e}): these tests need root, iproute2 and iptables")
        });
    assert!(
        out.status.success(),
        "{prog} {args:?} failed (tests run as root, with iproute2 and iptables): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    sh("ip", args);
}

/// The last `n` lines of a log, for failure messages.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running `pcp node` helper.
struct Helper {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

/// A finished (or timed-out and killed) command.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `cmd` to completion, killing it after `secs` (then `code` is None).
fn run(mut cmd: Command, secs: u64) -> Run {
    let start = Instant::now();
    let (mut child, out, err) = spawn_drained(&mut cmd);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st.code().unwrap_or(-1));
        }
        if start.elapsed() >= Duration::from_secs(secs) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.wait();
    let took = start.elapsed();
    // Let the drain threads catch the last lines.
    std::thread::sleep(Duration::from_millis(100));
    let stdout = out.lock().unwrap().clone();
    let stderr = err.lock().unwrap().clone();
    Run {
        code,
        stdout,
        stderr,
        took,
    }
}

/// One simulated internet: a hub namespace with the bridge `br0` (10.99.N.0/24), and the
/// namespaces attached to it. Drop kills every process in them and deletes them all.
struct Net {
    tag: String,
    subnet: u8,
    hub: String,
    namespaces: Vec<String>,
    ports: usize,
    helpers: Vec<Helper>,
}

impl Net {
    fn new(tag: &str, subnet: u8) -> Net {
        let hub = format!("pcp-{tag}-hub-{}", std::process::id());
        let mut net = Net {
            tag: tag.to_string(),
            subnet,
            hub: hub.clone(),
            namespaces: Vec::new(),
            ports: 0,
            helpers: Vec::new(),
        };
        net.add_ns(&hub);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        net
    }

    fn add_ns(&mut self, name: &str) {
        // A leftover from a crashed run with the same pid would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", name]);
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    fn ns(&mut self, role: &str) -> String {
        let name = format!("pcp-{}-{role}-{}", self.tag, std::process::id());
        self.add_ns(&name);
        name
    }

    /// 10.99.N.host
    fn public_ip(&self, host: u8) -> String {
        format!("10.99.{}.{host}", self.subnet)
    }

    /// Plugs `dev` in namespace `ns` into the bridge with address 10.99.N.host/24.
    fn attach(&mut self, ns: &str, dev: &str, host: u8) {
        self.ports += 1;
        let port = format!("p{}", self.ports);
        ip(&[
            "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", &port, "netns",
            &self.hub,
        ]);
        ip(&["-n", &self.hub, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &self.hub, "link", "set", &port, "up"]);
        let addr = format!("{}/24", self.public_ip(host));
        ip(&["-n", ns, "addr", "add", &addr, "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }

    /// A host with a public address 10.99.N.host on the bridge.
    fn public_peer(&mut self, role: &str, host: u8) -> String {
        let ns = self.ns(role);
        self.attach(&ns, "eth0", host);
        ns
    }

    /// A host at 192.168.lan.2 behind its own router, which sits on the bridge at 10.99.N.host
    /// and masquerades. Nothing from outside reaches the host or the router (stateful filter:
    /// only replies to connections opened from inside come in; unsolicited packets are dropped
    /// silently, like a home router).
    fn nat_peer(&mut self, role: &str, host: u8, lan: u8) -> String {
        let gw = self.ns(&format!("{role}gw"));
        let inside = self.ns(role);
        self.attach(&gw, "wan", host);
        ip(&[
            "link", "add", "lan", "netns", &gw, "type", "veth", "peer", "name", "eth0", "netns",
            &inside,
        ]);
        let (gw_addr, in_addr, via) = (
            format!("192.168.{lan}.1/24"),
            format!("192.168.{lan}.2/24"),
            format!("192.168.{lan}.1"),
        );
        ip(&["-n", &gw, "addr", "add", &gw_addr, "dev", "lan"]);
        ip(&["-n", &gw, "link", "set", "lan", "up"]);
        ip(&["-n", &inside, "addr", "add", &in_addr, "dev", "eth0"]);
        ip(&["-n", &inside, "link", "set", "eth0", "up"]);
        ip(&["-n", &inside, "route", "add", "default", "via", &via]);
        // /proc/sys/net is per network namespace: this enables forwarding in the router only.
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &gw,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ],
        );
        let ipt = |args: &[&str]| {
            let mut a = vec!["netns", "exec", &gw, "iptables"];
            a.extend_from_slice(args);
            sh("ip", &a);
        };
        ipt(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan",
            "-j",
            "MASQUERADE",
        ]);
        ipt(&["-P", "FORWARD", "DROP"]);
        ipt(&["-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT"]);
        ipt(&[
            "-A",
            "FORWARD",
            "-i",
            "wan",
            "-o",
            "lan",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
        ipt(&[
            "-A",
            "INPUT",
            "-i",
            "wan",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
        ipt(&["-A", "INPUT", "-i", "wan", "-j", "DROP"]);
        inside
    }

    /// `pcp` run inside namespace `ns`.
    fn pcp(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, PCP]);
        c
    }

    /// Starts three `pcp node` helpers on the bridge (10.99.N.11-13, TCP and QUIC on port
    /// 4001), one after the other, each bootstrapping from the ones before it (the first from
    /// an address on the bridge where nobody listens: never the default public peers), and
    /// returns every address they print.
    fn start_helpers(&mut self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for i in 0..3u8 {
            let ns = self.ns(&format!("node{i}"));
            let host = 11 + i;
            self.attach(&ns, "eth0", host);
            let a = self.public_ip(host);
            let boot = if all.is_empty() {
                vec![format!(
                    "/ip4/{}/tcp/4001/p2p/{}",
                    self.public_ip(99),
                    libp2p::PeerId::random()
                )]
            } else {
                all.clone()
            };
            let (child, stdout, stderr) = spawn_drained(
                self.pcp(&ns)
                    .env_remove("PCP_BOOTSTRAP")
                    .args(["node", "-v"])
                    .args(bootstrap_args(&boot))
                    .arg("--listen")
                    .arg(format!("/ip4/{a}/tcp/4001"))
                    .arg("--listen")
                    .arg(format!("/ip4/{a}/udp/4001/quic-v1")),
            );
            self.helpers.push(Helper {
                child,
                stdout,
                stderr,
            });
            let h = self.helpers.last_mut().unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let prefix = format!("/ip4/{a}/");
            loop {
                let addrs: Vec<String> = h
                    .stdout
                    .lock()
                    .unwrap()
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with(&prefix) && l.contains("/p2p/"))
                    .map(String::from)
                    .collect();
                let tcp = addrs.iter().any(|a| a.contains("/tcp/4001/"));
                let quic = addrs.iter().any(|a| a.contains("/udp/4001/quic-v1/"));
                if tcp && quic {
                    all.extend(addrs);
                    break;
                }
                if let Some(st) = h.child.try_wait().unwrap() {
                    panic!(
                        "pcp node {i} exited ({st}) before printing its addresses.\nstdout:\n{}\nstderr:\n{}",
                        h.stdout.lock().unwrap(),
                        h.stderr.lock().unwrap()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "pcp node {i} printed no TCP and QUIC address on {a} within 20 s.\nstdout:\n{}\nstderr:\n{}",
                    h.stdout.lock().unwrap(),
                    h.stderr.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        all
    }

    /// The helpers' recent logs, for failure messages.
    fn helper_logs(&self) -> String {
        let mut s = String::new();
        for (i, h) in self.helpers.iter().enumerate() {
            s.push_str(&format!(
                "--- pcp node {i} stderr (last 30 lines):\n{}\n",
                tail(&h.stderr.lock().unwrap(), 30)
            ));
        }
        s
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &mut self.helpers {
            let _ = h.child.kill();
            let _ = h.child.wait();
        }
        // Anything else still running in our namespaces was started by this test (a sender
        // whose handle was lost to a panic, say): kill it by pid before deleting.
        for ns in &self.namespaces {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: plain kill(2) on a process inside a namespace this test created.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn bootstrap_args(addrs: &[String]) -> Vec<String> {
    addrs
        .iter()
        .flat_map(|a| ["--bootstrap".to_string(), a.clone()])
        .collect()
}

/// A small tree: a folder with a 1 MiB random file, a small text file and a subfolder.
fn tree(seed: u64) -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    let d = src.path().join("share");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("big"), common::bytes(1 << 20, seed)).unwrap();
    std::fs::write(d.join("sub/note.txt"), b"over the internet").unwrap();
    src
}

const TCP_ANY: &str = "/ip4/0.0.0.0/tcp/0";
const QUIC_ANY: &str = "/ip4/0.0.0.0/udp/0/quic-v1";

/// `pcp send` in `ns` through the DHT, listening on `listen` (every interface).
fn send_dht(
    net: &Net,
    ns: &str,
    boot: &[String],
    path: &std::path::Path,
    extra: &[(&str, String)],
    listen: &[&str],
) -> Sending {
    let mut c = net.pcp(ns);
    c.env_remove("PCP_BOOTSTRAP")
        .args(["send", "-v", "--discovery", "dht"])
        .args(bootstrap_args(boot))
        .arg("--no-progress");
    for l in listen {
        c.args(["--listen", l]);
    }
    c.arg(path);
    for (k, v) in extra {
        c.env(k, v);
    }
    Sending::start(c)
}

/// `pcp receive` in `ns` through the DHT for `code`, into `out`.
fn receive_dht(
    net: &Net,
    ns: &str,
    boot: &[String],
    code: &str,
    wait: &str,
    out: &std::path::Path,
) -> Command {
    let mut c = net.pcp(ns);
    c.env_remove("PCP_BOOTSTRAP")
        .args(["receive", "-v", "--discovery", "dht"])
        .args(bootstrap_args(boot))
        .args(["--yes", "--no-progress", "--wait", wait, "--out"])
        .arg(out)
        .arg(code);
    c
}

/// Everything worth seeing when a transfer test fails.
fn report(net: &Net, r: &Run, s: &Sending) -> String {
    format!(
        "receiver exit {:?} after {:.1} s\n--- receiver stdout:\n{}\n--- receiver stderr:\n{}\n--- sender stderr:\n{}\n{}",
        r.code,
        r.took.as_secs_f64(),
        r.stdout,
        r.stderr,
        s.stderr.lock().unwrap(),
        net.helper_logs()
    )
}

/// The "Found the sender ..." line of a receiver's stderr.
fn found_line(r: &Run) -> Option<&str> {
    r.stderr.lines().find(|l| l.contains("Found the sender"))
}

/// Checks a successful transfer: exit 0, found through the DHT, sender done, same tree.
fn assert_transferred(
    net: &Net,
    r: &Run,
    s: &mut Sending,
    src: &std::path::Path,
    out: &std::path::Path,
) {
    assert_eq!(r.code, Some(0), "{}", report(net, r, s));
    assert!(
        r.stderr
            .contains("Found the sender on the internet (DHT), authenticated"),
        "{}",
        report(net, r, s)
    );
    assert!(r.stderr.contains("all verified"), "{}", report(net, r, s));
    assert_eq!(s.wait(10), Some(0), "{}", report(net, r, s));
    assert_eq!(snapshot(&src.join("share")), snapshot(&out.join("share")));
}
