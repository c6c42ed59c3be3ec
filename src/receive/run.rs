//! `pcp receive` as explicit steps, each with its own errors: [`Receiver::connect`] (find and
//! authenticate the sender, read its offer), then [`Receiver::decline`] or
//! [`Receiver::accept`] (read and validate the manifest, check the destination, open the data
//! streams), then [`Accepted::run`] (copy everything, tell the sender we are done). Progress is
//! polled from [`Progress`]; the CLI draws it.

use std::sync::Arc;

use libp2p::Multiaddr;
use tokio::sync::mpsc;

use super::{preflight, receive_all, Progress, ReceiveOptions, Summary};
use crate::code::Code;
use crate::error::Result;
use crate::fetch::connect::{connect, Seek};
use crate::fetch::{Client, Session};
use crate::manifest::Manifest;
use crate::proto::Offer;

/// Data streams a receive opens.
const STREAMS: u32 = 4;

/// An authenticated sender and its offer, not yet answered.
pub struct Receiver {
    session: Session,
    offer: Offer,
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
        let offer = session.offer().await?;
        Ok(Receiver {
            session,
            offer,
            via: found.via,
            connection: found.connection,
            addrs: found.addrs,
        })
    }

    /// What the sender offers (as it says: the manifest is checked on [`accept`](Self::accept)).
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// The session, its offer and the sender's addresses, for a mount.
    pub(crate) fn into_parts(self) -> (Session, Offer, Vec<Multiaddr>) {
        (self.session, self.offer, self.addrs)
    }

    /// Declines the offer (the sender stops sharing).
    pub async fn decline(self) -> Result<()> {
        self.session.decline().await
    }

    /// Accepts: reads and validates the manifest, refuses before anything is written if
    /// something under `opts.out` is in the way, and opens the data streams.
    pub async fn accept(mut self, opts: &ReceiveOptions) -> Result<Accepted> {
        let manifest = self.session.accept(false).await?;
        preflight(&manifest, opts)?;
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

    /// Copies everything into `opts.out` (verified), then tells the sender we are done.
    pub async fn run(self, opts: &ReceiveOptions, progress: Arc<Progress>) -> Result<Summary> {
        let summary = receive_all(&self.client, &self.manifest, opts, progress).await?;
        self.session.finish().await?;
        Ok(summary)
    }
}
