//! The FUSE adapter: each callback translates to one call of [`MountFs`] and maps the result
//! to a reply. The callbacks run on the tokio runtime, which reads the kernel's requests itself
//! (see `mounted`), so none may block: metadata calls and cached reads answer at once from
//! memory, and reads that wait for the sender reply from their own task. Every change is
//! refused with EROFS. Nothing here panics or waits without a bound. Mounting and unmounting
//! are in `mounted`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    WriteFlags,
};

use super::fs::{MountFs, Reading, Seeking};
use super::tree::Attr;
use crate::fetch::FileSource;
use crate::linger::{Linger, LINGER_AFTER};
use crate::proto::{Kind, MAX_READ};

/// Kernel read-ahead asked for (and FUSE request size for sequential reads).
pub(super) const READAHEAD: u32 = 1 << 20;

/// The tree never changes while mounted, so the kernel may cache names and attributes for long.
const TTL: Duration = Duration::from_secs(24 * 3600);

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

/// Defines `Filesystem` methods that refuse with EROFS: every change is refused, the mount is a
/// read-only view of the sender's snapshot. Each line: name, argument types, reply type.
macro_rules! refuse_changes {
    ($( $name:ident($($arg:ty),*) -> $reply:ty; )*) => {
        $(
            #[allow(clippy::too_many_arguments)]
            fn $name(&self, _req: &Request, $(_: $arg,)* reply: $reply) {
                reply.error(Errno::EROFS);
            }
        )*
    };
}

pub(super) struct Adapter<S: FileSource> {
    pub(super) fs: Arc<MountFs<S>>,
    /// The runtime these callbacks run on (it reads the kernel's requests), for the tasks that
    /// answer reads and seeks waiting for the sender.
    pub(super) rt: tokio::runtime::Handle,
    /// Polling after answers that waited for the sender.
    pub(super) linger: Arc<Linger>,
    pub(super) uid: u32,
    pub(super) gid: u32,
}
impl<S: FileSource> Adapter<S> {
    fn attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            // Large reads from tools that size their buffers by st_blksize (cp, rsync).
            blksize: MAX_READ,
            flags: 0,
        }
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        _ => FileType::RegularFile,
    }
}

impl<S: FileSource> Filesystem for Adapter<S> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // One at a time: fuser adds none of a set if the kernel lacks one of them.
        for flag in [
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_MAX_PAGES,
        ] {
            let _ = config.add_capabilities(flag);
        }
        let _ = config
            .set_max_readahead(READAHEAD)
            .or_else(|max| config.set_max_readahead(max));
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.fs.getattr(ino.0) {
            // "Not implemented" makes the kernel stop sending OPEN and RELEASE for good and
            // open every file as if FOPEN_KEEP_CACHE had been answered (Linux >= 5.1; see
            // FUSE_NO_OPEN_SUPPORT): two round trips less per file for `cp -r`. Opens for
            // writing never get here on this read-only mount; they are refused anyway.
            Ok(_) => reply.error(Errno::ENOSYS),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Cached data is answered at once; a miss by its own task when the sender's reply
        // arrives, so the next request is read meanwhile. After a small answer that waited, the
        // worker polls a while (see `Linger`): the reader's next request, and the sender's
        // answer to it, then find it running.
        match self.fs.begin_read(ino.0, offset, size) {
            Reading::Done(Ok(b)) => reply.data(&b),
            Reading::Done(Err(e)) => reply.error(errno(e)),
            Reading::Wait(f) => {
                let linger = self.linger.clone();
                self.rt.spawn(async move {
                    match f.await {
                        Ok(b) => reply.data(&b),
                        Err(e) => reply.error(errno(e)),
                    }
                    if size as usize <= LINGER_AFTER {
                        linger.answered();
                    }
                });
            }
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // The kernel itself answers SEEK_SET, SEEK_CUR and SEEK_END.
        let hole = match whence {
            libc::SEEK_DATA => false,
            libc::SEEK_HOLE => true,
            _ => return reply.error(Errno::EINVAL),
        };
        let answer = |r: Result<u64, i32>, reply: ReplyLseek| match r {
            Ok(p) => reply.offset(p as i64),
            Err(e) => reply.error(errno(e)),
        };
        match self.fs.begin_seek(ino.0, offset, hole) {
            Seeking::Done(r) => answer(r, reply),
            Seeking::Wait(f) => {
                self.rt.spawn(async move { answer(f.await, reply) });
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush on a read-only tree; "not implemented" stops the kernel from
        // sending a FLUSH (a synchronous round trip) at every close.
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            // As for files: no OPENDIR/RELEASEDIR from now on, and the kernel then keeps
            // listings cached as if FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE had been answered.
            Ok(a) if a.kind == Kind::Dir => reply.error(Errno::ENOSYS),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(ino.0, offset) {
            Ok(list) => {
                for (i, (cino, kind, name)) in list.enumerate() {
                    if reply.add(
                        INodeNo(cino),
                        offset + i as u64 + 1,
                        file_type(kind),
                        OsStr::from_bytes(name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.fs.readdir(ino.0, offset) {
            Ok(list) => {
                for (i, (cino, _kind, name)) in list.enumerate() {
                    let Ok(a) = self.fs.getattr(cino) else {
                        continue;
                    };
                    if reply.add(
                        INodeNo(cino),
                        offset + i as u64 + 1,
                        OsStr::from_bytes(name),
                        &TTL,
                        &self.attr(&a),
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (bytes, entries) = self.fs.totals();
        reply.statfs(bytes.div_ceil(4096), 0, 0, entries, 0, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.bits() & libc::W_OK != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::from_i32(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    refuse_changes! {
        setattr(INodeNo, Option<u32>, Option<u32>, Option<u32>, Option<u64>,
            Option<fuser::TimeOrNow>, Option<fuser::TimeOrNow>, Option<SystemTime>,
            Option<FileHandle>, Option<SystemTime>, Option<SystemTime>, Option<SystemTime>,
            Option<fuser::BsdFileFlags>) -> ReplyAttr;
        mknod(INodeNo, &OsStr, u32, u32, u32) -> ReplyEntry;
        mkdir(INodeNo, &OsStr, u32, u32) -> ReplyEntry;
        unlink(INodeNo, &OsStr) -> ReplyEmpty;
        rmdir(INodeNo, &OsStr) -> ReplyEmpty;
        symlink(INodeNo, &OsStr, &Path) -> ReplyEntry;
        rename(INodeNo, &OsStr, INodeNo, &OsStr, fuser::RenameFlags) -> ReplyEmpty;
        link(INodeNo, INodeNo, &OsStr) -> ReplyEntry;
        write(INodeNo, FileHandle, u64, &[u8], WriteFlags, OpenFlags, Option<LockOwner>) -> ReplyWrite;
        create(INodeNo, &OsStr, u32, u32, i32) -> fuser::ReplyCreate;
        setxattr(INodeNo, &OsStr, &[u8], i32, u32) -> ReplyEmpty;
        removexattr(INodeNo, &OsStr) -> ReplyEmpty;
        fallocate(INodeNo, FileHandle, u64, u64, i32) -> ReplyEmpty;
    }
}
