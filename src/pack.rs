//! File data compressed on the wire (`--compress`, proto/SPEC.md §11.3): zstd at its fastest
//! level, per read, only where it saves at least an eighth. For slow links: at 200 Mbit/s a
//! text file crosses in a third of the time, while on a LAN the two cores' time goes to zstd
//! instead of to the link, which is why it is asked for, not on by default.

use std::sync::atomic::{AtomicU64, Ordering};

/// Reads shorter than this go as they are: a record's own overhead is larger than the gain.
pub const MIN_LEN: usize = 4096;

/// zstd's fastest standard level: ~400 MB/s a core here, faster than any link it is meant for.
const LEVEL: i32 = 1;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `raw` compressed, if that saves at least an eighth of it (else `None`: send it as it is).
pub fn compress(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() < MIN_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() - raw.len() / 8);
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        // Too little room (it would not save an eighth) is an error, as is any other failure.
        c.as_mut()?.compress_to_buffer(raw, &mut out).ok()
    })?;
    Some(out)
}

/// The `len` bytes that `packed` holds, or why not: a sender's data is checked like any other
/// (it must give exactly `len` bytes; the hashes check the bytes themselves).
pub fn decompress(packed: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(len);
    // Into the Vec's spare room, never beyond it: a frame that says more fails.
    let got = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut()
            .expect("made above")
            .decompress_to_buffer(packed, &mut out)
    });
    match got {
        Ok(n) if n == len => Ok(out),
        Ok(n) => Err(format!(
            "compressed data gave {n} bytes, not the {len} said"
        )),
        Err(e) => Err(format!("compressed data did not decompress: {e}")),
    }
}

/// File bytes that crossed compressed: how many, and their size on the wire.
#[derive(Debug, Default)]
pub struct Packed {
    raw: AtomicU64,
    wire: AtomicU64,
}

impl Packed {
    pub fn add(&self, raw: usize, wire: usize) {
        self.raw.fetch_add(raw as u64, Ordering::Relaxed);
        self.wire.fetch_add(wire as u64, Ordering::Relaxed);
    }

    /// (bytes that came compressed, their size on the wire).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.raw.load(Ordering::Relaxed),
            self.wire.load(Ordering::Relaxed),
        )
    }
}

/// `len` bytes that do not compress (xorshift), for tests.
#[cfg(test)]
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {} of a log\n", i % 977).into_bytes())
            .collect();
        let packed = compress(&text).expect("text compresses");
        assert!(packed.len() < text.len() / 4, "{}", packed.len());
        assert_eq!(decompress(&packed, text.len()).unwrap(), text);
        // Another length than the one said: refused, both ways.
        assert!(decompress(&packed, text.len() - 1).is_err());
        assert!(decompress(&packed, text.len() + 1).is_err());
        assert!(decompress(b"not zstd at all", 100).is_err());
        // Random bytes and short reads go as they are.
        assert_eq!(compress(&noise(65536, 1)), None);
        assert_eq!(compress(&text[..MIN_LEN - 1]), None);
    }
}
