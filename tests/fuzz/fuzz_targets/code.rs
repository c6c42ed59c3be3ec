//! Code parsing: any text in, a code or a clear error out.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(c) = pcp::code::Code::parse(s) {
            // A parsed code round-trips.
            assert_eq!(pcp::code::Code::parse(&c.phrase()).unwrap(), c);
        }
    }
});
