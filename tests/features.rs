//! The real `pcp` binary for what surrounds a transfer: shell completions, the manual page,
//! `--version`, `pcp node` as a service (an identity kept in a key file, bootstrapping from a
//! plain address), and the kinds of share (a text, standard input, `--stdout`, `--exclude` and
//! `--gitignore`). Nodes listen on loopback only, with --discovery none, and bootstrap only from
//! each other.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{send_cmd, Sending, PCP};

const COMMANDS: [&str; 6] = ["send", "receive", "mount", "node", "completions", "man"];

fn pcp(args: &[&str]) -> Output {
    Command::new(PCP)
        .args(args)
        .env_remove("PCP_BOOTSTRAP")
        .stdin(Stdio::null())
        .output()
        .expect("pcp runs")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "pcp failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8")
}

#[test]
fn every_shell_gets_a_completion_script_and_bash_knows_the_commands() {
    let bash = stdout(&pcp(&["completions", "bash"]));
    assert!(bash.contains("complete -F _pcp"), "{bash}");
    assert!(
        bash.contains(&format!("opts=\"{} help\"", COMMANDS.join(" "))),
        "{bash}"
    );
    for c in COMMANDS {
        assert!(bash.contains(&format!("pcp,{c})")), "no {c} in:\n{bash}");
    }
    // The options of a command are completed too.
    assert!(bash.contains("--allow-relay") && bash.contains("--key"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let s = stdout(&pcp(&["completions", shell]));
        assert!(s.contains("receive") && s.contains("mount"), "{shell}: {s}");
    }
    let bad = pcp(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());
}

#[test]
fn the_manual_page_is_roff_and_lists_the_commands() {
    let page = stdout(&pcp(&["man"]));
    assert!(page.starts_with(".TH pcp 1 "), "{page}");
    assert!(page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"));
    for c in COMMANDS {
        assert!(
            page.contains(&format!("pcp\\-{c}(1)")),
            "no {c} in:\n{page}"
        );
    }
    assert!(
        !page.contains("pcp\\-help(1)"),
        "no page for `help`:\n{page}"
    );
    let node = stdout(&pcp(&["man", "node"]));
    assert!(node.starts_with(".TH pcp-node 1 "), "{node}");
    assert!(node.contains("\\-\\-key"), "{node}");
    // Stopping early (`pcp man | head`) is no error.
    let mut child = Command::new(PCP)
        .arg("man")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_version_names_the_commit_and_the_build_date() {
    let v = stdout(&pcp(&["--version"]));
    let rest = v
        .trim()
        .strip_prefix(&format!("pcp {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{v:?}"));
    let (commit, date) = rest.split_once(' ').unwrap_or_else(|| panic!("{v:?}"));
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit, head, "{v:?}"),
        None => assert!(
            commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{v:?}"
        ),
    }
    let d: Vec<&str> = date.split('-').collect();
    assert!(
        d.len() == 3
            && [4, 2, 2]
                .iter()
                .zip(&d)
                .all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_digit())),
        "{v:?}"
    );
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
        let mut child = Command::new(PCP)
            .arg("node")
            .args(args)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .env_remove("PCP_BOOTSTRAP")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pcp node starts");
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
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
