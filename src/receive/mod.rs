//! Copying a validated manifest to disk: files are written under `--out` only, through a
//! temporary name in the same folder ([`disk`]), checked against the sender's BLAKE3 hash and
//! only then renamed into place with their permission bits and mtime ([`download`]); an earlier
//! run's partial files are checked and continued ([`resume`]). `pcp receive` ([`run`]) and the
//! mount's copy-out share this code; bytes come from any [`FileSource`].

mod disk;
mod download;
mod resume;
pub(crate) mod run;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures::stream::StreamExt;
use tokio::sync::Semaphore;

use disk::{clear_for, safe_mode, set_mtime};
use download::Download;

use crate::error::{Error, IoContext, Result};
use crate::fetch::FileSource;
use crate::manifest::Manifest;
use crate::proto::{Entry, Kind, MAX_READ};

/// Bytes per read request.
pub const CHUNK: u32 = MAX_READ;
/// Files downloaded at once.
const PARALLEL_FILES: usize = 64;
/// Read requests in flight over the whole transfer (bounds memory: at most this many chunks).
const INFLIGHT_CHUNKS: usize = 24;
/// Read requests in flight for one file.
const PER_FILE_CHUNKS: usize = 8;

/// Counters a UI can poll while a transfer runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes moved over the network.
    pub bytes: AtomicU64,
    /// Bytes already here and verified (complete files and resumed prefixes).
    pub reused: AtomicU64,
    pub files: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    pub out: PathBuf,
    pub overwrite: bool,
}

/// What a finished receive did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes moved over the network.
    pub bytes: u64,
    /// Bytes found already here and verified (complete files, prefixes of partial ones).
    pub reused: u64,
}

/// Where entry `id` goes under `out`.
fn target(out: &Path, m: &Manifest, id: u64) -> PathBuf {
    out.join(m.rel_path(id))
}

/// Refuses to start, before anything is touched, when something under `out` is in the way
/// (unless `overwrite`). What may already be there is what an earlier receive of the same
/// files left: folders, the same symlinks, and files of the same size (those are compared with
/// the sender's hash and skipped when equal, or refused when not).
pub fn preflight(m: &Manifest, opts: &ReceiveOptions) -> Result<()> {
    if opts.overwrite {
        return Ok(());
    }
    for e in m.entries() {
        let t = target(&opts.out, m, e.id);
        let Ok(md) = t.symlink_metadata() else {
            continue;
        };
        let fits = match m.kind(e.id) {
            Kind::Dir => md.is_dir(),
            Kind::Symlink => {
                md.file_type().is_symlink()
                    && std::fs::read_link(&t)
                        .is_ok_and(|l| l.as_os_str().as_bytes() == e.target.as_slice())
            }
            _ => md.is_file() && md.len() == e.size,
        };
        if !fits {
            return Err(Error::TargetExists(t));
        }
    }
    Ok(())
}

/// Downloads everything in `m` into `opts.out`.
pub async fn receive_all<S: FileSource>(
    client: &S,
    m: &Manifest,
    opts: &ReceiveOptions,
    progress: Arc<Progress>,
) -> Result<Summary> {
    preflight(m, opts)?;
    fs::create_dir_all(&opts.out).ctx(|| format!("cannot create {}", opts.out.display()))?;
    let mut summary = Summary::default();
    make_dirs_and_links(m, opts, &mut summary)?;
    let window = Arc::new(Semaphore::new(INFLIGHT_CHUNKS));
    // Owned work items: the download futures must not borrow the manifest (they are spawned).
    let files: Vec<(Entry, PathBuf)> = m
        .entries()
        .iter()
        .filter(|e| e.kind == Kind::File as i32)
        .map(|e| (e.clone(), target(&opts.out, m, e.id)))
        .collect();
    let overwrite = opts.overwrite;
    let mut downloads = futures::stream::iter(files.into_iter().map(|(entry, path)| {
        let client = client.clone();
        let window = window.clone();
        let progress = progress.clone();
        async move {
            Download {
                client: &client,
                entry: &entry,
                path: &path,
                overwrite,
                window: &window,
                progress: &progress,
            }
            .run()
            .await
        }
    }))
    .buffer_unordered(PARALLEL_FILES);
    while let Some(r) = downloads.next().await {
        let (moved, reused) = r?;
        summary.bytes += moved;
        summary.reused += reused;
        summary.files += 1;
    }
    drop(downloads);
    finish_dirs(m, opts)?;
    Ok(summary)
}

/// Folders first (parents precede children in a manifest), writable until the end, and
/// symlinks.
fn make_dirs_and_links(m: &Manifest, opts: &ReceiveOptions, summary: &mut Summary) -> Result<()> {
    for e in m.entries() {
        let path = target(&opts.out, m, e.id);
        match m.kind(e.id) {
            Kind::Dir => {
                if opts.overwrite {
                    clear_for(&path, true)?;
                }
                if !path.is_dir() {
                    fs::create_dir(&path).ctx(|| format!("cannot create {}", path.display()))?;
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700 | safe_mode(e.mode)))
                    .ctx(|| format!("cannot set permissions of {}", path.display()))?;
                summary.dirs += 1;
            }
            Kind::Symlink => {
                let same = std::fs::read_link(&path)
                    .is_ok_and(|l| l.as_os_str().as_bytes() == e.target.as_slice());
                if !same {
                    if opts.overwrite {
                        clear_for(&path, false)?;
                    }
                    std::os::unix::fs::symlink(OsStr::from_bytes(&e.target), &path)
                        .ctx(|| format!("cannot create symlink {}", path.display()))?;
                }
                set_mtime(&path, e, true)?;
                summary.symlinks += 1;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Folder modes and times last, deepest first, since writing inside changes a folder's mtime.
fn finish_dirs(m: &Manifest, opts: &ReceiveOptions) -> Result<()> {
    for e in m
        .entries()
        .iter()
        .rev()
        .filter(|e| e.kind == Kind::Dir as i32)
    {
        let path = target(&opts.out, m, e.id);
        fs::set_permissions(&path, fs::Permissions::from_mode(safe_mode(e.mode)))
            .ctx(|| format!("cannot set permissions of {}", path.display()))?;
        set_mtime(&path, e, false)?;
    }
    Ok(())
}
