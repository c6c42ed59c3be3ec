//! The frame codec under every stream: a u32 big-endian length, then that many bytes. Plain
//! frames carry the handshake; after it, each frame is one sealed record (see `crypto::record`).

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::messages::{self as wire, MAX_HANDSHAKE_FRAME};
use crate::error::{Error, Result};

/// Writes one length-prefixed frame: u32 big-endian length, then the bytes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| Error::FrameTooLarge(payload.len(), 0))?;
    w.write_all(&len.to_be_bytes()).await.map_err(lost)?;
    w.write_all(payload).await.map_err(lost)?;
    Ok(())
}

/// Reads one length-prefixed frame of at most `max` bytes. `Ok(None)` on a clean end of stream
/// at a frame boundary; a stream that ends inside a frame is an error.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>> {
    let Some(len) = read_frame_len(r, max).await? else {
        return Ok(None);
    };
    // Zeroed once: reading into spare capacity instead goes through the futures-io compat
    // layer, which zeroes the whole unfilled rest at every read (quadratic for a 1 MiB frame).
    // (Zeroing in 64 KiB pieces right before each is read into measured the same.)
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(lost)?;
    Ok(Some(buf))
}

/// Reads a frame's length (at most `max`), for the caller to read its bytes where it wants
/// them. `Ok(None)` on a clean end of stream.
pub async fn read_frame_len<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<usize>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await.map_err(lost)?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(Error::ConnectionLost(
                    "stream ended inside a frame header".into(),
                ))
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(Error::FrameTooLarge(len, max));
    }
    Ok(Some(len))
}

pub(crate) fn lost(e: std::io::Error) -> Error {
    if crate::error::is_refused(&e) {
        // Only receivers open streams: the sender refused pcp's protocol (see net::lazy).
        return Error::IncompatibleVersion {
            peer: "sender",
            theirs: None,
            ours: crate::proto::VERSION,
        };
    }
    Error::ConnectionLost(e.to_string())
}

pub(crate) async fn read_plain<R: AsyncRead + Unpin, M: Message + Default>(r: &mut R) -> Result<M> {
    let buf = read_frame(r, MAX_HANDSHAKE_FRAME).await?.ok_or_else(|| {
        Error::ConnectionLost("peer closed the stream during the handshake".into())
    })?;
    M::decode(&buf[..]).map_err(|e| Error::Protocol(format!("bad handshake message: {e}")))
}

/// Reads the first frame of a stream, which says whether it starts or joins a session.
pub async fn read_opening<R: AsyncRead + Unpin>(r: &mut R) -> Result<wire::opening::Kind> {
    read_plain::<_, wire::Opening>(r)
        .await?
        .kind
        .ok_or_else(|| Error::Protocol("empty opening frame".into()))
}

pub async fn write_opening<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: wire::opening::Kind,
) -> Result<()> {
    let msg = wire::Opening { kind: Some(kind) };
    write_frame(w, &msg.encode_to_vec()).await?;
    w.flush().await.map_err(lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors() {
        let mut data: &[u8] = &[0, 0, 0x10, 0, 1, 2];
        assert!(matches!(
            read_frame(&mut data, 16).await,
            Err(Error::FrameTooLarge(4096, 16))
        ));
        let mut data: &[u8] = &[0, 0, 0, 4, 1, 2];
        assert!(matches!(
            read_frame(&mut data, 16).await,
            Err(Error::ConnectionLost(_))
        ));
        let mut data: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut data, 16).await,
            Err(Error::ConnectionLost(_))
        ));
        let mut data: &[u8] = &[];
        assert!(read_frame(&mut data, 16).await.unwrap().is_none());
    }

    /// A frame arriving a few bytes per read comes out whole.
    #[tokio::test]
    async fn a_big_frame_in_small_reads_arrives_whole() {
        let payload: Vec<u8> = (0..200_123).map(|i| (i % 251) as u8).collect();
        let (mut a, mut b) = tokio::io::duplex(1000);
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            write_frame(&mut a, &sent).await.unwrap();
            write_frame(&mut a, b"next").await.unwrap();
        });
        let got = read_frame(&mut b, 1 << 20).await.unwrap().unwrap();
        assert!(got == payload, "the frame came out changed");
        assert_eq!(read_frame(&mut b, 16).await.unwrap().unwrap(), b"next");
        writer.await.unwrap();
    }
}
