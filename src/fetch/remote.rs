//! A sender that may come and go: wraps the session's [`Client`] and, when the connection is
//! lost, redials the same peer in the background and re-authenticates with the resumption
//! ticket (the user does not type the code again). Reads wait for the new connection only as
//! long as their caller's timeout allows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::crypto::ResumeTicket;
use crate::error::{Error, Result};
use crate::fetch::FileSource;
use crate::fetch::{Client, Session};
use crate::net::Node;
use crate::rate::RateLimit;

/// Data streams per session.
pub const STREAMS: u32 = 8;

/// State changes a UI may want to print.
#[derive(Debug, Clone)]
pub enum RemoteEvent {
    Lost(String),
    Reconnected,
    /// The sender ended the share on purpose (it will not come back).
    Ended(String),
}

struct State {
    client: Option<Client>,
    /// Bumped on every change, so waiters notice a new client.
    generation: u64,
    /// Final: the sender stopped sharing.
    ended: Option<String>,
    /// When the sender was last known to be unreachable from (None while connected).
    lost_since: Option<Instant>,
}

/// Asks the session watcher to end the session (Done, or Abort with a reason) and to say when
/// the sender has heard it.
type EndRequest = (Option<String>, oneshot::Sender<()>);

pub struct Remote {
    node: Node,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    ticket: ResumeTicket,
    state: watch::Sender<State>,
    reconnecting: AtomicBool,
    requests: AtomicU64,
    events: mpsc::Sender<RemoteEvent>,
    /// How long a request may wait for a lost sender to come back; after that, requests fail
    /// at once until it is back (so one read never stacks several waits).
    patience: Duration,
    /// The control stream of the current session, held so the sender sees us alive; handed to
    /// a watcher task that notices when the sender goes away.
    /// Asks the session watcher to send Done; it answers when the sender has seen it.
    finish: Mutex<Option<oneshot::Sender<EndRequest>>>,
    /// `--limit-rate`, kept for the sessions that resume this one.
    rate: Option<Arc<RateLimit>>,
    /// `--compress`, kept across reconnections like the rate.
    packed: Option<Arc<crate::pack::Packed>>,
}

impl Remote {
    /// Takes over an authenticated session (offer and manifest already read).
    pub async fn new(
        node: Node,
        mut session: Session,
        addrs: Vec<Multiaddr>,
        patience: Duration,
        events: mpsc::Sender<RemoteEvent>,
    ) -> Result<Arc<Remote>> {
        let client = session.client(STREAMS).await?;
        let peer = session.peer();
        let addrs = addrs
            .into_iter()
            .map(|a| {
                if a.iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                {
                    a
                } else {
                    a.with_p2p(peer).unwrap_or_else(|a| a)
                }
            })
            .collect();
        let remote = Arc::new(Remote {
            node,
            peer,
            addrs,
            ticket: session.keys().ticket(),
            state: watch::Sender::new(State {
                client: Some(client),
                generation: 1,
                ended: None,
                lost_since: None,
            }),
            reconnecting: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            events,
            patience,
            finish: Mutex::new(None),
            rate: session.rate(),
            packed: session.packed(),
        });
        remote.watch_session(session);
        Ok(remote)
    }

    /// Data requests sent so far (reads and hashes).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Tells the sender we are done (it stops sharing), if connected, and waits (at most
    /// `wait`) until it has heard it.
    pub async fn finish(&self, wait: Duration) {
        self.end(None, wait).await
    }

    /// Tells the sender we stop because of `reason` (it prints it), if connected, and waits
    /// (at most `wait`) until it has heard it.
    pub async fn abort(&self, reason: String, wait: Duration) {
        self.end(Some(reason), wait).await
    }

    async fn end(&self, why: Option<String>, wait: Duration) {
        let Some(tx) = self.finish.lock().expect("lock").take() else {
            return;
        };
        let (done, heard) = oneshot::channel();
        if tx.send((why, done)).is_ok() {
            let _ = tokio::time::timeout(wait, heard).await;
        }
    }

    /// Watches the control stream: the sender's abort is final, a lost stream starts a
    /// reconnection. `finish` sends Done on it.
    fn watch_session(self: &Arc<Self>, mut session: Session) {
        let (tx, rx) = oneshot::channel::<EndRequest>();
        *self.finish.lock().expect("lock") = Some(tx);
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::select! {
                why = session.closed() => {
                    let Some(me) = me.upgrade() else { return };
                    match why {
                        Error::Remote(reason) => {
                            me.state.send_modify(|s| {
                                s.client = None;
                                s.ended = Some(reason.clone());
                                s.generation += 1;
                            });
                            let _ = me.events.send(RemoteEvent::Ended(reason)).await;
                        }
                        other => me.lost(&other, Instant::now()),
                    }
                }
                end = rx => {
                    let Ok((why, done)) = end else { return };
                    let _ = match why {
                        None => session.finish().await,
                        Some(reason) => session.abort(reason).await,
                    };
                    let _ = done.send(());
                }
            }
        });
    }

    /// Marks the connection as lost (unreachable since `since`) and starts reconnecting (once).
    pub fn lost(self: &Arc<Self>, why: &Error, since: Instant) {
        if self.state.borrow().ended.is_some() || self.reconnecting.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!("lost the sender: {why}; reconnecting");
        self.state.send_modify(|s| {
            s.client = None;
            s.lost_since = Some(since);
            s.generation += 1;
        });
        let _ = self.events.try_send(RemoteEvent::Lost(why.to_string()));
        let me = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                let ended = me.state.borrow().ended.is_some();
                if ended {
                    break;
                }
                match me.reconnect().await {
                    Ok(mut session) => match session.client(STREAMS).await {
                        Ok(client) => {
                            me.state.send_modify(|s| {
                                s.client = Some(client);
                                s.lost_since = None;
                                s.generation += 1;
                            });
                            me.reconnecting.store(false, Ordering::SeqCst);
                            me.watch_session(session);
                            let _ = me.events.send(RemoteEvent::Reconnected).await;
                            break;
                        }
                        Err(e) => tracing::debug!("reconnected, but no data streams: {e}"),
                    },
                    Err(e) => tracing::debug!("reconnect failed: {e}"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
    }

    async fn reconnect(&self) -> Result<Session> {
        // A dead connection would keep taking our streams: close it first.
        let _ = self.node.disconnect(self.peer).await;
        let mut last = Error::Network("no address to redial".into());
        for a in &self.addrs {
            match self.node.dial(a.clone()).await {
                Ok(p) if p == self.peer => {
                    let mut s = Session::resume(&self.node, self.peer, &self.ticket).await?;
                    s.set_rate(self.rate.clone());
                    s.set_packed(self.packed.clone());
                    return Ok(s);
                }
                Ok(_) => last = Error::Network(format!("{a} is another peer")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The current client, waiting for a reconnection if needed (cancel-safe).
    async fn client(&self) -> Result<Client> {
        let mut rx = self.state.subscribe();
        loop {
            {
                let s = rx.borrow_and_update();
                if let Some(reason) = &s.ended {
                    return Err(Error::Remote(format!(
                        "the sender stopped sharing: {reason}"
                    )));
                }
                if let Some(c) = &s.client {
                    return Ok(c.clone());
                }
                if s.lost_since.is_some_and(|t| t.elapsed() >= self.patience) {
                    return Err(Error::ConnectionLost(
                        "the sender is unreachable; reconnecting in the background".into(),
                    ));
                }
            }
            let left = {
                let s = rx.borrow();
                self.patience
                    .saturating_sub(s.lost_since.map(|t| t.elapsed()).unwrap_or_default())
            };
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(r) => r.map_err(|_| Error::ConnectionLost("shutting down".into()))?,
                Err(_) => continue,
            }
        }
    }

    /// Runs one request on the current client. With `watched`, a request that gets no answer
    /// within the patience means a silent link (cable pulled, Wi-Fi gone: no error, only
    /// missing answers): the connection counts as lost since the request was sent, and a
    /// reconnection starts. (Hashes of large files may take longer: they are not watched.)
    async fn with_client<T, F, Fut>(self: &Arc<Self>, watched: bool, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        loop {
            let c = self.client().await?;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let sent = Instant::now();
            let patience = if watched {
                self.patience
            } else {
                Duration::MAX
            };
            match tokio::time::timeout(patience, f(c.clone())).await {
                Err(_) => {
                    let e = Error::ConnectionLost("the sender stopped answering".into());
                    self.lost(&e, sent);
                    return Err(Error::Timeout(self.patience, "the sender"));
                }
                Ok(Err(e @ Error::ConnectionLost(_))) => {
                    if !c.is_alive() {
                        self.lost(&e, Instant::now());
                    }
                    // Wait for the next client (the caller's timeout bounds this).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(other) => return other,
            }
        }
    }
}

impl FileSource for Arc<Remote> {
    async fn read(&self, file: u64, offset: u64, len: u32) -> Result<(Bytes, Option<[u8; 32]>)> {
        self.with_client(true, |c| async move { c.read(file, offset, len).await })
            .await
    }

    async fn hash(&self, file: u64) -> Result<[u8; 32]> {
        self.with_client(false, |c| async move { c.hash(file).await })
            .await
    }

    async fn range_hash(&self, file: u64, offset: u64, len: u64) -> Result<[u8; 32]> {
        self.with_client(
            false,
            |c| async move { c.range_hash(file, offset, len).await },
        )
        .await
    }

    async fn seek(&self, file: u64, offset: u64, hole: bool) -> Result<Option<super::SeekAnswer>> {
        self.with_client(true, |c| async move { c.seek(file, offset, hole).await })
            .await
            .map(Some)
    }
}
