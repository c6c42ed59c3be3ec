//! `pcp mount` as a library type: from an authenticated session to a live mount (the remote
//! that reconnects, the filesystem, the kernel mount, an optional copy-out), and back to
//! unmounted with the sender told. Events are reported; the CLI prints them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::copy_out::CacheSource;
use super::fs::MountFs;
use super::mounted::{mount, MountOptions, Mounted};
use crate::error::{Error, Result};
use crate::fetch::{Remote, RemoteEvent};
use crate::receive::run::Receiver;
use crate::receive::{receive_all, Progress, ReceiveOptions, Summary};

/// Bytes of small files fetched right after mounting (at most an eighth of the cache) ...
const MOUNT_PREFETCH_BYTES: u64 = 8 << 20;
/// ... and files: twice a folder batch of read-ahead. A tree of 100,000 files of 16 bytes was
/// otherwise asked for whole (1.5 MiB) and `find` + `lstat` of it right after mounting took
/// 0.99-1.13 s instead of 0.94-1.03 s over a veth pair (six alternated pairs).
const MOUNT_PREFETCH_FILES: usize = 2 * super::readahead::DIR_PREFETCH;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountRequest {
    pub mountpoint: PathBuf,
    /// Bound of the in-memory block cache.
    pub cache_size: u64,
    /// How long a read may wait on the network before EIO.
    pub timeout: Duration,
    pub allow_other: bool,
    /// Also download everything into this folder while mounted.
    pub copy_out: Option<PathBuf>,
}

/// A copy-out running beside the mount.
pub struct CopyOut {
    pub progress: Arc<Progress>,
    /// The folder it copies into.
    pub dir: PathBuf,
    task: JoinHandle<Result<Summary>>,
}

impl CopyOut {
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops it; returns the bytes it had received and verified (kept on disk for the next
    /// copy-out into the same folder to resume from).
    pub fn stop(self) -> u64 {
        self.task.abort();
        self.progress.kept()
    }

    /// Its result (waits if it is still running).
    pub async fn result(self) -> Result<Summary> {
        self.task
            .await
            .map_err(|e| Error::io("copy-out", std::io::Error::other(e)))?
    }
}

/// A share mounted read-only; unmount it with [`LiveMount::unmount`].
pub struct LiveMount {
    mounted: Mounted,
    remote: Arc<Remote>,
    /// Lost, reconnected, ended: the sender's state changes.
    pub events: mpsc::Receiver<RemoteEvent>,
    pub copy_out: Option<CopyOut>,
}

impl LiveMount {
    /// Accepts the offer of `receiver` for mounting and mounts it as `req` says.
    pub async fn start(receiver: Receiver, req: &MountRequest) -> Result<LiveMount> {
        let (mut session, addrs) = receiver.into_parts();
        let manifest = Arc::new(session.accept(true).await?);
        let node = session.node().clone();
        let (tx, events) = mpsc::channel(16);
        let remote = Remote::new(node, session, addrs, req.timeout, tx).await?;
        let fs = MountFs::new(
            manifest.clone(),
            remote.clone(),
            req.cache_size,
            req.timeout,
        );
        // While the kernel mounts, the first small files are already on their way.
        let asked = fs.prefetch_small_files(
            (req.cache_size / 8).min(MOUNT_PREFETCH_BYTES),
            MOUNT_PREFETCH_FILES,
        );
        tracing::debug!("prefetching {asked} bytes of small files");
        let opts = MountOptions {
            allow_other: req.allow_other,
        };
        let mounted = match mount(
            fs.clone(),
            &req.mountpoint,
            &opts,
            tokio::runtime::Handle::current(),
        ) {
            Ok(m) => m,
            Err(e) => {
                // The sender hears why instead of seeing a lost connection.
                remote
                    .abort(
                        format!("the receiver could not mount: {e}"),
                        Duration::from_secs(1),
                    )
                    .await;
                return Err(e);
            }
        };
        let copy_out = req.copy_out.clone().map(|out| {
            let progress = Arc::new(Progress::default());
            let dir = out.clone();
            let opts = ReceiveOptions {
                out,
                overwrite: false,
            };
            let p = progress.clone();
            let task =
                tokio::spawn(
                    async move { receive_all(&CacheSource(fs), &manifest, &opts, p).await },
                );
            CopyOut {
                progress,
                dir,
                task,
            }
        });
        Ok(LiveMount {
            mounted,
            remote,
            events,
            copy_out,
        })
    }

    /// Whether the kernel still has us mounted (false after an outside `umount`).
    pub fn is_alive(&self) -> bool {
        self.mounted.is_alive()
    }

    /// Unmounts (lazily if busy) while telling the sender we are done (waiting at most a
    /// second for it to hear it). Returns whether the mount had to be detached lazily.
    pub async fn unmount(self) -> bool {
        // Off the runtime: unmounting may wait (boundedly), and meanwhile the runtime must
        // go on answering the kernel's requests, which it reads itself.
        let mounted = self.mounted;
        let unmounting = tokio::task::spawn_blocking(move || mounted.unmount());
        self.remote.finish(Duration::from_secs(1)).await;
        unmounting.await.unwrap_or(false)
    }
}
