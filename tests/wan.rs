//! The real `pcp` binary across an emulated internet path (issue 13): two network namespaces
//! joined by `wan-link.sh` (a user-space wire with 50 ms of one-way delay, so 100 ms round
//! trips, and 100 Mbit/s). A regression guard for round trips, not a benchmark: a mount's tree
//! must list within 8 round trips of the mount starting to connect, and `cp -r` of 100 small
//! files out of the fresh mount must take at most 10. Times are counted from the mount's
//! "Connecting" line (so process start-up on a busy machine is not counted) in units of the
//! link's round trip, which dwarfs the local work at 100 ms.
//!
//! A second guard receives over QUIC across a path with 1% random loss: it checks that QUIC's
//! congestion controller is BBR (vendor/libp2p-quic/PCP-PATCH.md), not quinn's default CUBIC,
//! which holds one flow to about MSS / RTT x 1.2 / sqrt(loss) (~0.3 MB/s here: the 16 MiB took
//! 48.7 s with CUBIC, 1.9 s with BBR). The limit, 15 s, is far from both. It also counts the
//! sender's packets on both ends of the wire: at most 25% may be lost, 1% at random and the
//! rest to the router's queue (one BDP). quinn's own BBR, whose window follows an inflated
//! bandwidth estimate, overran it and lost 35-42%; with the window capped at BBR's gains times
//! the measured bandwidth-delay product (vendor/libp2p-quic/src/congestion.rs) it lost 1-9% in
//! 28 runs, more with the machine busy (start-up overshoots a one-BDP queue, as TCP's slow
//! start does, and on a 16 MiB transfer start-up weighs), and once over 15% in a full run of
//! the suite: the limit sits between the two.
//!
//! Needs root, /dev/net/tun and `../shared/tools/wan-link.sh` (or `PCP_WAN_LINK`): a test that
//! cannot set up fails, it never skips. The namespaces and the mount are removed on drop, even
//! when the test fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::PCP;

const DELAY_MS: u64 = 50;
const RTT: Duration = Duration::from_millis(2 * DELAY_MS);

fn wan_link() -> PathBuf {
    std::env::var_os("PCP_WAN_LINK")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/wan-link.sh")
        })
}

/// The emulated link, taken down (its namespaces, their processes and the wire) on drop.
struct Link {
    tag: String,
}

impl Link {
    /// Link `n` of this test process (tests run in parallel, each with its own link).
    fn up(n: u32, delay_ms: u64, rate_mbit: u64, loss_percent: u32) -> Link {
        let script = wan_link();
        assert!(
            script.exists(),
            "no wan-link.sh at {} (set PCP_WAN_LINK)",
            script.display()
        );
        // Interface names are the tag plus 2 characters: at most 15 in all.
        let link = Link {
            tag: format!("pw{}x{n}", std::process::id() % 100_000),
        };
        let out = Command::new(&script)
            .args([
                "up",
                &link.tag,
                &delay_ms.to_string(),
                &rate_mbit.to_string(),
                &loss_percent.to_string(),
            ])
            .stdin(Stdio::null())
            .output()
            .expect("wan-link.sh runs");
        assert!(
            out.status.success(),
            "wan-link.sh up failed (tests run as root, with /dev/net/tun): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        link
    }

    /// `PCP ARGS` in namespace `a` (sender side) or `b`, in the test's own mount namespace.
    fn pcp(&self, side: char) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}{side}", self.tag))
            .arg(PCP);
        c
    }

    /// `pcp send PATH` in namespace `a`, listening on `listen` only: the sender, its code and
    /// the address it printed for `listen`.
    fn send(&self, listen: &str, path: &Path) -> (Proc, String, String) {
        let mut send = self.pcp('a');
        send.args(["-v", "--no-progress", "--discovery", "none", "send"])
            .args(["--listen", listen])
            .arg(path);
        let (sender, code) = Proc::start(send, None);
        // The printed address: `listen` up to its port, then the real port and `/p2p/`.
        let prefix = listen.trim_end_matches("/quic-v1").trim_end_matches('0');
        let addr = sender
            .line(&format!("Listening on {prefix}"))
            .1
            .trim_start_matches("Listening on ")
            .trim()
            .to_string();
        (sender, code.unwrap(), addr)
    }

    /// Packets that side `a` has put on the wire, and that side `b` has taken off it, so far
    /// (`/proc/net/dev` in each namespace).
    fn packets_a_to_b(&self) -> (u64, u64) {
        let count = |side: char, tx: bool| {
            let out = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}{side}", self.tag))
                .args(["cat", "/proc/net/dev"])
                .output()
                .expect("nsenter runs");
            let dev = format!("{}w{side}:", self.tag);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(&dev))
                .unwrap_or_else(|| panic!("no {dev} in {text}"));
            // After the name: 8 receive counters (bytes, packets, ...), then transmit ones.
            let fields: Vec<u64> = line.trim_start()[dev.len()..]
                .split_whitespace()
                .map(|f| f.parse().unwrap())
                .collect();
            fields[if tx { 9 } else { 1 }]
        };
        (count('a', true), count('b', false))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for side in ['a', 'b'] {
            let ns = format!("{}{side}", self.tag);
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
        }
        let _ = Command::new(wan_link())
            .args(["down", &self.tag])
            .stdin(Stdio::null())
            .output();
        // wan-link.sh leaves the emulator's log behind.
        let _ = std::fs::remove_file(format!("/run/wan-emu-{}.out", self.tag));
    }
}

/// A child whose stderr lines are collected with the time each arrived; killed on drop (and
/// its mountpoint, if any, detached).
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    mountpoint: Option<PathBuf>,
}

impl Proc {
    fn start(mut cmd: Command, mountpoint: Option<PathBuf>) -> (Proc, Option<String>) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pcp starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), l));
            }
        });
        let mut first = String::new();
        let out = child.stdout.take().unwrap();
        let code = mountpoint.is_none().then(|| {
            BufReader::new(out).read_line(&mut first).unwrap();
            first
                .strip_prefix("Code is: ")
                .unwrap_or_else(|| panic!("no code line: {first:?}"))
                .trim()
                .to_string()
        });
        (
            Proc {
                child,
                lines,
                mountpoint,
            },
            code,
        )
    }

    /// When the first line containing `what` arrived (waits up to 30 s), and that line.
    fn line(&self, what: &str) -> (Instant, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.1.contains(what))
            {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("no {what:?} line: {}", self.log());
    }

    fn log(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines.iter().map(|l| format!("{}\n", l.1)).collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mp) = &self.mountpoint {
            let _ = Command::new("umount").arg("-l").arg(mp).status();
        }
    }
}

fn rtts(d: Duration) -> f64 {
    d.as_secs_f64() / RTT.as_secs_f64()
}

#[test]
fn across_100_ms_a_mount_lists_within_8_round_trips_and_cp_of_100_files_takes_10() {
    let src = tempfile::tempdir().unwrap();
    let share = src.path().join("small");
    std::fs::create_dir(&share).unwrap();
    for i in 0..100u32 {
        let body: Vec<u8> = (0..4096u32).map(|j| (i * 31 + j) as u8).collect();
        std::fs::write(share.join(format!("f{i:03}")), body).unwrap();
    }
    let link = Link::up(1, DELAY_MS, 100, 0);
    let (sender, code, addr) = link.send("/ip4/10.241.0.1/tcp/0", &share);

    let mnt = tempfile::tempdir().unwrap();
    let mp = mnt.path().to_path_buf();
    let mut mount = link.pcp('b');
    mount
        .args([
            "mount",
            "--no-progress",
            "--discovery",
            "none",
            "--peer",
            &addr,
            "-",
        ])
        .arg(&mp)
        .env("PCP_CODE", &code);
    let (mounter, _) = Proc::start(mount, Some(mp.clone()));
    let (start, _) = mounter.line("Connecting to ");
    mounter.line("Mounted ");
    let names = std::fs::read_dir(&mp).unwrap().count();
    let listed = start.elapsed();
    assert_eq!(names, 100, "{}", mounter.log());

    let t = Instant::now();
    let out = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-r")
        .arg(&mp)
        .arg(out.path().join("copy"))
        .status()
        .unwrap();
    let copied = t.elapsed();
    assert!(st.success(), "cp -r failed: {}", mounter.log());
    for i in 0..100u32 {
        let name = format!("f{i:03}");
        assert!(
            std::fs::read(out.path().join("copy").join(&name)).unwrap()
                == std::fs::read(share.join(&name)).unwrap(),
            "{name} differs"
        );
    }
    eprintln!(
        "RTT {RTT:?}: tree listed after {:.1} round trips ({listed:?}), cp -r of 100 files in {:.1} ({copied:?})",
        rtts(listed),
        rtts(copied)
    );
    assert!(
        rtts(listed) <= 8.0,
        "the tree listed after {:.1} round trips ({listed:?}); at most 8: {}",
        rtts(listed),
        mounter.log()
    );
    assert!(
        rtts(copied) <= 10.0,
        "cp -r of 100 files took {:.1} round trips ({copied:?}); at most 10",
        rtts(copied)
    );
    drop(mounter);
    drop(sender);
    drop(link);
}

#[test]
fn over_quic_a_path_with_1_percent_loss_still_moves_16_mib_within_15_s() {
    const MIB: usize = 16;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("big.bin");
    let body: Vec<u8> = (0..MIB << 20).map(|i| (i * 7 + i / 4093) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    // 50 ms round trips, 100 Mbit/s, 1% of packets lost at random in each direction.
    let link = Link::up(2, 25, 100, 1);
    let (sender, code, addr) = link.send("/ip4/10.241.0.1/udp/0/quic-v1", &file);
    assert!(addr.contains("/quic-v1/"), "{addr}");

    let out = tempfile::tempdir().unwrap();
    let mut recv = link.pcp('b');
    recv.args([
        "receive",
        "--yes",
        "--no-progress",
        "--discovery",
        "none",
        "--wait",
        "30s",
        // The body compresses: sent compressed, it would not test the congestion controller.
        "--compress=no",
        "--peer",
        &addr,
        "--out",
    ])
    .arg(out.path())
    .env("PCP_CODE", &code);
    let before = link.packets_a_to_b();
    let t = Instant::now();
    let got = recv.stdin(Stdio::null()).output().unwrap();
    let took = t.elapsed();
    let after = link.packets_a_to_b();
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(got.status.success(), "receive failed: {err}");
    assert!(err.contains("direct QUIC via"), "not over QUIC: {err}");
    // The wire drops 1% at random, and what overruns its queue (one BDP).
    let (sent, arrived) = (after.0 - before.0, after.1 - before.1);
    let lost = 1.0 - arrived as f64 / sent as f64;
    eprintln!(
        "sender's packets: {sent} sent, {arrived} arrived ({:.1}% lost)",
        lost * 100.0
    );
    assert!(
        lost <= 0.25,
        "{:.1}% of the sender's packets were lost ({sent} sent, {arrived} arrived): the \
         congestion controller overruns the queue (quinn's own BBR: 35-42%)",
        lost * 100.0
    );
    assert!(
        std::fs::read(out.path().join("big.bin")).unwrap() == body,
        "the received file differs"
    );
    eprintln!("1% loss, RTT 50 ms, QUIC: {MIB} MiB received in {took:?}");
    assert!(
        took <= Duration::from_secs(15),
        "{MIB} MiB over QUIC took {took:?}: its congestion controller backs off at random loss \
         (CUBIC?): {err}"
    );
    drop(sender);
    drop(link);
}

/// Beyond a LAN (here a 20 ms round trip) a receive asks for compressed data by itself, says
/// so, and a log crosses compressed; `--compress=no` turns it off.
#[test]
fn across_the_internet_a_receive_asks_for_compressed_data_by_itself() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("app.log");
    let log: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("{i:07} GET /index.html 200\n").into_bytes())
        .take(4 << 20)
        .collect();
    std::fs::write(&file, &log).unwrap();
    let link = Link::up(3, 10, 100, 0);
    for (flag, compressed) in [(None, true), (Some("--compress=no"), false)] {
        let (sender, code, addr) = link.send("/ip4/10.241.0.1/tcp/0", &file);
        let out = tempfile::tempdir().unwrap();
        let mut recv = link.pcp('b');
        recv.args(["receive", "--yes", "--no-progress", "--discovery", "none"])
            .args(flag)
            .args(["--peer", &addr, "--out"])
            .arg(out.path())
            .env("PCP_CODE", &code);
        let got = recv.stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&got.stderr);
        assert!(got.status.success(), "receive failed: {err}");
        assert_eq!(
            err.contains("asking for compressed data") && err.contains("compressed to"),
            compressed,
            "{flag:?}: {err}"
        );
        assert!(std::fs::read(out.path().join("app.log")).unwrap() == log);
        drop(sender);
    }
    drop(link);
}
