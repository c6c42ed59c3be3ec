//! Sparse files on the sending side: where their holes are (`lseek` with `SEEK_DATA` /
//! `SEEK_HOLE`), reads wholly inside one answered as zeros without reading them, and the
//! answer to a receiver's `Seek`.

use std::fs::File;

use super::{fail, ReadBytes, ReadError, Room, Share};
use crate::manifest::lseek;
use crate::proto::{ErrorCode, Failure, Read, MAX_EDGES, MAX_READ};

impl Share {
    /// Whether `offset..offset + want` of file `id` (open as `f`) lies in a hole: for a file
    /// with holes (`Entry::sparse`), so its holes are answered without reading them (the page
    /// cache would fill with pages of zeros). Any doubt (an error, a filesystem that cannot
    /// tell, which reports all data) reads the bytes.
    pub(super) fn in_hole(&self, id: u64, f: &File, offset: u64, want: u64) -> bool {
        if want == 0 || !self.entry(id).is_some_and(|e| e.sparse()) {
            return false;
        }
        match lseek(f, offset, false) {
            Ok(None) => true,
            Ok(Some(data)) => data >= offset.saturating_add(want),
            Err(_) => false,
        }
    }

    /// Whether read `r` lies wholly in a hole of its (sparse) file: one `lseek` for a sparse
    /// file, nothing for others. Out-of-range reads say no (the usual path refuses them).
    pub(super) fn read_in_hole(&self, r: &Read) -> bool {
        let Ok(size) = self.source(r.file).map(|s| s.size) else {
            return false;
        };
        if r.len > MAX_READ || r.offset > size || !self.entry(r.file).is_some_and(|e| e.sparse()) {
            return false;
        }
        let want = (size - r.offset).min(r.len as u64);
        self.file(r.file)
            .is_ok_and(|f| self.in_hole(r.file, &f, r.offset, want))
    }

    /// Read `r`, found wholly in a hole ([`read_in_hole`](Self::read_in_hole)): its zeros, not
    /// read from the disk, with the checks and counts of any read.
    pub(super) fn read_hole(
        &self,
        r: &Read,
        room: Room,
    ) -> std::result::Result<ReadBytes, ReadError> {
        let f = self.file(r.file)?;
        let want = (self.source(r.file)?.size - r.offset).min(r.len as u64) as usize;
        let mut buf = Vec::with_capacity(room.before + want + room.after);
        buf.resize(room.before + want, 0);
        let read = self.finish_read(r.file, &f, buf, room.before, r.offset, want)?;
        Ok(self.hashed(r, room.before, read))
    }

    /// Answers a [`Seek`](crate::proto::Seek): where the next data or hole of a file begins, at
    /// `offset` or after, at most its size (the size: no data after `offset`), and the edges
    /// between data and hole that follow, up to [`MAX_EDGES`] (so a reader walking the file's
    /// extents, as `cp` does, asks once for many).
    pub(crate) fn seek(
        &self,
        s: &crate::proto::Seek,
    ) -> std::result::Result<(u64, Vec<u64>), Failure> {
        let size = self.source(s.file)?.size;
        if s.offset >= size {
            return Err(fail(
                ErrorCode::BadRange,
                format!("offset {} is not before the end", s.offset),
            ));
        }
        let f = self.file(s.file)?;
        let found = lseek(&f, s.offset, s.hole)
            .map_err(|e| fail(ErrorCode::Io, format!("seek failed: {e}")))?;
        let position = found.unwrap_or(size).clamp(s.offset, size);
        // From `position` on, spans of the kind sought and the other by turns: each ends where
        // the other kind begins (no more data: at the size). Any doubt ends the list.
        let (mut edges, mut at, mut hole) = (Vec::new(), position, s.hole);
        while at < size && edges.len() < MAX_EDGES {
            match lseek(&f, at, !hole) {
                Ok(end) if end.is_none_or(|e| e > at) => {
                    at = end.unwrap_or(size).min(size);
                    edges.push(at);
                    hole = !hole;
                }
                _ => break,
            }
        }
        self.check_unchanged(s.file, &f)?;
        Ok((position, edges))
    }
}
