//! Copy-out: the whole tree downloaded into a local folder while it stays mounted, through the
//! mount's cache and request pipeline (so a file read by both is fetched once). It is a
//! receive whose [`FileSource`] is the mount.

use std::sync::Arc;

use bytes::Bytes;

use super::fs::MountFs;
use crate::error::Result;
use crate::fetch::FileSource;

/// Reads through a mount's cache; hashes come from the mount's own source.
pub struct CacheSource<S: FileSource>(pub Arc<MountFs<S>>);

impl<S: FileSource> Clone for CacheSource<S> {
    fn clone(&self) -> Self {
        CacheSource(self.0.clone())
    }
}

impl<S: FileSource> FileSource for CacheSource<S> {
    async fn read(&self, file: u64, offset: u64, len: u32) -> Result<(Bytes, Option<[u8; 32]>)> {
        self.0.read_file(file, offset, len).await
    }
    async fn hash(&self, file: u64) -> Result<[u8; 32]> {
        self.0.source().hash(file).await
    }
    async fn range_hash(&self, file: u64, offset: u64, len: u64) -> Result<[u8; 32]> {
        self.0.source().range_hash(file, offset, len).await
    }
    async fn seek(
        &self,
        file: u64,
        offset: u64,
        hole: bool,
    ) -> Result<Option<crate::fetch::SeekAnswer>> {
        self.0.source().seek(file, offset, hole).await
    }
}
