//! The receiver's disk, reached only through directory handles below `--out`: every folder is
//! opened one component at a time with `O_NOFOLLOW` from the `--out` handle, so no symlink (one
//! the share made, or one that was there) and no case-folding filesystem can lead a write
//! outside it. Temporary files are created exclusively (`O_EXCL`), final names are taken with
//! `RENAME_NOREPLACE` unless `--overwrite`, and modes are the sender's without setuid/setgid,
//! masked by the umask.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use lru::LruCache;

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::pages::PAGE;
use crate::proto::Entry;

/// Folder handles kept open for the files being written.
const OPEN_DIRS: usize = 64;

/// The marker left in a top-level folder while pcp fills it: a later receive of the same share
/// may resume into a folder that carries it, and into no other folder.
pub(super) const UNFINISHED: &str = crate::manifest::UNFINISHED_MARK;

/// The process umask (read once; 022 when it cannot be read).
fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

/// Permission bits to apply: the sender's, without setuid and setgid (a received file must not
/// gain privileges on this machine), masked by the umask as any new file is.
pub(super) fn safe_mode(mode: u32) -> u32 {
    mode & 0o1777 & !umask()
}

/// The temporary name a file is written under, next to its final place (reserved: see
/// `manifest::is_temp_name`). Derived from the name alone, so a later share of the same files
/// finds it again and resumes.
pub(super) fn part_name(e: &Entry) -> Vec<u8> {
    let h = blake3::hash(&e.name);
    let hex: String = h.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(".pcp-{hex}.part").into_bytes()
}

fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::other("NUL in a name"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `openat(dir, name, flags)`; never follows a symlink at `name`.
fn open_at(dir: &File, name: &[u8], flags: libc::c_int, mode: u32) -> io::Result<File> {
    let c = cstr(name)?;
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid dirfd and NUL-terminated name; the returned fd is owned by the File.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The folder `name` in `dir` (a symlink there is an error, not followed).
pub(super) fn open_dir(dir: &File, name: &[u8]) -> io::Result<File> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// A file of `dir` for reading (a symlink there is an error).
pub(super) fn open_file(dir: &File, name: &[u8]) -> io::Result<File> {
    open_at(dir, name, libc::O_RDONLY, 0)
}

/// What is at `name` in `dir`, without following a symlink; `None` if nothing.
pub(super) fn stat(dir: &File, name: &[u8]) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid dirfd, name and a writable stat buffer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(r) {
        // SAFETY: fstatat succeeded and filled the buffer.
        Ok(()) => Ok(Some(unsafe { st.assume_init() })),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(super) fn is_file(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

pub(super) fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// Creates folder `name` in `dir` (owner-only until its final mode is set).
pub(super) fn mkdir(dir: &File, name: &[u8]) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid dirfd and name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) })
}

/// Creates an empty file `name` in `dir`, failing if anything is there.
pub(super) fn create_new(dir: &File, name: &[u8]) -> io::Result<File> {
    open_at(
        dir,
        name,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )
}

/// The temporary file: created exclusively, or (resuming) the regular file an earlier run left.
pub(super) fn open_part(dir: &File, name: &[u8]) -> io::Result<File> {
    open_part_with(dir, name, 0)
}

/// Reserves the disk space for bytes `from..to` of `f` without changing its length
/// (`fallocate` with `FALLOC_FL_KEEP_SIZE`): a disk too small for the file fails here, before
/// its bytes are fetched, and the writes that follow find their blocks allocated (ext4 then has
/// no delayed allocation to do page by page). A file system that cannot (`EOPNOTSUPP`) is
/// simply written as before.
pub(super) fn reserve(f: &File, from: u64, to: u64) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    let (off, len) = (i64::try_from(from), i64::try_from(to - from));
    let (Ok(off), Ok(len)) = (off, len) else {
        return Ok(());
    };
    // SAFETY: fallocate on an open descriptor; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, off, len) };
    match check(r) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => Ok(()),
        other => other,
    }
}

/// Fails with `ENOSPC` unless the filesystem of `f` has `bytes` free for this user: for a
/// sparse file, whose holes are not reserved (see [`reserve`]).
pub(super) fn room_for(f: &File, bytes: u64) -> io::Result<()> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills the struct on success; it is read only then.
    check(unsafe { libc::fstatvfs(f.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < bytes {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    Ok(())
}

/// Makes `off..off + len` of `f` a hole (reads as zeros, takes no space) instead of writing
/// zeros there, growing the file to `off + len` if it is shorter. `Ok(false)`: this filesystem
/// makes no holes (or not of that range): write the zeros instead.
pub(super) fn hole(f: &File, off: u64, len: u64) -> io::Result<bool> {
    let (Ok(o), Ok(l)) = (i64::try_from(off), i64::try_from(len)) else {
        return Ok(false);
    };
    if !off.is_multiple_of(PAGE as u64) || !len.is_multiple_of(PAGE as u64) {
        return Ok(false);
    }
    // The file first grows over the range: ext4 punches nothing past the end of a file, where
    // the space reserved for the receive (`reserve`) lies.
    if f.metadata()?.len() < off + len {
        f.set_len(off + len)?;
    }
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on an open descriptor; no memory is passed.
    match check(unsafe { libc::fallocate(f.as_raw_fd(), mode, o, l) }) {
        Ok(()) => Ok(true),
        // The zeros get written instead, over the same range: the grown size stays right.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A file in `dir` with no name yet (`O_TMPFILE`), to be named by [`link_new`] once it is
/// whole: its creation does not hold the folder locked (a named create does, while the file
/// system looks for a free inode), and naming it is one change to the folder where a
/// temporary name and a rename are two. `None` where the file system or kernel has no such
/// files.
pub(super) fn unnamed(dir: &File) -> Option<File> {
    open_at(dir, b".", libc::O_TMPFILE | libc::O_RDWR, 0o600).ok()
}

/// Gives the [`unnamed`] file `f` the name `name` in `dir`; fails if the name is taken
/// (`AlreadyExists`), so nothing already there is replaced. Through `/proc/self/fd` (linking
/// the descriptor itself, `AT_EMPTY_PATH`, takes a privilege).
pub(super) fn link_new(f: &File, dir: &File, name: &[u8]) -> io::Result<()> {
    let from = cstr(format!("/proc/self/fd/{}", f.as_raw_fd()).as_bytes())?;
    let to = cstr(name)?;
    // SAFETY: valid paths and dirfd.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
}

/// [`open_part`], emptied if an earlier run left it (for a file rewritten whole).
pub(super) fn open_empty_part(dir: &File, name: &[u8]) -> io::Result<File> {
    open_part_with(dir, name, libc::O_TRUNC)
}

fn open_part_with(dir: &File, name: &[u8], flags: libc::c_int) -> io::Result<File> {
    match create_new(dir, name) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let f = open_at(dir, name, libc::O_RDWR | flags, 0)?;
            if !f.metadata()?.is_file() {
                return Err(io::Error::other(
                    "a temporary name is taken by something else",
                ));
            }
            Ok(f)
        }
        other => other,
    }
}

pub(super) fn symlink(target: &[u8], dir: &File, name: &[u8]) -> io::Result<()> {
    let (t, c) = (cstr(target)?, cstr(name)?);
    // SAFETY: valid strings and dirfd.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
}

pub(super) fn readlink(dir: &File, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; crate::proto::MAX_TARGET + 1];
    // SAFETY: valid dirfd and name; buf is writable for its length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(buf)
}

/// Moves `from` to `to` within `dir`; without `replace`, fails if `to` exists.
pub(super) fn rename(dir: &File, from: &[u8], to: &[u8], replace: bool) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    let flags = if replace { 0 } else { libc::RENAME_NOREPLACE };
    let fd = dir.as_raw_fd();
    // The system call itself: the static musl that release builds link has no `renameat2`
    // wrapper (musl added it in 1.2.5), and the link failed.
    // SAFETY: valid dirfd and names; renameat2 takes exactly these five arguments.
    let r = unsafe { libc::syscall(libc::SYS_renameat2, fd, f.as_ptr(), fd, t.as_ptr(), flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes what is at `name` in `dir` (a folder with everything in it), for `--overwrite`.
pub(super) fn remove(dir: &File, name: &[u8]) -> io::Result<()> {
    let Some(st) = stat(dir, name)? else {
        return Ok(());
    };
    if is_dir(&st) {
        let sub = open_dir(dir, name)?;
        let entries: Vec<Vec<u8>> =
            std::fs::read_dir(format!("/proc/self/fd/{}", sub.as_raw_fd()))?
                .filter_map(|e| e.ok())
                .map(|e| std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str()).to_vec())
                .collect();
        for e in entries {
            remove(&sub, &e)?;
        }
        let c = cstr(name)?;
        // SAFETY: valid dirfd and name.
        return check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) });
    }
    unlink(dir, name)
}

/// Removes the file (or symlink) `name` of `dir`; never follows a symlink.
pub(super) fn unlink(dir: &File, name: &[u8]) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid dirfd and name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })
}

/// Whether what is at `name` of `dir` (`st`) is what an earlier run of the same share wrote
/// for `e`: a folder, the same symlink, or a file of the same size (compared by hash later).
pub(super) fn fits(dir: &File, e: &Entry, st: &libc::stat) -> bool {
    match crate::proto::Kind::try_from(e.kind) {
        Ok(crate::proto::Kind::Dir) => is_dir(st),
        Ok(crate::proto::Kind::Symlink) => {
            is_symlink(st) && readlink(dir, &e.name).is_ok_and(|l| l == e.target)
        }
        _ => is_file(st) && st.st_size as u64 == e.size,
    }
}

fn times(e: &Entry) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: e.mtime_sec as _,
        tv_nsec: e.mtime_nsec as libc::c_long,
    };
    [ts, ts]
}

/// Sets the time of `name` in `dir` (of a symlink itself, not what it points at).
pub(super) fn set_time_at(dir: &File, name: &[u8], e: &Entry) -> io::Result<()> {
    let c = cstr(name)?;
    let t = times(e);
    // SAFETY: valid dirfd, name and two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Sets an open file's (or folder's) time.
pub(super) fn set_time(f: &File, e: &Entry) -> io::Result<()> {
    let t = times(e);
    // SAFETY: the fd is open for the duration of the call; t points at two timespecs.
    check(unsafe { libc::futimens(f.as_raw_fd(), t.as_ptr()) })
}

/// Sets an open file's (or folder's) permission bits.
pub(super) fn set_mode(f: &File, mode: u32) -> io::Result<()> {
    // SAFETY: the fd is open for the duration of the call.
    check(unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) })
}

/// BLAKE3 of an open file (blocking).
pub(super) fn hash_file(f: File) -> io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    h.update_reader(f)?;
    Ok(*h.finalize().as_bytes())
}

pub(super) fn join_err(e: tokio::task::JoinError) -> Error {
    Error::io("worker task", io::Error::other(e))
}

/// `--out` and the folders below it, opened only through it.
pub(super) struct Out {
    root: Arc<File>,
    /// Recently used folders by manifest id.
    dirs: Mutex<LruCache<u64, Arc<File>>>,
}

impl Out {
    /// Opens `--out` (the user's own choice, so a symlink there is followed).
    pub(super) fn open(path: &Path) -> Result<Out> {
        let root = File::open(path)
            .and_then(|f| {
                if f.metadata()?.is_dir() {
                    Ok(f)
                } else {
                    Err(io::Error::other("not a folder"))
                }
            })
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        Ok(Out {
            root: Arc::new(root),
            dirs: Mutex::new(LruCache::new(OPEN_DIRS.try_into().expect("nonzero"))),
        })
    }

    /// The folder with manifest id `id` (0: `--out` itself), walked down from `--out`.
    pub(super) fn dir(&self, m: &Manifest, id: u64) -> io::Result<Arc<File>> {
        if id == 0 {
            return Ok(self.root.clone());
        }
        if let Some(d) = self.dirs.lock().expect("lock").get(&id) {
            return Ok(d.clone());
        }
        let e = m
            .get(id)
            .ok_or_else(|| io::Error::other("no such folder"))?;
        let parent = self.dir(m, e.parent)?;
        let d = Arc::new(open_dir(&parent, &e.name)?);
        self.dirs.lock().expect("lock").put(id, d.clone());
        Ok(d)
    }
}

/// Whether files can be received into `out`: a folder this process may create files in, or,
/// when it does not exist yet, the nearest folder above it that is (`--out` is created). Checked
/// before the sender is looked for, so a wrong `--out` costs no one a handshake.
pub fn check_out_folder(out: &Path) -> io::Result<()> {
    let mut at = out;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if !m.is_dir() => {
                return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a folder"))
            }
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => at = Path::new("."),
            },
            Err(e) => return Err(e),
        }
    }
    crate::manifest::access(at, libc::W_OK | libc::X_OK)
}

#[cfg(test)]
mod tests;
