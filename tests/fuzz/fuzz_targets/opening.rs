//! The plaintext handshake messages: the opening frame, Hello and Confirm.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = pcp::proto::Opening::decode(data);
    let _ = pcp::proto::Hello::decode(data);
    let _ = pcp::proto::Confirm::decode(data);
});
