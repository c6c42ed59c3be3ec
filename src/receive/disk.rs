//! The receiver's disk: temporary names, permission bits, times, and clearing what is in the
//! way. Every path here is below `--out`; nothing follows a symlink.

use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::proto::Entry;

/// Permission bits to apply: the sender's, without setuid and setgid (a received file must not
/// gain privileges on this machine).
pub(super) fn safe_mode(mode: u32) -> u32 {
    mode & 0o1777
}

/// The temporary name a file is written under, next to its final place (reserved: see
/// `manifest::is_temp_name`). Derived from the name alone, so a later share of the same files
/// finds it again and resumes.
pub(super) fn part_name(e: &Entry) -> std::ffi::OsString {
    let h = blake3::hash(&e.name);
    let hex: String = h.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(".pcp-{hex}.part").into()
}

pub(super) fn set_mtime(path: &Path, e: &Entry, nofollow: bool) -> Result<()> {
    let ts = libc::timespec {
        tv_sec: e.mtime_sec as libc::time_t,
        tv_nsec: e.mtime_nsec as libc::c_long,
    };
    let times = [ts, ts];
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::io("bad path", std::io::Error::other("NUL in path")))?;
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: c is a valid NUL-terminated path and times points at two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) };
    if r != 0 {
        return Err(Error::io(
            format!("cannot set the time of {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

pub(super) fn set_file_times(f: &File, e: &Entry) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ts = libc::timespec {
        tv_sec: e.mtime_sec as libc::time_t,
        tv_nsec: e.mtime_nsec as libc::c_long,
    };
    let times = [ts, ts];
    // SAFETY: the fd is open for the duration of the call; times points at two timespecs.
    if unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// BLAKE3 of a local file (blocking).
pub(super) fn hash_local(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let f = File::open(path)?;
    h.update_reader(f)?;
    Ok(*h.finalize().as_bytes())
}

/// Removes whatever is at `path` when it is in the way of an entry of another kind.
pub(super) fn clear_for(path: &Path, want_dir: bool) -> Result<()> {
    match path.symlink_metadata() {
        Ok(md) if md.is_dir() && want_dir => Ok(()),
        Ok(md) if md.is_dir() => {
            fs::remove_dir_all(path).ctx(|| format!("cannot replace {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).ctx(|| format!("cannot replace {}", path.display())),
        Err(_) => Ok(()),
    }
}

pub(super) fn join_err(e: tokio::task::JoinError) -> Error {
    Error::io("worker task", std::io::Error::other(e))
}

/// Opens the temporary file without following symlinks; keeps what an earlier run left in it.
pub(super) fn open_part(part: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(part)
        .ctx(|| format!("cannot create {}", part.display()))
}
