//! pcp — peer copy. Send, receive and mount files between two computers with a few words.
//!
//! Layers, each depending only on the ones before it:
//!
//! | layer | what it owns |
//! |---|---|
//! | [`code`], [`error`], [`manifest`], [`text`] | the code phrase; typed errors; the shared tree and its validation; peer text made safe for a terminal |
//! | [`proto`], [`pack`] | wire messages, size limits, the frame codec (spec: `proto/SPEC.md`); file data compressed on the wire |
//! | [`crypto`] | handshake (SPAKE2 bound to peer IDs, confirmation, resumption), key schedule, record layer |
//! | [`net`] | the libp2p node (one task owns the swarm) and discovery (mDNS, DHT) |
//! | [`share`] | the sending side: file store, accept loop and limits, streams, `pcp send` |
//! | [`fetch`] | the fetching side: finding the sender, sessions, request lanes, reconnection, the `FileSource` port |
//! | [`receive`] | writing a share to disk, verified, with resume; `pcp receive` as steps |
//! | [`mount`] | the FUSE filesystem: tree, block cache, read-ahead, adapter, copy-out, `pcp mount` |
//! | [`cli`] | arguments in, events out as lines; `main.rs` maps the result to an exit code |

pub mod cli;
pub mod code;
pub mod crypto;
pub mod error;
pub mod fetch;
mod linger;
pub mod manifest;
pub mod mount;
pub mod net;
pub mod pack;
pub mod pages;
pub mod proto;
mod rate;
pub mod receive;
pub mod share;
mod task;
pub mod text;

pub use error::{Error, Result};
