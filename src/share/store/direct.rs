//! Direct reads (`O_DIRECT`): reads of at least [`DIRECT_READ`] of data the page cache does not
//! hold go around it, so the disk writes straight into the buffer that is sealed and sent,
//! instead of into the page cache for the CPU to copy out (on the sender's one busy thread:
//! 12% of the CPU both peers spent on a 1 GiB receive). Anything else, old kernels (no
//! `cachestat`) and file systems that refuse `O_DIRECT` read the usual way.

use std::fs::File;
use std::sync::Arc;

use super::{fail, pread_append, ReadError, Room, Share};
use crate::pages::PAGE;
use crate::proto::{ErrorCode, Failure, MAX_READ};

/// Reads at least this big may go direct.
const DIRECT_READ: usize = 256 * 1024;

/// A direct read's buffer, where its bytes start in it, and the file's hash when the read
/// covered the whole file.
pub(super) type DirectRead = (Vec<u8>, usize, Option<[u8; 32]>);

impl Share {
    /// File `id` opened for direct reads, if its filesystem allows them.
    fn direct_file(&self, id: u64) -> std::result::Result<Option<Arc<File>>, Failure> {
        use std::os::unix::fs::OpenOptionsExt;
        let src = self.source(id)?;
        if let Some(f) = self.direct.lock().expect("lock").get(&id) {
            return Ok(f.clone());
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&src.path)
            .ok()
            .map(Arc::new);
        self.direct.lock().expect("lock").put(id, f.clone());
        Ok(f)
    }

    /// Whether the page cache holds less than half of `len` bytes at `offset` of `f`
    /// (`cachestat(2)`, Linux 6.5; false where the kernel lacks it).
    fn mostly_uncached(f: &File, offset: u64, len: usize) -> bool {
        use std::os::fd::AsRawFd;
        /// `__NR_cachestat`, the same on every architecture Linux numbers syscalls for anew.
        const SYS_CACHESTAT: libc::c_long = 451;
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        let range = Range {
            off: offset,
            len: len as u64,
        };
        let mut stat = Stat::default();
        // SAFETY: cachestat reads `range` and writes `stat`, both live and of the kernel's
        // layout for the call; the fd is open for `f`'s lifetime.
        let r = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                f.as_raw_fd(),
                &range as *const Range,
                &mut stat as *mut Stat,
                0,
            )
        };
        // SAFETY: sysconf only reads a constant of the system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        r == 0 && (stat.nr_cache as usize) * page * 2 < len
    }

    /// The direct handle to read `len` bytes at `offset` of file `id` with, when that read is
    /// big, aligned, of data the page cache mostly lacks, and the filesystem allows it.
    pub(super) fn direct_for(
        &self,
        id: u64,
        offset: u64,
        len: u32,
    ) -> std::result::Result<Option<Arc<File>>, Failure> {
        let size = self.source(id)?.size;
        if len > MAX_READ || offset >= size || !offset.is_multiple_of(PAGE as u64) {
            return Ok(None);
        }
        let want = (size - offset).min(len as u64) as usize;
        if want < DIRECT_READ {
            return Ok(None);
        }
        Ok(self
            .direct_file(id)?
            .filter(|f| Self::mostly_uncached(f, offset, want)))
    }

    /// A read of `len` bytes at `offset` straight from the disk with `f` (from
    /// [`direct_for`](Self::direct_for)), into a buffer laid out as [`read`](Self::read)'s
    /// except that the bytes start at the returned index (`room.before` and what aligns
    /// them). `None`: the disk refused the alignment; read it the usual way.
    pub(super) fn read_direct(
        &self,
        id: u64,
        offset: u64,
        len: u32,
        room: Room,
        f: &File,
    ) -> std::result::Result<Option<DirectRead>, ReadError> {
        let src = self.source(id)?;
        let want = (src.size.saturating_sub(offset)).min(len as u64) as usize;
        let span = want.next_multiple_of(PAGE);
        let mut buf = Vec::with_capacity(PAGE + room.before + span + room.after);
        let start = buf.as_ptr() as usize + room.before;
        let at = start.next_multiple_of(PAGE) - start + room.before;
        buf.resize(at, 0);
        let end = at + span;
        while buf.len() < end {
            let done = buf.len() - at;
            match pread_append(f, &mut buf, end, offset + done as u64, 0) {
                Ok(n) if n == 0 || !n.is_multiple_of(PAGE) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Alignment this disk does not accept: not again for this file.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && done == 0 => {
                    self.direct.lock().expect("lock").put(id, None);
                    return Ok(None);
                }
                Err(e) => return Err(fail(ErrorCode::Io, format!("read failed: {e}")).into()),
            }
        }
        buf.truncate(at + want);
        let (buf, hash) = self.finish_read(id, f, buf, at, offset, want)?;
        Ok(Some((buf, at, hash)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::share_of;
    use super::super::{request, Answer};
    use super::*;
    use crate::crypto::{DATA_ROOM, TAG};
    use crate::proto::Request;

    /// A big read of data the page cache lacks comes straight from the disk, aligned for it,
    /// with room for the record around it, and the same bytes as any other read; once the
    /// file is cached, reads of it come from the cache again.
    #[tokio::test]
    async fn big_reads_of_uncached_data_bypass_the_page_cache() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..700_001u32).map(|i| (i * 31 % 251) as u8).collect();
        let (share, id) = share_of(dir.path(), &data);
        let share = Arc::new(share);
        let f = File::open(dir.path().join("f")).unwrap();
        f.sync_all().unwrap();
        // SAFETY: advice about an open file's cache; no memory is touched.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
        // Too small, or unaligned: the usual way.
        assert!(share.direct_for(id, 0, 64 * 1024).unwrap().is_none());
        assert!(share.direct_for(id, 100, MAX_READ).unwrap().is_none());
        let room = Room {
            before: DATA_ROOM,
            after: TAG,
        };
        let d = share
            .direct_for(id, 4096, MAX_READ)
            .unwrap()
            .expect("a big uncached read goes direct (the temporary folder allows O_DIRECT)");
        let (buf, at, hash) = share
            .read_direct(id, 4096, MAX_READ, room, &d)
            .unwrap()
            .expect("the disk takes page-aligned reads");
        assert!(at >= DATA_ROOM);
        assert_eq!((buf.as_ptr() as usize + at) % PAGE, 0);
        assert!(buf.capacity() >= buf.len() + TAG, "no room for the tag");
        assert!(buf[at..] == data[4096..], "the bytes differ");
        assert_eq!(hash, None);
        // A read of the whole file brings its hash; an answer carries the bytes.
        let d = share.direct_for(id, 0, MAX_READ).unwrap().unwrap();
        let (buf, at, hash) = share
            .read_direct(id, 0, MAX_READ, room, &d)
            .unwrap()
            .unwrap();
        assert!(buf[at..] == data[..]);
        assert_eq!(hash, Some(*blake3::hash(&data).as_bytes()));
        let req = Request {
            id: 9,
            op: Some(request::Op::Read(crate::proto::Read {
                file: id,
                offset: 262_144,
                len: MAX_READ,
                hash: false,
                zeros: false,
                compress: false,
            })),
        };
        match share.clone().answer(req).await {
            Answer::Data { id: 9, buf, at } => assert!(buf[at..] == data[262_144..]),
            _ => panic!("no data"),
        }
        // Cached now: the usual way.
        let (_, _) = share.read(id, 0, MAX_READ, room, false).unwrap();
        assert!(share.direct_for(id, 0, MAX_READ).unwrap().is_none());
    }
}
