//! The wire format: protobuf messages with their size limits (`messages`) and the
//! length-prefixed frames that carry them (`frame`). `proto/SPEC.md` at the top of the
//! repository describes both; `proto/vectors.txt` pins the bytes.

mod frame;
mod messages;

pub(crate) use frame::{lost, read_plain};
pub use frame::{read_frame, read_frame_len, read_opening, write_frame, write_opening};
pub use messages::*;

/// A line of `proto/vectors.txt`, by name (golden-byte tests).
#[cfg(test)]
pub(crate) fn test_vector(name: &str) -> String {
    include_str!("../../proto/vectors.txt")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no vector named {name} in proto/vectors.txt"))
        .trim()
        .to_string()
}
