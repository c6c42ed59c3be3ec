//! pcp — peer copy. Send, receive and mount files between two computers with a few words.
//!
//! Layers, each depending only on the ones before it:
//! [`code`] → [`net`] and [`discovery`] → [`crypto`] (authenticated session) → [`wire`]
//! (messages) → [`share`] (sending side) / [`fetch`] (fetching side) → [`receive`] (copy to
//! disk) → the CLI in `main.rs`.

pub mod cli;
pub mod code;
pub mod connect;
pub mod crypto;
pub mod discovery;
pub mod error;
pub mod fetch;
pub mod fs;
pub mod fuse;
pub mod manifest;
pub mod net;
pub mod receive;
pub mod remote;
pub mod share;
pub mod wire;

pub use error::{Error, Result};
