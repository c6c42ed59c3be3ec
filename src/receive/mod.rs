//! Copying a validated manifest to disk: files are written under `--out` only, through a
//! temporary name in the same folder ([`disk`]), checked against the sender's BLAKE3 hash and
//! only then renamed into place with their permission bits and mtime ([`download`]); an earlier
//! run's partial files are checked and continued ([`resume`]). `pcp receive` ([`run`]) and the
//! mount's copy-out share this code; bytes come from any [`FileSource`]. A share of one file
//! can go to a byte stream instead ([`to_stream`]: `--stdout`, text messages).

mod direct;
mod disk;
pub use disk::check_out_folder;
mod download;
mod resume;
pub(crate) mod run;
mod to_stream;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::StreamExt;
use tokio::sync::Semaphore;

use disk::{is_dir, is_file, is_symlink, safe_mode, Out, UNFINISHED};
use download::Download;

use crate::error::{Error, IoContext, Result};
use crate::fetch::FileSource;
use crate::manifest::Manifest;
use crate::proto::{Entry, Kind, MAX_READ};

/// Bytes per read request.
pub const CHUNK: u32 = MAX_READ;
/// Files downloaded at once.
const PARALLEL_FILES: usize = 64;
/// Bytes of read requests in flight over the whole transfer (bounds memory: at most this much
/// is asked for and not yet written), counted in [`WINDOW_UNIT`]s so small files can have many
/// requests out where big ones have 24 chunks.
const INFLIGHT_BYTES: u64 = 24 << 20;
const WINDOW_UNIT: u64 = 64 << 10;

/// Window units a request of `len` bytes holds while in flight.
fn window_units(len: u64) -> u32 {
    len.div_ceil(WINDOW_UNIT).max(1) as u32
}
/// Read requests in flight for one file: three per data stream. The sender interleaves its
/// streams, so with one request per stream they all completed together and the next ones went
/// out only then, leaving the link idle for a round trip every 8 MiB (20% of a 50 ms path);
/// with three each, a stream's first answer completes a third of the way through and its
/// replacement is asked for while two thirds are still on their way.
const PER_FILE_CHUNKS: usize = 24;

/// Counters a UI can poll while a transfer runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes moved over the network.
    pub bytes: AtomicU64,
    /// Bytes already here and verified (complete files and resumed prefixes).
    pub reused: AtomicU64,
    pub files: AtomicU64,
    /// Of `bytes`, runs of zeros the sender sent as their length (SPEC §11.3).
    pub zeros: AtomicU64,
}

impl Progress {
    /// `data` came over the network (runs of zeros sent as their length counted as such).
    pub(crate) fn moved(&self, data: &[u8]) {
        if crate::pages::is_counted_zeros(data) {
            self.zeros.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
    }

    /// Bytes on disk and verified so far: moved plus reused.
    pub fn kept(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed) + self.reused.load(Ordering::Relaxed)
    }
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

/// Where entry `id` goes under `out` (for messages; the disk is reached through [`Out`]).
fn target(out: &Path, m: &Manifest, id: u64) -> PathBuf {
    out.join(m.rel_path(id))
}

fn io_at(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

/// What is already under `out` for the share, as found before anything is written.
#[derive(Debug, Default)]
pub struct Existing {
    /// Top-level folders an interrupted receive of pcp left (they carry its marker): resumed,
    /// and everything in them is pcp's own.
    pub resumed: HashSet<u64>,
    /// Top-level names that were there and are not pcp's (only with `--overwrite`).
    pub foreign: HashSet<u64>,
}

/// Refuses to start, before anything is touched, when a top-level name of the share is taken
/// under `out` by something that is not the same thing, unless `overwrite`. Pcp never merges
/// into a folder it did not make: a top-level folder is taken unless it carries the marker of
/// an unfinished receive (which resumes). Files of the same size and the same symlinks may be
/// there from an earlier receive: files are compared with the sender's hash and kept when equal.
pub fn preflight(m: &Manifest, opts: &ReceiveOptions) -> Result<Existing> {
    let mut found = Existing::default();
    let out = match disk::Out::open(&opts.out) {
        Ok(out) => out,
        // Nothing there yet: created empty, nothing in the way.
        Err(_) if !opts.out.exists() => return Ok(found),
        Err(e) => return Err(e),
    };
    let root = out
        .dir(m, 0)
        .map_err(|e| io_at(&opts.out, "cannot open", e))?;
    for &id in m.children(0) {
        let e = m.get(id).expect("child exists");
        let t = target(&opts.out, m, id);
        let Some(st) = disk::stat(&root, &e.name).map_err(|err| io_at(&t, "cannot check", err))?
        else {
            continue;
        };
        // A folder is ours only if an unfinished receive marked it.
        let same = disk::fits(&root, e, &st)
            && (m.kind(id) != Kind::Dir
                || disk::open_dir(&root, &e.name)
                    .and_then(|d| disk::stat(&d, UNFINISHED.as_bytes()))
                    .is_ok_and(|mark| mark.as_ref().is_some_and(is_file)));
        if same && m.kind(id) == Kind::Dir {
            found.resumed.insert(id);
        } else if !same && opts.overwrite {
            found.foreign.insert(id);
        } else if !same {
            return Err(Error::TargetExists(t));
        }
    }
    if !opts.overwrite {
        check_resumed(m, opts, &out, &found)?;
    }
    Ok(found)
}

/// In the folders a receive left unfinished, what is there must be what an earlier run of the
/// same share wrote: folders, the same symlinks, files of the same size (compared by hash later).
fn check_resumed(m: &Manifest, opts: &ReceiveOptions, out: &Out, found: &Existing) -> Result<()> {
    for e in m.entries() {
        if e.parent == 0 || !found.resumed.contains(&top_of(m, e.id)) {
            continue;
        }
        let Ok(dir) = out.dir(m, e.parent) else {
            continue; // its folder is not there yet: neither is it
        };
        let t = target(&opts.out, m, e.id);
        let Some(st) = disk::stat(&dir, &e.name).map_err(|err| io_at(&t, "cannot check", err))?
        else {
            continue;
        };
        if !disk::fits(&dir, e, &st) {
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
    let existing = preflight(m, opts)?;
    fs::create_dir_all(&opts.out).ctx(|| format!("cannot create {}", opts.out.display()))?;
    let out = Out::open(&opts.out)?;
    let mut summary = Summary::default();
    let foreign_dirs = make_dirs_and_links(m, opts, &out, &existing, &mut summary)?;
    let window = Arc::new(Semaphore::new((INFLIGHT_BYTES / WINDOW_UNIT) as usize));
    // Owned work items: futures that borrow manifest entries are not Send in general enough a
    // way for a spawned copy-out.
    let files: Vec<Entry> = m
        .entries()
        .iter()
        .filter(|e| e.kind == Kind::File as i32)
        .cloned()
        .collect();
    let (out, window, progress) = (&out, &window, &progress);
    let mut downloads = futures::stream::iter(
        files
            .into_iter()
            .map(|entry| download_one(client.clone(), m, out, opts, entry, window, progress)),
    )
    .buffer_unordered(PARALLEL_FILES);
    while let Some(r) = downloads.next().await {
        let (moved, reused) = r?;
        summary.bytes += moved;
        summary.reused += reused;
        summary.files += 1;
    }
    drop(downloads);
    finish_dirs(m, opts, out, &foreign_dirs)?;
    Ok(summary)
}

async fn download_one<S: FileSource>(
    client: S,
    m: &Manifest,
    out: &Out,
    opts: &ReceiveOptions,
    entry: Entry,
    window: &Arc<Semaphore>,
    progress: &Arc<Progress>,
) -> Result<(u64, u64)> {
    let path = target(&opts.out, m, entry.id);
    let dir = out
        .dir(m, entry.parent)
        .map_err(|e| io_at(&path, "cannot open the folder of", e))?;
    Download {
        client: &client,
        entry: &entry,
        dir: &dir,
        path: &path,
        overwrite: opts.overwrite,
        window,
        progress,
    }
    .run()
    .await
}

/// Folders first (parents precede children in a manifest), owner-writable until the end, each
/// new top-level one with the marker of an unfinished receive; and symlinks. Returns the
/// folders that were there before and are not pcp's (their modes and times stay as they are).
fn make_dirs_and_links(
    m: &Manifest,
    opts: &ReceiveOptions,
    out: &Out,
    existing: &Existing,
    summary: &mut Summary,
) -> Result<HashSet<u64>> {
    let mut foreign = HashSet::new();
    for e in m.entries() {
        let path = target(&opts.out, m, e.id);
        let dir = out
            .dir(m, e.parent)
            .map_err(|err| io_at(&path, "cannot open the folder of", err))?;
        let st = disk::stat(&dir, &e.name).map_err(|err| io_at(&path, "cannot check", err))?;
        match m.kind(e.id) {
            Kind::Dir => {
                match st {
                    Some(st) if is_dir(&st) => {
                        // Ours if it is (below) a folder pcp left unfinished; else the user's,
                        // which only --overwrite lets us write into.
                        if !existing.resumed.contains(&top_of(m, e.id)) {
                            if !opts.overwrite {
                                return Err(Error::TargetExists(path));
                            }
                            foreign.insert(e.id);
                        }
                    }
                    Some(_) if opts.overwrite => {
                        disk::remove(&dir, &e.name)
                            .map_err(|err| io_at(&path, "cannot replace", err))?;
                        disk::mkdir(&dir, &e.name)
                            .map_err(|err| io_at(&path, "cannot create", err))?;
                    }
                    Some(_) => return Err(Error::TargetExists(path)),
                    None => disk::mkdir(&dir, &e.name)
                        .map_err(|err| io_at(&path, "cannot create", err))?,
                }
                if e.parent == 0 && !foreign.contains(&e.id) {
                    let d = out
                        .dir(m, e.id)
                        .map_err(|err| io_at(&path, "cannot open", err))?;
                    if let Err(err) = disk::create_new(&d, UNFINISHED.as_bytes()) {
                        if err.kind() != std::io::ErrorKind::AlreadyExists {
                            return Err(io_at(&path, "cannot mark", err));
                        }
                    }
                }
                summary.dirs += 1;
            }
            Kind::Symlink => {
                let same = st.is_some_and(|st| is_symlink(&st))
                    && disk::readlink(&dir, &e.name).is_ok_and(|l| l == e.target);
                if !same {
                    if st.is_some() {
                        if !opts.overwrite {
                            return Err(Error::TargetExists(path));
                        }
                        disk::remove(&dir, &e.name)
                            .map_err(|err| io_at(&path, "cannot replace", err))?;
                    }
                    disk::symlink(&e.target, &dir, &e.name)
                        .map_err(|err| io_at(&path, "cannot create symlink", err))?;
                }
                disk::set_time_at(&dir, &e.name, e)
                    .map_err(|err| io_at(&path, "cannot set the time of", err))?;
                summary.symlinks += 1;
            }
            _ => {}
        }
    }
    Ok(foreign)
}

/// The top-level entry that `id` is in (or is).
fn top_of(m: &Manifest, mut id: u64) -> u64 {
    while let Some(e) = m.get(id) {
        if e.parent == 0 {
            return id;
        }
        id = e.parent;
    }
    id
}

/// Removes the markers, then sets folder modes and times, deepest first (writing inside changes
/// a folder's mtime); folders that were the user's keep theirs.
fn finish_dirs(
    m: &Manifest,
    opts: &ReceiveOptions,
    out: &Out,
    foreign: &HashSet<u64>,
) -> Result<()> {
    for &id in m.children(0) {
        if m.kind(id) == Kind::Dir && !foreign.contains(&id) {
            let d = out
                .dir(m, id)
                .map_err(|e| io_at(&target(&opts.out, m, id), "cannot open", e))?;
            let _ = disk::unlink(&d, UNFINISHED.as_bytes());
        }
    }
    for e in m
        .entries()
        .iter()
        .rev()
        .filter(|e| e.kind == Kind::Dir as i32 && !foreign.contains(&e.id))
    {
        let path = target(&opts.out, m, e.id);
        let d = out
            .dir(m, e.id)
            .map_err(|err| io_at(&path, "cannot open", err))?;
        disk::set_mode(&d, safe_mode(e.mode))
            .map_err(|err| io_at(&path, "cannot set permissions of", err))?;
        disk::set_time(&d, e).map_err(|err| io_at(&path, "cannot set the time of", err))?;
    }
    Ok(())
}
