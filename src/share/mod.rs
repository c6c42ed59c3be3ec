//! The sharing side: what is shared and how its bytes are read ([`store`]), the accept loop and
//! its limits ([`serve`]), each inbound stream ([`stream`]), bytes from a pipe made a file
//! ([`spool`]), and `pcp send` as a whole
//! ([`send`]: node, announcements, serving, reported as events).

mod limits;
pub(crate) mod send;
mod serve;
pub mod spool;
mod store;
mod stream;
mod tickets;
mod tree_hash;

pub use serve::{serve, ServeOptions, ShareEnd, ShareEvent, MAX_FAILED_ATTEMPTS, MAX_STREAMS};
pub use spool::Spool;
pub use store::{ReadError, Share};
pub use tickets::TICKET_IDLE;
