//! The command line: argument parsing and printing what the library reports. `main.rs` builds
//! the runtime and maps the result to an exit code; each command lives in its own module and
//! only turns arguments into library calls and events into lines (the code on stdout,
//! everything else on stderr).

/// Prints a line on stderr; the whole line goes through [`printable`](crate::text::printable),
/// since it may carry names and reasons from the peer.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::tell(&format!("{}\n", $crate::text::printable(&format!($($arg)*))))
    };
}

/// [`say!`] without the newline (a prompt).
macro_rules! say_part {
    ($($arg:tt)*) => {
        $crate::cli::tell(&$crate::text::printable(&format!($($arg)*)))
    };
}

mod docs;
pub mod json;
mod mount;
mod node;
mod prompt;
mod receive;
mod send;
mod ui;

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Parser, Subcommand};
use libp2p::Multiaddr;

use crate::error::{Error, Result};
use crate::fetch::connect::Seek;
use crate::net::discovery::{shifted_clock, Discovery, Method};
use docs::{CompletionsArgs, ManArgs};
use mount::MountArgs;
use node::NodeArgs;
use receive::ReceiveArgs;
use send::SendArgs;
use ui::Ui;

/// What `pcp --version` prints after the name: the crate version, the commit and the build date
/// (stamped by build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PCP_GIT_COMMIT"),
    " ",
    env!("PCP_BUILD_DATE"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "pcp",
    version = VERSION,
    about = "Peer copy: send, receive or mount files between two computers with a few words. No server in between."
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// More log output on stderr (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Do not draw progress bars (also off when stderr is not a terminal).
    #[arg(long, global = true)]
    no_progress: bool,
    /// Print one JSON object per line on stdout for every event (code, receivers, progress,
    /// done or error with the exit code), and nothing else there; see README "Scripting".
    #[arg(long, global = true)]
    pub json: bool,
    /// How to find the other side: any of mdns, dht (comma-separated), or none (only
    /// --listen/--peer addresses).
    #[arg(long, global = true, value_delimiter = ',', default_value = "mdns,dht")]
    discovery: Vec<Method>,
    /// DHT bootstrap peer, with or without /p2p/PEER_ID (repeatable, or comma-separated in
    /// PCP_BOOTSTRAP); replaces the default IPFS bootstrap peers.
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout: pcp(1), or pcp-COMMAND(1) for one command.
    Man(ManArgs),
}

impl Cli {
    /// Whether the command handles Ctrl-C itself (`mount` unmounts; `send` and `receive` tell
    /// the other side); the others stop at once.
    pub fn handles_signals(&self) -> bool {
        matches!(
            self.cmd,
            Cmd::Mount(_) | Cmd::Send(_) | Cmd::Node(_) | Cmd::Receive(_)
        )
    }
}

/// Writes `text` on stderr. A stderr that went away (a closed pipe: `pcp send 2>&1 | head`, a
/// terminal that hung up) is no reason to stop, unlike `eprintln!`, which panics.
pub fn tell(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Set once SIGINT, SIGTERM or SIGHUP arrived; watched from the start of `main`, so a signal that comes
/// before a command starts waiting for it (say, right after it printed its address) still counts.
static INTERRUPT: std::sync::OnceLock<tokio_util::sync::CancellationToken> =
    std::sync::OnceLock::new();

fn interrupt_token() -> tokio_util::sync::CancellationToken {
    INTERRUPT
        .get_or_init(tokio_util::sync::CancellationToken::new)
        .clone()
}

/// Installs the SIGINT, SIGTERM and SIGHUP handlers (call inside the runtime, before anything else).
pub fn watch_signals() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    // The terminal closed (its window, an ssh session that ended): stop as cleanly as on
    // Ctrl-C, so a mount is not left behind answering ENOTCONN. Unless this process was started
    // with SIGHUP ignored: `nohup pcp send ...` must go on when the terminal goes.
    let mut hup = if ignored(libc::SIGHUP) {
        None
    } else {
        Some(signal(SignalKind::hangup())?)
    };
    let token = interrupt_token();
    tokio::spawn(async move {
        let hangup = async {
            match &mut hup {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hangup => {}
        }
        token.cancel();
    });
    Ok(())
}

/// Whether `sig` is ignored (inherited from whoever started this process).
fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Resolves once SIGINT or SIGTERM has arrived (at once if it already did).
pub async fn interrupted() {
    interrupt_token().cancelled_owned().await
}

/// Logs to stderr: warnings by default, more with -v/-vv, or as RUST_LOG says.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        // fuser warns "Unmount failed" when the mount was already taken away with `umount`;
        // pcp itself says how the mount ended.
        0 => "warn,fuser::mnt=error",
        1 => "info,pcp=info",
        _ => "info,pcp=debug",
    };
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    // A user who asked for no logs sees warnings as pcp's other lines look (`warning: ...`,
    // escaped); -v and RUST_LOG keep the full log format, with time and module.
    let plain = verbose == 0 && from_env.is_none();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if plain {
        log.event_format(Plain).try_init()
    } else {
        log.try_init()
    };
}

/// The log format when no log was asked for: `warning: MESSAGE key=value`, through
/// [`printable`](crate::text::printable) like every other line (a reason may come from the peer).
struct Plain;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut out: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            _ => "debug",
        };
        let mut text = String::new();
        ctx.field_format().format_fields(
            tracing_subscriber::fmt::format::Writer::new(&mut text),
            event,
        )?;
        writeln!(out, "{level}: {}", crate::text::printable(&text))
    }
}

/// The discovery settings from the common options. `PCP_CLOCK_OFFSET_SECS` (signed seconds)
/// shifts the clock that picks discovery slots: tests use it to start a sender just before a
/// slot boundary.
fn discovery(cli: &Cli) -> Discovery {
    let offset = std::env::var("PCP_CLOCK_OFFSET_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Discovery {
        methods: cli.discovery.clone(),
        bootstrap: if cli.bootstrap.is_empty() {
            crate::net::IPFS_BOOTSTRAP
                .iter()
                .map(|a| a.parse().expect("valid"))
                .collect()
        } else {
            cli.bootstrap.clone()
        },
        clock: shifted_clock(offset),
    }
}

/// Where a receiving command looks for the sender.
fn seek(discovery: &Discovery, peers: Vec<Multiaddr>, wait: Duration, allow_relay: bool) -> Seek {
    Seek {
        peers,
        discovery: discovery.clone(),
        wait,
        allow_relay,
    }
}

/// Runs the command.
pub async fn run(cli: Cli) -> Result<()> {
    if cli.json {
        json::enable();
    }
    let ui = Ui {
        progress: !cli.no_progress && !cli.json && std::io::stderr().is_terminal(),
        verbose: cli.verbose,
    };
    let discovery = discovery(&cli);
    match cli.cmd {
        Cmd::Send(a) => send::send(a, discovery, ui).await,
        Cmd::Receive(a) => receive::receive(a, discovery, ui).await,
        Cmd::Mount(a) => mount::mount(a, discovery, ui).await,
        Cmd::Node(a) => node::helper_node(a, discovery).await,
        Cmd::Completions(a) => docs::completions(a),
        Cmd::Man(a) => docs::man(a),
    }
}

/// Runs the command until it ends, or until Ctrl-C/SIGTERM for the commands that do not handle
/// those themselves ([`Error::Interrupted`]).
pub async fn run_until_interrupted(cli: Cli) -> Result<()> {
    if let Err(e) = watch_signals() {
        return Err(Error::io("cannot install signal handlers", e));
    }
    if cli.handles_signals() {
        return run(cli).await;
    }
    tokio::select! {
        r = run(cli) => r,
        _ = interrupted() => Err(Error::Interrupted),
    }
}
