//! ML-KEM-768 (FIPS 203, RustCrypto's `ml-kem`) for the hybrid handshake: the receiver makes a
//! key pair per handshake and sends the encapsulation key, the sender answers with a
//! ciphertext, and both feed the shared secret into the key schedule next to the SPAKE2 key.
//! Only the byte handling is here; the KEM itself is the crate's. Randomness comes from the
//! OS (`rand`'s `OsRng`) as a FIPS 203 seed, so tests can fix it.

use ml_kem::array::Array;
use ml_kem::{ml_kem_768, Decapsulate, KeyExport, B32};
use rand::RngCore;
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// Bytes of an ML-KEM-768 encapsulation key (the receiver's `Hello.kem`).
pub const KEM_EK_LEN: usize = 1184;
/// Bytes of an ML-KEM-768 ciphertext (the sender's `Hello.kem`).
pub const KEM_CT_LEN: usize = 1088;

/// The receiver's half: a fresh key pair, kept until the sender's ciphertext arrives.
pub(super) struct KemKeyPair {
    dk: ml_kem_768::DecapsulationKey,
}

impl KemKeyPair {
    /// A key pair from a 64-byte FIPS 203 seed (`d || z`); random unless a test fixes it.
    pub(super) fn generate(seed: Option<[u8; 64]>) -> KemKeyPair {
        let seed = seed.unwrap_or_else(|| {
            let mut s = [0u8; 64];
            rand::rngs::OsRng.fill_bytes(&mut s);
            s
        });
        let mut seed = Array::from(seed);
        let dk = ml_kem_768::DecapsulationKey::from_seed(seed);
        seed.zeroize();
        KemKeyPair { dk }
    }

    /// The encapsulation key, as sent in the receiver's `Hello.kem`.
    pub(super) fn public(&self) -> Vec<u8> {
        self.dk.encapsulation_key().to_bytes().to_vec()
    }

    /// The shared secret for the sender's ciphertext. A ciphertext of the right length always
    /// decapsulates (FIPS 203 implicit rejection): a forged one gives an unrelated secret, which
    /// key confirmation then catches.
    pub(super) fn decapsulate(&self, ct: &[u8]) -> Result<[u8; 32]> {
        let ct = ml_kem_768::Ciphertext::try_from(ct).map_err(|_| {
            Error::Protocol(format!(
                "ML-KEM ciphertext of {} bytes, expected {KEM_CT_LEN}",
                ct.len()
            ))
        })?;
        Ok(self.dk.decapsulate(&ct).into())
    }
}

/// The sender's half: encapsulates to the receiver's key with 32 random bytes `m` (fixed by
/// tests). Returns the ciphertext and the shared secret; an encapsulation key of the wrong
/// length or encoding (FIPS 203 §7.2 modulus check) is a protocol error.
pub(super) fn encapsulate(ek: &[u8], m: Option<[u8; 32]>) -> Result<(Vec<u8>, [u8; 32])> {
    let bad = || Error::Protocol("bad ML-KEM-768 encapsulation key".into());
    let key = ml_kem::Key::<ml_kem_768::EncapsulationKey>::try_from(ek).map_err(|_| bad())?;
    let ek = ml_kem_768::EncapsulationKey::new(&key).map_err(|_| bad())?;
    let m = m.unwrap_or_else(|| {
        let mut m = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut m);
        m
    });
    let mut m = B32::from(m);
    let (ct, ss) = ek.encapsulate_deterministic(&m);
    m.zeroize();
    Ok((ct.to_vec(), ss.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_halves_agree_and_sizes_are_fips_203() {
        let kp = KemKeyPair::generate(None);
        let ek = kp.public();
        assert_eq!(ek.len(), KEM_EK_LEN);
        let (ct, ss) = encapsulate(&ek, None).unwrap();
        assert_eq!(ct.len(), KEM_CT_LEN);
        assert_eq!(kp.decapsulate(&ct).unwrap(), ss);
        // A forged ciphertext decapsulates to something else; a short one is refused.
        let mut forged = ct.clone();
        forged[0] ^= 1;
        assert_ne!(kp.decapsulate(&forged).unwrap(), ss);
        assert!(kp.decapsulate(&ct[1..]).is_err());
        // Keys of the wrong length or with coefficients out of range are refused.
        assert!(encapsulate(&ek[1..], None).is_err());
        assert!(encapsulate(&[0xff; KEM_EK_LEN], None).is_err());
    }
}
