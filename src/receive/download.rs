//! One file: reuse it if it is already here, else resume or start its temporary file, fetch the
//! missing chunks (a bounded number in flight), check the whole file against the sender's
//! BLAKE3 hash, and only then give it its mode and time and move it into place.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::Semaphore;

use super::direct::DirectWriter;
use super::disk::{self, join_err, part_name, safe_mode};
use super::resume::verify_prefix;
use super::{window_units, Progress, CHUNK, PER_FILE_CHUNKS};
use crate::error::{Error, IoContext, Result};
use crate::fetch::FileSource;
use crate::proto::Entry;

/// The most bytes one direct write takes: pieces that arrive while the disk is busy with the
/// last are held back (up to this, less the piece that then comes) to go with the next.
const DIRECT_BATCH: usize = 4 << 20;

/// Bytes of received pieces held back for the disk, over all files at once.
static HELD: AtomicUsize = AtomicUsize::new(0);
/// The most bytes [`HELD`] may reach: beyond it, pieces go through the page cache.
const HELD_MAX: usize = 16 << 20;

/// A share of [`HELD`], given back when dropped.
#[derive(Default)]
struct Held(usize);

impl Held {
    /// Takes `n` more bytes, if all files together stay within [`HELD_MAX`].
    fn grow(&mut self, n: usize) -> bool {
        if HELD.fetch_add(n, Ordering::Relaxed) + n > HELD_MAX {
            HELD.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        self.0 += n;
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// A direct write's writer, given back, and its outcome.
type DirectWrite = (DirectWriter, Result<()>);

/// Waits for the direct write in flight, if any, and gives the writer back.
async fn landed(w: Option<tokio::task::JoinHandle<DirectWrite>>) -> Result<Option<DirectWriter>> {
    let Some(w) = w else { return Ok(None) };
    let (w, r) = w.await.map_err(join_err)?;
    r?;
    Ok(Some(w))
}

/// One file to download and what it shares with the others.
pub(super) struct Download<'a, S> {
    pub(super) client: &'a S,
    pub(super) entry: &'a Entry,
    /// The folder it goes in, opened below `--out`.
    pub(super) dir: &'a Arc<File>,
    /// Where it goes, for messages.
    pub(super) path: &'a Path,
    pub(super) overwrite: bool,
    /// Read requests in flight over the whole transfer.
    pub(super) window: &'a Arc<Semaphore>,
    pub(super) progress: &'a Arc<Progress>,
}

impl<S: FileSource> Download<'_, S> {
    /// Downloads the file to its temporary name, verifies it and moves it into place; returns
    /// the bytes moved over the network and the bytes found already here. A file that fails
    /// verification leaves nothing behind; any other failure, or an interruption, keeps the
    /// temporary file, whose data a later receive checks and resumes from. Nothing ever appears
    /// under the final name unverified.
    pub(super) async fn run(&self) -> Result<(u64, u64)> {
        let r = self.run_inner().await;
        if let Err(Error::Integrity(_)) = &r {
            let _ = disk::unlink(self.dir, &part_name(self.entry));
        }
        r
    }

    /// A response of `got` bytes to a read of `len` at `off` that the manifest says is whole.
    fn wrong_length(&self, got: usize, off: u64, len: u64) -> Error {
        Error::InvalidManifest(format!(
            "{}: the sender sent {got} bytes at offset {off} where the manifest promised {len}",
            self.path.display()
        ))
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} {}", self.path.display()), e)
    }

    async fn run_inner(&self) -> Result<(u64, u64)> {
        let size = self.entry.size;
        if self.already_here().await? {
            self.progress.reused.fetch_add(size, Ordering::Relaxed);
            self.progress.files.fetch_add(1, Ordering::Relaxed);
            return Ok((0, size));
        }
        let part = part_name(self.entry);
        if size > 0 && size <= CHUNK as u64 {
            return self.small(part).await.map(|n| (n, 0));
        }
        let f = {
            let (dir, part) = (self.dir.clone(), part.clone());
            let f = tokio::task::spawn_blocking(move || disk::open_part(&dir, &part))
                .await
                .map_err(join_err)?;
            Arc::new(f.map_err(|e| self.io("cannot create the temporary file of", e))?)
        };
        let mut hasher = blake3::Hasher::new();
        let reused = verify_prefix(self.client, self.entry, &f, &mut hasher).await?;
        self.progress.reused.fetch_add(reused, Ordering::Relaxed);
        // The space for the rest, before any of it is asked for: a full disk is said now. A
        // sparse file's holes stay holes: only the room for its data is looked for.
        let f2 = f.clone();
        let (sparse, need) = match self.entry.allocated {
            Some(a) if self.entry.sparse() => (true, a.saturating_sub(reused)),
            _ => (false, size - reused),
        };
        tokio::task::spawn_blocking(move || match sparse {
            true => disk::room_for(&f2, need),
            false => disk::reserve(&f2, reused, size),
        })
        .await
        .map_err(join_err)?
        .map_err(|e| {
            let need = crate::text::human_bytes(need);
            self.io(&format!("cannot reserve {need} on disk for"), e)
        })?;
        // Read from the start, the sender puts the hash together from the reads it serves
        // and sends it with the one that completes it; otherwise it is asked for at once, so
        // the sender computes it while serving.
        let toward_hash = S::TOWARD_HASH && reused == 0;
        let whole_in_one = reused == 0 && size <= CHUNK as u64;
        let hash_req = (!toward_hash && !whole_in_one && size > 0).then(|| {
            let client = self.client.clone();
            let id = self.entry.id;
            tokio::spawn(async move { client.hash(id).await })
        });
        let (written, got_hash) = self.fetch(&f, &mut hasher, reused, toward_hash).await?;
        let want = match (got_hash, hash_req) {
            // An empty file's content is fully given by the manifest.
            _ if size == 0 => *blake3::hash(b"").as_bytes(),
            (Some(h), _) => h,
            (None, Some(task)) => task.await.map_err(join_err)??,
            (None, None) => self.client.hash(self.entry.id).await?,
        };
        if *hasher.finalize().as_bytes() != want {
            return Err(Error::Integrity(self.path.to_path_buf()));
        }
        self.commit(f, part).await?;
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok((written, reused))
    }

    /// Whether the file is already here from an earlier run and is the sender's file; a
    /// different file of the same size is in the way unless `overwrite`.
    async fn already_here(&self) -> Result<bool> {
        let name = &self.entry.name;
        let same_size = disk::stat(self.dir, name)
            .ok()
            .flatten()
            .is_some_and(|st| disk::is_file(&st) && st.st_size as u64 == self.entry.size);
        if !same_size {
            return Ok(false);
        }
        let (dir, n) = (self.dir.clone(), name.clone());
        let (ours, theirs) = futures::join!(
            tokio::task::spawn_blocking(move || disk::open_file(&dir, &n).and_then(disk::hash_file)),
            self.client.hash(self.entry.id)
        );
        if ours.map_err(join_err)?.ok() == Some(theirs?) {
            return Ok(true);
        }
        if !self.overwrite {
            return Err(Error::TargetExists(self.path.to_path_buf()));
        }
        Ok(false)
    }

    /// Fetches bytes `from..size` into `f`, feeding `hasher` in order; returns the bytes
    /// written and the whole-file hash if the sender attached one.
    async fn fetch(
        &self,
        f: &Arc<File>,
        hasher: &mut blake3::Hasher,
        from: u64,
        toward_hash: bool,
    ) -> Result<(u64, Option<[u8; 32]>)> {
        let (size, id) = (self.entry.size, self.entry.id);
        let mut got_hash = None;
        let mut next_off = from;
        let mut pending = FuturesOrdered::new();
        let mut written = 0u64;
        // The direct writer when idle; while it writes, the pieces that arrive go through the
        // page cache: the disk takes what it can, the page cache the rest (see `direct`).
        let mut direct = {
            let f = f.clone();
            tokio::task::spawn_blocking(move || DirectWriter::open(&f))
                .await
                .map_err(join_err)?
        };
        let mut in_flight: Option<tokio::task::JoinHandle<DirectWrite>> = None;
        let (mut went_direct, mut went_cached) = (0u64, 0u64);
        // Pieces held back while the disk was busy, from `held_off` on, and their share of
        // the bytes all files may hold.
        let (mut held, mut held_off) = (Vec::<Bytes>::new(), 0u64);
        let mut budget = Held::default();
        // A download that fails still writes what it held back before it returns; one that is
        // cancelled loses it, but direct pieces count as received only once they are on the
        // disk (`write_direct`), so what an interrupted receive says it keeps is there.
        let run: Result<()> = async {
            loop {
                while pending.len() < PER_FILE_CHUNKS && next_off < size {
                    let len = (size - next_off).min(CHUNK as u64) as u32;
                    let off = next_off;
                    let client = self.client.clone();
                    // Wait for a place only while holding none: a file that waited with requests
                    // of its own not yet sent (they go out when polled) could hold places that
                    // every other file waits for, and nothing would move.
                    let units = window_units(len as u64);
                    let permit = if pending.is_empty() {
                        self.window
                            .clone()
                            .acquire_many_owned(units)
                            .await
                            .expect("never closed")
                    } else {
                        match self.window.clone().try_acquire_many_owned(units) {
                            Ok(p) => p,
                            Err(_) => break,
                        }
                    };
                    pending.push_back(async move {
                        let r = if toward_hash {
                            client.read_toward_hash(id, off, len).await
                        } else {
                            client.read(id, off, len).await
                        };
                        drop(permit);
                        r.map(|(d, h)| (off, len, d, h))
                    });
                    next_off += len as u64;
                }
                let Some(r) = pending.next().await else { break };
                let (off, len, data, h) = r?;
                if data.len() != len as usize {
                    return Err(self.wrong_length(data.len(), off, len as u64));
                }
                if h.is_some() {
                    got_hash = h;
                }
                if in_flight.as_ref().is_some_and(|w| w.is_finished()) {
                    direct = landed(in_flight.take()).await?;
                }
                // A run of zeros (the sender's hole, or zeros it had written) becomes a hole here
                // too, where the filesystem can make one: no disk space, no write.
                let hole = data.len() >= crate::pages::ZERO_RUN
                    && (crate::pages::is_counted_zeros(&data) || crate::pages::is_zero(&data));
                let held_bytes = |held: &[Bytes]| held.iter().map(Bytes::len).sum::<usize>();
                let joins = |held: &[Bytes]| held_off + held_bytes(held) as u64 == off;
                if !hole && direct.is_some() && !held.is_empty() && !joins(&held) {
                    // The held pieces cannot take this one along: they go alone.
                    let w = direct.take().expect("checked");
                    in_flight = Some(self.write_direct(w, f, &mut held, held_off, &mut budget));
                }
                // To the disk at once when it is idle; while it is busy, held back to go with
                // the next piece in one bigger write, within the bounds; else the page cache.
                let to_disk = !hole
                    && (direct.is_some()
                        || (in_flight.is_some()
                            && (held.is_empty() || joins(&held))
                            && held_bytes(&held) + data.len() < DIRECT_BATCH
                            && budget.grow(data.len())));
                if to_disk {
                    if held.is_empty() {
                        held_off = off;
                    }
                    held.push(data.clone());
                    went_direct += data.len() as u64;
                    if let Some(w) = direct.take() {
                        in_flight = Some(self.write_direct(w, f, &mut held, held_off, &mut budget));
                    }
                    hasher.update(&data);
                } else {
                    went_cached += if hole { 0 } else { data.len() as u64 };
                    let (f, path, data2) = (f.clone(), self.path.to_path_buf(), data.clone());
                    let write = tokio::task::spawn_blocking(move || {
                        match hole && disk::hole(&f, off, data2.len() as u64).unwrap_or(false) {
                            true => Ok(()),
                            false => f.write_all_at(&data2, off),
                        }
                        .ctx(|| format!("cannot write {}", path.display()))
                    });
                    hasher.update(&data);
                    write.await.map_err(join_err)??;
                    self.progress.moved(&data);
                }
                written += data.len() as u64;
            }
            Ok(())
        }
        .await;
        let settled = async {
            if let Some(w) = landed(in_flight).await? {
                direct = Some(w);
            }
            if !held.is_empty() {
                // What the disk was still busy for when the last piece came.
                let w = direct.unwrap_or_else(DirectWriter::unavailable);
                let write = self.write_direct(w, f, &mut held, held_off, &mut budget);
                landed(Some(write)).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        run?;
        settled?;
        tracing::debug!(
            "{}: {} MiB written around the page cache, {} MiB through it",
            crate::text::printable(&self.path.display().to_string()),
            went_direct >> 20,
            went_cached >> 20
        );
        Ok((written, got_hash))
    }

    /// Starts the direct write of the `held` pieces, from `off`, taking them and their
    /// share of the budget along; their bytes count as received once written (not before:
    /// what an interrupted receive says it keeps is on the disk).
    fn write_direct(
        &self,
        mut w: DirectWriter,
        f: &Arc<File>,
        held: &mut Vec<Bytes>,
        off: u64,
        budget: &mut Held,
    ) -> tokio::task::JoinHandle<DirectWrite> {
        let (f, path, progress) = (f.clone(), self.path.to_path_buf(), self.progress.clone());
        let (pieces, budget) = (std::mem::take(held), std::mem::take(budget));
        tokio::task::spawn_blocking(move || {
            let r = w.write_pieces(&f, &pieces, off);
            drop(budget);
            if r.is_ok() {
                pieces.iter().for_each(|p| progress.moved(p));
            }
            (w, r.ctx(|| format!("cannot write {}", path.display())))
        })
    }

    /// A file that one read covers: fetched and checked against its hash before anything is
    /// written, then created, written, given its mode and time and moved into place in one
    /// hand-off to the blocking pool (not three). It is created without a name and linked
    /// into place once whole, where the file system allows (one change to the folder, and
    /// none while the file system looks for a free inode: with 64 files at once in one folder,
    /// the threads waiting on the folder's lock spun for a third of the receiver's CPU); else,
    /// and with --overwrite, through the temporary name, which an earlier run may have left
    /// and which is simply rewritten: there is nothing worth resuming in one read.
    async fn small(&self, part: Vec<u8>) -> Result<u64> {
        let (size, id) = (self.entry.size, self.entry.id);
        let permit = self
            .window
            .acquire_many(window_units(size))
            .await
            .expect("never closed");
        let (data, hash) = self.client.read(id, 0, size as u32).await?;
        drop(permit);
        if data.len() as u64 != size {
            return Err(self.wrong_length(data.len(), 0, size));
        }
        let want = match hash {
            Some(h) => h,
            None => self.client.hash(id).await?,
        };
        if *blake3::hash(&data).as_bytes() != want {
            return Err(Error::Integrity(self.path.to_path_buf()));
        }
        let (entry, dir, path) = (
            self.entry.clone(),
            self.dir.clone(),
            self.path.to_path_buf(),
        );
        let overwrite = self.overwrite;
        let moved = data.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let at = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
            // Without a name until it is whole, where the file system allows; with
            // --overwrite through the temporary name and a rename over what is there.
            if let Some(f) = (!overwrite).then(|| disk::unnamed(&dir)).flatten() {
                f.write_all_at(&data, 0)
                    .map_err(|e| at("cannot write", e))?;
                disk::set_mode(&f, safe_mode(entry.mode))
                    .map_err(|e| at("cannot set permissions of", e))?;
                disk::set_time(&f, &entry).map_err(|e| at("cannot set the time of", e))?;
                match disk::link_new(&f, &dir, &entry.name) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(Error::TargetExists(path.to_path_buf()))
                    }
                    // No /proc to name it through: the named way below.
                    Err(_) => {}
                }
            }
            let f = disk::open_empty_part(&dir, &part)
                .map_err(|e| at("cannot create the temporary file of", e))?;
            f.write_all_at(&data, 0)
                .map_err(|e| at("cannot write", e))?;
            commit_blocking(&f, &dir, &part, &entry, &path, overwrite)
        })
        .await
        .map_err(join_err)??;
        self.progress.moved(&moved);
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(size)
    }

    /// Gives the verified temporary file its mode and time and moves it into place (over an
    /// existing file only with `--overwrite`).
    async fn commit(&self, f: Arc<File>, part: Vec<u8>) -> Result<()> {
        let entry = self.entry.clone();
        let path = self.path.to_path_buf();
        let dir = self.dir.clone();
        let overwrite = self.overwrite;
        tokio::task::spawn_blocking(move || {
            commit_blocking(&f, &dir, &part, &entry, &path, overwrite)
        })
        .await
        .map_err(join_err)?
    }
}

/// [`Download::commit`] on a blocking thread.
fn commit_blocking(
    f: &File,
    dir: &File,
    part: &[u8],
    entry: &Entry,
    path: &Path,
    overwrite: bool,
) -> Result<()> {
    let at = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    disk::set_mode(f, safe_mode(entry.mode)).map_err(|e| at("cannot set permissions of", e))?;
    disk::set_time(f, entry).map_err(|e| at("cannot set the time of", e))?;
    // Without --overwrite the rename refuses a taken name by itself (RENAME_NOREPLACE).
    if overwrite {
        let taken = disk::stat(dir, &entry.name).map_err(|e| at("cannot check", e))?;
        if let Some(st) = taken {
            if disk::is_dir(&st) {
                disk::remove(dir, &entry.name).map_err(|e| at("cannot replace", e))?
            }
        }
    }
    disk::rename(dir, part, &entry.name, overwrite).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::TargetExists(path.to_path_buf())
        } else {
            at("cannot move into place", e)
        }
    })
}
