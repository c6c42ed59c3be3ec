//! The frame decoder and record layer: length prefix, size bound, decryption of whatever
//! arrives, then the envelope decoder. Must never panic, hang or allocate past the bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pcp::crypto::SessionKeys;
use pcp::proto::{self as wire, Role, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        // The keys of the golden vector (SPEC.md §13), so the seed `one` opens.
        let keys = SessionKeys::hybrid(Role::Receiver, &[7; 32], &[8; 32], &[9; 32]);
        let (_, mut opener) = keys.stream(0);
        let mut input = data;
        // A few frames at most per input.
        for _ in 0..4 {
            match wire::read_frame(&mut input, MAX_FRAME + 16).await {
                Ok(Some(frame)) => {
                    if let Ok(plain) = opener.open(frame) {
                        let _ = wire::decode_envelope(plain);
                    }
                }
                _ => break,
            }
        }
    });
});
