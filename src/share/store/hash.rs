//! File hashes: BLAKE3 computed on demand and kept, for free when a read covers a whole file,
//! or put together from the reads a receive makes ([`super::super::tree_hash`]).

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::{fail, HashCell, Share};
use crate::proto::{ErrorCode, Failure, MAX_RANGE_HASH};
use crate::share::tree_hash::TreeHash;

impl Share {
    /// Records the hash of file `id`, known beforehand (a spool hashes what it reads).
    pub(crate) fn set_hash(&self, id: u64, hash: [u8; 32]) {
        let _ = self.cell(id).set(hash);
    }

    pub(super) fn cell(&self, id: u64) -> HashCell {
        self.hashes
            .lock()
            .expect("lock")
            .entry(id)
            .or_default()
            .clone()
    }

    /// For a read whose receiver will want the file's hash (`Read.hash`): adds its bytes to
    /// the hash being put together from served reads. Returns the file's hash when this read
    /// completed it, or when it was known already and this is the file's last read.
    pub(super) fn toward_hash(&self, id: u64, offset: u64, data: &[u8]) -> Option<[u8; 32]> {
        let size = self.source(id).ok()?.size;
        let cell = self.cell(id);
        if let Some(h) = cell.get() {
            return (offset + data.len() as u64 == size).then_some(*h);
        }
        let (index, cv) = TreeHash::subtree(size, offset, data)?;
        let mut trees = self.trees.lock().expect("lock");
        let tree = trees.get_or_insert_mut(id, || {
            TreeHash::new(size).expect("a file of one subtree has none")
        });
        let hash = tree.add(index, cv)?;
        trees.pop(&id);
        drop(trees);
        let _ = cell.set(hash);
        Some(hash)
    }

    /// BLAKE3 of file `id`, computed once on first demand.
    pub async fn hash(self: &Arc<Self>, id: u64) -> std::result::Result<[u8; 32], Failure> {
        self.source(id)?;
        let cell = self.cell(id);
        let me = self.clone();
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || me.hash_blocking(id))
                .await
                .map_err(|e| fail(ErrorCode::Io, e.to_string()))?
        })
        .await
        .copied()
    }

    pub(super) fn hash_blocking(&self, id: u64) -> std::result::Result<[u8; 32], Failure> {
        let f = self.file(id)?;
        self.check_unchanged(id, &f)?;
        let size = self.source(id)?.size;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        loop {
            let n = self.read_or_hole(id, &f, &mut buf, off, size)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        self.check_unchanged(id, &f)?;
        if off != size {
            return Err(fail(ErrorCode::Changed, "file size changed on the sender"));
        }
        Ok(h.finalize().into())
    }

    /// Up to `buf.len()` bytes of file `id` at `off` (0 at the end, by the manifest's `size`):
    /// zeros without reading where they lie in a hole of a sparse file (reading a hole fills
    /// the page cache with pages of zeros), else read.
    fn read_or_hole(
        &self,
        id: u64,
        f: &std::fs::File,
        buf: &mut [u8],
        off: u64,
        size: u64,
    ) -> std::result::Result<usize, Failure> {
        let n = (size.saturating_sub(off) as usize).min(buf.len());
        if self.in_hole(id, f, off, n as u64) {
            buf[..n].fill(0);
            return Ok(n);
        }
        f.read_at(buf, off)
            .map_err(|e| fail(ErrorCode::Io, format!("read failed: {e}")))
    }

    /// BLAKE3 of bytes `offset..offset+len` of file `id` (blocking).
    pub(super) fn range_hash(
        &self,
        id: u64,
        offset: u64,
        len: u64,
    ) -> std::result::Result<[u8; 32], Failure> {
        let src = self.source(id)?;
        if len > MAX_RANGE_HASH || offset.checked_add(len).is_none_or(|end| end > src.size) {
            return Err(fail(ErrorCode::BadRange, "range out of bounds"));
        }
        let f = self.file(id)?;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; (1usize << 20).min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let want = ((len - done) as usize).min(buf.len());
            let n = self.read_or_hole(id, &f, &mut buf[..want], offset + done, src.size)?;
            if n == 0 {
                return Err(fail(ErrorCode::Changed, "file shrank on the sender"));
            }
            h.update(&buf[..n]);
            done += n as u64;
        }
        self.check_unchanged(id, &f)?;
        Ok(h.finalize().into())
    }
}
