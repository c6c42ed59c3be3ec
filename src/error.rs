//! Typed errors with messages a user can act on. The binary prints them once, at the top,
//! with their causes.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Code(#[from] crate::code::CodeError),

    #[error(
        "the code did not match: the other side used a different code. Check it for typos; \
         if you typed it correctly, someone may be guessing it"
    )]
    WrongCode,

    #[error(
        "stopped sharing after {0} failed attempts with a wrong code: someone may be guessing it. \
         Start a new share to get a new code"
    )]
    TooManyAttempts(u32),

    #[error("no sender found for this code within {0:?}: check the code and that `pcp send` is still running")]
    PeerNotFound(std::time::Duration),

    /// `peer` is "sender" or "receiver"; `theirs` is `None` when the peer speaks no pcp
    /// protocol this release knows.
    #[error("{}", incompatible(.peer, .theirs, .ours))]
    IncompatibleVersion {
        peer: &'static str,
        theirs: Option<u32>,
        ours: u32,
    },

    #[error("protocol violation by the other side: {0}")]
    Protocol(String),

    #[error(
        "a frame failed authentication (tampered, replayed or reordered data): session closed"
    )]
    Decrypt,

    #[error("frame of {0} bytes exceeds the limit of {1} bytes: session closed")]
    FrameTooLarge(usize, usize),

    #[error("the receiver declined the offer")]
    Declined,

    #[error("the sender refused: {0}")]
    Remote(String),

    #[error("invalid manifest from the sender: {0}")]
    InvalidManifest(String),

    #[error("{} already exists; pass --overwrite to replace it", .0.display())]
    TargetExists(PathBuf),

    #[error("{}: data does not match the sender's BLAKE3 hash; the file was not kept", .0.display())]
    Integrity(PathBuf),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "the text is {0} bytes; --text takes at most 64 KiB (send a file, or pipe it into `pcp send -`)"
    )]
    TextTooLong(u64),

    #[error(
        "--stdout takes a share of exactly one file, and this one holds {0}: receive it into a \
         folder instead (without --stdout)"
    )]
    NotOneFile(String),

    #[error(
        "the bytes written to standard output do not match the sender's BLAKE3 hash: do not use \
         them"
    )]
    StreamIntegrity,

    #[error("{0}")]
    Usage(String),

    #[error("network: {0}")]
    Network(String),

    #[error("connection to the other side was lost: {0}")]
    ConnectionLost(String),

    /// The sender closed a new stream before answering its first message: it never read it (a
    /// busy sender may drop a stream it has no room for), so no guess was made and trying
    /// again is safe.
    #[error("the sender closed the stream before answering: {0}")]
    Unanswered(String),

    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),

    #[error("interrupted")]
    Interrupted,

    #[error(
        "{reason}; {} received and verified so far are kept: \
         run `pcp receive` again, with a new share of the same files into the same folder, to \
         resume", crate::text::human_bytes(*kept)
    )]
    SenderStopped { reason: String, kept: u64 },
}

/// Carried inside an `io::Error` when the other side refused pcp's protocol on a stream that
/// was negotiated lazily (see `net::lazy`): the refusal arrives in place of the first answer.
#[derive(Debug, thiserror::Error)]
#[error("the other side does not speak pcp's protocol")]
pub struct ProtocolRefused;

/// Whether an I/O error is a [`ProtocolRefused`].
pub fn is_refused(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<ProtocolRefused>())
}

fn incompatible(peer: &str, theirs: &Option<u32>, ours: &u32) -> String {
    let them = match theirs {
        Some(v) => format!("the {peer} runs pcp protocol {v}, this pcp speaks protocol {ours}"),
        None => format!(
            "the {peer} speaks no pcp protocol this pcp knows (this pcp speaks protocol {ours})"
        ),
    };
    format!("{them}: both sides need a pcp release with the same protocol")
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds a human context to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}
