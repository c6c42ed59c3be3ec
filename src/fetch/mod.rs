//! The fetching side: from a code to an authenticated session ([`connect`]: candidates from
//! discovery or given addresses, dialled and tried), the session's control stream
//! ([`session`]: offer, manifest, ending), requests over its data streams ([`client`]), a
//! sender that may come and go ([`remote`]: reconnecting with the resumption ticket), and the
//! [`FileSource`] port every reader of a share goes through ([`source`]).

mod client;
pub(crate) mod connect;
mod remote;
mod session;
mod source;

pub use client::Client;
pub use remote::{Remote, RemoteEvent};
pub use session::Session;
pub use source::FileSource;
