//! `pcp send`: prints the code on stdout, then what happens to the share on stderr.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use indicatif::{HumanBytes, ProgressBar};
use libp2p::{Multiaddr, PeerId};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ui::{parse_rate, plural, roots, seconds, tally, MountRate, Ui, Wire};
use super::{interrupted, json};
use crate::code::{Code, MAX_WORDS, MIN_WORDS};
use crate::error::{Error, Result};
use crate::manifest::{check_name, Rules};
use crate::net::discovery::Discovery;
use crate::proto::Kind;
use crate::proto::MAX_TEXT;
use crate::share::send::{SendEvent, Sender, Shared};
use crate::share::Spool;
use crate::share::{ShareEnd, ShareEvent, MAX_FAILED_ATTEMPTS};

#[derive(Args, Debug)]
pub(super) struct SendArgs {
    /// Files or folders to share; each becomes a top-level entry. `-` (or no PATH when standard
    /// input is not a terminal) shares what standard input carries, read to the end first, as
    /// one file named `stdin` (see --name).
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Send this text instead of files (at most 64 KiB): the receiver prints it on its standard
    /// output and writes no file.
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["paths", "name", "exclude", "gitignore"])]
    text: Option<String>,
    /// The name of the file that standard input is shared as (default: stdin).
    #[arg(long, value_name = "NAME")]
    name: Option<OsString>,
    /// Leave out what matches this gitignore-style glob, matched against paths relative to
    /// each PATH (repeatable; `*.log`, `build/`, `/notes.txt`, `!keep.log`). PATHs themselves
    /// are always shared.
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Leave out what `.gitignore`, `.ignore` and `.git/info/exclude` files ignore, and every
    /// `.git` folder.
    #[arg(long)]
    gitignore: bool,
    /// Number of words in the generated code.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(MIN_WORDS as i64..=MAX_WORDS as i64))]
    words: u8,
    /// Use this code instead of a random one (BIP39 English words: at least 4, 3 different).
    #[arg(long)]
    code: Option<String>,
    /// Listen address (repeatable). Default: all interfaces, TCP and QUIC, ephemeral ports.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Keep sharing after a receiver has finished, until Ctrl-C: several receives and mounts
    /// at once, each with its own session (three wrong codes still end the share).
    #[arg(long)]
    keep: bool,
    /// Send at most RATE of file data a second, to all receivers together (e.g. 500K, 10M:
    /// bytes, KiB, MiB), counted as it crosses the wire (compressed data at its compressed
    /// size, runs of zeros sent as their length not at all). A mount reads on demand, so a low
    /// rate makes its reads slow too.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<u64>,
    /// Never compress file data, even for a receiver that asks (saves this machine's CPU; a
    /// slow link then carries the bytes as they are).
    #[arg(long)]
    no_compress: bool,
}

/// What the arguments ask to share; standard input is read to the end here (Ctrl-C stops it).
async fn what(a: &SendArgs) -> Result<Shared> {
    if let Some(t) = &a.text {
        if t.len() as u64 > MAX_TEXT {
            return Err(Error::TextTooLong(t.len() as u64));
        }
        return Ok(Shared::Text(Spool::from_bytes(t.as_bytes())?));
    }
    let stdin =
        a.paths == [PathBuf::from("-")] || (a.paths.is_empty() && !std::io::stdin().is_terminal());
    if !stdin {
        if a.paths.is_empty() {
            return Err(Error::Usage(
                "nothing to share: give a PATH, `-` for standard input, or --text TEXT".into(),
            ));
        }
        if a.paths.iter().any(|p| p.as_os_str() == "-") {
            return Err(Error::Usage(
                "`-` (standard input) is shared alone, without other paths".into(),
            ));
        }
        if a.name.is_some() {
            return Err(Error::Usage(
                "--name names what comes from standard input (`pcp send - --name NAME`)".into(),
            ));
        }
        let rules = Rules {
            exclude: a.exclude.clone(),
            gitignore: a.gitignore,
        };
        rules.check()?;
        return Ok(Shared::Paths(a.paths.clone(), rules));
    }
    if !a.exclude.is_empty() || a.gitignore {
        return Err(Error::Usage(
            "--exclude and --gitignore apply to folders, not to standard input".into(),
        ));
    }
    let name = a.name.clone().unwrap_or_else(|| OsString::from("stdin"));
    check_name(name.as_bytes()).map_err(|m| Error::Usage(format!("--name: {m}")))?;
    say!("Reading standard input to the end...");
    let read = tokio::task::spawn_blocking(|| Spool::from_reader(std::io::stdin().lock()));
    let spool = tokio::select! {
        r = read => r.map_err(|e| Error::io("reading standard input", std::io::Error::other(e)))??,
        // The spool has no name: nothing is left behind.
        _ = interrupted() => return Err(Error::Interrupted),
    };
    Ok(Shared::Spooled(spool, name))
}

pub(super) async fn send(a: SendArgs, discovery: Discovery, ui: Ui) -> Result<()> {
    let code = match &a.code {
        Some(c) => Code::parse_custom(c)?,
        None => Code::generate(a.words as usize),
    };
    let what = what(&a).await?;
    let start = Sender::start(what, code, a.listen, discovery);
    tokio::pin!(start);
    // A big tree takes a while to scan (~2.5 s for 136,000 entries with a cold cache): say so
    // rather than sit silent, once, if it takes more than a second.
    let sender = tokio::select! {
        r = &mut start => r?,
        _ = tokio::time::sleep(Duration::from_secs(1)) => {
            say!("Scanning what to share...");
            start.await?
        }
    };
    for w in sender.warnings() {
        say!("warning: {w}");
    }
    let offer = sender.offer();
    let phrase = sender.code().phrase();
    if json::on() {
        json::emit(
            "code",
            json!({
                "code": phrase.as_str(),
                "roots": offer.roots.iter().map(|r| String::from_utf8_lossy(r)).collect::<Vec<_>>(),
                "files": offer.files,
                "bytes": offer.bytes,
                "text": offer.text,
                "left_out": sender.left_out(),
            }),
        );
    } else {
        // A closed stdout (`pcp send | head -0`) is no reason to panic.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Code is: {}", phrase.as_str());
        let _ = out.flush();
    }
    let mut limit = match a.limit_rate {
        Some(r) => format!(", at most {}/s", HumanBytes(r)),
        None => String::new(),
    };
    if a.no_compress {
        sender.share().refuse_compression();
        limit += ", never compressed";
    }
    if offer.text {
        say!("Sharing a text message ({}).", HumanBytes(offer.bytes));
    } else {
        let entries = &sender.share().tree().entries;
        let count = |k: Kind| entries.iter().filter(|e| e.kind == k as i32).count() as u64;
        say!(
            "Sharing {} ({}, {}){limit}.",
            roots(&offer.roots),
            tally(offer.files, count(Kind::Dir), count(Kind::Symlink)),
            HumanBytes(offer.bytes)
        );
    }
    if sender.left_out() > 0 {
        let n = sender.left_out();
        let entries = if n == 1 { "entry" } else { "entries" };
        say!("Left out {n} {entries} (--exclude, --gitignore).");
    }
    say!("On the other machine run `pcp receive` (or `pcp mount - FOLDER`) and type the code.");
    if a.keep {
        say!("Sharing with every receiver that has the code until Ctrl-C.");
    }
    if ui.verbose > 0 {
        for a in sender.listen_addrs() {
            say!("Listening on {a}");
        }
    }
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let serving = sender.run(tx, stop.clone(), a.keep, a.limit_rate);
    tokio::pin!(serving);
    let mut bar: Option<ProgressBar> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut last_served = 0;
    let mut rate = MountRate::default();
    let signal = interrupted();
    tokio::pin!(signal);
    let mut printer = Printer {
        ui,
        mounted: false,
        finished: None,
        keep: a.keep.then(Receivers::default),
    };
    let end = loop {
        tokio::select! {
            r = &mut serving => break r,
            // Receivers are told; `run` then ends with Interrupted within about a second.
            _ = &mut signal, if !stop.is_cancelled() => stop.cancel(),
            Some(ev) = rx.recv() => {
                // One bar for one receiver; with --keep each receiver has its own lines.
                if printer.print(ev) && !a.keep {
                    bar = Some(if printer.mounted { ui.served() } else { ui.bar(offer.bytes) });
                }
            }
            _ = tick.tick() => {
                let served = sender.share().served();
                if let Some(b) = &bar {
                    if printer.mounted {
                        // A mount may read a file again once its cache let it go: no cap.
                        b.set_position(served);
                        b.set_message(rate.update(std::time::Instant::now(), served));
                    } else {
                        b.set_position(served.min(offer.bytes));
                    }
                }
                // Every 200 ms while bytes move (with --keep: bytes sent to everyone).
                if served != last_served {
                    last_served = served;
                    json::emit("progress", json!({ "bytes": served, "total": offer.bytes }));
                }
            },
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // Events sent before serving ended may still be queued: they come before the last line.
    while let Ok(ev) = rx.try_recv() {
        printer.print(ev);
    }
    if let (Some(r), Err(Error::Interrupted)) = (&printer.keep, &end) {
        // Ctrl-C is how a --keep share ends.
        say!(
            "Stopped sharing: {} finished, {} declined.",
            plural(r.finished as u64, "receiver"),
            r.declined
        );
        json::done(json!({ "receivers_finished": r.finished, "receivers_declined": r.declined }));
        return Ok(());
    }
    match end? {
        ShareEnd::Finished => {
            let what = if offer.text {
                "the receiver has the text"
            } else {
                "the receiver has everything"
            };
            let (bytes, wire, elapsed) = printer.finished.unwrap_or_default();
            if printer.mounted {
                say!("Done: the receiver {}.", unmounted(bytes, wire, elapsed));
            } else {
                say!("Done: {what} ({}).", sent(bytes, wire, elapsed));
            }
            json::done(wire.json(json!({ "bytes": bytes, "seconds": elapsed.as_secs_f64() })));
            Ok(())
        }
        ShareEnd::Declined => Err(Error::Declined),
    }
}

/// Turns the share's events into lines.
struct Printer {
    ui: Ui,
    /// A receiver mounted the share.
    mounted: bool,
    /// What the receiver that finished was sent, and in what time.
    finished: Option<(u64, Wire, Duration)>,
    /// With --keep: the receivers, numbered.
    keep: Option<Receivers>,
}

/// The receivers of a --keep share: a number for each, who is connected, what finished.
#[derive(Default)]
struct Receivers {
    numbers: HashMap<PeerId, usize>,
    connected: HashSet<PeerId>,
    /// Receivers that mounted the share (their end is an unmount).
    mounted: HashSet<PeerId>,
    finished: usize,
    declined: usize,
}

impl Receivers {
    fn number(&mut self, peer: PeerId) -> usize {
        let next = self.numbers.len() + 1;
        *self.numbers.entry(peer).or_insert(next)
    }

    /// "2 connected (receivers 1, 3)" or "none connected".
    fn connected(&self) -> String {
        if self.connected.is_empty() {
            return "none connected".into();
        }
        let mut n: Vec<usize> = self.connected.iter().map(|p| self.numbers[p]).collect();
        n.sort();
        let list: Vec<String> = n.iter().map(|n| n.to_string()).collect();
        format!("{} connected ({})", n.len(), list.join(", "))
    }
}

/// "1.00 GiB sent in 4.2 s (243.10 MiB/s)": bytes and the time of the transfer itself, and
/// how many of them were runs of zeros sent as their length (their rate is no link's).
fn sent(bytes: u64, wire: Wire, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if bytes == 0 {
        return "nothing sent".into();
    }
    let counted = wire.note();
    let rate = if secs > 0.0 {
        format!(" ({}/s{counted})", HumanBytes((bytes as f64 / secs) as u64))
    } else if !counted.is_empty() {
        format!(" ({})", &counted[2..])
    } else {
        String::new()
    };
    format!("{} sent in {}{rate}", HumanBytes(bytes), seconds(secs))
}

/// "unmounted after 2.0 s (2.86 MiB sent)": a mount reads on demand, so its lifetime is no
/// transfer time and what it read no rate.
fn unmounted(bytes: u64, wire: Wire, elapsed: Duration) -> String {
    format!(
        "unmounted after {} ({} sent{})",
        seconds(elapsed.as_secs_f64()),
        HumanBytes(bytes),
        wire.note()
    )
}

impl Printer {
    /// Prints `ev`; returns whether a transfer started (time for a progress bar).
    fn print(&mut self, ev: SendEvent) -> bool {
        if json::on() {
            event_json(&ev);
        }
        match ev {
            SendEvent::Share(ev) => return self.share(ev),
            // The announcer says each change of state once.
            SendEvent::Dht(line) => say!("{line}"),
            SendEvent::RelayReserved(a) => {
                if self.ui.verbose > 0 {
                    say!("Reachable through a relay: {a}");
                }
            }
        }
        false
    }

    fn share(&mut self, ev: ShareEvent) -> bool {
        if let Some(r) = &mut self.keep {
            return keep_line(r, ev);
        }
        match ev {
            ShareEvent::Authenticated { connection, .. } => {
                say!("Receiver authenticated ({connection}).")
            }
            ShareEvent::Resumed { connection, .. } => {
                say!("Receiver reconnected ({connection}).")
            }
            ShareEvent::WrongCode { attempts } => say!(
                "warning: someone tried a wrong code ({attempts} of {MAX_FAILED_ATTEMPTS} attempts); if it was not your receiver, someone may be guessing"
            ),
            ShareEvent::Accepted { mount, .. } => {
                self.mounted |= mount;
                say!(
                    "{}",
                    if mount {
                        "Receiver mounted the share."
                    } else {
                        "Receiver accepted; sending..."
                    }
                );
                return true;
            }
            // The share ends with the error "the receiver declined the offer", said once.
            ShareEvent::Declined { .. } => {}
            ShareEvent::Finished {
                bytes,
                zeros,
                packed,
                elapsed,
                ..
            } => self.finished = Some((bytes, Wire { zeros, packed }, elapsed)),
            ShareEvent::Stopped { reason, .. } => {
                say!("The receiver stopped: {reason}. Still sharing; Ctrl-C to stop.")
            }
            ShareEvent::Lost { reason, .. } => say!(
                "warning: lost the receiver: {reason}; waiting for it to come back (Ctrl-C to stop)"
            ),
        }
        false
    }
}

/// A --keep share's line for `ev`: each receiver by its number. Returns whether a transfer
/// started.
fn keep_line(r: &mut Receivers, ev: ShareEvent) -> bool {
    match ev {
        ShareEvent::Authenticated { peer, connection } => {
            let n = r.number(peer);
            r.connected.insert(peer);
            say!("Receiver {n} authenticated ({connection}); {}.", r.connected());
        }
        ShareEvent::Resumed { peer, connection } => {
            let n = r.number(peer);
            r.connected.insert(peer);
            say!("Receiver {n} reconnected ({connection}); {}.", r.connected());
        }
        ShareEvent::WrongCode { attempts } => say!(
            "warning: someone tried a wrong code ({attempts} of {MAX_FAILED_ATTEMPTS} attempts for the life of the share); if it was not a receiver of yours, someone may be guessing"
        ),
        ShareEvent::Accepted { peer, mount } => {
            let n = r.number(peer);
            if mount {
                r.mounted.insert(peer);
                say!("Receiver {n} mounted the share.");
            } else {
                say!("Receiver {n} accepted; sending...");
            }
            return true;
        }
        ShareEvent::Declined { peer } => {
            let n = r.number(peer);
            r.connected.remove(&peer);
            r.declined += 1;
            say!("Receiver {n} declined; {}.", r.connected());
        }
        ShareEvent::Finished {
            peer,
            bytes,
            zeros,
            packed,
            elapsed,
        } => {
            let n = r.number(peer);
            r.connected.remove(&peer);
            r.finished += 1;
            let how = if r.mounted.remove(&peer) {
                unmounted(bytes, Wire { zeros, packed }, elapsed)
            } else {
                format!("is done ({})", sent(bytes, Wire { zeros, packed }, elapsed))
            };
            say!(
                "Receiver {n} {how}; {} finished, {}.",
                r.finished,
                r.connected()
            );
        }
        ShareEvent::Stopped { peer, reason } => {
            let n = r.number(peer);
            r.connected.remove(&peer);
            r.mounted.remove(&peer);
            say!("Receiver {n} stopped: {reason}; {}.", r.connected());
        }
        ShareEvent::Lost { peer, reason } => {
            let n = r.number(peer);
            r.connected.remove(&peer);
            say!(
                "warning: lost receiver {n}: {reason}; it may come back; {}.",
                r.connected()
            );
        }
    }
    false
}

/// The `--json` event for `ev` (README "Scripting" lists them).
fn event_json(ev: &SendEvent) {
    let (name, fields) = match ev {
        SendEvent::Dht(line) => ("dht", json!({ "message": line })),
        SendEvent::RelayReserved(a) => ("relay_reserved", json!({ "address": a.to_string() })),
        SendEvent::Share(ev) => match ev {
            ShareEvent::Authenticated { peer, connection } => (
                "receiver_authenticated",
                json!({ "peer": peer.to_string(), "connection": connection }),
            ),
            ShareEvent::Resumed { peer, connection } => (
                "receiver_reconnected",
                json!({ "peer": peer.to_string(), "connection": connection }),
            ),
            ShareEvent::WrongCode { attempts } => (
                "wrong_code",
                json!({ "attempts": attempts, "limit": MAX_FAILED_ATTEMPTS }),
            ),
            ShareEvent::Accepted { peer, mount } => (
                "receiver_accepted",
                json!({ "peer": peer.to_string(), "mount": mount }),
            ),
            ShareEvent::Declined { peer } => {
                ("receiver_declined", json!({ "peer": peer.to_string() }))
            }
            ShareEvent::Finished {
                peer,
                bytes,
                zeros,
                packed,
                elapsed,
            } => (
                "receiver_done",
                Wire {
                    zeros: *zeros,
                    packed: *packed,
                }
                .json(json!({ "peer": peer.to_string(), "bytes": bytes, "seconds": elapsed.as_secs_f64() })),
            ),
            ShareEvent::Stopped { peer, reason } => (
                "receiver_stopped",
                json!({ "peer": peer.to_string(), "reason": reason }),
            ),
            ShareEvent::Lost { peer, reason } => (
                "receiver_lost",
                json!({ "peer": peer.to_string(), "reason": reason }),
            ),
        },
    };
    json::emit(name, fields);
}
