//! `pcp receive` as explicit steps, each with its own errors: [`Receiver::connect`] (find and
//! authenticate the sender, read its offer), then [`Receiver::decline`] or
//! [`Receiver::accept`] (read and validate the manifest, check the destination, open the data
//! streams), then [`Accepted::run`] (copy everything, tell the sender we are done). Progress is
//! polled from [`Progress`]; the CLI draws it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use libp2p::Multiaddr;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{preflight, receive_all, Progress, ReceiveOptions, Summary};
use crate::code::Code;
use crate::error::{Error, Result};
use crate::fetch::connect::{connect, Seek};
use crate::fetch::{Client, Session};
use crate::manifest::Manifest;

/// Data streams a receive opens.
const STREAMS: u32 = 8;

/// What a share holds, from its validated manifest: what the prompt shows.
#[derive(Debug, Clone)]
pub struct Contents {
    /// Top-level names (folders end with `/`), as sent: escape before printing.
    pub roots: Vec<Vec<u8>>,
    pub files: u64,
    pub bytes: u64,
    /// Top-level names that start with a dot (`.ssh`, `.config`): worth a second look.
    pub hidden: Vec<Vec<u8>>,
}

impl Contents {
    fn of(m: &Manifest) -> Contents {
        let (files, bytes) = m.totals();
        let mut roots = Vec::new();
        let mut hidden = Vec::new();
        for &id in m.children(0) {
            let e = m.get(id).expect("child exists");
            let mut n = e.name.clone();
            if e.kind == crate::proto::Kind::Dir as i32 {
                n.push(b'/');
            }
            if n.starts_with(b".") {
                hidden.push(n.clone());
            }
            roots.push(n);
        }
        Contents {
            roots,
            files,
            bytes,
            hidden,
        }
    }
}

/// An authenticated sender and its checked offer, not yet answered.
pub struct Receiver {
    session: Session,
    contents: Contents,
    /// "the local network (mDNS)", "the given address", ...
    pub via: &'static str,
    /// How we are connected ("direct TCP via ...").
    pub connection: String,
    /// Addresses the sender was reached at, for reconnecting.
    addrs: Vec<Multiaddr>,
}

impl Receiver {
    /// Finds and authenticates the sender for `code` and reads its offer. `status` gets lines
    /// for the user while it looks.
    pub async fn connect(
        code: &Code,
        seek: &Seek,
        status: mpsc::Sender<String>,
    ) -> Result<Receiver> {
        let found = connect(code, seek, status).await?;
        let mut session = found.session;
        let contents = Contents::of(session.manifest().await?);
        Ok(Receiver {
            session,
            contents,
            via: found.via,
            connection: found.connection,
            addrs: found.addrs,
        })
    }

    /// What the share holds, from the manifest that was validated: what to show the user.
    pub fn contents(&self) -> &Contents {
        &self.contents
    }

    /// The session and the sender's addresses, for a mount.
    pub(crate) fn into_parts(self) -> (Session, Vec<Multiaddr>) {
        (self.session, self.addrs)
    }

    /// Declines the offer (the sender stops sharing).
    pub async fn decline(self) -> Result<()> {
        self.session.decline().await
    }

    /// Ends the session telling the sender why (an error of ours, an interruption).
    pub async fn abort(self, reason: String) -> Result<()> {
        self.session.abort(reason).await
    }

    /// Accepts, unless something under `opts.out` is in the way (then nothing is written and
    /// the sender is told why), and opens the data streams.
    pub async fn accept(mut self, opts: &ReceiveOptions) -> Result<Accepted> {
        if let Err(e) = preflight(self.session.manifest().await?, opts) {
            let _ = self.session.abort(reason_for_sender(&e)).await;
            return Err(e);
        }
        let manifest = self.session.accept(false).await?;
        let client = self.session.client(STREAMS).await?;
        Ok(Accepted {
            session: self.session,
            manifest,
            client,
        })
    }
}

/// An accepted offer with its validated manifest, ready to copy.
pub struct Accepted {
    session: Session,
    manifest: Manifest,
    client: Client,
}

impl Accepted {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Copies everything into `opts.out` (verified), then tells the sender we are done. When
    /// `stop` is cancelled (Ctrl-C) the sender is told and this ends with
    /// [`Error::Interrupted`]; when the sender stops first, with [`Error::SenderStopped`].
    /// Either way what was received and verified stays for a later receive to resume from.
    pub async fn run(
        mut self,
        opts: &ReceiveOptions,
        progress: Arc<Progress>,
        stop: CancellationToken,
    ) -> Result<Summary> {
        let kept =
            |p: &Progress| p.bytes.load(Ordering::Relaxed) + p.reused.load(Ordering::Relaxed);
        let outcome = {
            let work = receive_all(&self.client, &self.manifest, opts, progress.clone());
            tokio::select! {
                r = work => Ok(r),
                why = self.session.closed() => Err(why),
                _ = stop.cancelled() => {
                    let reason = "the receiver was interrupted (Ctrl-C)".to_string();
                    let _ = self.session.abort(reason).await;
                    return Err(Error::Interrupted);
                }
            }
        };
        match outcome {
            Ok(Ok(summary)) => {
                self.session.finish().await?;
                Ok(summary)
            }
            Ok(Err(e)) => {
                let _ = self.session.abort(reason_for_sender(&e)).await;
                Err(e)
            }
            Err(Error::Remote(reason)) => Err(Error::SenderStopped {
                reason,
                kept: kept(&progress),
            }),
            Err(e) => Err(e),
        }
    }
}

/// What to tell the sender about an error of ours (nothing of our paths).
pub(crate) fn reason_for_sender(e: &Error) -> String {
    match e {
        Error::TargetExists(_) => {
            "a name of the share is already taken in the receiver's folder".to_string()
        }
        // The context names a local path: only the cause goes to the sender.
        Error::Io { source, .. } => format!("the receiver failed: {source}"),
        other => format!("the receiver failed: {other}"),
    }
}
