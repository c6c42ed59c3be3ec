//! The mount: a read-only view of a share whose bytes are fetched on demand. The filesystem
//! logic is testable without a mount ([`fs`], over the [`tree`], the block [`cache`] and the
//! [`readahead`] policy); [`fuse`] only translates kernel calls to it and [`mounted`] mounts and
//! unmounts; [`copy_out`] downloads everything through the mount; [`run`] is `pcp mount` as a
//! whole. What the filesystem promises is in `SEMANTICS.md` beside this file.

pub(crate) mod cache;
pub(crate) mod copy_out;
mod extents;
pub mod fs;
mod fuse;
mod mounted;
pub(crate) mod readahead;
pub(crate) mod run;
pub(crate) mod tree;

pub use fs::{MountFs, Reading, Seeking};
pub use mounted::{check_mountpoint, is_stale, mount, MountOptions, Mounted};
pub use tree::{Attr, ROOT_INO};

/// Why a filesystem call failed, as an errno.
pub type Errno = i32;
