//! The mounted tree: inode numbers and attributes from the validated manifest. Immutable while
//! mounted, so lookup, stat, readdir and readlink never touch the network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Errno;
use crate::manifest::Manifest;
use crate::proto::{Entry, Kind};

/// The root's inode number (FUSE's).
pub const ROOT_INO: u64 = 1;

/// What `stat` shows for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub mtime: SystemTime,
    pub nlink: u32,
    /// 512-byte blocks (`st_blocks`): a file's on the sender's disk where it said (less than
    /// its size for a sparse file, so `du` and `cp --sparse=auto` see the holes), else its size.
    pub blocks: u64,
}

pub(crate) struct Tree {
    manifest: Arc<Manifest>,
    /// Entry shown at the mountpoint (0: the share root; or the single shared folder).
    root: u64,
    names: HashMap<(u64, Box<[u8]>), u64>,
    /// How many folders each folder holds (folders with none are left out): its nlink is 2
    /// more, as on a local filesystem, for tools that count subfolders by it.
    subdirs: HashMap<u64, u32>,
    /// Shown as the times of a root that is not a shared folder (several paths, one file).
    mounted_at: SystemTime,
}

impl Tree {
    pub(crate) fn new(manifest: Arc<Manifest>) -> Tree {
        let roots = manifest.children(0);
        let root = match roots {
            [only] if manifest.kind(*only) == Kind::Dir => *only,
            _ => 0,
        };
        let names = manifest
            .entries()
            .iter()
            .map(|e| ((e.parent, e.name.clone().into_boxed_slice()), e.id))
            .collect();
        let mut subdirs = HashMap::new();
        for e in manifest.entries() {
            if e.kind == Kind::Dir as i32 {
                *subdirs.entry(e.parent).or_insert(0u32) += 1;
            }
        }
        Tree {
            manifest,
            root,
            names,
            subdirs,
            mounted_at: SystemTime::now(),
        }
    }

    pub(crate) fn manifest(&self) -> &Arc<Manifest> {
        &self.manifest
    }

    pub(crate) fn id_of(&self, ino: u64) -> Option<u64> {
        match ino {
            ROOT_INO => Some(self.root),
            0 => None,
            n => {
                let id = n - 1;
                (id != self.root && self.manifest.get(id).is_some()).then_some(id)
            }
        }
    }

    pub(crate) fn ino_of(&self, id: u64) -> u64 {
        if id == self.root {
            ROOT_INO
        } else {
            id + 1
        }
    }

    pub(crate) fn entry(&self, ino: u64) -> Result<Option<&Entry>, Errno> {
        match self.id_of(ino) {
            None => Err(libc::ENOENT),
            Some(id) if id == self.root && id == 0 => Ok(None),
            Some(id) => Ok(self.manifest.get(id)),
        }
    }

    fn attr_of(&self, id: u64) -> Attr {
        let ino = self.ino_of(id);
        match self.manifest.get(id) {
            None => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                perm: 0o555,
                mtime: self.mounted_at,
                nlink: self.dir_nlink(id),
                blocks: 0,
            },
            Some(e) => {
                let kind = Kind::try_from(e.kind).unwrap_or(Kind::File);
                let size = if kind == Kind::Symlink {
                    e.target.len() as u64
                } else {
                    e.size
                };
                Attr {
                    ino,
                    kind,
                    size,
                    blocks: match e.allocated {
                        // At most the size in whole pages, whatever a sender claims.
                        Some(a) if kind == Kind::File => a.min(size.next_multiple_of(4096)),
                        _ => size,
                    }
                    .div_ceil(512),
                    // The sender's bits, as sshfs or a read-only NFS shows them (the mount
                    // refuses writes itself); no setuid/setgid; symlinks are lrwxrwxrwx.
                    perm: if kind == Kind::Symlink {
                        0o777
                    } else {
                        (e.mode & 0o1777) as u16
                    },
                    mtime: UNIX_EPOCH + Duration::new(e.mtime_sec.max(0) as u64, e.mtime_nsec),
                    nlink: if kind == Kind::Dir {
                        self.dir_nlink(id)
                    } else {
                        1
                    },
                }
            }
        }
    }

    fn dir_nlink(&self, id: u64) -> u32 {
        2u32.saturating_add(self.subdirs.get(&id).copied().unwrap_or(0))
    }

    pub(crate) fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        self.entry(ino)?;
        Ok(self.attr_of(self.id_of(ino).expect("checked")))
    }

    pub(crate) fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        let pid = self.id_of(parent).ok_or(libc::ENOENT)?;
        if pid != 0 && self.manifest.kind(pid) != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let id = *self.names.get(&(pid, name.into())).ok_or(libc::ENOENT)?;
        Ok(self.attr_of(id))
    }

    /// Entries of a directory from `offset` on: (ino, kind, name). Offsets count "." and "..".
    /// Lazy: a FUSE reply takes a few dozen entries, so building the whole rest of a big
    /// folder at every call would cost the square of its size.
    pub(crate) fn readdir(
        &self,
        ino: u64,
        offset: u64,
    ) -> Result<impl Iterator<Item = (u64, Kind, &[u8])> + '_, Errno> {
        let id = self.id_of(ino).ok_or(libc::ENOENT)?;
        if id != 0 && self.manifest.kind(id) != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let parent_ino = match self.manifest.get(id) {
            Some(e) if id != self.root => self.ino_of(e.parent),
            _ => ROOT_INO,
        };
        let children = self.manifest.children(id);
        let dots = [
            (ino, Kind::Dir, &b"."[..]),
            (parent_ino, Kind::Dir, &b".."[..]),
        ];
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let rest = &children[skip.saturating_sub(2).min(children.len())..];
        let entries = rest.iter().map(move |&c| {
            let e = self.manifest.get(c).expect("child exists");
            (
                self.ino_of(c),
                Kind::try_from(e.kind).unwrap_or(Kind::File),
                &e.name[..],
            )
        });
        Ok(dots.into_iter().skip(skip.min(2)).chain(entries))
    }

    pub(crate) fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        match self.entry(ino)? {
            Some(e) if e.kind == Kind::Symlink as i32 => Ok(e.target.clone()),
            _ => Err(libc::EINVAL),
        }
    }

    /// Total bytes and entries, for statfs.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (self.manifest.totals().1, self.manifest.len() as u64)
    }
}
