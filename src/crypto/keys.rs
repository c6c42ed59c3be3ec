//! The key schedule: one pseudorandom key per session (HKDF-SHA-256 of the agreed secret and
//! the handshake transcript), expanded into keys typed by purpose, stream and direction. The
//! agreed secret of a first handshake is hybrid: the SPAKE2 key and the ML-KEM-768 shared
//! secret together, so the keys stay secret if either holds. Everything else (session id,
//! stream keys, the resumption secret and so every resumed session) derives from that one
//! key. Owns nothing of the handshake itself (`handshake`) or of the record layer (`record`).

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use super::aead::{Opener, Sealer};
use crate::proto::Role;

/// Keys of one authenticated session.
#[derive(Clone)]
pub struct SessionKeys {
    role: Role,
    prk: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SessionKeys({:?}, id {})",
            self.role,
            hex(&self.session_id())
        )
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SessionKeys {
    /// Derives the session of a first handshake: input keying material is the SPAKE2 key
    /// followed by the ML-KEM-768 shared secret (`K || ss`, 64 bytes), salted with the
    /// transcript hash, which covers both key exchanges.
    pub fn hybrid(
        role: Role,
        spake_key: &[u8; 32],
        kem_secret: &[u8; 32],
        transcript: &[u8; 32],
    ) -> SessionKeys {
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(spake_key);
        ikm[32..].copy_from_slice(kem_secret);
        let keys = SessionKeys::derive(role, &ikm, transcript);
        ikm.zeroize();
        keys
    }

    /// Derives a session from any input keying material and the transcript hash: the hybrid
    /// secret ([`SessionKeys::hybrid`]) or, to resume, the ticket's secret, itself derived from a
    /// hybrid session.
    pub fn derive(role: Role, secret: &[u8], transcript: &[u8; 32]) -> SessionKeys {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(transcript), secret);
        SessionKeys {
            role,
            prk: prk.into(),
        }
    }

    fn expand(&self, info: &str) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::from_prk(&self.prk).expect("32-byte PRK");
        let mut out = [0u8; 32];
        hk.expand(info.as_bytes(), &mut out).expect("32 bytes fit");
        out
    }

    /// Public name of the session, which extra streams quote to join it.
    pub fn session_id(&self) -> [u8; 16] {
        let k = self.expand("pcp/2 session id");
        k[..16].try_into().expect("16 of 32")
    }

    /// Secret a receiver uses to re-authenticate after a lost connection without the code.
    pub fn resume_secret(&self) -> [u8; 32] {
        self.expand("pcp/2 resume")
    }

    pub(crate) fn confirm_mac(&self, of: Role, transcript: &[u8; 32]) -> Vec<u8> {
        let who = if of == Role::Sender {
            "sender"
        } else {
            "receiver"
        };
        let mut key = self.expand(&format!("pcp/2 confirm {who}"));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
        key.zeroize();
        mac.update(transcript);
        mac.finalize().into_bytes().to_vec()
    }

    /// The record-layer halves for stream `index` (0 is the control stream).
    pub fn stream(&self, index: u32) -> (Sealer, Opener) {
        let s2r = self.expand(&format!("pcp/2 stream {index} sender->receiver"));
        let r2s = self.expand(&format!("pcp/2 stream {index} receiver->sender"));
        let (mut send, mut recv) = match self.role {
            Role::Sender => (s2r, r2s),
            _ => (r2s, s2r),
        };
        let halves = (Sealer::new(&send), Opener::new(&recv));
        send.zeroize();
        recv.zeroize();
        halves
    }

    pub fn role(&self) -> Role {
        self.role
    }
}

/// What a receiver keeps to re-authenticate after a lost connection without typing the code
/// again: the first session's id and its resumption secret.
#[derive(Clone)]
pub struct ResumeTicket {
    pub session: [u8; 16],
    pub secret: [u8; 32],
}

impl std::fmt::Debug for ResumeTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResumeTicket({})", hex(&self.session))
    }
}

impl SessionKeys {
    pub fn ticket(&self) -> ResumeTicket {
        ResumeTicket {
            session: self.session_id(),
            secret: self.resume_secret(),
        }
    }
}

// Key material is wiped when it is dropped (the ciphers wipe their own keys: AWS-LC cleanses
// an AEAD context when it is freed).
impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.prk.zeroize();
    }
}

impl Drop for ResumeTicket {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// Compares two MACs in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::handshake::identity;
    use crate::proto::test_vector as get;

    #[test]
    fn golden_key_schedule() {
        // K = 07×32 (SPAKE2), ss = 08×32 (ML-KEM-768), T = 09×32.
        let k = SessionKeys::hybrid(Role::Sender, &[7u8; 32], &[8u8; 32], &[9u8; 32]);
        assert_eq!(hex(&k.session_id()), get("session_id"));
        assert_eq!(hex(&k.resume_secret()), get("resume_secret"));
        let (mut seal, _) = k.stream(0);
        let mut buf = b"pcp".to_vec();
        seal.seal(&mut buf).unwrap();
        assert_eq!(hex(&buf), get("sealed_stream0_s2r_frame0"));
        let fixed = |b: u8| {
            libp2p::identity::Keypair::ed25519_from_bytes([b; 32])
                .unwrap()
                .public()
                .to_peer_id()
        };
        assert_eq!(hex(&identity(&fixed(1), &fixed(2))), get("identity_1_2"));
    }
}
