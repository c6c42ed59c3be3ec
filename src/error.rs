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

    /// The sender was found, but served another receiver for the whole wait.
    #[error(
        "the sender was still busy with other receivers after {0:?} (a share serves one \
         receiver at a time unless sent with --keep): ask for a new share when it is done"
    )]
    SenderBusy(std::time::Duration),

    /// Every address tried failed to connect: each as "ADDR: deepest cause" (at most
    /// [`Error::UNREACHABLE_SHOWN`]).
    #[error("cannot connect to {}", .0.join("; "))]
    Unreachable(Vec<String>),

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

    /// A receive that broke off (connection lost, no answer) after some of it arrived.
    #[error(
        "{cause}; {} received and verified so far are kept: run `pcp receive` again into the \
         same folder to resume (with the same code while that `pcp send` still runs)",
        crate::text::human_bytes(*kept)
    )]
    BrokenOff {
        #[source]
        cause: Box<Error>,
        kept: u64,
    },
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
    /// How many failed addresses an [`Error::Unreachable`] lists.
    pub const UNREACHABLE_SHOWN: usize = 4;

    /// `self` after `earlier`: failed addresses add up (each once, at most
    /// [`UNREACHABLE_SHOWN`](Self::UNREACHABLE_SHOWN)), any other error replaces.
    pub fn after(self, earlier: Option<Error>) -> Error {
        match (earlier, self) {
            (Some(Error::Unreachable(mut all)), Error::Unreachable(more)) => {
                for m in more {
                    if all.len() < Self::UNREACHABLE_SHOWN && !all.contains(&m) {
                        all.push(m);
                    }
                }
                Error::Unreachable(all)
            }
            (_, e) => e,
        }
    }

    /// `cause`, saying that `kept` bytes are on disk for a resume (when any are).
    pub fn broken_off(cause: Error, kept: u64) -> Error {
        match kept {
            0 => cause,
            kept => Error::BrokenOff {
                cause: Box::new(cause),
                kept,
            },
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_addresses_add_up_once_each_and_bounded() {
        let one = |a: &str| Error::Unreachable(vec![format!("{a}: Connection refused")]);
        let mut e = one("/ip4/10.0.0.1/tcp/1").after(None);
        e = one("/ip4/10.0.0.2/tcp/1").after(Some(e));
        e = one("/ip4/10.0.0.1/tcp/1").after(Some(e));
        assert_eq!(
            e.to_string(),
            "cannot connect to /ip4/10.0.0.1/tcp/1: Connection refused; \
             /ip4/10.0.0.2/tcp/1: Connection refused"
        );
        for i in 3..10 {
            e = one(&format!("/ip4/10.0.0.{i}/tcp/1")).after(Some(e));
        }
        let Error::Unreachable(all) = &e else {
            panic!("{e}")
        };
        assert_eq!(all.len(), Error::UNREACHABLE_SHOWN);
        // Any other error replaces the list, and a list replaces any other error.
        assert!(matches!(Error::WrongCode.after(Some(e)), Error::WrongCode));
        assert!(matches!(
            one("/ip4/10.0.0.1/tcp/1").after(Some(Error::Network("x".into()))),
            Error::Unreachable(_)
        ));
    }
}
