//! Copying a validated manifest to disk: files are written under `--out` only, through a
//! temporary name in the same folder, checked against the sender's BLAKE3 hash and only then
//! renamed into place with their permission bits and mtime. `pcp receive` and the mount's
//! copy-out share this code.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::Semaphore;

use crate::error::{Error, IoContext, Result};
use crate::fetch::Client;
use crate::manifest::Manifest;
use crate::wire::{Entry, Kind, MAX_READ};

/// Bytes per read request.
pub const CHUNK: u32 = MAX_READ;
/// Files downloaded at once.
const PARALLEL_FILES: usize = 64;
/// Read requests in flight over the whole transfer (bounds memory: at most this many chunks).
const INFLIGHT_CHUNKS: usize = 24;
/// Read requests in flight for one file.
const PER_FILE_CHUNKS: usize = 8;

/// Where file bytes come from: a [`Client`] directly (`pcp receive`) or the mount's cache
/// (copy-out), so both share this one implementation.
pub trait FileSource: Clone + Send + Sync + 'static {
    /// `len` bytes of `file` at `offset`, and the whole-file hash if the sender attached it.
    fn read(
        &self,
        file: u64,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<(Bytes, Option<[u8; 32]>)>> + Send;
    /// The sender's BLAKE3 hash of `file`.
    fn hash(&self, file: u64) -> impl Future<Output = Result<[u8; 32]>> + Send;
    /// The sender's BLAKE3 hash of bytes `offset..offset+len` of `file` (resume checks).
    fn range_hash(
        &self,
        file: u64,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<[u8; 32]>> + Send;
    /// A request sent at `since` got no answer in time: the connection may be dead (a hint to
    /// reconnect).
    fn stalled(&self, since: std::time::Instant) {
        let _ = since;
    }
}

impl FileSource for Client {
    fn read(
        &self,
        file: u64,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<(Bytes, Option<[u8; 32]>)>> + Send {
        Client::read(self, file, offset, len)
    }
    fn hash(&self, file: u64) -> impl Future<Output = Result<[u8; 32]>> + Send {
        Client::hash(self, file)
    }
    fn range_hash(
        &self,
        file: u64,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<[u8; 32]>> + Send {
        Client::range_hash(self, file, offset, len)
    }
}

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

/// Permission bits to apply: the sender's, without setuid and setgid (a received file must not
/// gain privileges on this machine).
fn safe_mode(mode: u32) -> u32 {
    mode & 0o1777
}

/// Where entry `id` goes under `out`.
fn target(out: &Path, m: &Manifest, id: u64) -> PathBuf {
    out.join(m.rel_path(id))
}

/// The temporary name a file is written under, next to its final place (reserved: see
/// `manifest::is_temp_name`). Derived from the name alone, so a later share of the same files
/// finds it again and resumes.
fn part_name(e: &Entry) -> std::ffi::OsString {
    let h = blake3::hash(&e.name);
    let hex: String = h.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(".pcp-{hex}.part").into()
}

/// Resumed data is checked against the sender in pieces of this size.
const RESUME_PIECE: u64 = 16 << 20;

fn set_mtime(path: &Path, e: &Entry, nofollow: bool) -> Result<()> {
    let ts = libc::timespec {
        tv_sec: e.mtime_sec as libc::time_t,
        tv_nsec: e.mtime_nsec as libc::c_long,
    };
    let times = [ts, ts];
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::io("bad path", std::io::Error::other("NUL in path")))?;
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: c is a valid NUL-terminated path and times points at two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) };
    if r != 0 {
        return Err(Error::io(
            format!("cannot set the time of {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn set_file_times(f: &File, e: &Entry) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ts = libc::timespec {
        tv_sec: e.mtime_sec as libc::time_t,
        tv_nsec: e.mtime_nsec as libc::c_long,
    };
    let times = [ts, ts];
    // SAFETY: the fd is open for the duration of the call; times points at two timespecs.
    if unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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

/// BLAKE3 of a local file (blocking).
fn hash_local(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let f = File::open(path)?;
    h.update_reader(f)?;
    Ok(*h.finalize().as_bytes())
}

/// Removes whatever is at `path` when it is in the way of an entry of another kind.
fn clear_for(path: &Path, want_dir: bool) -> Result<()> {
    match path.symlink_metadata() {
        Ok(md) if md.is_dir() && want_dir => Ok(()),
        Ok(md) if md.is_dir() => {
            fs::remove_dir_all(path).ctx(|| format!("cannot replace {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).ctx(|| format!("cannot replace {}", path.display())),
        Err(_) => Ok(()),
    }
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
    // Folders first (parents precede children in a manifest), writable until the end.
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
    let window = Arc::new(Semaphore::new(INFLIGHT_CHUNKS));
    // Owned work items: the download futures must not borrow the manifest (they are spawned).
    let files: Vec<(Entry, PathBuf)> = m
        .entries()
        .iter()
        .filter(|e| e.kind == Kind::File as i32)
        .map(|e| (e.clone(), target(&opts.out, m, e.id)))
        .collect();
    let overwrite = opts.overwrite;
    let mut downloads = futures::stream::iter(files.into_iter().map(|(e, path)| {
        let client = client.clone();
        let window = window.clone();
        let progress = progress.clone();
        async move { download(&client, &e, &path, overwrite, &window, &progress).await }
    }))
    .buffer_unordered(PARALLEL_FILES);
    while let Some(r) = downloads.next().await {
        let (moved, reused) = r?;
        summary.bytes += moved;
        summary.reused += reused;
        summary.files += 1;
    }
    drop(downloads);
    // Folder modes and times last, deepest first, since writing inside changes a folder's mtime.
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
    Ok(summary)
}

/// Downloads one file to its temporary name, verifies it and moves it into place; returns the
/// bytes moved over the network and the bytes found already here. A file that fails
/// verification leaves nothing behind; any other failure, or an interruption, keeps the
/// temporary file, whose data a later receive checks and resumes from. Nothing ever appears
/// under the final name unverified.
async fn download<S: FileSource>(
    client: &S,
    e: &Entry,
    path: &Path,
    overwrite: bool,
    window: &Arc<Semaphore>,
    progress: &Progress,
) -> Result<(u64, u64)> {
    let r = download_inner(client, e, path, overwrite, window, progress).await;
    if let Err(Error::Integrity(_)) = &r {
        let part = path.parent().expect("below out").join(part_name(e));
        if part.symlink_metadata().is_ok_and(|m| m.is_file()) {
            let _ = fs::remove_file(part);
        }
    }
    r
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::io("worker task", std::io::Error::other(e))
}

/// Opens the temporary file without following symlinks; keeps what an earlier run left in it.
fn open_part(part: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(part)
        .ctx(|| format!("cannot create {}", part.display()))
}

/// Checks the data an earlier run left in `f` against the sender, piece by piece, and returns
/// how much of it is good, with `hasher` fed that much. The rest is cut off.
async fn verify_prefix<S: FileSource>(
    client: &S,
    e: &Entry,
    f: &Arc<File>,
    hasher: &mut blake3::Hasher,
) -> Result<u64> {
    let have = f.metadata().map(|m| m.len()).unwrap_or(0).min(e.size);
    let mut good = 0u64;
    while good < have {
        let len = (have - good).min(RESUME_PIECE);
        let theirs = client.range_hash(e.id, good, len);
        let (f2, start) = (f.clone(), good);
        let mut h2 = hasher.clone();
        let ours =
            tokio::task::spawn_blocking(move || -> std::io::Result<(blake3::Hasher, [u8; 32])> {
                let mut piece = blake3::Hasher::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut done = 0u64;
                while done < len {
                    let want = ((len - done) as usize).min(1 << 20);
                    let n = f2.read_at(&mut buf[..want], start + done)?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    piece.update(&buf[..n]);
                    h2.update(&buf[..n]);
                    done += n as u64;
                }
                Ok((h2, *piece.finalize().as_bytes()))
            });
        let (theirs, ours) = futures::join!(theirs, ours);
        let Ok(Ok((h2, ours))) = ours else { break };
        if theirs? != ours {
            break;
        }
        *hasher = h2;
        good += len;
    }
    f.set_len(good)
        .ctx(|| "cannot truncate a partial file".to_string())?;
    Ok(good)
}

async fn download_inner<S: FileSource>(
    client: &S,
    e: &Entry,
    path: &Path,
    overwrite: bool,
    window: &Arc<Semaphore>,
    progress: &Progress,
) -> Result<(u64, u64)> {
    let size = e.size;
    // Already here from an earlier run? Keep it if it is the sender's file.
    if path
        .symlink_metadata()
        .is_ok_and(|m| m.is_file() && m.len() == size)
    {
        let p = path.to_path_buf();
        let (ours, theirs) = futures::join!(
            tokio::task::spawn_blocking(move || hash_local(&p)),
            client.hash(e.id)
        );
        if ours.map_err(join_err)?.ok() == Some(theirs?) {
            progress.reused.fetch_add(size, Ordering::Relaxed);
            progress.files.fetch_add(1, Ordering::Relaxed);
            return Ok((0, size));
        }
        if !overwrite {
            return Err(Error::TargetExists(path.to_path_buf()));
        }
    }
    let dir = path.parent().expect("targets are below out").to_path_buf();
    let part = dir.join(part_name(e));
    let f = {
        let part = part.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || open_part(&part))
                .await
                .map_err(join_err)??,
        )
    };
    let mut hasher = blake3::Hasher::new();
    let reused = verify_prefix(client, e, &f, &mut hasher).await?;
    progress.reused.fetch_add(reused, Ordering::Relaxed);
    let whole_in_one = reused == 0 && size <= CHUNK as u64;
    // Large files: ask for the hash at once, so the sender computes it while serving.
    let hash_req = (!whole_in_one && size > 0).then(|| {
        let client = client.clone();
        let id = e.id;
        tokio::spawn(async move { client.hash(id).await })
    });
    let mut got_hash = None;
    let mut next_off = reused;
    let mut pending = FuturesOrdered::new();
    let mut written = 0u64;
    loop {
        while pending.len() < PER_FILE_CHUNKS && next_off < size {
            let len = (size - next_off).min(CHUNK as u64) as u32;
            let off = next_off;
            let client = client.clone();
            let permit = window.clone().acquire_owned().await.expect("never closed");
            let id = e.id;
            pending.push_back(async move {
                let r = client.read(id, off, len).await;
                drop(permit);
                r.map(|(d, h)| (off, len, d, h))
            });
            next_off += len as u64;
        }
        let Some(r) = pending.next().await else { break };
        let (off, len, data, h) = r?;
        if data.len() != len as usize {
            return Err(Error::InvalidManifest(format!(
                "{}: the sender sent {} bytes at offset {off} where the manifest promised {len}",
                path.display(),
                data.len()
            )));
        }
        if h.is_some() {
            got_hash = h;
        }
        let f = f.clone();
        let part2 = part.clone();
        let data2 = data.clone();
        let write = tokio::task::spawn_blocking(move || {
            f.write_all_at(&data2, off)
                .ctx(|| format!("cannot write {}", part2.display()))
        });
        hasher.update(&data);
        write.await.map_err(join_err)??;
        written += data.len() as u64;
        progress
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    let want = match (got_hash, hash_req) {
        // An empty file's content is fully given by the manifest.
        _ if size == 0 => *blake3::hash(b"").as_bytes(),
        (Some(h), _) => h,
        (None, Some(task)) => task.await.map_err(join_err)??,
        (None, None) => client.hash(e.id).await?,
    };
    if *hasher.finalize().as_bytes() != want {
        return Err(Error::Integrity(path.to_path_buf()));
    }
    let entry = e.clone();
    let final_path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        f.set_permissions(fs::Permissions::from_mode(safe_mode(entry.mode)))
            .ctx(|| format!("cannot set permissions of {}", part.display()))?;
        set_file_times(&f, &entry).ctx(|| format!("cannot set the time of {}", part.display()))?;
        match final_path.symlink_metadata() {
            Ok(md) if md.is_dir() && overwrite => fs::remove_dir_all(&final_path)
                .ctx(|| format!("cannot replace {}", final_path.display()))?,
            Ok(_) if !overwrite => return Err(Error::TargetExists(final_path)),
            _ => {}
        }
        fs::rename(&part, &final_path)
            .ctx(|| format!("cannot move {} into place", final_path.display()))
    })
    .await
    .map_err(join_err)??;
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok((written, reused))
}
