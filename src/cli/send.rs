//! `pcp send`: prints the code on stdout, then what happens to the share on stderr.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{HumanBytes, ProgressBar};
use libp2p::Multiaddr;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::interrupted;
use super::ui::{plural, roots, Ui};
use crate::code::{Code, MAX_WORDS, MIN_WORDS};
use crate::error::{Error, Result};
use crate::manifest::{check_name, Rules};
use crate::net::discovery::Discovery;
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
    let sender = Sender::start(what, code, a.listen, discovery).await?;
    for w in sender.warnings() {
        say!("warning: {w}");
    }
    let offer = sender.offer();
    let phrase = sender.code().phrase();
    println!("Code is: {}", phrase.as_str());
    let _ = std::io::stdout().flush();
    if offer.text {
        say!("Sharing a text message ({}).", HumanBytes(offer.bytes));
    } else {
        say!(
            "Sharing {} ({}, {}).",
            roots(&offer.roots),
            plural(offer.files, "file"),
            HumanBytes(offer.bytes)
        );
    }
    if sender.left_out() > 0 {
        let n = sender.left_out();
        let entries = if n == 1 { "entry" } else { "entries" };
        say!("Left out {n} {entries} (--exclude, --gitignore).");
    }
    say!("On the other machine run `pcp receive` (or `pcp mount - FOLDER`) and type the code.");
    if ui.verbose > 0 {
        for a in sender.listen_addrs() {
            say!("Listening on {a}");
        }
    }
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let serving = sender.run(tx, stop.clone());
    tokio::pin!(serving);
    let mut bar: Option<ProgressBar> = None;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let signal = interrupted();
    tokio::pin!(signal);
    let mut printer = Printer {
        ui,
        published: false,
        mounted: false,
    };
    let end = loop {
        tokio::select! {
            r = &mut serving => break r,
            // Receivers are told; `run` then ends with Interrupted within about a second.
            _ = &mut signal, if !stop.is_cancelled() => stop.cancel(),
            Some(ev) = rx.recv() => {
                if printer.print(ev) {
                    bar = Some(ui.bar(offer.bytes));
                }
            }
            _ = tick.tick() => if let Some(b) = &bar {
                b.set_position(sender.share().served().min(offer.bytes));
            },
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match end? {
        ShareEnd::Finished => {
            let what = if printer.mounted {
                "the receiver unmounted"
            } else if offer.text {
                "the receiver has the text"
            } else {
                "the receiver has everything"
            };
            say!(
                "Done: {what} ({} sent in {:.1} s).",
                HumanBytes(sender.share().served()),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        ShareEnd::Declined => Err(Error::Declined),
    }
}

/// Turns the share's events into lines.
struct Printer {
    ui: Ui,
    /// A DHT line was printed (later ones only with -v).
    published: bool,
    /// A receiver mounted the share.
    mounted: bool,
}

impl Printer {
    /// Prints `ev`; returns whether a transfer started (time for a progress bar).
    fn print(&mut self, ev: SendEvent) -> bool {
        match ev {
            SendEvent::Share(ev) => return self.share(ev),
            SendEvent::Dht(line) => {
                if !self.published || self.ui.verbose > 0 {
                    say!("{line}");
                }
                self.published = true;
            }
            SendEvent::RelayReserved(a) => {
                if self.ui.verbose > 0 {
                    say!("Reachable through a relay: {a}");
                }
            }
        }
        false
    }

    fn share(&mut self, ev: ShareEvent) -> bool {
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
            ShareEvent::Declined { .. } => say!("The receiver declined."),
            ShareEvent::Finished { .. } => {}
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
