//! A share of one file written to a byte stream (`pcp receive --stdout`, a text message) instead
//! of a folder: chunks in order with a bounded number in flight, hashed as they go out, checked
//! against the sender's BLAKE3 at the end. Bytes cannot be taken back from a pipe, so a mismatch
//! is an error the caller must report (the exit status says not to trust the output). For a
//! terminal the bytes are escaped ([`TerminalText`]) and a last newline is added.

use std::sync::atomic::Ordering;

use futures::stream::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Progress, CHUNK, PER_FILE_CHUNKS};
use crate::error::{Error, Result};
use crate::fetch::FileSource;
use crate::proto::Entry;
use crate::text::TerminalText;

/// Writes file `entry` to `sink` (escaped for a terminal when `terminal`), verified; returns the
/// bytes written.
pub(super) async fn write_one<S: FileSource, W: AsyncWrite + Unpin>(
    client: &S,
    entry: &Entry,
    sink: &mut W,
    terminal: bool,
    progress: &Progress,
) -> Result<u64> {
    let err = |e| Error::io("cannot write to standard output", e);
    let size = entry.size;
    // A file of one chunk comes with its hash; so does a larger one from a source that puts
    // it together from the reads it serves. Other sources are asked for it at once, so the
    // sender computes it while serving.
    let hash_req = (!S::TOWARD_HASH && size > CHUNK as u64).then(|| {
        let (client, id) = (client.clone(), entry.id);
        tokio::spawn(async move { client.hash(id).await })
    });
    let chunks = (0..size.div_ceil(CHUNK as u64)).map(|i| {
        let offset = i * CHUNK as u64;
        let len = (size - offset).min(CHUNK as u64) as u32;
        let client = client.clone();
        async move { (len, client.read_toward_hash(entry.id, offset, len).await) }
    });
    let mut chunks = futures::stream::iter(chunks).buffered(PER_FILE_CHUNKS);
    let mut hasher = blake3::Hasher::new();
    let mut escaper = terminal.then(TerminalText::default);
    let mut last = None;
    let mut whole_hash = None;
    while let Some((len, r)) = chunks.next().await {
        let (data, hash) = r?;
        if data.len() != len as usize {
            return Err(Error::Protocol(format!(
                "asked for {len} bytes, got {}",
                data.len()
            )));
        }
        whole_hash = whole_hash.or(hash);
        hasher.update(&data);
        last = data.last().copied().or(last);
        match &mut escaper {
            Some(t) => sink.write_all(t.push(&data).as_bytes()).await,
            None => sink.write_all(&data).await,
        }
        .map_err(err)?;
        progress.moved(&data);
    }
    if let Some(t) = &mut escaper {
        let mut tail = t.finish();
        if last.is_some_and(|b| b != b'\n') {
            tail.push('\n');
        }
        sink.write_all(tail.as_bytes()).await.map_err(err)?;
    }
    sink.flush().await.map_err(err)?;
    let want = match (whole_hash, hash_req) {
        (Some(h), _) => h,
        (None, Some(req)) => req
            .await
            .map_err(|e| Error::io("hash request", std::io::Error::other(e)))??,
        (None, None) if size == 0 => *blake3::hash(b"").as_bytes(),
        (None, None) => client.hash(entry.id).await?,
    };
    if *hasher.finalize().as_bytes() != want {
        return Err(Error::StreamIntegrity);
    }
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok(size)
}
