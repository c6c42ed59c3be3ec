//! Direct writes (`O_DIRECT`) of a big file's data, as many as the disk takes.
//!
//! A write through the page cache is a copy into memory; the disk gets the bytes later, after
//! pcp has exited if the file fits in what the kernel lets wait (as with `cp` or `scp`). A
//! direct write saves that copy (on a 2-core VM, the copy into pages the kernel allocates was
//! 14-43% of the receiver's CPU) but takes the disk's own time, during which the download
//! would wait. So a download keeps one direct write in flight and does not wait for it: a piece
//! that arrives while the disk is still busy goes through the page cache. A disk faster than
//! the link takes most pieces; a slow or busy one (one that also serves the sender, as on a
//! single test machine) takes few, and the receive goes at the speed of the page cache, as
//! scp's does. Waiting for every direct write made a 1 GiB receive 20-40% slower where the
//! disk was the slower side; switching to the page cache for good once the disk held the
//! download up made it 20-50% slower where the page cache's copy was (`scripts/BENCHMARKS.md`).

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

    /// Direct writes put the same bytes where buffered ones would: whole pages around the
    /// page cache, an unaligned start and a last partial page through the file itself.
    #[test]
    fn direct_writes_land_where_buffered_ones_would() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
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
}
