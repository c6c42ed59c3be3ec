//! The real `pcp` binary across a small simulated internet built from network namespaces:
//! a "public" segment (a Linux bridge, 10.99.N.0/24, no uplink and no route to the host) with
//! three `pcp node` helpers (DHT servers, circuit relays, AutoNAT servers) as bootstrap peers,
//! and senders/receivers either on that segment or each behind its own masquerading router.
//! Every test builds its own namespaces (names carry the test tag and the pid, subnets differ)
//! and removes them on drop, after killing every process in them, even when the test fails.
//! Nothing here can reach anything but the namespaces it creates: the bootstrap peers are
//! always given explicitly.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{snapshot, Sending, PCP};

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

/// Collects a pipe's lines into a shared string from a background thread.
fn drain(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
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
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pcp starts");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
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
            let mut child = self
                .pcp(&ns)
                .env_remove("PCP_BOOTSTRAP")
                .args(["node", "-v"])
                .args(bootstrap_args(&boot))
                .arg("--listen")
                .arg(format!("/ip4/{a}/tcp/4001"))
                .arg("--listen")
                .arg(format!("/ip4/{a}/udp/4001/quic-v1"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("pcp node starts");
            let stdout = drain(child.stdout.take().unwrap());
            let stderr = drain(child.stderr.take().unwrap());
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

#[test]
fn public_peers_find_each_other_through_the_dht() {
    let src = tree(1);
    let out = tempfile::tempdir().unwrap();
    let mut net = Net::new("pub", 1);
    let boot = net.start_helpers();
    let sender = net.public_peer("snd", 21);
    let receiver = net.public_peer("rcv", 22);
    // Sender and receiver know different helpers: the helpers must form one DHT.
    // Listening on TCP and QUIC, as `pcp send` does by default.
    let mut s = send_dht(
        &net,
        &sender,
        &boot[..1],
        &src.path().join("share"),
        &[],
        &[TCP_ANY, QUIC_ANY],
    );
    // The receiver takes its bootstrap peers from PCP_BOOTSTRAP instead of --bootstrap.
    let mut c = receive_dht(&net, &receiver, &[], &s.code, "30s", out.path());
    c.env("PCP_BOOTSTRAP", boot[boot.len() - 1..].join(","));
    let r = run(c, 60);
    assert_transferred(&net, &r, &mut s, src.path(), out.path());
    let line = found_line(&r).unwrap();
    // The receiver dials the sender's addresses from the DHT QUIC first (smart dialing), and
    // over the internet QUIC is the better transport (BBR, README's benchmarks).
    assert!(
        line.contains("direct QUIC"),
        "{line}\n{}",
        report(&net, &r, &s)
    );
    // Publication is claimed once, with the count of peers that stored the record.
    let err = s.stderr.lock().unwrap().clone();
    assert_eq!(err.matches("Published on the DHT (").count(), 1, "{err}");
    assert!(err.contains("peers stored the record)."), "{err}");
    assert!(!err.contains("Not published"), "{err}");
    eprintln!(
        "public peers: {line} (receiver ran {:.1} s)",
        r.took.as_secs_f64()
    );
}

#[test]
fn peers_behind_nat_meet_through_a_relay_and_punch_a_hole() {
    let src = tree(2);
    let out = tempfile::tempdir().unwrap();
    let mut net = Net::new("nat", 2);
    let boot = net.start_helpers();
    let sender = net.nat_peer("snd", 31, 1);
    let receiver = net.nat_peer("rcv", 32, 2);
    let probe = net.public_peer("probe", 40);
    let mut s = send_dht(
        &net,
        &sender,
        &boot,
        &src.path().join("share"),
        &[],
        &[TCP_ANY],
    );
    // Negative control: the sender's port on its router's public address (it listens on
    // 0.0.0.0, one port for every interface, and the router keeps ports), dialed directly by a
    // public host, leads nowhere: the router masquerades and drops unsolicited packets.
    let listen = (0..100)
        .find_map(|_| {
            let found = s.stderr.lock().unwrap().lines().find_map(|l| {
                let a = l.strip_prefix("Listening on /ip4/")?;
                let port = a.split('/').skip_while(|p| *p != "tcp").nth(1)?;
                Some(port.to_string())
            });
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            found
        })
        .unwrap_or_else(|| panic!("sender printed no address: {}", s.stderr.lock().unwrap()));
    let outside = format!("/ip4/{}/tcp/{listen}", net.public_ip(31));
    let nowhere = tempfile::tempdir().unwrap();
    let mut c = net.pcp(&probe);
    c.args(["receive", "--discovery", "none", "--peer", &outside])
        .args(["--yes", "--no-progress", "--wait", "3s", "--out"])
        .arg(nowhere.path())
        .arg(&s.code);
    let p = run(c, 10);
    assert!(
        p.code == Some(1) && p.stderr.contains("no sender found for this code within"),
        "a direct dial to {outside} from outside the NAT did not fail as expected \
         (exit {:?}): {}",
        p.code,
        p.stderr
    );
    let r = run(
        receive_dht(&net, &receiver, &boot, &s.code, "30s", out.path()),
        60,
    );
    eprintln!("--- NAT receiver stderr:\n{}", r.stderr);
    assert_transferred(&net, &r, &mut s, src.path(), out.path());
    let line = found_line(&r).unwrap();
    // Neither private host is reachable from outside, and the routers drop unsolicited
    // packets: a direct connection to the sender's router address exists only if both sides
    // punched a hole, which they could coordinate only over the relay.
    let router = format!("/ip4/{}/", net.public_ip(31));
    assert!(
        line.contains("direct") && !line.contains("relayed") && !line.contains("p2p-circuit"),
        "not upgraded to a direct connection: {line}\n{}",
        report(&net, &r, &s)
    );
    assert!(
        line.contains(&router),
        "direct connection not to the sender's router {router}: {line}\n{}",
        report(&net, &r, &s)
    );
    eprintln!(
        "behind NAT: {line} (receiver ran {:.1} s)",
        r.took.as_secs_f64()
    );
}

/// Unix seconds as the shifted clock of a pcp with PCP_CLOCK_OFFSET_SECS=offset reads them.
fn shifted_now(offset: i64) -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + offset as f64
}

#[test]
fn a_sender_started_before_a_slot_boundary_is_found_after_it() {
    const SLOT: i64 = 300;
    let src = tree(3);
    let out = tempfile::tempdir().unwrap();
    let mut net = Net::new("slot", 3);
    let boot = net.start_helpers();
    let sender = net.public_peer("snd", 21);
    let receiver = net.public_peer("rcv", 22);
    // Shift the clock so that the sender starts 2-3 s before the end of its time slot.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let offset = (SLOT - 3) - now.rem_euclid(SLOT);
    let env = [("PCP_CLOCK_OFFSET_SECS", offset.to_string())];
    let started = shifted_now(offset);
    let sender_slot = (started as i64).div_euclid(SLOT);
    let mut s = send_dht(
        &net,
        &sender,
        &boot,
        &src.path().join("share"),
        &env,
        &[TCP_ANY],
    );
    let printed = shifted_now(offset);
    // Wait until 2 s into the next slot (by the same shifted clock).
    while (shifted_now(offset) as i64).div_euclid(SLOT) == sender_slot
        || (shifted_now(offset) as i64).rem_euclid(SLOT) < 2
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // The premise: the sender announced itself in the old slot. pcp says so at -v (a wording
    // this test does not insist on: it only reports whether it saw it).
    let published_before = s.stderr.lock().unwrap().contains("Published on the DHT");
    let receiver_slot = (shifted_now(offset) as i64).div_euclid(SLOT);
    assert_eq!(receiver_slot, sender_slot + 1);
    let mut c = receive_dht(&net, &receiver, &boot, &s.code, "30s", out.path());
    c.env("PCP_CLOCK_OFFSET_SECS", offset.to_string());
    let r = run(c, 60);
    assert_transferred(&net, &r, &mut s, src.path(), out.path());
    eprintln!(
        "slot boundary: sender started {:.1} s and printed its code {:.1} s before the boundary \
         (published on the DHT before it: {published_before}); receiver found it in the next \
         slot in {:.1} s",
        ((sender_slot + 1) * SLOT) as f64 - started,
        ((sender_slot + 1) * SLOT) as f64 - printed,
        r.took.as_secs_f64()
    );
}

#[test]
fn a_receiver_that_finds_no_one_gives_up_clearly() {
    let src = tree(4);
    let out = tempfile::tempdir().unwrap();
    let mut net = Net::new("none", 4);
    let boot = net.start_helpers();
    let sender = net.public_peer("snd", 21);
    let receiver = net.public_peer("rcv", 22);
    // Someone shares on the DHT, but under another code (no word in common).
    let mut c = net.pcp(&sender);
    c.env_remove("PCP_BOOTSTRAP")
        .args(["send", "-v", "--discovery", "dht"])
        .args(bootstrap_args(&boot))
        .args(["--listen", "/ip4/0.0.0.0/tcp/0", "--no-progress"])
        .args(["--code", "bubble-enemy-result-increase"])
        .arg(src.path().join("share"));
    let s = Sending::start(c);
    let r = run(
        receive_dht(
            &net,
            &receiver,
            &boot,
            "abandon-ability-able-about",
            "8s",
            out.path(),
        ),
        60,
    );
    assert_eq!(r.code, Some(1), "{}", report(&net, &r, &s));
    assert!(
        r.stderr.contains("no sender found for this code within"),
        "{}",
        report(&net, &r, &s)
    );
    assert!(r.stdout.is_empty(), "{}", report(&net, &r, &s));
    assert!(
        r.took >= Duration::from_secs(7) && r.took < Duration::from_secs(20),
        "gave up after {:.1} s with --wait 8s\n{}",
        r.took.as_secs_f64(),
        report(&net, &r, &s)
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    eprintln!("no sender: gave up after {:.1} s", r.took.as_secs_f64());
}

#[test]
fn a_sender_that_reaches_no_dht_peer_says_so_once() {
    let src = tree(5);
    let mut net = Net::new("lone", 5);
    let sender = net.public_peer("snd", 21);
    // The only bootstrap peer is an address on this network where no one answers.
    let nobody = format!("/ip4/{}/tcp/4001", net.public_ip(99));
    let s = send_dht(
        &net,
        &sender,
        &[nobody],
        &src.path().join("share"),
        &[],
        &[TCP_ANY],
    );
    let said = |s: &Sending| {
        s.stderr
            .lock()
            .unwrap()
            .contains("Not published on the DHT")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !said(&s) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = s.stderr.lock().unwrap().clone();
    assert!(said(&s), "{err}");
    assert_eq!(err.matches("Not published on the DHT").count(), 1, "{err}");
    assert!(!err.contains("Published on the DHT ("), "{err}");
    // --discovery dht: nothing claims that mDNS takes over.
    assert!(!err.contains("mDNS"), "{err}");
    drop(s);
}
