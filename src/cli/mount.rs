//! `pcp mount`: finds the sender, mounts its share read-only, prints what happens to the
//! connection (and the copy-out's progress) until Ctrl-C or an outside unmount.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use indicatif::HumanBytes;
use libp2p::Multiaddr;
use serde_json::json;

use super::receive::find;
use super::ui::{
    ask_compressed, parse_rate, parse_size, plural, read_code, roots, tally, CompressArg, Ui,
};
use super::{interrupted, json, seek};
use crate::error::{Error, Result};
use crate::fetch::RemoteEvent;
use crate::mount::check_mountpoint;
use crate::mount::run::{LiveMount, MountRequest};
use crate::net::discovery::Discovery;

#[derive(Args, Debug)]
pub(super) struct MountArgs {
    /// The code from `pcp send` (words separated by '-' or spaces; the first four letters of a
    /// word are enough); `-` reads PCP_CODE or asks, which keeps the code out of `ps` for the
    /// life of the mount.
    #[arg(value_name = "CODE", required = true, num_args = 1..)]
    code: Vec<String>,
    /// An empty folder to mount on.
    #[arg(required = true)]
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
    /// Mount even on a folder that has files in it (the mount hides them while it lasts).
    #[arg(long)]
    nonempty: bool,
    /// Give up when no sender has authenticated within this time.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// When no direct connection can be made, move data through the relay (if it allows).
    #[arg(long)]
    allow_relay: bool,
    /// Read at most RATE of file data a second from the sender (e.g. 500K, 10M), copy-out,
    /// read-ahead and reads through the mount together (they wait their turn: a rate far below
    /// what they ask for may need a longer --timeout).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<u64>,
    #[command(flatten)]
    compress: CompressArg,
}

pub(super) async fn mount(a: MountArgs, discovery: Discovery, ui: Ui) -> Result<()> {
    // Refuse a bad mountpoint before looking for anyone.
    check_mountpoint(&a.mountpoint, a.nonempty)?;
    if let Some(dir) = &a.copy_out {
        crate::receive::check_out_folder(dir)
            .map_err(|e| Error::io(format!("cannot copy out into {}", dir.display()), e))?;
    }
    let code = read_code(&a.code)?;
    let seek = seek(&discovery, a.peer, a.wait, a.allow_relay);
    // Ctrl-C, SIGTERM or SIGHUP while looking, authenticating or mounting: stop at once, mount
    // nothing.
    let signal = interrupted();
    tokio::pin!(signal);
    let mut receiver = tokio::select! {
        r = find(&code, &seek) => r?,
        _ = &mut signal => return Err(Error::Interrupted),
    };
    receiver.limit_rate(a.limit_rate);
    ask_compressed(&mut receiver, a.compress.when).await;
    let req = MountRequest {
        mountpoint: a.mountpoint.clone(),
        cache_size: a.cache_size,
        timeout: a.timeout,
        allow_other: a.allow_other,
        copy_out: a.copy_out,
    };
    let c = receiver.contents().clone();
    let mut live = tokio::select! {
        r = LiveMount::start(receiver, &req) => r?,
        _ = &mut signal => return Err(Error::Interrupted),
    };
    say!(
        "Mounted {} ({}, {}) read-only at {}. Ctrl-C to unmount.",
        roots(&c.roots),
        tally(c.files, c.folders, c.links),
        HumanBytes(c.bytes),
        a.mountpoint.display()
    );
    json::emit(
        "mounted",
        json!({
            "mountpoint": a.mountpoint.display().to_string(),
            "roots": c.roots.iter().map(|r| String::from_utf8_lossy(r)).collect::<Vec<_>>(),
            "files": c.files,
            "bytes": c.bytes,
        }),
    );
    let bar = live.copy_out.as_ref().map(|_| ui.bar(c.bytes));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut outside = false;
    loop {
        tokio::select! {
            _ = &mut signal => break,
            Some(ev) = live.events.recv() => {
                remote_json(&ev);
                match ev {
                    RemoteEvent::Lost(why) => say!("warning: lost the sender ({why}); reconnecting; reads fail with EIO after {:?} meanwhile", a.timeout),
                    RemoteEvent::Reconnected => say!("Reconnected to the sender."),
                    RemoteEvent::Ended(why) => say!("warning: the sender stopped sharing ({why}); reads now fail with EIO. Ctrl-C to unmount."),
                }
            },
            _ = tick.tick() => {
                if !live.is_alive() {
                    say!("{} was unmounted (from outside pcp).", a.mountpoint.display());
                    outside = true;
                    break;
                }
                copy_out_progress(&mut live, bar.as_ref()).await;
            }
        }
    }
    // A copy-out that finished since the last tick is reported as finished; one still running
    // stops here, and what it verified stays for the next `--copy-out` into the same folder.
    copy_out_progress(&mut live, bar.as_ref()).await;
    if let Some(copy) = live.copy_out.take() {
        let dir = copy.dir.clone();
        let kept = copy.stop();
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        say!(
            "Copy-out stopped before the end: {} of {} received so far are kept in {}: run `pcp \
             mount` again with `--copy-out {}` to go on (with the same code while that `pcp \
             send` still runs).",
            HumanBytes(kept),
            HumanBytes(c.bytes),
            dir.display(),
            dir.display()
        );
        json::emit(
            "copy_out_stopped",
            json!({ "kept": kept, "bytes": c.bytes, "dir": dir.display().to_string() }),
        );
    }
    let busy = live.unmount().await;
    if busy {
        say!("The mount was busy: detached it; it disappears when the last program using it closes it.");
    } else if !outside {
        say!("Unmounted {}.", a.mountpoint.display());
    }
    json::done(json!({ "unmounted": a.mountpoint.display().to_string(), "detached_busy": busy }));
    Ok(())
}

/// Draws the copy-out's progress, and its result once it has finished.
async fn copy_out_progress(live: &mut LiveMount, bar: Option<&indicatif::ProgressBar>) {
    let Some(copy) = &live.copy_out else { return };
    let p = &copy.progress;
    if let Some(bar) = bar {
        bar.set_position(p.kept());
    }
    if !copy.is_finished() {
        return;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let copy = live.copy_out.take().expect("checked");
    let dir = copy.dir.clone();
    match copy.result().await {
        Ok(s) => {
            // An earlier copy-out into the same folder may have left part of it, verified.
            let resumed = if s.reused > 0 {
                format!("; {} were already there and verified", HumanBytes(s.reused))
            } else {
                String::new()
            };
            say!(
                "Copy-out finished: {} ({}, all verified) in {}{resumed}.",
                plural(s.files, "file"),
                HumanBytes(s.bytes + s.reused),
                dir.display(),
            );
            json::emit(
                "copy_out_done",
                json!({ "files": s.files, "bytes": s.bytes, "reused": s.reused }),
            );
        }
        Err(e) => {
            say!("warning: copy-out failed: {e}");
            json::emit("copy_out_failed", json!({ "message": e.to_string() }));
        }
    }
}

/// The `--json` event for a change in the connection to the sender.
fn remote_json(ev: &RemoteEvent) {
    match ev {
        RemoteEvent::Lost(why) => json::emit("sender_lost", json!({ "reason": why.to_string() })),
        RemoteEvent::Reconnected => json::emit("sender_reconnected", json!({})),
        RemoteEvent::Ended(why) => {
            json::emit("sender_stopped", json!({ "reason": why.to_string() }))
        }
    }
}
