//! The port every reader of a share goes through: [`FileSource`] gives file bytes and the
//! sender's hashes by file id. A [`Client`] is one (`pcp receive`); the mount wraps one that
//! reconnects (`Remote`) and copy-out reads through the mount's cache with another.

use std::future::Future;

use bytes::Bytes;

use super::Client;
use crate::error::Result;

/// A sender's answer to a `Seek` (SPEC §11.7), unchecked: the offset found, and where the file
/// changes between data and hole after it (none when the sender did not say).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeekAnswer {
    pub position: u64,
    pub edges: Vec<u64>,
}

/// Where file bytes come from.
pub trait FileSource: Clone + Send + Sync + 'static {
    /// `len` bytes of `file` at `offset`, and the whole-file hash if the sender attached it.
    fn read(
        &self,
        file: u64,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<(Bytes, Option<[u8; 32]>)>> + Send;
    /// Whether [`read_toward_hash`](Self::read_toward_hash) can bring the whole-file hash; a
    /// source without it is asked for the hash at once instead.
    const TOWARD_HASH: bool = false;
    /// [`read`](Self::read) by a reader going through the whole file from its start that will
    /// want its hash: the sender may put it together from the reads it serves and attach it
    /// to the one that completes it.
    fn read_toward_hash(
        &self,
        file: u64,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<(Bytes, Option<[u8; 32]>)>> + Send {
        self.read(file, offset, len)
    }
    /// The sender's BLAKE3 hash of `file`.
    fn hash(&self, file: u64) -> impl Future<Output = Result<[u8; 32]>> + Send;
    /// The sender's BLAKE3 hash of bytes `offset..offset+len` of `file` (resume checks).
    fn range_hash(
        &self,
        file: u64,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<[u8; 32]>> + Send;
    /// Where the next data (`hole` false) or hole of a sparse `file` begins at or after
    /// `offset`, as the sender's `lseek(2)` says: at most the file's size (no data after
    /// `offset`), unchecked, with the edges that follow. `None`: this source cannot tell (the
    /// caller then treats the whole file as data, as `lseek` may).
    fn seek(
        &self,
        _file: u64,
        _offset: u64,
        _hole: bool,
    ) -> impl Future<Output = Result<Option<SeekAnswer>>> + Send {
        async { Ok(None) }
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
    const TOWARD_HASH: bool = true;
    fn read_toward_hash(
        &self,
        file: u64,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<(Bytes, Option<[u8; 32]>)>> + Send {
        Client::read_toward_hash(self, file, offset, len)
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
    async fn seek(&self, file: u64, offset: u64, hole: bool) -> Result<Option<SeekAnswer>> {
        Client::seek(self, file, offset, hole).await.map(Some)
    }
}
