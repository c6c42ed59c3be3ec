//! ChaCha20-Poly1305 per stream direction with counter nonces, so a dropped, replayed or
//! reordered frame ends the session: the cipher under the record layer ([`super::record`]).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use bytes::Bytes;
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;

use crate::error::{Error, Result};

/// Bytes of a Poly1305 tag at the end of each sealed frame.
pub const TAG: usize = 16;

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// Frames up to this size are sealed and opened by AWS-LC, bigger ones by OpenSSL. The same
/// algorithm (RFC 8439) either way, so the choice is local and changes no byte on the wire.
/// OpenSSL's assembly uses AVX-512 where the CPU has it: 3.4 against AWS-LC's 2.1 GB/s on this
/// project's machines for a 1 MiB answer, but a small message costs it 0.7 µs against 0.18
/// (its EVP interface's fixed cost per message), and the mount's random 4 KiB reads lost 6%
/// with OpenSSL on every frame (`scripts/BENCHMARKS.md`).
const SMALL_FRAME: usize = 64 * 1024;

/// OpenSSL runs ChaCha20 over what it is given, then Poly1305 over the result: given a whole
/// frame (up to 1 MiB) the second pass reads it back from memory. Given pieces that fit the
/// CPU's L2 cache, both passes find them there. The result is the same.
const PIECE: usize = 64 * 1024;

/// One direction's ChaCha20-Poly1305 key in both implementations; each cleanses its copy of
/// the key when dropped.
struct DirectionKey {
    small: LessSafeKey,
    big: CipherCtx,
}

impl DirectionKey {
    fn new(key: &[u8; 32], seal: bool) -> DirectionKey {
        let small =
            LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"));
        let mut big = CipherCtx::new().expect("an OpenSSL cipher context");
        let alg = Some(Cipher::chacha20_poly1305());
        if seal {
            big.encrypt_init(alg, Some(key), None)
        } else {
            big.decrypt_init(alg, Some(key), None)
        }
        .expect("ChaCha20-Poly1305 with a 32-byte key");
        DirectionKey { small, big }
    }

    fn seal(&mut self, n: [u8; 12], buf: &mut [u8]) -> Result<[u8; TAG]> {
        let mut out = [0u8; TAG];
        if buf.len() <= SMALL_FRAME {
            let n = Nonce::assume_unique_for_key(n);
            let tag = self
                .small
                .seal_in_place_separate_tag(n, Aad::empty(), buf)
                .map_err(|_| Error::Decrypt)?;
            out.copy_from_slice(tag.as_ref());
            return Ok(out);
        }
        let ctx = &mut self.big;
        ctx.encrypt_init(None, None, Some(&n))
            .and_then(|_| update_in_pieces(ctx, buf))
            .and_then(|_| ctx.cipher_final(&mut []))
            .and_then(|_| ctx.tag(&mut out))
            .map_err(|_| Error::Decrypt)?;
        Ok(out)
    }

    /// Decrypts `buf` (ciphertext then tag) in place; the plaintext is its first
    /// `buf.len() - TAG` bytes. On a wrong tag it holds garbage and an error is returned.
    fn open(&mut self, n: [u8; 12], buf: &mut [u8]) -> Result<usize> {
        let plain = buf.len().checked_sub(TAG).ok_or(Error::Decrypt)?;
        if plain <= SMALL_FRAME {
            let n = Nonce::assume_unique_for_key(n);
            self.small
                .open_in_place(n, Aad::empty(), buf)
                .map_err(|_| Error::Decrypt)?;
            return Ok(plain);
        }
        let (data, tag) = buf.split_at_mut(plain);
        let ctx = &mut self.big;
        ctx.decrypt_init(None, None, Some(&n))
            .and_then(|_| update_in_pieces(ctx, data))
            .and_then(|_| ctx.set_tag(tag))
            .and_then(|_| ctx.cipher_final(&mut []))
            .map_err(|_| Error::Decrypt)?;
        Ok(plain)
    }
}

fn update_in_pieces(
    ctx: &mut CipherCtx,
    buf: &mut [u8],
) -> std::result::Result<(), openssl::error::ErrorStack> {
    for piece in buf.chunks_mut(PIECE) {
        let len = piece.len();
        ctx.cipher_update_inplace(piece, len)?;
    }
    Ok(())
}

/// Encrypts outgoing frames of one stream direction; the counter is the nonce.
pub struct Sealer {
    cipher: DirectionKey,
    counter: u64,
}

impl Sealer {
    pub(crate) fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: DirectionKey::new(key, true),
            counter: 0,
        }
    }

    /// Encrypts `buf` in place, appending the tag.
    pub fn seal(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let tag = self.seal_detached(buf)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_detached(&mut self, buf: &mut [u8]) -> Result<[u8; TAG]> {
        let n = nonce(self.counter);
        self.counter = self.counter.checked_add(1).ok_or(Error::Decrypt)?;
        self.cipher.seal(n, buf)
    }
}

/// Decrypts incoming frames of one stream direction; any failure is fatal to the session, so a
/// dropped, replayed or reordered frame cannot go unnoticed.
pub struct Opener {
    cipher: DirectionKey,
    counter: u64,
}

impl Opener {
    pub(crate) fn new(key: &[u8; 32]) -> Opener {
        Opener {
            cipher: DirectionKey::new(key, false),
            counter: 0,
        }
    }

    pub fn open(&mut self, mut buf: Vec<u8>) -> Result<Bytes> {
        let plain = self.open_in_place(&mut buf)?;
        buf.truncate(plain);
        Ok(Bytes::from(buf))
    }

    /// Decrypts a sealed frame in place; its plaintext is the returned number of first bytes.
    /// On a wrong tag the buffer holds garbage and an error is returned: nothing of it is used.
    pub fn open_in_place(&mut self, buf: &mut [u8]) -> Result<usize> {
        let plain = self.cipher.open(nonce(self.counter), buf)?;
        self.counter += 1;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SessionKeys;
    use crate::proto::{Role, MAX_FRAME};

    #[test]
    fn replayed_or_reordered_frames_fail() {
        let keys = SessionKeys::derive(Role::Sender, b"k", &[0; 32]);
        let peer = SessionKeys::derive(Role::Receiver, b"k", &[0; 32]);
        let (mut seal, _) = keys.stream(0);
        let (_, mut open) = peer.stream(0);
        let mut f1 = b"one".to_vec();
        let mut f2 = b"two".to_vec();
        seal.seal(&mut f1).unwrap();
        seal.seal(&mut f2).unwrap();
        // Reordered: frame 2 first fails.
        assert!(open.open(f2.clone()).is_err());
        assert_eq!(&open.open(f1.clone()).unwrap()[..], b"one");
        // Replayed: frame 1 again fails.
        assert!(open.open(f1).is_err());
        let mut flipped = f2.clone();
        flipped[0] ^= 1;
        assert!(open.open(flipped).is_err());
    }

    /// Every frame, whichever implementation seals it (AWS-LC up to [`SMALL_FRAME`], OpenSSL
    /// in pieces above), is byte for byte what the other one gives in one call, at every
    /// length around the pieces' and the implementations' edges and the biggest frame; it
    /// opens, and fails to with any bit flipped.
    #[test]
    fn frames_match_the_other_implementation() {
        let key = [0x42u8; 32];
        let aws = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap());
        let openssl = |n: &[u8; 12], plain: &[u8]| {
            let mut c = CipherCtx::new().unwrap();
            c.encrypt_init(Some(Cipher::chacha20_poly1305()), Some(&key), Some(n))
                .unwrap();
            let mut out = vec![0u8; plain.len()];
            c.cipher_update(plain, Some(&mut out)).unwrap();
            c.cipher_final(&mut []).unwrap();
            let mut tag = [0u8; TAG];
            c.tag(&mut tag).unwrap();
            out.extend_from_slice(&tag);
            out
        };
        let (mut seal, mut open) = (Sealer::new(&key), Opener::new(&key));
        let lens = [
            0,
            1,
            15,
            16,
            63,
            64,
            65,
            4096,
            SMALL_FRAME - 1,
            SMALL_FRAME,
            SMALL_FRAME + 1,
            3 * PIECE + 17,
            MAX_FRAME,
        ];
        for (counter, len) in lens.into_iter().enumerate() {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut ours = plain.clone();
            seal.seal(&mut ours).unwrap();
            let n = nonce(counter as u64);
            let theirs = if len <= SMALL_FRAME {
                openssl(&n, &plain)
            } else {
                let mut t = plain.clone();
                let n = Nonce::assume_unique_for_key(n);
                aws.seal_in_place_append_tag(n, Aad::empty(), &mut t)
                    .unwrap();
                t
            };
            assert!(ours == theirs, "length {len}");
            for at in [0, len / 2, len + TAG - 1] {
                let mut flipped = ours.clone();
                flipped[at] ^= 0x10;
                let mut o = Opener {
                    counter: counter as u64,
                    ..Opener::new(&key)
                };
                assert!(
                    o.open(flipped).is_err(),
                    "length {len}, bit flipped at {at}"
                );
            }
            assert_eq!(open.open(ours).unwrap(), plain, "length {len}");
        }
    }
}
