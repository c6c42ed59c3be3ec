//! `pcp receive`: finds the sender, shows its offer, asks, and copies everything with a
//! progress bar.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::HumanBytes;
use libp2p::Multiaddr;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ui::{
    ask_compressed, confirm, parse_rate, read_code, roots, seconds, tally, CompressArg, Ui, Wire,
};
use super::{interrupted, json, seek};
use crate::code::Code;
use crate::error::{Error, Result};
use crate::fetch::connect::Seek;
use crate::net::discovery::Discovery;
use crate::receive::run::{reason_for_sender, Receiver};
use crate::receive::{Progress, ReceiveOptions, Summary};

#[derive(Args, Debug)]
pub(super) struct ReceiveArgs {
    /// The code from `pcp send` (words separated by '-' or spaces; the first four letters of a
    /// word are enough). Better left out: then PCP_CODE is read, or you are asked (Tab
    /// completes a word), and the code stays out of `ps`.
    #[arg(value_name = "CODE")]
    code: Vec<String>,
    /// Folder to receive into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Write the share to standard output instead of a folder, if it is exactly one file
    /// (anything else is refused before accepting). Verified against the sender's hash before
    /// pcp exits 0; escaped when standard output is a terminal.
    #[arg(long, conflicts_with_all = ["out", "overwrite"])]
    stdout: bool,
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
    /// Receive at most RATE of file data a second (e.g. 500K, 10M: bytes, KiB, MiB). Runs of
    /// zeros and compressed data count at their full size: the receiver paces what it asks for
    /// before it knows how it will come.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<u64>,
    #[command(flatten)]
    compress: CompressArg,
}

/// Finds the sender, printing the status lines of the search, then how it was reached.
pub(super) async fn find(code: &Code, seek: &Seek) -> Result<Receiver> {
    let (tx, mut rx) = mpsc::channel::<String>(8);
    let printer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            say!("{line}");
        }
    });
    let found = Receiver::connect(code, seek, tx).await;
    let _ = printer.await;
    let found = found?;
    say!(
        "Found the sender on {}, authenticated ({}).",
        found.via,
        found.connection
    );
    json::emit(
        "found",
        json!({ "via": found.via, "connection": found.connection }),
    );
    Ok(found)
}

pub(super) async fn receive(a: ReceiveArgs, discovery: Discovery, ui: Ui) -> Result<()> {
    if !a.stdout {
        crate::receive::check_out_folder(&a.out).map_err(|e| {
            Error::io(
                format!(
                    "cannot receive into {} (pick another --out, or --stdout for a single file \
                     or a text)",
                    a.out.display()
                ),
                e,
            )
        })?;
    }
    let code = read_code(&a.code)?;
    let seek = seek(&discovery, a.peer, a.wait, a.allow_relay);
    // Looking for the sender: nothing to tell anyone when interrupted.
    let mut receiver = tokio::select! {
        r = find(&code, &seek) => r?,
        _ = interrupted() => return Err(Error::Interrupted),
    };
    receiver.limit_rate(a.limit_rate);
    let packed = ask_compressed(&mut receiver, a.compress.when).await;
    let wire = move |progress: &Progress| Wire {
        zeros: progress.zeros.load(Ordering::Relaxed),
        packed: packed.as_ref().map(|p| p.totals()).unwrap_or_default(),
    };
    let c = receiver.contents().clone();
    if c.text || a.stdout {
        return to_stdout(receiver, a.yes, ui, wire).await;
    }
    let what = format!(
        "{} — {}, {}",
        roots(&c.roots),
        tally(c.files, c.folders, c.links),
        HumanBytes(c.bytes)
    );
    if !c.hidden.is_empty() {
        say!(
            "warning: the share puts hidden names at the top of {}: {} (check them before you accept)",
            a.out.display(),
            roots(&c.hidden)
        );
    }
    json::emit(
        "offer",
        json!({
            "roots": c.roots.iter().map(|r| String::from_utf8_lossy(r)).collect::<Vec<_>>(),
            "files": c.files,
            "bytes": c.bytes,
        }),
    );
    let Some(receiver) = ask(receiver, &what, a.yes).await? else {
        return Ok(());
    };
    let opts = ReceiveOptions {
        out: a.out,
        overwrite: a.overwrite,
    };
    let accepted = receiver.accept(&opts).await?;
    let (files, bytes) = accepted.manifest().totals();
    let progress = Arc::new(Progress::default());
    let bar = ui.bar(bytes);
    // The transfer's own time: from the first data request to the last verified byte.
    let started = Instant::now();
    let stop = CancellationToken::new();
    let work = accepted.run(&opts, progress.clone(), stop.clone());
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut throttle = json::Throttle::default();
    let signal = interrupted();
    tokio::pin!(signal);
    let summary = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = &mut signal, if !stop.is_cancelled() => stop.cancel(),
            _ = tick.tick() => {
                let p = &progress;
                let done = p.kept();
                let files_done = p.files.load(Ordering::Relaxed);
                bar.set_position(done);
                bar.set_message(format!("{files_done}/{files} files"));
                if json::on() && throttle.ready() {
                    json::emit(
                        "progress",
                        json!({ "bytes": done, "total": bytes, "files": files_done, "total_files": files }),
                    );
                }
            }
        }
    };
    bar.finish_and_clear();
    if matches!(summary, Err(Error::Interrupted)) {
        let kept = progress.kept();
        if kept > 0 {
            say!(
                "{} received so far are kept: run `pcp receive` again into the same folder to \
                 resume.",
                HumanBytes(kept)
            );
        }
    }
    let summary = summary?;
    let secs = started.elapsed().as_secs_f64();
    let wire = wire(&progress);
    let tallied = tally(files, c.folders, c.links);
    print_summary(&c.roots, &tallied, bytes, &summary, wire, secs);
    json::done(wire.json(json!({
        "files": files,
        "bytes": bytes,
        "moved": summary.bytes,
        "reused": summary.reused,
        "seconds": secs,
    })));
    Ok(())
}

/// Asks whether to accept the offer `what` (with `yes`, says it accepts). Declining tells the
/// sender and gives `None`; an error (no terminal, Ctrl-C) tells the sender why.
async fn ask(receiver: Receiver, what: &str, yes: bool) -> Result<Option<Receiver>> {
    let answer = if yes {
        say!("Offer: {what}. Accepting.");
        Ok(true)
    } else {
        let q = format!("Offer: {what}. Accept?");
        tokio::select! {
            r = tokio::task::spawn_blocking(move || confirm(&q)) => {
                r.map_err(|e| Error::io("prompt", std::io::Error::other(e))).and_then(|r| r)
            }
            _ = interrupted() => Err(Error::Interrupted),
        }
    };
    match answer {
        Ok(true) => Ok(Some(receiver)),
        Ok(false) => {
            receiver.decline().await?;
            say!("Declined; nothing was written.");
            json::done(json!({ "declined": true }));
            Ok(None)
        }
        Err(e) => {
            // The sender hears why instead of seeing a lost connection.
            let reason = match &e {
                Error::Interrupted => "interrupted (Ctrl-C)".to_string(),
                other => reason_for_sender(other),
            };
            let _ = receiver.abort(reason).await;
            Err(e)
        }
    }
}

/// A text message, or with `--stdout` a share of one file: written to standard output, raw to
/// a pipe or a file, escaped for a terminal. A text message is printed without asking: it is
/// at most 64 KiB and writes nothing to the disk.
async fn to_stdout(
    receiver: Receiver,
    yes: bool,
    ui: Ui,
    wire: impl Fn(&Progress) -> Wire,
) -> Result<()> {
    let c = receiver.contents().clone();
    if json::on() {
        return text_json(receiver).await;
    }
    let receiver = if !c.text && c.one_file {
        let what = format!(
            "{} — {}, to standard output",
            roots(&c.roots),
            HumanBytes(c.bytes)
        );
        match ask(receiver, &what, yes).await? {
            Some(r) => r,
            None => return Ok(()),
        }
    } else {
        receiver
    };
    let accepted = receiver.accept_one().await?;
    let terminal = std::io::stdout().is_terminal();
    let progress = Arc::new(Progress::default());
    let bar = if c.text || terminal {
        indicatif::ProgressBar::hidden()
    } else {
        ui.bar(c.bytes)
    };
    let started = Instant::now();
    let stop = CancellationToken::new();
    // Standard output as a tokio file (writes go to the blocking pool, so a slow reader of the
    // pipe holds up only this transfer).
    let fd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("cannot use standard output", e))?;
    let mut out = tokio::fs::File::from_std(std::fs::File::from(fd));
    let work = accepted.write_to(&mut out, terminal, progress.clone(), stop.clone());
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let signal = interrupted();
    tokio::pin!(signal);
    let summary = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = &mut signal, if !stop.is_cancelled() => stop.cancel(),
            _ = tick.tick() => bar.set_position(progress.bytes.load(Ordering::Relaxed)),
        }
    };
    bar.finish_and_clear();
    let summary = summary?;
    if !c.text {
        let secs = started.elapsed().as_secs_f64();
        say!(
            "Received {} ({}, verified) in {}, written to standard output ({}/s{}).",
            roots(&c.roots),
            HumanBytes(summary.bytes),
            seconds(secs),
            HumanBytes((summary.bytes as f64 / secs.max(1e-3)) as u64),
            wire(&progress).note()
        );
    }
    Ok(())
}

/// With `--json`: a text message becomes a `text` event (standard output carries only events);
/// `--stdout` cannot share standard output with them.
async fn text_json(receiver: Receiver) -> Result<()> {
    let c = receiver.contents().clone();
    if !c.text {
        let e = Error::Usage(
            "--stdout writes the file to standard output, which --json keeps for events".into(),
        );
        let _ = receiver.abort(reason_for_sender(&e)).await;
        return Err(e);
    }
    let accepted = receiver.accept_one().await?;
    let mut text = Vec::new();
    let progress = Arc::new(Progress::default());
    accepted
        .write_to(&mut text, false, progress, CancellationToken::new())
        .await?;
    json::emit(
        "text",
        json!({ "text": String::from_utf8_lossy(&text), "bytes": text.len() }),
    );
    json::done(json!({ "text": true, "bytes": text.len() }));
    Ok(())
}

/// What moved over the network, and what an earlier run had already left here, verified.
fn print_summary(
    names: &[Vec<u8>],
    tallied: &str,
    bytes: u64,
    summary: &Summary,
    wire: Wire,
    secs: f64,
) {
    let resumed = if summary.reused > 0 {
        format!(
            "; {} were already here and verified",
            HumanBytes(summary.reused)
        )
    } else {
        String::new()
    };
    // Nothing over the network (all of it was already here): no "0 B moved (0 B/s)".
    let moved = if summary.bytes == 0 {
        "nothing moved".to_string()
    } else {
        let counted = wire.note();
        format!(
            "{} moved ({}/s{counted})",
            HumanBytes(summary.bytes),
            HumanBytes((summary.bytes as f64 / secs.max(1e-3)) as u64)
        )
    };
    say!(
        "Received {} ({tallied}, {}, all verified) in {}: {moved}{resumed}.",
        roots(names),
        HumanBytes(bytes),
        seconds(secs),
    );
}
