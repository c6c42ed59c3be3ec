//! The authenticated session: the handshake (SPAKE2 bound to both peer IDs and ML-KEM-768,
//! key confirmation, resumption), the key schedule, and the record layer that seals every
//! message after it.
//! Depends on `proto` only; knows nothing of libp2p beyond peer IDs.

mod aead;
mod handshake;
mod kem;
mod keys;
mod record;

pub use aead::{Opener, Sealer, TAG};
pub use handshake::{
    handshake, identity, resume_handshake, timed, HandshakeParams, HANDSHAKE_TIMEOUT,
    SESSION_KEY_EXCHANGE,
};
pub use kem::{KEM_CT_LEN, KEM_EK_LEN};
pub use keys::{ResumeTicket, SessionKeys};
pub use record::{secure_stream, SecureReader, SecureWriter, DATA_ROOM};
