//! Wire messages (protobuf, see `proto/pcp.proto` and `proto/SPEC.md`) and the size bounds
//! every decoder enforces. Field numbers here are the contract: golden-byte tests pin them.

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};

/// The libp2p protocol id. A new major version gets a new id, so an old peer fails the
/// multistream-select negotiation cleanly instead of misreading messages.
pub const PROTOCOL: &str = "/pcp/2";
/// Version carried in [`Hello`].
pub const VERSION: u32 = 2;
/// The id of protocol version 1 (SPAKE2 alone, no ML-KEM). Not spoken any more: a receiver
/// probes for it only to tell its user why a sender does not answer `/pcp/2`, and a sender
/// answers it with a bare `Hello{version: 2}`, so an old receiver reports the mismatch.
pub const PROTOCOL_1: &str = "/pcp/1";

/// Largest plaintext frame before the handshake completes. The largest is the receiver's
/// `Opening{Hello}` with its 1184-byte ML-KEM-768 encapsulation key (1231 bytes with a
/// SPAKE2 message; the sender's `Hello` with its 1088-byte ciphertext is 1130).
pub const MAX_HANDSHAKE_FRAME: usize = 2048;
/// Largest data a single read request may ask for.
pub const MAX_READ: u32 = 1 << 20;
/// Largest plaintext of an encrypted frame: one full read plus envelope overhead.
pub const MAX_FRAME: usize = MAX_READ as usize + 4096;
/// Largest range a range-hash request may cover.
pub const MAX_RANGE_HASH: u64 = 64 << 20;
/// Largest total size of a manifest's encoded entries a receiver accepts (bounds its memory
/// whatever the sender claims).
pub const MAX_MANIFEST_BYTES: usize = 256 << 20;
/// Most entries a manifest may have.
pub const MAX_ENTRIES: u64 = 4_000_000;
/// The sender closes a manifest frame once its entries reach this many encoded bytes; one entry
/// is at most ~4.4 KiB, so a frame stays far below [`MAX_FRAME`].
pub const MANIFEST_BATCH_BYTES: usize = 256 * 1024;
/// Longest name of one entry (Linux NAME_MAX).
pub const MAX_NAME: usize = 255;
/// Longest symlink target.
pub const MAX_TARGET: usize = 4096;
/// Largest text message (`Offer.text`): its one file may hold at most this many bytes.
pub const MAX_TEXT: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Role {
    Unknown = 0,
    Sender = 1,
    Receiver = 2,
}

/// First plaintext frame on every stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Opening {
    #[prost(oneof = "opening::Kind", tags = "1, 2")]
    pub kind: Option<opening::Kind>,
}

pub mod opening {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// Starts a new session: the hybrid SPAKE2 + ML-KEM handshake, or a resumption.
        #[prost(message, tag = "1")]
        Hello(super::Hello),
        /// Joins an authenticated session as an extra data stream.
        #[prost(message, tag = "2")]
        Join(super::Join),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(enumeration = "Role", tag = "2")]
    pub role: i32,
    /// The SPAKE2 message (33 bytes for Ed25519); a 32-byte nonce when resuming.
    #[prost(bytes = "vec", tag = "3")]
    pub spake: Vec<u8>,
    /// Set when resuming a session: the original session's id, in clear (the proof of the
    /// resumption secret is the `Confirm`; see SPEC.md §6.6).
    #[prost(bytes = "vec", tag = "4")]
    pub resume: Vec<u8>,
    /// ML-KEM-768: the receiver's encapsulation key (1184 bytes), the sender's ciphertext
    /// (1088 bytes). Empty when resuming.
    #[prost(bytes = "vec", tag = "5")]
    pub kem: Vec<u8>,
    /// Receiver: it takes the manifest compressed ([`PackedManifest`]); a hint, not in the
    /// transcript (proto/SPEC.md §6.1).
    #[prost(bool, tag = "6")]
    pub packed_manifest: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Confirm {
    #[prost(bytes = "vec", tag = "1")]
    pub mac: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Join {
    /// Session id derived from the session key (public, 16 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub session: Vec<u8>,
    /// Stream index, 1.. (0 is the control stream); selects the stream's keys.
    #[prost(uint32, tag = "2")]
    pub index: u32,
}

/// Every encrypted frame carries one envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(oneof = "envelope::Msg", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10")]
    pub msg: Option<envelope::Msg>,
}

pub mod envelope {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Msg {
        #[prost(message, tag = "1")]
        Offer(super::Offer),
        #[prost(message, tag = "2")]
        Accept(super::Accept),
        #[prost(message, tag = "3")]
        Decline(super::Decline),
        #[prost(message, tag = "4")]
        Manifest(super::ManifestChunk),
        #[prost(message, tag = "5")]
        Request(super::Request),
        #[prost(message, tag = "6")]
        Response(super::Response),
        #[prost(message, tag = "7")]
        Done(super::Done),
        #[prost(message, tag = "8")]
        Abort(super::Abort),
        #[prost(message, tag = "9")]
        Ready(super::Ready),
        #[prost(message, tag = "10")]
        PackedManifest(super::PackedManifest),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Offer {
    /// Number of manifest entries that will follow.
    #[prost(uint64, tag = "1")]
    pub entries: u64,
    #[prost(uint64, tag = "2")]
    pub files: u64,
    #[prost(uint64, tag = "3")]
    pub bytes: u64,
    /// Names of the top-level entries, for the prompt.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub roots: Vec<Vec<u8>>,
    /// The share is a text message: its manifest is one FILE of at most [`MAX_TEXT`] bytes,
    /// which the receiver prints instead of writing (SPEC.md §9.3). A receiver that does not
    /// know the field ignores it and receives the file.
    #[prost(bool, tag = "5")]
    pub text: bool,
}

/// `mount` tells the sender the manifest will be used for lazy reads (informational).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Accept {
    #[prost(bool, tag = "1")]
    pub mount: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Decline {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Kind {
    Unknown = 0,
    File = 1,
    Dir = 2,
    Symlink = 3,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// Stable id, 1.. in manifest order.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Id of the containing directory; 0 is the share root.
    #[prost(uint64, tag = "2")]
    pub parent: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub name: Vec<u8>,
    #[prost(enumeration = "Kind", tag = "4")]
    pub kind: i32,
    #[prost(uint64, tag = "5")]
    pub size: u64,
    /// Permission bits (0o7777 at most).
    #[prost(uint32, tag = "6")]
    pub mode: u32,
    #[prost(int64, tag = "7")]
    pub mtime_sec: i64,
    #[prost(uint32, tag = "8")]
    pub mtime_nsec: u32,
    /// Symlink target, as stored on the sender.
    #[prost(bytes = "vec", tag = "9")]
    pub target: Vec<u8>,
    /// Files: the bytes the file takes on the sender's disk (`st_blocks` x 512), below `size`
    /// for a sparse one (proto/SPEC.md §10). `None` from senders that do not say.
    #[prost(uint64, optional, tag = "10")]
    pub allocated: Option<u64>,
}

impl Entry {
    /// A file with holes on the sender's disk (it said so: `allocated < size`).
    pub fn sparse(&self) -> bool {
        self.allocated.is_some_and(|a| a < self.size)
    }
}

/// In place of a [`ManifestChunk`], to a receiver that asked (`Hello.packed_manifest`): one
/// zstd frame of the encoded chunk, and its length (at most [`MAX_FRAME`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PackedManifest {
    #[prost(bytes = "vec", tag = "1")]
    pub zstd: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub len: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ManifestChunk {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    #[prost(bool, tag = "2")]
    pub last: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// Chosen by the receiver; echoed in the response.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(oneof = "request::Op", tags = "2, 3, 4")]
    pub op: Option<request::Op>,
}

pub mod request {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Op {
        #[prost(message, tag = "2")]
        Read(super::Read),
        #[prost(message, tag = "3")]
        Hash(super::HashRequest),
        #[prost(message, tag = "4")]
        Seek(super::Seek),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Read {
    #[prost(uint64, tag = "1")]
    pub file: u64,
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    #[prost(uint32, tag = "3")]
    pub len: u32,
    /// The receiver will want the whole file's hash: the sender may put it together from the
    /// reads it serves and send it with the one that completes it (proto/SPEC.md §11.3).
    #[prost(bool, tag = "4")]
    pub hash: bool,
    /// The receiver takes `Response.zeros`: a read whose bytes are all zero may be answered
    /// with their count instead of the bytes (proto/SPEC.md §11.3).
    #[prost(bool, tag = "5")]
    pub zeros: bool,
    /// The receiver takes `Response.compressed`: the sender may send the bytes compressed
    /// (zstd) when that saves enough (proto/SPEC.md §11.3).
    #[prost(bool, tag = "6")]
    pub compress: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HashRequest {
    #[prost(uint64, tag = "1")]
    pub file: u64,
    /// With `len` > 0: the BLAKE3 of bytes `offset..offset+len` only (resuming receivers check
    /// what they already have with it). `len` = 0: the whole file.
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    #[prost(uint64, tag = "3")]
    pub len: u64,
}

/// Where the next data (`hole` false) or hole (`hole` true) of a sparse file begins at or
/// after `offset` (proto/SPEC.md §11.7).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Seek {
    #[prost(uint64, tag = "1")]
    pub file: u64,
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    #[prost(bool, tag = "3")]
    pub hole: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Bytes read; shorter than asked only at end of file.
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
    /// BLAKE3 of the whole file: answer to a hash request, and also sent with a read that
    /// covered the whole file.
    #[prost(bytes = "vec", tag = "3")]
    pub hash: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    pub error: Option<Failure>,
    /// Instead of `data`: the read's bytes are this many zero bytes (only for a `Read` with
    /// `zeros`; `data` is then empty).
    #[prost(uint64, tag = "5")]
    pub zeros: u64,
    /// `data` is the read's bytes compressed (a zstd frame), and this is their length (only
    /// for a `Read` with `compress`).
    #[prost(uint64, tag = "6")]
    pub compressed: u64,
    /// Answer to a [`Seek`]: the offset found, `offset..=size` (the size: no data after
    /// `offset`, or the hole at the end of the file).
    #[prost(uint64, tag = "7")]
    pub position: u64,
    /// With a [`Seek`]'s `position`, optionally: the offsets after it where the file changes
    /// between data and hole, increasing, at most [`MAX_EDGES`], none above its size
    /// (`position..extents[0]` is of the kind sought, the next span of the other kind, ...).
    #[prost(uint64, repeated, tag = "8")]
    pub extents: Vec<u64>,
}

/// The most `Response.extents` a sender gives (SPEC §11.7).
pub const MAX_EDGES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    Unspecified = 0,
    /// No such file id in the manifest.
    NoSuchFile = 1,
    /// Offset or length out of bounds.
    BadRange = 2,
    /// The file changed on the sender since the share started.
    Changed = 3,
    /// Reading the file failed on the sender.
    Io = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Failure {
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The receiver has everything it wants; the sender may stop.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Done {}

/// Either side gives up, saying why.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Abort {
    #[prost(string, tag = "1")]
    pub reason: String,
}

/// The sender's answer to a [`Join`]: the data stream is ready for requests.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ready {}

/// Decodes an envelope, requiring a message in it.
pub fn decode_envelope(buf: Bytes) -> Result<envelope::Msg> {
    Envelope::decode(buf)
        .map_err(|e| Error::Protocol(format!("undecodable message: {e}")))?
        .msg
        .ok_or_else(|| Error::Protocol("empty or unknown message".into()))
}

pub fn encode_envelope(msg: envelope::Msg, out: &mut Vec<u8>) {
    out.clear();
    Envelope { msg: Some(msg) }
        .encode(out)
        .expect("Vec grows as needed");
}

#[cfg(test)]
mod tests;
