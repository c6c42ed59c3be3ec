//! Direct writes (`O_DIRECT`) of a big file's data, as many as the disk takes.
//!
//! A write through the page cache is a copy into memory; the disk gets the bytes later, after
//! pcp has exited if the file fits in what the kernel lets wait (as with `cp` or `scp`). A
//! direct write saves that copy (on a 2-core VM, the copy into pages the kernel allocates was
//! 14-43% of the receiver's CPU) but takes the disk's own time, during which the download
//! would wait. So a download keeps one direct write in flight and does not wait for it: pieces
//! that arrive while the disk is still busy are held back, up to 4 MiB, to go with the next
//! piece in one bigger write (a disk takes those faster), and what comes beyond that goes
//! through the page cache. A disk faster than the link takes most pieces; a slow or busy one
//! (one that also serves the sender, as on a single test machine) takes fewer, and the rest
//! goes at the speed of the page cache, as scp's does. Waiting for every direct write made a
//! 1 GiB receive 20-40% slower where the disk was the slower side; switching to the page cache
//! for good once the disk held the download up made it 20-50% slower where the page cache's
//! copy was the slower side (`scripts/BENCHMARKS.md`).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

use crate::pages::{self, Page, PAGE};

/// Writes of a big file's data that go around the page cache (`O_DIRECT`): the disk reads
/// them from pcp's own page-aligned memory instead of the kernel copying them into pages it
/// allocates for the cache and writes back later (on a 2-core VM, that copy into new pages
/// was 14-28% of the CPU both peers spent on a 1 GiB receive). What cannot go direct (an
/// unaligned start, a file's last bytes, a filesystem that refuses) is written as usual.
pub(super) struct DirectWriter {
    /// The same file, opened again for direct writes; `None` once it refused one.
    direct: Option<File>,
    /// Where bytes that do not start on a page go through.
    buf: Vec<Page>,
}

impl DirectWriter {
    /// For `f`, reopened through `/proc/self/fd` (so the very same file); `None` where that
    /// or `O_DIRECT` is not possible.
    pub(super) fn open(f: &File) -> Option<DirectWriter> {
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        let c = CString::new(path).ok()?;
        // SAFETY: a NUL-terminated path; the descriptor returned is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_WRONLY | libc::O_DIRECT | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let direct = unsafe { File::from_raw_fd(fd) };
        Some(DirectWriter {
            direct: Some(direct),
            buf: Vec::new(),
        })
    }

    /// A writer that writes everything through the page cache.
    pub(super) fn unavailable() -> DirectWriter {
        DirectWriter {
            direct: None,
            buf: Vec::new(),
        }
    }

    /// Writes `pieces`, back to back from `off`, to `f`: in one direct write when every piece
    /// starts on a page and all but the last are whole pages (the disk takes one big write
    /// faster than several small ones: on this project's test VMs, 1.4 GB/s in 4 MiB writes
    /// against 0.77 GB/s in 1 MiB ones while the same disk served reads), else one by one.
    pub(super) fn write_pieces(
        &mut self,
        f: &File,
        pieces: &[bytes::Bytes],
        off: u64,
    ) -> io::Result<()> {
        let one_write = pieces.len() > 1
            && off.is_multiple_of(PAGE as u64)
            && pieces.iter().enumerate().all(|(i, p)| {
                (p.as_ptr() as usize).is_multiple_of(PAGE)
                    && (i + 1 == pieces.len() || p.len().is_multiple_of(PAGE))
            });
        let mut at = off;
        let mut done = 0usize;
        if let (true, Some(d)) = (one_write, &self.direct) {
            let last = pieces.last().map_or(0, |p| p.len());
            let whole = pieces.iter().map(|p| p.len()).sum::<usize>() - last % PAGE;
            let mut iov: Vec<libc::iovec> = pieces
                .iter()
                .map(|p| libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                })
                .collect();
            if let Some(l) = iov.last_mut() {
                l.iov_len -= last % PAGE;
            }
            // SAFETY: the iovecs point into `pieces`, alive and unchanged for the call.
            let n = unsafe {
                libc::pwritev(
                    d.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                    off as libc::off_t,
                )
            };
            // Anything short of the whole (or an error) is written below, piece by piece.
            if n as usize == whole {
                done = whole;
            }
        }
        for p in pieces {
            let skip = done.min(p.len());
            done -= skip;
            if skip < p.len() {
                self.write_at(f, &p[skip..], at + skip as u64)?;
            }
            at += p.len() as u64;
        }
        Ok(())
    }

    /// Writes `data` at `off` of `f`: the whole pages of it straight to the disk when `off` is
    /// page-aligned (from `data` itself when it starts on a page, else from an aligned copy),
    /// the rest through `f`.
    pub(super) fn write_at(&mut self, f: &File, data: &[u8], off: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let whole = data.len() / PAGE * PAGE;
        let mut done = 0;
        if let Some(d) = &self.direct {
            if whole > 0 && off.is_multiple_of(PAGE as u64) {
                // Bytes on a page boundary (a pooled frame's) go as they are; others are
                // copied to one first.
                let aligned = if (data.as_ptr() as usize).is_multiple_of(PAGE) {
                    &data[..whole]
                } else {
                    if self.buf.len() < whole / PAGE {
                        self.buf.resize(whole / PAGE, Page::ZERO);
                    }
                    let buf = &mut pages::bytes_mut(&mut self.buf)[..whole];
                    buf.copy_from_slice(&data[..whole]);
                    buf
                };
                while done < whole {
                    match d.write_at(&aligned[done..], off + done as u64) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) if n.is_multiple_of(PAGE) => done += n,
                        // A short write off the page grid: the rest the usual way.
                        Ok(n) => {
                            done += n;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // An alignment this disk does not take: the usual way from now on.
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                            self.direct = None;
                            self.buf = Vec::new();
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        f.write_all_at(&data[done..], off + done as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new file "f" in a new temporary folder, open for reading and writing.
    fn new_file() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        (dir, f)
    }

    /// Direct writes put the same bytes where buffered ones would: whole pages around the
    /// page cache, an unaligned start and a last partial page through the file itself.
    #[test]
    fn direct_writes_land_where_buffered_ones_would() {
        use std::os::unix::fs::FileExt;
        let (dir, f) = new_file();
        let path = dir.path().join("f");
        let mut w = DirectWriter::open(&f)
            .expect("the temporary folder's filesystem takes O_DIRECT (ext4, xfs, tmpfs 6.6+)");
        let data: Vec<u8> = (0..3 * PAGE as u32 * 100 + 777)
            .map(|i| (i * 17 % 253) as u8)
            .collect();
        let cut = PAGE * 100;
        // Out of order, as a resume may: the middle, the start, then a last partial page.
        w.write_at(&f, &data[cut..2 * cut], cut as u64).unwrap();
        w.write_at(&f, &data[..cut], 0).unwrap();
        w.write_at(&f, &data[2 * cut..], 2 * cut as u64).unwrap();
        assert!(w.direct.is_some(), "a direct write was refused");
        // Bytes that start on a page (a pooled frame's) go without the copy.
        let mut aligned = pages::take(cut);
        pages::bytes_mut(&mut aligned)[..cut].copy_from_slice(&data[cut..2 * cut]);
        w.write_at(&f, &pages::bytes(&aligned)[..cut], cut as u64)
            .unwrap();
        // An unaligned start goes the usual way, and so the file is its bytes.
        w.write_at(&f, &data[5..PAGE + 9], 5).unwrap();
        let mut got = vec![0; data.len()];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got == data, "the file differs from what was written");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), data.len() as u64);
    }

    /// Pieces written back to back land where they belong: in one write when they start on
    /// pages (a last partial page through the file), one by one when one does not.
    #[test]
    fn pieces_land_back_to_back_in_one_write_or_one_by_one() {
        use std::os::unix::fs::FileExt;
        let (_dir, f) = new_file();
        let mut w = DirectWriter::open(&f).expect("the temporary folder takes O_DIRECT");
        let data: Vec<u8> = (0..8 * PAGE as u32 * 64 + 333)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        // Bytes in pooled pages, as frames arrive: starting on a page.
        let piece = |r: std::ops::Range<usize>| {
            let mut pages = pages::take(r.len());
            pages::bytes_mut(&mut pages)[..r.len()].copy_from_slice(&data[r.clone()]);
            bytes::Bytes::from_owner(pages::Pooled {
                pages,
                start: 0,
                end: r.len(),
            })
        };
        let m = PAGE * 64;
        // Aligned pieces, the last one partial: one write and a tail.
        let aligned = [piece(0..m), piece(m..2 * m), piece(2 * m..5 * m + 333)];
        assert!(aligned
            .iter()
            .all(|p| (p.as_ptr() as usize).is_multiple_of(PAGE)));
        w.write_pieces(&f, &aligned, 0).unwrap();
        // A piece that does not start on a page: one by one, the same bytes.
        let odd = bytes::Bytes::copy_from_slice(&data[5 * m + 333..8 * m + 333]);
        let rest = [
            bytes::Bytes::copy_from_slice(&data[5 * m + 333..5 * m + 334]),
            odd.slice(1..),
        ];
        w.write_pieces(&f, &rest, 5 * m as u64 + 333).unwrap();
        assert!(w.direct.is_some(), "a direct write was refused");
        let mut got = vec![0; data.len()];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got == data, "the file differs from what was written");
    }
}
