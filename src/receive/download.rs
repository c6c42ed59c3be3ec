//! One file: reuse it if it is already here, else resume or start its temporary file, fetch the
//! missing chunks (a bounded number in flight), check the whole file against the sender's
//! BLAKE3 hash, and only then give it its mode and time and move it into place.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::Semaphore;

use super::disk::{hash_local, join_err, open_part, part_name, safe_mode, set_file_times};
use super::resume::verify_prefix;
use super::{Progress, CHUNK, PER_FILE_CHUNKS};
use crate::error::{Error, IoContext, Result};
use crate::fetch::FileSource;
use crate::proto::Entry;

/// One file to download and what it shares with the others.
pub(super) struct Download<'a, S> {
    pub(super) client: &'a S,
    pub(super) entry: &'a Entry,
    pub(super) path: &'a Path,
    pub(super) overwrite: bool,
    /// Read requests in flight over the whole transfer.
    pub(super) window: &'a Arc<Semaphore>,
    pub(super) progress: &'a Progress,
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
            let part = self.part_path();
            if part.symlink_metadata().is_ok_and(|m| m.is_file()) {
                let _ = fs::remove_file(part);
            }
        }
        r
    }

    fn part_path(&self) -> PathBuf {
        let dir = self.path.parent().expect("targets are below out");
        dir.join(part_name(self.entry))
    }

    async fn run_inner(&self) -> Result<(u64, u64)> {
        let size = self.entry.size;
        if self.already_here().await? {
            self.progress.reused.fetch_add(size, Ordering::Relaxed);
            self.progress.files.fetch_add(1, Ordering::Relaxed);
            return Ok((0, size));
        }
        let part = self.part_path();
        let f = {
            let part = part.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || open_part(&part))
                    .await
                    .map_err(join_err)??,
            )
        };
        let mut hasher = blake3::Hasher::new();
        let reused = verify_prefix(self.client, self.entry, &f, &mut hasher).await?;
        self.progress.reused.fetch_add(reused, Ordering::Relaxed);
        let whole_in_one = reused == 0 && size <= CHUNK as u64;
        // Large files: ask for the hash at once, so the sender computes it while serving.
        let hash_req = (!whole_in_one && size > 0).then(|| {
            let client = self.client.clone();
            let id = self.entry.id;
            tokio::spawn(async move { client.hash(id).await })
        });
        let (written, got_hash) = self.fetch(&f, &part, &mut hasher, reused).await?;
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
        let same_size = self
            .path
            .symlink_metadata()
            .is_ok_and(|m| m.is_file() && m.len() == self.entry.size);
        if !same_size {
            return Ok(false);
        }
        let p = self.path.to_path_buf();
        let (ours, theirs) = futures::join!(
            tokio::task::spawn_blocking(move || hash_local(&p)),
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
        part: &Path,
        hasher: &mut blake3::Hasher,
        from: u64,
    ) -> Result<(u64, Option<[u8; 32]>)> {
        let (size, id) = (self.entry.size, self.entry.id);
        let mut got_hash = None;
        let mut next_off = from;
        let mut pending = FuturesOrdered::new();
        let mut written = 0u64;
        loop {
            while pending.len() < PER_FILE_CHUNKS && next_off < size {
                let len = (size - next_off).min(CHUNK as u64) as u32;
                let off = next_off;
                let client = self.client.clone();
                let permit = self
                    .window
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
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
                    self.path.display(),
                    data.len()
                )));
            }
            if h.is_some() {
                got_hash = h;
            }
            let (f, part2, data2) = (f.clone(), part.to_path_buf(), data.clone());
            let write = tokio::task::spawn_blocking(move || {
                f.write_all_at(&data2, off)
                    .ctx(|| format!("cannot write {}", part2.display()))
            });
            hasher.update(&data);
            write.await.map_err(join_err)??;
            written += data.len() as u64;
            self.progress
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Ok((written, got_hash))
    }

    /// Gives the verified temporary file its mode and time and moves it into place.
    async fn commit(&self, f: Arc<File>, part: PathBuf) -> Result<()> {
        let entry = self.entry.clone();
        let final_path = self.path.to_path_buf();
        let overwrite = self.overwrite;
        tokio::task::spawn_blocking(move || -> Result<()> {
            f.set_permissions(fs::Permissions::from_mode(safe_mode(entry.mode)))
                .ctx(|| format!("cannot set permissions of {}", part.display()))?;
            set_file_times(&f, &entry)
                .ctx(|| format!("cannot set the time of {}", part.display()))?;
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
        .map_err(join_err)?
    }
}
