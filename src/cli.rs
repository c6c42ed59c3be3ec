//! The command line: argument parsing, prompts and progress drawing. Everything else is in the
//! library; this module only wires it to a terminal. The code goes to stdout, everything else to
//! stderr.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use libp2p::Multiaddr;
use tokio::sync::mpsc;

use crate::code::{Code, MAX_WORDS, MIN_WORDS};
use crate::connect::{self, FindOptions};
use crate::discovery::{self, MdnsAnnouncer, Method};
use crate::error::{Error, Result};
use crate::manifest::LocalTree;
use crate::net::{Node, NodeConfig};
use crate::receive::{self, Progress, ReceiveOptions};
use crate::share::{self, Share, ShareEnd, ShareEvent};

#[derive(Parser, Debug)]
#[command(
    name = "pcp",
    version,
    about = "Peer copy: send, receive or mount files between two computers with a few words. No server in between."
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// More log output on stderr (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Do not draw progress bars (also off when stderr is not a terminal).
    #[arg(long, global = true)]
    no_progress: bool,
    /// How to find the other side: any of mdns, dht (comma-separated), or none (only
    /// --listen/--peer addresses).
    #[arg(long, global = true, value_delimiter = ',', default_value = "mdns,dht")]
    discovery: Vec<Method>,
    /// DHT bootstrap peer (repeatable, or comma-separated in PCP_BOOTSTRAP); replaces the
    /// default IPFS bootstrap peers.
    #[arg(
        long,
        global = true,
        value_name = "MULTIADDR",
        env = "PCP_BOOTSTRAP",
        value_delimiter = ','
    )]
    bootstrap: Vec<Multiaddr>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Share files or folders; prints a code for the other side.
    Send(SendArgs),
    /// Receive what a `pcp send` shares, into a folder.
    Receive(ReceiveArgs),
    /// Mount what a `pcp send` shares as a read-only folder; bytes are fetched on demand.
    Mount(MountArgs),
    /// Run a helper node: a Kademlia DHT server, a circuit relay and an AutoNAT server.
    Node(NodeArgs),
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// Listen address (repeatable). Default: all interfaces, TCP and QUIC, port 4001.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
}

#[derive(Args, Debug)]
struct MountArgs {
    /// The code from `pcp send`; `-` reads PCP_CODE or asks.
    code: String,
    /// An empty folder to mount on.
    mountpoint: PathBuf,
    /// Dial this address instead of discovering the sender (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    peer: Vec<Multiaddr>,
    /// In-memory cache of file data (e.g. 256M, 1G).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    cache_size: u64,
    /// Also download the whole tree into DIR in the background, verified, while mounted.
    #[arg(long, value_name = "DIR")]
    copy_out: Option<PathBuf>,
    /// How long a read may wait on the network before it fails with EIO (e.g. 5s, 2m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Let other local users read the mount.
    #[arg(long)]
    allow_other: bool,
    /// Give up when no sender has authenticated within this time.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// When no direct connection can be made, move data through the relay (if it allows).
    #[arg(long)]
    allow_relay: bool,
}

/// Parses sizes like `256M`, `1G`, `4096`, `512k` (binary units).
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_lowercase();
            let m = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

#[derive(Args, Debug)]
struct SendArgs {
    /// Files or folders to share; each becomes a top-level entry.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Number of words in the generated code.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(MIN_WORDS as i64..=MAX_WORDS as i64))]
    words: u8,
    /// Use this code instead of a random one (BIP39 English words, at least 3).
    #[arg(long)]
    code: Option<String>,
    /// Listen address (repeatable). Default: all interfaces, TCP and QUIC, ephemeral ports.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
}

#[derive(Args, Debug)]
struct ReceiveArgs {
    /// The code from `pcp send`. Without it, PCP_CODE is read, or you are asked.
    code: Option<String>,
    /// Folder to receive into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Accept the offer without asking.
    #[arg(long, short)]
    yes: bool,
    /// Replace existing files of the same names (otherwise that is an error and nothing is touched).
    #[arg(long)]
    overwrite: bool,
    /// Dial this address instead of discovering the sender (repeatable); authentication is still required.
    #[arg(long, value_name = "MULTIADDR")]
    peer: Vec<Multiaddr>,
    /// Give up when no sender has authenticated within this time (e.g. 30s, 2m).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// When no direct connection can be made, move data through the relay (if it allows).
    #[arg(long)]
    allow_relay: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let mut b = tokio::runtime::Builder::new_multi_thread();
    // One worker: a pcp process drives one connection's pipeline, and disk reads, hashing and
    // cached FUSE replies run on threads of their own. A second worker mostly adds a thread
    // wake-up per request (measured on 2 cores with both peers: random mount reads 290 vs
    // 220 us, mount sequential reads 257 vs 310 MB/s). TOKIO_WORKER_THREADS still overrides.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        b.worker_threads(1);
    }
    let rt = match b.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // `mount` handles Ctrl-C itself (it unmounts and exits 0); the others stop at once.
    let handles_signals = matches!(cli.cmd, Cmd::Mount(_) | Cmd::Send(_) | Cmd::Node(_));
    let result = rt.block_on(async {
        if let Err(e) = watch_signals() {
            return Err(Error::io("cannot install signal handlers", e));
        }
        if handles_signals {
            return run(cli).await;
        }
        tokio::select! {
            r = run(cli) => r,
            _ = interrupted() => Err(Error::Interrupted),
        }
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted) => {
            eprintln!("Interrupted.");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            ExitCode::from(1)
        }
    }
}

/// Set once SIGINT or SIGTERM arrived; watched from the start of `main`, so a signal that comes
/// before a command starts waiting for it (say, right after it printed its address) still counts.
static INTERRUPT: std::sync::OnceLock<tokio_util::sync::CancellationToken> =
    std::sync::OnceLock::new();

fn interrupt_token() -> tokio_util::sync::CancellationToken {
    INTERRUPT
        .get_or_init(tokio_util::sync::CancellationToken::new)
        .clone()
}

/// Installs the SIGINT and SIGTERM handlers (call inside the runtime, before anything else).
fn watch_signals() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let token = interrupt_token();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        token.cancel();
    });
    Ok(())
}

/// Resolves once SIGINT or SIGTERM has arrived (at once if it already did).
async fn interrupted() {
    interrupt_token().cancelled_owned().await
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,pcp=info",
        _ => "info,pcp=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> Result<()> {
    let ui = Ui {
        progress: !cli.no_progress && std::io::stderr().is_terminal(),
        verbose: cli.verbose,
    };
    let net = Net {
        methods: cli.discovery.clone(),
        bootstrap: if cli.bootstrap.is_empty() {
            crate::net::IPFS_BOOTSTRAP
                .iter()
                .map(|a| a.parse().expect("valid"))
                .collect()
        } else {
            cli.bootstrap.clone()
        },
    };
    match cli.cmd {
        Cmd::Send(a) => send(a, net, ui).await,
        Cmd::Receive(a) => receive(a, net, ui).await,
        Cmd::Mount(a) => mount(a, net, ui).await,
        Cmd::Node(a) => helper_node(a, net).await,
    }
}

/// Discovery settings shared by the commands.
#[derive(Clone)]
struct Net {
    methods: Vec<Method>,
    bootstrap: Vec<Multiaddr>,
}

impl Net {
    fn uses(&self, m: Method) -> bool {
        uses(&self.methods, m)
    }

    fn config(&self, listen: Vec<Multiaddr>, sender: bool) -> NodeConfig {
        let dht = self.uses(Method::Dht);
        NodeConfig {
            listen,
            role: if dht {
                crate::net::Role::Peer {
                    reserve_relays: sender,
                }
            } else {
                crate::net::Role::Local
            },
            bootstrap: if dht { self.bootstrap.clone() } else { vec![] },
        }
    }
}

#[derive(Clone, Copy)]
struct Ui {
    progress: bool,
    verbose: u8,
}

impl Ui {
    fn bar(&self, total: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn roots(roots: &[Vec<u8>]) -> String {
    let names: Vec<String> = roots
        .iter()
        .take(3)
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    let more = roots.len().saturating_sub(3);
    if more > 0 {
        format!("{} and {more} more", names.join(", "))
    } else {
        names.join(", ")
    }
}

fn default_listen() -> Vec<Multiaddr> {
    [
        "/ip4/0.0.0.0/tcp/0",
        "/ip4/0.0.0.0/udp/0/quic-v1",
        "/ip6/::/tcp/0",
        "/ip6/::/udp/0/quic-v1",
    ]
    .iter()
    .map(|a| a.parse().expect("valid multiaddr"))
    .collect()
}

fn uses(methods: &[Method], m: Method) -> bool {
    methods.contains(&m) && !methods.contains(&Method::None)
}

async fn send(a: SendArgs, net: Net, ui: Ui) -> Result<()> {
    let code = match &a.code {
        Some(c) => Code::parse(c)?,
        None => Code::generate(a.words as usize),
    };
    let paths = a.paths.clone();
    let tree = tokio::task::spawn_blocking(move || LocalTree::build(&paths))
        .await
        .map_err(|e| Error::io("scanning the share", std::io::Error::other(e)))??;
    for w in &tree.warnings {
        eprintln!("warning: {w}");
    }
    let share = Arc::new(Share::new(tree));
    let offer = share.offer();
    let listen = if a.listen.is_empty() {
        let mut l = default_listen();
        // IPv6 may be off on this machine; fall back to IPv4 only.
        match Node::start(net.config(l.clone(), true)).await {
            Ok(n) => (n, l),
            Err(_) => {
                l.truncate(2);
                (Node::start(net.config(l.clone(), true)).await?, l)
            }
        }
    } else {
        (
            Node::start(net.config(a.listen.clone(), true)).await?,
            a.listen.clone(),
        )
    };
    let (node, _) = listen;
    let addrs = node.listen_addrs().await?;
    println!("Code is: {}", code.phrase());
    let _ = std::io::stdout().flush();
    eprintln!(
        "Sharing {} ({}, {}).",
        roots(&offer.roots),
        plural(offer.files, "file"),
        HumanBytes(offer.bytes)
    );
    eprintln!("On the other machine run: pcp receive {}", code.phrase());
    if ui.verbose > 0 {
        for a in &addrs {
            eprintln!("Listening on {a}");
        }
    }
    let _mdns = if net.uses(Method::Mdns) {
        Some(MdnsAnnouncer::start(
            node.peer_id(),
            &addrs,
            code.channel(),
            discovery::system_clock(),
        )?)
    } else {
        None
    };
    let (status_tx, mut status) = mpsc::channel::<String>(16);
    let _dht = net.uses(Method::Dht).then(|| {
        discovery::DhtAnnouncer::start(
            node.clone(),
            code.channel(),
            discovery::system_clock(),
            status_tx.clone(),
        )
    });
    let mut published = false;
    let mut net_events = node.subscribe();
    let (tx, mut rx) = mpsc::channel(16);
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = share::serve(&node, share.clone(), &code, tx, stop.clone());
    tokio::pin!(serving);
    let mut bar: Option<ProgressBar> = None;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let signal = interrupted();
    tokio::pin!(signal);
    let mut mounted = false;
    let end = loop {
        tokio::select! {
            r = &mut serving => break r,
            _ = &mut signal => {
                // Tell connected receivers (a mount then fails reads with EIO and says why).
                stop.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut serving).await;
                break Err(Error::Interrupted);
            }
            Some(ev) = rx.recv() => match ev {
                ShareEvent::Authenticated { connection, .. } => eprintln!("Receiver authenticated ({connection})."),
                ShareEvent::Resumed { connection, .. } => eprintln!("Receiver reconnected ({connection})."),
                ShareEvent::WrongCode { attempts } => eprintln!(
                    "warning: someone tried a wrong code ({attempts} of {} attempts); if it was not your receiver, someone may be guessing",
                    share::MAX_FAILED_ATTEMPTS
                ),
                ShareEvent::Accepted { mount, .. } => {
                    mounted |= mount;
                    eprintln!("{}", if mount { "Receiver mounted the share." } else { "Receiver accepted; sending..." });
                    bar = Some(ui.bar(offer.bytes));
                }
                ShareEvent::Declined { .. } => eprintln!("The receiver declined."),
                ShareEvent::Finished { .. } => {}
                ShareEvent::Lost { reason, .. } => eprintln!("warning: lost the receiver: {reason}; waiting for it to come back (Ctrl-C to stop)"),
            },
            Some(line) = status.recv() => {
                if !published || ui.verbose > 0 {
                    eprintln!("{line}");
                }
                published = true;
            }
            Ok(ev) = net_events.recv() => {
                if let crate::net::NetEvent::RelayReserved(a) = &ev {
                    if ui.verbose > 0 {
                        eprintln!("Reachable through a relay: {a}");
                    }
                }
            }
            _ = tick.tick() => if let Some(b) = &bar { b.set_position(share.served().min(offer.bytes)); },
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match end? {
        ShareEnd::Finished => {
            let what = if mounted {
                "the receiver unmounted"
            } else {
                "the receiver has everything"
            };
            eprintln!(
                "Done: {what} ({} sent in {:.1} s).",
                HumanBytes(share.served()),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        ShareEnd::Declined => Err(Error::Declined),
    }
}

/// The code from the argument, PCP_CODE, or a prompt (so it need not show up in `ps`).
fn read_code(arg: Option<String>) -> Result<Code> {
    if let Some(c) = arg.filter(|c| c != "-") {
        return Ok(Code::parse(&c)?);
    }
    if let Ok(c) = std::env::var("PCP_CODE") {
        return Ok(Code::parse(&c)?);
    }
    eprint!("Enter the code: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::io("reading the code", e))?;
    Ok(Code::parse(line.trim())?)
}

fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::io(
            "cannot ask whether to accept",
            std::io::Error::other("standard input is not a terminal; pass --yes to accept"),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::io("reading the answer", e))?;
    Ok(matches!(line.trim().to_lowercase().as_str(), "y" | "yes"))
}

async fn start_receiver_node(peers: &[Multiaddr], net: &Net) -> Result<Node> {
    // With discovery, listen too: hole punching needs a socket of our own.
    let listen = if peers.is_empty() && !net.methods.contains(&Method::None) {
        vec![
            "/ip4/0.0.0.0/tcp/0".parse().expect("valid"),
            "/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("valid"),
        ]
    } else {
        vec![]
    };
    let dht = peers.is_empty();
    let mut cfg = net.config(listen, false);
    if !dht {
        cfg.role = crate::net::Role::Local;
        cfg.bootstrap.clear();
    }
    Node::start(cfg).await
}

async fn find_sender(
    node: &Node,
    code: &Code,
    peers: Vec<Multiaddr>,
    net: &Net,
    wait: Duration,
    allow_relay: bool,
) -> Result<connect::Found> {
    let (tx, mut rx) = mpsc::channel::<String>(8);
    let printer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            eprintln!("{line}");
        }
    });
    let opts = FindOptions {
        peers,
        methods: net
            .methods
            .iter()
            .copied()
            .filter(|m| net.uses(*m))
            .collect(),
        wait,
        clock: discovery::system_clock(),
        allow_relay,
    };
    let found = connect::find(node, code, &opts, tx).await;
    let _ = printer.await;
    let found = found?;
    eprintln!(
        "Found the sender on {}, authenticated ({}).",
        found.via, found.connection
    );
    Ok(found)
}

async fn receive(a: ReceiveArgs, net: Net, ui: Ui) -> Result<()> {
    let code = read_code(a.code)?;
    let started = Instant::now();
    let node = start_receiver_node(&a.peer, &net).await?;
    let found = find_sender(&node, &code, a.peer.clone(), &net, a.wait, a.allow_relay).await?;
    let mut session = found.session;
    let offer = session.offer().await?;
    let what = format!(
        "{} — {}, {}",
        roots(&offer.roots),
        plural(offer.files, "file"),
        HumanBytes(offer.bytes)
    );
    if a.yes {
        eprintln!("Offer: {what}. Accepting.");
    } else {
        let q = format!("Offer: {what}. Accept?");
        if !tokio::task::spawn_blocking(move || confirm(&q))
            .await
            .map_err(|e| Error::io("prompt", std::io::Error::other(e)))??
        {
            session.decline().await?;
            eprintln!("Declined; nothing was written.");
            return Ok(());
        }
    }
    let manifest = session.accept(false).await?;
    let opts = ReceiveOptions {
        out: a.out.clone(),
        overwrite: a.overwrite,
    };
    receive::preflight(&manifest, &opts)?;
    let client = session.client(4).await?;
    let progress = Arc::new(Progress::default());
    let bar = ui.bar(offer.bytes);
    let (files, bytes) = manifest.totals();
    let work = receive::receive_all(&client, &manifest, &opts, progress.clone());
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let summary = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                bar.set_position(progress.bytes.load(std::sync::atomic::Ordering::Relaxed) + progress.reused.load(std::sync::atomic::Ordering::Relaxed));
                bar.set_message(format!("{}/{} files", progress.files.load(std::sync::atomic::Ordering::Relaxed), files));
            }
        }
    };
    bar.finish_and_clear();
    let summary = summary?;
    session.finish().await?;
    let secs = started.elapsed().as_secs_f64();
    // What moved over the network, and what an earlier run had already left here, verified.
    let resumed = if summary.reused > 0 {
        format!(
            "; {} were already here and verified",
            HumanBytes(summary.reused)
        )
    } else {
        String::new()
    };
    eprintln!(
        "Received {} ({}, {}, all verified) in {:.1} s: {} moved ({}/s){resumed}.",
        roots(&offer.roots),
        plural(files, "file"),
        HumanBytes(bytes),
        secs,
        HumanBytes(summary.bytes),
        HumanBytes((summary.bytes as f64 / secs.max(1e-3)) as u64)
    );
    Ok(())
}

async fn mount(a: MountArgs, net: Net, ui: Ui) -> Result<()> {
    use crate::fs::MountFs;
    use crate::fuse::{self, MountOptions};
    use crate::remote::{Remote, RemoteEvent};

    // Refuse a bad mountpoint before looking for anyone.
    if fuse::is_stale(&a.mountpoint) {
        return Err(Error::io(
            format!(
                "{} is a stale mount left by a pcp that died",
                a.mountpoint.display()
            ),
            std::io::Error::other(format!(
                "clear it with: fusermount3 -uz {0}  (or: umount -l {0})",
                a.mountpoint.display()
            )),
        ));
    }
    if !a.mountpoint.is_dir() {
        return Err(Error::io(
            format!("cannot mount on {}", a.mountpoint.display()),
            std::io::Error::other("not an existing folder"),
        ));
    }
    let code = read_code(Some(a.code))?;
    let node = start_receiver_node(&a.peer, &net).await?;
    let found = find_sender(&node, &code, a.peer.clone(), &net, a.wait, a.allow_relay).await?;
    let mut session = found.session;
    let offer = session.offer().await?;
    let manifest = Arc::new(session.accept(true).await?);
    let (tx, mut events) = mpsc::channel(16);
    let remote = Remote::new(node, session, found.addrs, a.timeout, tx).await?;
    let fs = MountFs::new(manifest.clone(), remote.clone(), a.cache_size, a.timeout);
    let opts = MountOptions {
        allow_other: a.allow_other,
    };
    let mounted = fuse::mount(
        fs.clone(),
        &a.mountpoint,
        &opts,
        tokio::runtime::Handle::current(),
    )?;
    eprintln!(
        "Mounted {} ({}, {}) read-only at {}. Ctrl-C to unmount.",
        roots(&offer.roots),
        plural(offer.files, "file"),
        HumanBytes(offer.bytes),
        a.mountpoint.display()
    );
    let copy = a.copy_out.clone().map(|out| {
        let progress = Arc::new(Progress::default());
        let bar = ui.bar(offer.bytes);
        let opts = ReceiveOptions {
            out,
            overwrite: false,
        };
        let src = fs.clone();
        let m = manifest.clone();
        let p = progress.clone();
        let task =
            tokio::spawn(
                async move { receive::receive_all(&CacheSource(src), &m, &opts, p).await },
            );
        (task, progress, bar)
    });
    let mut copy = copy;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let signal = interrupted();
    tokio::pin!(signal);
    let outcome = loop {
        tokio::select! {
            _ = &mut signal => break Ok(()),
            Some(ev) = events.recv() => match ev {
                RemoteEvent::Lost(why) => eprintln!("warning: lost the sender ({why}); reconnecting; reads fail with EIO after {:?} meanwhile", a.timeout),
                RemoteEvent::Reconnected => eprintln!("Reconnected to the sender."),
                RemoteEvent::Ended(why) => eprintln!("warning: the sender stopped sharing ({why}); reads now fail with EIO. Ctrl-C to unmount."),
            },
            _ = tick.tick() => {
                if !mounted.is_alive() {
                    eprintln!("{} was unmounted.", a.mountpoint.display());
                    break Ok(());
                }
                if let Some((task, progress, bar)) = &mut copy {
                    bar.set_position(progress.bytes.load(std::sync::atomic::Ordering::Relaxed) + progress.reused.load(std::sync::atomic::Ordering::Relaxed));
                    if task.is_finished() {
                        bar.finish_and_clear();
                        let r = task.await.map_err(|e| Error::io("copy-out", std::io::Error::other(e)))?;
                        match r {
                            Ok(s) => eprintln!("Copy-out finished: {} ({}, all verified).", plural(s.files, "file"), HumanBytes(s.bytes)),
                            Err(e) => eprintln!("warning: copy-out failed: {e}"),
                        }
                        copy = None;
                    }
                }
            }
        }
    };
    // Off the runtime: unmounting waits (boundedly) for FUSE threads whose reads the runtime
    // may still have to answer. Meanwhile the sender hears that we are done.
    let unmounting = tokio::task::spawn_blocking(move || mounted.unmount());
    remote.finish(Duration::from_secs(1)).await;
    let detached = unmounting.await.unwrap_or(false);
    if detached {
        eprintln!("The mount was busy: detached it; it disappears when the last program using it closes it.");
    } else {
        eprintln!("Unmounted {}.", a.mountpoint.display());
    }
    outcome
}

/// Copy-out reads through the mount's cache and request pipeline.
#[derive(Clone)]
struct CacheSource(Arc<crate::fs::MountFs<Arc<crate::remote::Remote>>>);

impl receive::FileSource for CacheSource {
    async fn read(
        &self,
        file: u64,
        offset: u64,
        len: u32,
    ) -> Result<(bytes::Bytes, Option<[u8; 32]>)> {
        self.0.read_file(file, offset, len).await
    }
    async fn hash(&self, file: u64) -> Result<[u8; 32]> {
        receive::FileSource::hash(self.0.source(), file).await
    }
    async fn range_hash(&self, file: u64, offset: u64, len: u64) -> Result<[u8; 32]> {
        receive::FileSource::range_hash(self.0.source(), file, offset, len).await
    }
}

async fn helper_node(a: NodeArgs, net: Net) -> Result<()> {
    let listen = if a.listen.is_empty() {
        ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
            .iter()
            .map(|s| s.parse().expect("valid"))
            .collect()
    } else {
        a.listen
    };
    let node = Node::start(NodeConfig {
        listen,
        role: crate::net::Role::Helper,
        // Helpers join each other (or the IPFS DHT) like everyone else.
        bootstrap: if net.methods.contains(&Method::None) {
            vec![]
        } else {
            net.bootstrap
        },
    })
    .await?;
    for addr in node.listen_addrs().await? {
        println!("{addr}");
    }
    let _ = std::io::stdout().flush();
    eprintln!("pcp node running: DHT server, circuit relay v2, AutoNAT v2. Ctrl-C to stop.");
    interrupted().await;
    Err(Error::Interrupted)
}
