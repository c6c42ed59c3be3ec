//! Manifest validation on whatever entries a manifest frame decodes to.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(chunk) = pcp::proto::ManifestChunk::decode(data) {
        if let Ok(m) = pcp::manifest::Manifest::validate(chunk.entries) {
            // Walk what was accepted: paths must stay relative and free of `..`.
            for e in m.entries() {
                let p = m.rel_path(e.id);
                assert!(p.is_relative());
                assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
            }
        }
    }
});
