//! The FUSE adapter: each callback translates to one call of [`MountFs`] and maps the result
//! to a reply. Metadata calls and cached reads answer at once from memory; reads that wait for
//! the sender reply from the tokio runtime, so a slow network never blocks a FUSE thread. Every
//! change is refused with EROFS. Nothing here panics or waits without a bound.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, SessionACL, WriteFlags,
};

use crate::error::{Error, Result};
use crate::fs::{Attr, MountFs, Reading};
use crate::receive::FileSource;
use crate::wire::{Kind, MAX_READ};

/// Kernel read-ahead asked for (and FUSE request size for sequential reads).
const READAHEAD: u32 = 1 << 20;

/// The tree never changes while mounted, so the kernel may cache names and attributes for long.
const TTL: Duration = Duration::from_secs(24 * 3600);

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

struct Adapter<S: FileSource> {
    fs: Arc<MountFs<S>>,
    rt: tokio::runtime::Handle,
    uid: u32,
    gid: u32,
}

impl<S: FileSource> Adapter<S> {
    fn attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
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
        // Cached data is answered from this thread; a miss is answered from the runtime when
        // the sender's reply arrives, so this thread is free again at once.
        let _rt = self.rt.enter();
        match self.fs.begin_read(ino.0, offset, size) {
            Reading::Done(Ok(b)) => reply.data(&b),
            Reading::Done(Err(e)) => reply.error(errno(e)),
            Reading::Wait(f) => {
                self.rt.spawn(async move {
                    match f.await {
                        Ok(b) => reply.data(&b),
                        Err(e) => reply.error(errno(e)),
                    }
                });
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
                for (i, (cino, kind, name)) in list.into_iter().enumerate() {
                    if reply.add(
                        INodeNo(cino),
                        offset + i as u64 + 1,
                        file_type(kind),
                        OsStr::from_bytes(&name),
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
                for (i, (cino, _kind, name)) in list.into_iter().enumerate() {
                    let Ok(a) = self.fs.getattr(cino) else {
                        continue;
                    };
                    if reply.add(
                        INodeNo(cino),
                        offset + i as u64 + 1,
                        OsStr::from_bytes(&name),
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

    // Every change is refused: the mount is a read-only view of the sender's snapshot.
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }
    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }
    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }
    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }
    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }
    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}

/// How to mount.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Let other local users read the mount.
    pub allow_other: bool,
}

/// Whether `path` is a mountpoint left behind by a FUSE process that died.
pub fn is_stale(path: &Path) -> bool {
    // statfs, not stat: FUSE always asks the filesystem for it, while a stat may be answered
    // from attributes the kernel still caches. A dead FUSE process shows as ENOTCONN.
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a valid C string and `buf` a properly sized, writable statfs.
    let r = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
}

/// A live mount; unmounted (lazily if busy) when dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    path: PathBuf,
}

/// Mounts `fs` read-only at `path`. Its reads run on `rt`.
pub fn mount<S: FileSource>(
    fs: Arc<MountFs<S>>,
    path: &Path,
    opts: &MountOptions,
    rt: tokio::runtime::Handle,
) -> Result<Mounted> {
    if is_stale(path) {
        return Err(Error::io(
            format!(
                "{} is a stale mount left by a pcp (or other FUSE process) that died",
                path.display()
            ),
            std::io::Error::other(format!(
                "clear it with: fusermount3 -uz {0}  (or: umount -l {0})",
                path.display()
            )),
        ));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::io(
                format!("cannot mount on {}", path.display()),
                std::io::Error::other("not a folder"),
            ))
        }
        Err(e) => return Err(Error::io(format!("cannot mount on {}", path.display()), e)),
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let adapter = Adapter { fs, rt, uid, gid };
    let mut config = Config::default();
    // The filesystem name shows in /proc/mounts: never anything of the code.
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("pcp".into()),
        MountOption::Subtype("pcp".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(4);
    config.clone_fd = true;
    let session = fuser::spawn_mount(adapter, path, &config)
        .map_err(|e| Error::io(format!("cannot mount on {}", path.display()), e))?;
    raise_readahead(path);
    Ok(Mounted {
        session: Some(session),
        path: path.to_path_buf(),
    })
}

/// FUSE cannot ask for more than the kernel's default read-ahead (128 KiB), so sequential
/// readers would get 128 KiB requests. Where allowed (root), raise this mount's own read-ahead to
/// the 1 MiB `max_readahead` asked for at init: 1 MiB requests, ~12% faster sequential reads here.
fn raise_readahead(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else {
        return;
    };
    let (major, minor) = (libc::major(m.dev()), libc::minor(m.dev()));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, format!("{}", READAHEAD >> 10)) {
        tracing::debug!("kernel read-ahead left at its default ({knob}: {e})");
    }
}

impl Mounted {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the kernel still has us mounted (false after an outside `umount`).
    pub fn is_alive(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| !s.guard.is_finished())
    }

    /// Unmounts; if the mount is busy it is detached lazily (it goes away when its last user
    /// closes it). Returns whether it had to be detached.
    pub fn unmount(mut self) -> bool {
        self.do_unmount()
    }

    fn do_unmount(&mut self) -> bool {
        let Some(s) = self.session.take() else {
            return false;
        };
        if s.guard.is_finished() {
            return false;
        }
        // The join after a successful unmount can wait for as long as another mount namespace
        // still holds a copy of the mount; never let that hold up exiting.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(s.umount_and_join());
        });
        let result = match rx.recv_timeout(std::time::Duration::from_secs(3)) {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!("unmounted, but the FUSE threads did not stop within 3 s");
                Ok(())
            }
        };
        match result {
            Ok(()) => false,
            Err(e) => {
                tracing::debug!("unmount failed ({e}); detaching lazily");
                let c = std::ffi::CString::new(self.path.as_os_str().as_bytes())
                    .expect("no NUL in a path");
                // SAFETY: c is a valid path; MNT_DETACH only detaches the mount.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                true
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.do_unmount();
    }
}
