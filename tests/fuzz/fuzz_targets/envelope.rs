//! Every encrypted message decoder (the envelope and all it can carry).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pcp::proto::decode_envelope(bytes::Bytes::copy_from_slice(data));
});
