//! Golden bytes and round trips of the messages (the vectors are in proto/vectors.txt).

use super::*;
use proptest::prelude::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn enc(m: envelope::Msg) -> String {
    let mut v = Vec::new();
    encode_envelope(m, &mut v);
    hex(&v)
}

/// Golden bytes: these pin the field numbers and types of proto/pcp.proto. Changing any of
/// them is a protocol change and needs a new PROTOCOL id. Also listed in proto/vectors.txt.
#[test]
fn golden_messages() {
    let mut checked = 0;
    for (name, got) in golden_openings().into_iter().chain(golden_envelopes()) {
        let want = crate::proto::test_vector(name);
        assert_eq!(got, want, "message {name}");
        checked += 1;
    }
    assert_eq!(checked, 26);
}

/// The plain handshake messages, hex-encoded, by vector name.
fn golden_openings() -> Vec<(&'static str, String)> {
    vec![
        (
            "hello",
            hex(&Opening {
                kind: Some(opening::Kind::Hello(Hello {
                    version: 2,
                    role: Role::Receiver as i32,
                    spake: vec![0xaa; 3],
                    resume: vec![],
                    kem: vec![0xbb; 2],
                    packed_manifest: true,
                })),
            }
            .encode_to_vec()),
        ),
        (
            "hello_sender",
            hex(&Hello {
                version: 2,
                role: Role::Sender as i32,
                spake: vec![0xaa; 3],
                resume: vec![],
                kem: vec![0xcc; 2],
                packed_manifest: false,
            }
            .encode_to_vec()),
        ),
        (
            "join",
            hex(&Opening {
                kind: Some(opening::Kind::Join(Join {
                    session: vec![0x11; 4],
                    index: 2,
                })),
            }
            .encode_to_vec()),
        ),
        (
            "confirm",
            hex(&Confirm { mac: vec![0x22; 2] }.encode_to_vec()),
        ),
    ]
}

/// One of each sealed message, hex-encoded, by vector name.
fn golden_envelopes() -> Vec<(&'static str, String)> {
    vec![
        (
            "offer",
            enc(envelope::Msg::Offer(Offer {
                entries: 3,
                files: 2,
                bytes: 300,
                roots: vec![b"a".to_vec()],
                text: false,
            })),
        ),
        (
            "offer_text",
            enc(envelope::Msg::Offer(Offer {
                entries: 1,
                files: 1,
                bytes: 2,
                roots: vec![b"m".to_vec()],
                text: true,
            })),
        ),
        ("accept", enc(envelope::Msg::Accept(Accept { mount: true }))),
        ("decline", enc(envelope::Msg::Decline(Decline {}))),
        (
            "manifest",
            enc(envelope::Msg::Manifest(ManifestChunk {
                entries: vec![Entry {
                    id: 1,
                    parent: 0,
                    name: b"f".to_vec(),
                    kind: Kind::File as i32,
                    size: 5,
                    mode: 0o644,
                    mtime_sec: 1_700_000_000,
                    mtime_nsec: 7,
                    target: vec![],
                    allocated: None,
                }],
                last: true,
            })),
        ),
        (
            "read",
            enc(envelope::Msg::Request(Request {
                id: 9,
                op: Some(request::Op::Read(Read {
                    file: 1,
                    offset: 4096,
                    len: 65536,
                    hash: false,
                    zeros: false,
                    compress: false,
                })),
            })),
        ),
        (
            "read-hash",
            enc(envelope::Msg::Request(Request {
                id: 11,
                op: Some(request::Op::Read(Read {
                    file: 1,
                    offset: 1 << 20,
                    len: 1 << 20,
                    hash: true,
                    zeros: false,
                    compress: false,
                })),
            })),
        ),
        (
            "read-zeros",
            enc(envelope::Msg::Request(Request {
                id: 12,
                op: Some(request::Op::Read(Read {
                    file: 1,
                    offset: 0,
                    len: 1 << 20,
                    hash: true,
                    zeros: true,
                    compress: false,
                })),
            })),
        ),
        (
            "hash",
            enc(envelope::Msg::Request(Request {
                id: 10,
                op: Some(request::Op::Hash(HashRequest {
                    file: 1,
                    offset: 0,
                    len: 0,
                })),
            })),
        ),
        (
            "data",
            enc(envelope::Msg::Response(Response {
                id: 9,
                data: Bytes::from_static(b"hi"),
                hash: vec![],
                error: None,
                zeros: 0,
                compressed: 0,
                position: 0,
                extents: vec![],
            })),
        ),
        (
            "zeros",
            enc(envelope::Msg::Response(Response {
                id: 12,
                data: Bytes::new(),
                hash: vec![],
                error: None,
                zeros: 1 << 20,
                compressed: 0,
                position: 0,
                extents: vec![],
            })),
        ),
        (
            "read-compress",
            enc(envelope::Msg::Request(Request {
                id: 13,
                op: Some(request::Op::Read(Read {
                    file: 2,
                    offset: 0,
                    len: 1 << 20,
                    hash: true,
                    zeros: true,
                    compress: true,
                })),
            })),
        ),
        (
            "compressed",
            enc(envelope::Msg::Response(Response {
                id: 13,
                // zstd's frame of 64 KiB of 'a' would do as well: the field is bytes.
                data: Bytes::from_static(b"zz"),
                hash: vec![],
                error: None,
                zeros: 0,
                compressed: 65536,
                position: 0,
                extents: vec![],
            })),
        ),
        (
            "manifest-allocated",
            enc(envelope::Msg::Manifest(ManifestChunk {
                entries: vec![Entry {
                    id: 1,
                    parent: 0,
                    name: b"disk.img".to_vec(),
                    kind: Kind::File as i32,
                    size: 1 << 30,
                    mode: 0o600,
                    mtime_sec: 1_700_000_000,
                    mtime_nsec: 0,
                    target: vec![],
                    allocated: Some(8192),
                }],
                last: true,
            })),
        ),
        (
            "packed_manifest",
            enc(envelope::Msg::PackedManifest(PackedManifest {
                zstd: b"zz".to_vec(),
                len: 300,
            })),
        ),
        (
            "seek",
            enc(envelope::Msg::Request(Request {
                id: 14,
                op: Some(request::Op::Seek(Seek {
                    file: 1,
                    offset: 4096,
                    hole: true,
                })),
            })),
        ),
        (
            "position",
            enc(envelope::Msg::Response(Response {
                id: 14,
                data: Bytes::new(),
                hash: vec![],
                error: None,
                zeros: 0,
                compressed: 0,
                position: 1 << 30,
                extents: vec![],
            })),
        ),
        (
            "position-extents",
            enc(envelope::Msg::Response(Response {
                id: 15,
                data: Bytes::new(),
                hash: vec![],
                error: None,
                zeros: 0,
                compressed: 0,
                position: 1 << 30,
                extents: vec![1 << 31, 3 << 30],
            })),
        ),
        (
            "failure",
            enc(envelope::Msg::Response(Response {
                id: 9,
                data: Bytes::new(),
                hash: vec![],
                error: Some(Failure {
                    code: ErrorCode::Changed as i32,
                    message: "x".into(),
                }),
                zeros: 0,
                compressed: 0,
                position: 0,
                extents: vec![],
            })),
        ),
        ("done", enc(envelope::Msg::Done(Done {}))),
        (
            "abort",
            enc(envelope::Msg::Abort(Abort {
                reason: "no".into(),
            })),
        ),
        ("ready", enc(envelope::Msg::Ready(Ready {}))),
    ]
}

#[test]
fn empty_and_garbage_envelopes_are_errors() {
    assert!(decode_envelope(Bytes::new()).is_err());
    assert!(decode_envelope(Bytes::from_static(&[0xff, 0xff, 0xff])).is_err());
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        0i32..4,
        any::<u64>(),
        0u32..0o10000,
        any::<i64>(),
        0u32..1_000_000_000,
        proptest::collection::vec(any::<u8>(), 0..50),
        any::<Option<u64>>(),
    )
        .prop_map(
            |(id, parent, name, kind, size, mode, mtime_sec, mtime_nsec, target, allocated)| {
                Entry {
                    id,
                    parent,
                    name,
                    kind,
                    size,
                    mode,
                    mtime_sec,
                    mtime_nsec,
                    target,
                    allocated,
                }
            },
        )
}

proptest! {
    #[test]
    fn manifest_round_trips(entries in proptest::collection::vec(arb_entry(), 0..20), last: bool) {
        let msg = envelope::Msg::Manifest(ManifestChunk { entries, last });
        let mut buf = Vec::new();
        encode_envelope(msg.clone(), &mut buf);
        prop_assert_eq!(decode_envelope(Bytes::from(buf)).unwrap(), msg);
    }

    #[test]
    fn requests_round_trip(id: u64, file: u64, offset: u64, len: u32, op in 0..3, whole: bool, zeros: bool, compress: bool) {
        let op = match op {
            0 => request::Op::Hash(HashRequest { file, offset, len: len as u64 }),
            1 => request::Op::Seek(Seek { file, offset, hole: whole }),
            _ => request::Op::Read(Read { file, offset, len, hash: whole, zeros, compress }),
        };
        let msg = envelope::Msg::Request(Request { id, op: Some(op) });
        let mut buf = Vec::new();
        encode_envelope(msg.clone(), &mut buf);
        prop_assert_eq!(decode_envelope(Bytes::from(buf)).unwrap(), msg);
    }

    #[test]
    fn responses_round_trip(id: u64, data in proptest::collection::vec(any::<u8>(), 0..2000),
                            hash in proptest::collection::vec(any::<u8>(), 0..33), compressed: u64, position: u64,
                            extents in proptest::collection::vec(any::<u64>(), 0..65)) {
        let msg = envelope::Msg::Response(Response { id, data: Bytes::from(data), hash, error: None, zeros: 0, compressed, position, extents });
        let mut buf = Vec::new();
        encode_envelope(msg.clone(), &mut buf);
        prop_assert_eq!(decode_envelope(Bytes::from(buf)).unwrap(), msg);
    }

    #[test]
    fn decoding_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_envelope(Bytes::from(data.clone()));
        let _ = Opening::decode(&data[..]);
    }
}
