//! `pcp receive` as explicit steps, each with its own errors: [`Receiver::connect`] (find and
//! authenticate the sender, read its offer), then [`Receiver::decline`] or
//! [`Receiver::accept`] (read and validate the manifest, check the destination, open the data
//! streams), then [`Accepted::run`] (copy everything, tell the sender we are done). Progress is
//! polled from [`Progress`]; the CLI draws it.

use std::future::Future;
use std::sync::Arc;

use libp2p::Multiaddr;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::to_stream::write_one;
use super::{preflight, receive_all, Progress, ReceiveOptions, Summary};
use crate::code::Code;
use crate::error::{Error, Result};
use crate::fetch::connect::{connect, Seek};
use crate::fetch::{Client, Session};
use crate::manifest::Manifest;
use crate::proto::{Kind, MAX_TEXT};

/// Data streams a receive opens.
const STREAMS: u32 = 8;

/// What a share holds, from its validated manifest: what the prompt shows.
#[derive(Debug, Clone)]
pub struct Contents {
    /// Top-level names (folders end with `/`), as sent: escape before printing.
    pub roots: Vec<Vec<u8>>,
    pub files: u64,
    pub bytes: u64,
    /// Folders (the shared ones included) and symlinks.
    pub folders: u64,
    pub links: u64,
    /// Top-level names that start with a dot (`.ssh`, `.config`): worth a second look.
    pub hidden: Vec<Vec<u8>>,
    /// A text message (checked: one file of at most [`MAX_TEXT`] bytes): print it.
    pub text: bool,
    /// The share is exactly one file (it can go to standard output).
    pub one_file: bool,
}

impl Contents {
    fn of(m: &Manifest, text: bool) -> Result<Contents> {
        let one_file = m.len() == 1 && m.kind(1) == Kind::File;
        if text && !(one_file && m.totals().1 <= MAX_TEXT) {
            return Err(Error::InvalidManifest(format!(
                "a text message must be one file of at most {} KiB",
                MAX_TEXT >> 10
            )));
        }
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
        let count = |k: Kind| m.entries().iter().filter(|e| e.kind == k as i32).count() as u64;
        Ok(Contents {
            roots,
            files,
            bytes,
            folders: count(Kind::Dir),
            links: count(Kind::Symlink),
            hidden,
            text,
            one_file,
        })
    }

    /// What a share that is not one file holds, for [`Error::NotOneFile`].
    fn not_one_file(m: &Manifest) -> String {
        match (m.len(), m.kind(1)) {
            (0, _) => "nothing".into(),
            (1, Kind::Dir) => "one empty folder".into(),
            (1, _) => "one symlink".into(),
            (n, _) => format!("{n} entries"),
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
        let text = session.offer().await?.text;
        let contents = Contents::of(session.manifest().await?, text)?;
        Ok(Receiver {
            session,
            contents,
            via: found.via,
            connection: found.connection,
            addrs: found.addrs,
        })
    }

    /// Asks for at most `bytes_per_sec` of file data a second (`--limit-rate`): read
    /// requests go out at that pace, also those of a session that resumes this one.
    pub fn limit_rate(&mut self, bytes_per_sec: Option<u64>) {
        self.session.limit_rate(bytes_per_sec);
    }

    /// Asks the sender to compress file data where that saves enough (`--compress`), also in
    /// a session that resumes this one. Returns what came compressed, counted as it comes.
    pub fn compress(&mut self) -> std::sync::Arc<crate::pack::Packed> {
        self.session.compress(true);
        self.session.packed().expect("just asked for")
    }

    /// The round trip to the sender (see [`Session::round_trip`]).
    pub async fn round_trip(&self) -> Option<std::time::Duration> {
        self.session.round_trip().await
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

impl Receiver {
    /// Accepts a share of exactly one file, to be written to a stream
    /// ([`Accepted::write_to`]); any other share is refused before accepting (the sender is
    /// told why).
    pub async fn accept_one(mut self) -> Result<Accepted> {
        if !self.contents.one_file {
            let what = Contents::not_one_file(self.session.manifest().await?);
            let reason = "the receiver wants one file on its standard output, and this share is not one file";
            let _ = self.session.abort(reason.to_string()).await;
            return Err(Error::NotOneFile(what));
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
        self,
        opts: &ReceiveOptions,
        progress: Arc<Progress>,
        stop: CancellationToken,
    ) -> Result<Summary> {
        let Accepted {
            session,
            manifest,
            client,
        } = self;
        let work = receive_all(&client, &manifest, opts, progress.clone());
        drive(session, work, &progress, stop).await
    }

    /// Writes the share's one file (see [`Receiver::accept_one`]) to `sink`, verified, then
    /// tells the sender we are done; `terminal` escapes it for a terminal. Interruptions and a
    /// sender that stops end it as in [`run`](Self::run).
    pub async fn write_to<W: AsyncWrite + Unpin>(
        self,
        sink: &mut W,
        terminal: bool,
        progress: Arc<Progress>,
        stop: CancellationToken,
    ) -> Result<Summary> {
        let Accepted {
            session,
            manifest,
            client,
        } = self;
        let entry = manifest
            .get(1)
            .filter(|_| manifest.len() == 1)
            .ok_or_else(|| Error::NotOneFile(Contents::not_one_file(&manifest)))?;
        let work = async {
            let bytes = write_one(&client, entry, sink, terminal, &progress).await?;
            Ok(Summary {
                files: 1,
                bytes,
                ..Summary::default()
            })
        };
        drive(session, work, &progress, stop).await
    }
}

/// Runs `work` while watching the session and `stop`; tells the sender how it ended.
/// How long a receive whose data streams failed waits for the sender's reason on the control
/// stream.
const STOP_WORD: std::time::Duration = std::time::Duration::from_secs(1);

async fn drive(
    mut session: Session,
    work: impl Future<Output = Result<Summary>>,
    progress: &Progress,
    stop: CancellationToken,
) -> Result<Summary> {
    let outcome = {
        tokio::select! {
            r = work => Ok(r),
            why = session.closed() => Err(why),
            _ = stop.cancelled() => {
                let reason = "interrupted (Ctrl-C)".to_string();
                let _ = session.abort(reason).await;
                return Err(Error::Interrupted);
            }
        }
    };
    match outcome {
        Ok(Ok(summary)) => {
            session.finish().await?;
            Ok(summary)
        }
        Ok(Err(e @ (Error::ConnectionLost(_) | Error::Unanswered(_)))) => {
            // A sender that stops closes its data streams as it tells us why on the control
            // stream; the data may lose the race. Its word, if it comes soon, is the reason.
            match tokio::time::timeout(STOP_WORD, session.closed()).await {
                Ok(Error::Remote(reason)) => Err(Error::SenderStopped {
                    reason,
                    kept: progress.kept(),
                }),
                // The control stream ended too, without a word: that says more than a data
                // stream's "early eof".
                Ok(closed @ Error::ConnectionLost(_)) => {
                    Err(Error::broken_off(closed, progress.kept()))
                }
                _ => {
                    let _ = session.abort(reason_for_sender(&e)).await;
                    Err(Error::broken_off(e, progress.kept()))
                }
            }
        }
        Ok(Err(e)) => {
            let _ = session.abort(reason_for_sender(&e)).await;
            Err(e)
        }
        Err(Error::Remote(reason)) => Err(Error::SenderStopped {
            reason,
            kept: progress.kept(),
        }),
        Err(e @ Error::ConnectionLost(_)) => Err(Error::broken_off(e, progress.kept())),
        Err(e) => Err(e),
    }
}

/// What to tell the sender about an error of ours (nothing of our paths).
pub(crate) fn reason_for_sender(e: &Error) -> String {
    match e {
        // The sender says "The receiver stopped: {reason}".
        Error::TargetExists(_) => "a name of the share is already taken in its folder".to_string(),
        // The context names a local path: only the cause goes to the sender.
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_entry;

    #[test]
    fn a_text_message_must_be_one_small_file() {
        let file = |size| test_entry(1, 0, b"message.txt", Kind::File, size);
        let one = Manifest::validate(vec![file(MAX_TEXT)]).unwrap();
        let c = Contents::of(&one, true).unwrap();
        assert!(c.text && c.one_file);
        let big = Manifest::validate(vec![file(MAX_TEXT + 1)]).unwrap();
        assert!(matches!(
            Contents::of(&big, true),
            Err(Error::InvalidManifest(_))
        ));
        assert!(Contents::of(&big, false).unwrap().one_file);
        let two =
            Manifest::validate(vec![file(1), test_entry(2, 0, b"other", Kind::File, 1)]).unwrap();
        assert!(matches!(
            Contents::of(&two, true),
            Err(Error::InvalidManifest(_))
        ));
        let c = Contents::of(&two, false).unwrap();
        assert!(!c.one_file && !c.text);
        assert_eq!(Contents::not_one_file(&two), "2 entries");
        let dir = Manifest::validate(vec![test_entry(1, 0, b"d", Kind::Dir, 0)]).unwrap();
        assert!(Contents::of(&dir, true).is_err());
        assert_eq!(Contents::not_one_file(&dir), "one empty folder");
    }
}
