//! Mounting and unmounting: the mount options (read-only, nosuid, nodev, a filesystem name
//! that never carries the code), the stale-mountpoint check, and a [`Mounted`] handle that
//! unmounts (lazily if busy) when dropped, never waiting long for FUSE threads.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, MountOption, SessionACL};

use super::fs::MountFs;
use super::fuse::{Adapter, READAHEAD};
use crate::error::{Error, Result};
use crate::fetch::FileSource;

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

/// What is mounted at `path`, if it is a mount point (from /proc/self/mountinfo).
fn mounted_at(path: &Path) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let point = f.get(4)?.replace("\\040", " ");
        if Path::new(&point) != real {
            return None;
        }
        let sep = f.iter().position(|x| *x == "-")?;
        Some(format!("{} ({})", f.get(sep + 2)?, f.get(sep + 1)?))
    })
}

/// Refuses a mountpoint before anything else happens: one left by a dead FUSE process (with
/// the command that clears it), one that is not an existing folder, one where something is
/// mounted already, and (unless `nonempty`) one whose files the mount would hide.
pub fn check_mountpoint(path: &Path, nonempty: bool) -> Result<()> {
    check_folder(path)?;
    if let Some(what) = mounted_at(path) {
        return Err(Error::io(
            format!("cannot mount on {}", path.display()),
            std::io::Error::other(format!(
                "{what} is mounted there already; unmount it first or pick another folder"
            )),
        ));
    }
    let has_files = std::fs::read_dir(path)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_files && !nonempty {
        return Err(Error::io(
            format!("cannot mount on {}", path.display()),
            std::io::Error::other(
                "the folder is not empty and the mount would hide its files; pick an empty \
                 folder or pass --nonempty",
            ),
        ));
    }
    Ok(())
}

/// A stale mount, or not a folder.
fn check_folder(path: &Path) -> Result<()> {
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
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::io(
            format!("cannot mount on {}", path.display()),
            std::io::Error::other("not a folder"),
        )),
        Err(e) => Err(Error::io(format!("cannot mount on {}", path.display()), e)),
    }
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
    check_folder(path)?;
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
    let session = fuser::spawn_mount(adapter, path, &config).map_err(|e| {
        let e = match e.kind() {
            std::io::ErrorKind::PermissionDenied => std::io::Error::other(format!(
                "{e}: mounting needs /dev/fuse and the right to mount: run as root, or install \
                 fuse3 (fusermount3) and make /dev/fuse usable by your user"
            )),
            std::io::ErrorKind::NotFound => std::io::Error::other(format!(
                "{e}: is FUSE available? (/dev/fuse, and the fuse3 package for fusermount3)"
            )),
            _ => e,
        };
        Error::io(format!("cannot mount on {}", path.display()), e)
    })?;
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
