//! Mounting and unmounting: the mount options (read-only, nosuid, nodev, a filesystem name
//! that never carries the code), the stale-mountpoint check, and a [`Mounted`] handle that
//! unmounts (lazily if busy) when dropped, never waiting long; the task that reads the kernel's
//! requests on the runtime (no FUSE threads).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, MountOption, SessionACL};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

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
    serving: Option<Serving>,
    path: PathBuf,
}

/// The runtime's task that reads the kernel's requests, and how to unmount.
struct Serving {
    task: tokio::task::JoinHandle<()>,
    unmount: Box<dyn Fn() -> std::io::Result<()> + Send + Sync>,
}

/// Mounts `fs` read-only at `path`. The kernel's requests are read and answered on `rt`.
pub fn mount<S: FileSource>(
    fs: Arc<MountFs<S>>,
    path: &Path,
    opts: &MountOptions,
    rt: tokio::runtime::Handle,
) -> Result<Mounted> {
    check_folder(path)?;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let adapter = Adapter {
        fs,
        rt: rt.clone(),
        linger: crate::linger::Linger::new(),
        uid,
        gid,
    };
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
    let fail = |e: std::io::Error| {
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
    };
    let session = fuser::Session::new(adapter, path, &config).map_err(fail)?;
    let driver = Arc::new(session.into_driver());
    set_nonblocking(driver.as_fd()).map_err(fail)?;
    let task = {
        let _rt = rt.enter();
        // ERROR too: once unmounted the device polls as EPOLLERR only, and the read then
        // ends the task with ENODEV.
        // SAFETY: `Device` holds the driver, so the descriptor stays open while registered.
        let afd = unsafe {
            AsyncFd::register_with_interest(Device(driver.clone()), INTEREST)
                .map_err(|e| fail(e.into_parts().1))?
        };
        rt.spawn(serve(afd))
    };
    raise_readahead(path);
    Ok(Mounted {
        serving: Some(Serving {
            task,
            unmount: Box::new(move || driver.unmount()),
        }),
        path: path.to_path_buf(),
    })
}

/// What the runtime's poller waits for on the FUSE device.
const INTEREST: Interest = Interest::READABLE.add(Interest::ERROR);

/// The FUSE device of a mount, for the runtime's poller.
struct Device<F: fuser::Filesystem>(Arc<fuser::Driver<F>>);

impl<F: fuser::Filesystem> AsRawFd for Device<F> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with flags it returned.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads the kernel's requests as they come and answers each on this runtime: the thread the
/// kernel wakes for a request is the one that asks the sender, with no FUSE thread between
/// them. Answers from memory are written at once; reads that wait for the sender are answered
/// by their own task. Ends when the kernel ends the session (unmounted).
async fn serve<F: fuser::Filesystem + Send + Sync + 'static>(afd: AsyncFd<Device<F>>) {
    let driver = afd.get_ref().0.clone();
    let mut buf = fuser::Driver::<F>::buffer();
    loop {
        let mut ready = match afd.ready(INTEREST).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("waiting for FUSE requests failed: {e}");
                return;
            }
        };
        match ready.try_io(|_| driver.read(&mut buf)) {
            Err(_would_block) => continue,
            Ok(Ok(req)) => match driver.dispatch(&buf[req]) {
                Ok(fuser::Dispatched::More) => {}
                Ok(fuser::Dispatched::Destroyed) => return,
                Err(e) => {
                    tracing::debug!("a FUSE request we cannot read: {e}");
                    return;
                }
            },
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENODEV) => return,
            Ok(Err(e)) => {
                tracing::debug!("reading FUSE requests failed: {e}");
                return;
            }
        }
    }
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
        self.serving.as_ref().is_some_and(|s| !s.task.is_finished())
    }

    /// Unmounts; if the mount is busy it is detached lazily (it goes away when its last user
    /// closes it). Returns whether it had to be detached.
    pub fn unmount(mut self) -> bool {
        self.do_unmount()
    }

    fn do_unmount(&mut self) -> bool {
        let Some(s) = self.serving.take() else {
            return false;
        };
        if s.task.is_finished() {
            return false;
        }
        // Unmounting can wait for as long as another mount namespace still holds a copy of
        // the mount; never let that hold up exiting.
        let (tx, rx) = std::sync::mpsc::channel();
        let unmount = s.unmount;
        std::thread::spawn(move || {
            let _ = tx.send(unmount());
        });
        let result = match rx.recv_timeout(std::time::Duration::from_secs(3)) {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!("the unmount did not finish within 3 s");
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
