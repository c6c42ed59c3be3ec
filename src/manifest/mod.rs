//! The share's tree: built from local paths on the sending side ([`local`]), validated on the
//! receiving side before anything touches the disk. A validated [`Manifest`] is what `receive`,
//! copy-out and the mount all work from.

mod local;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::proto::{Entry, Kind, MAX_ENTRIES, MAX_NAME, MAX_TARGET};

pub(crate) use local::lseek;
pub use local::{access, LocalTree, Root, Rules, Source};

/// A manifest that passed [`Manifest::validate`]: every name is a single safe path component,
/// every parent is an earlier directory, no folder holds two entries of one name.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    entries: Vec<Entry>,
    /// Children of each directory (index 0 is the share root), in manifest order.
    children: Vec<Vec<u64>>,
}

fn bad(msg: String) -> Error {
    Error::InvalidManifest(msg)
}

/// Checks one name: a single path component that cannot climb out of its folder.
pub fn check_name(name: &[u8]) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name == b"." || name == b".." {
        return Err(format!(
            "name {:?} is not allowed",
            String::from_utf8_lossy(name)
        ));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(format!(
            "name {:?} contains '/' or NUL",
            String::from_utf8_lossy(name)
        ));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "a name is {} bytes long (limit {MAX_NAME})",
            name.len()
        ));
    }
    if is_temp_name(name) {
        return Err(format!(
            "name {:?} is reserved for pcp's temporary files",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

/// The name of the marker a receiver keeps in a top-level folder while it fills it.
pub const UNFINISHED_MARK: &str = ".pcp-unfinished";

/// Whether `name` is reserved for a receiver's files in progress: `.pcp-<hex>.part`, or the
/// [`UNFINISHED_MARK`].
pub fn is_temp_name(name: &[u8]) -> bool {
    name == UNFINISHED_MARK.as_bytes()
        || name
            .strip_prefix(b".pcp-")
            .and_then(|r| r.strip_suffix(b".part"))
            .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_hexdigit))
}

impl Manifest {
    pub fn validate(entries: Vec<Entry>) -> Result<Manifest> {
        if entries.len() as u64 > MAX_ENTRIES {
            return Err(bad(format!(
                "{} entries (limit {MAX_ENTRIES})",
                entries.len()
            )));
        }
        let mut children: Vec<Vec<u64>> = vec![Vec::new(); entries.len() + 1];
        let mut seen: HashSet<(u64, &[u8])> = HashSet::with_capacity(entries.len());
        let mut total: u64 = 0;
        for (i, e) in entries.iter().enumerate() {
            let id = i as u64 + 1;
            if e.id != id {
                return Err(bad(format!("entry {id} carries id {}", e.id)));
            }
            let kind = Kind::try_from(e.kind)
                .map_err(|_| bad(format!("entry {id} has unknown kind {}", e.kind)))?;
            if kind == Kind::Unknown {
                return Err(bad(format!("entry {id} has no kind")));
            }
            check_name(&e.name).map_err(|m| bad(format!("entry {id}: {m}")))?;
            if e.parent >= id {
                return Err(bad(format!(
                    "entry {id} comes before its parent {}",
                    e.parent
                )));
            }
            if e.parent != 0 && entries[e.parent as usize - 1].kind != Kind::Dir as i32 {
                return Err(bad(format!(
                    "entry {id}'s parent {} is not a folder",
                    e.parent
                )));
            }
            if !seen.insert((e.parent, &e.name)) {
                return Err(bad(format!(
                    "two entries named {:?} in one folder",
                    String::from_utf8_lossy(&e.name)
                )));
            }
            if e.mode & !0o7777 != 0 {
                return Err(bad(format!("entry {id} has mode bits {:o}", e.mode)));
            }
            if e.mtime_nsec >= 1_000_000_000 {
                return Err(bad(format!("entry {id} has an invalid mtime")));
            }
            match kind {
                Kind::File => {
                    total = total
                        .checked_add(e.size)
                        .ok_or_else(|| bad("total size overflows".into()))?;
                }
                Kind::Symlink
                    if e.target.is_empty()
                        || e.target.len() > MAX_TARGET
                        || e.target.contains(&0) =>
                {
                    return Err(bad(format!("entry {id} has an invalid symlink target")));
                }
                _ => {}
            }
            if kind != Kind::File && e.size != 0 {
                return Err(bad(format!("entry {id} is not a file but has a size")));
            }
            children[e.parent as usize].push(id);
        }
        Ok(Manifest { entries, children })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry by id (1..=len).
    pub fn get(&self, id: u64) -> Option<&Entry> {
        id.checked_sub(1).and_then(|i| self.entries.get(i as usize))
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Ids of the entries in directory `id` (0 for the share root).
    pub fn children(&self, id: u64) -> &[u64] {
        self.children
            .get(id as usize)
            .map(|v| &v[..])
            .unwrap_or(&[])
    }

    pub fn kind(&self, id: u64) -> Kind {
        self.get(id)
            .and_then(|e| Kind::try_from(e.kind).ok())
            .unwrap_or(Kind::Unknown)
    }

    /// The entry's path relative to the share root.
    pub fn rel_path(&self, id: u64) -> PathBuf {
        let mut parts = Vec::new();
        let mut cur = id;
        while let Some(e) = self.get(cur) {
            parts.push(OsStr::from_bytes(&e.name));
            cur = e.parent;
        }
        parts.iter().rev().collect()
    }

    pub fn totals(&self) -> (u64, u64) {
        let files = self.entries.iter().filter(|e| e.kind == Kind::File as i32);
        let (mut n, mut b) = (0, 0);
        for f in files {
            n += 1;
            b += f.size;
        }
        (n, b)
    }
}

/// A manifest entry for tests: mode 0644, mtime 1,600,000,000.000000005, symlinks to "big".
#[doc(hidden)]
pub fn test_entry(id: u64, parent: u64, name: &[u8], kind: Kind, size: u64) -> Entry {
    Entry {
        id,
        parent,
        name: name.to_vec(),
        kind: kind as i32,
        size,
        mode: 0o644,
        mtime_sec: 1_600_000_000,
        mtime_nsec: 5,
        target: if kind == Kind::Symlink {
            b"big".to_vec()
        } else {
            vec![]
        },
        allocated: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: u64, parent: u64, name: &[u8], kind: Kind) -> Entry {
        test_entry(id, parent, name, kind, 0)
    }

    #[test]
    fn accepts_a_good_tree() {
        let m = Manifest::validate(vec![
            e(1, 0, b"d", Kind::Dir),
            e(2, 1, b"f", Kind::File),
            e(3, 1, b"l", Kind::Symlink),
        ])
        .unwrap();
        assert_eq!(m.children(0), &[1]);
        assert_eq!(m.children(1), &[2, 3]);
        assert_eq!(m.rel_path(2), PathBuf::from("d/f"));
    }

    #[test]
    fn rejects_escapes_and_collisions() {
        let cases: Vec<Vec<Entry>> = vec![
            vec![e(1, 0, b"..", Kind::File)],
            vec![e(1, 0, b".", Kind::Dir)],
            vec![e(1, 0, b"", Kind::File)],
            vec![e(1, 0, b"a/b", Kind::File)],
            vec![e(1, 0, b"/etc", Kind::File)],
            vec![e(1, 0, b"a\0b", Kind::File)],
            vec![e(1, 0, &[b'a'; 256], Kind::File)],
            vec![e(1, 0, b".pcp-1.part", Kind::Symlink)],
            vec![e(1, 0, b".pcp-0a1b2c3d4e5f6789.part", Kind::File)],
            vec![e(1, 0, b".pcp-unfinished", Kind::File)],
            vec![e(1, 0, b"a", Kind::File), e(2, 0, b"a", Kind::Dir)],
            vec![e(1, 0, b"a", Kind::File), e(2, 1, b"b", Kind::File)],
            vec![e(1, 2, b"a", Kind::File), e(2, 0, b"b", Kind::Dir)],
            vec![e(2, 0, b"a", Kind::File)],
            vec![Entry {
                kind: 9,
                ..e(1, 0, b"a", Kind::File)
            }],
            vec![Entry {
                mode: 0o100644,
                ..e(1, 0, b"a", Kind::File)
            }],
            vec![Entry {
                size: 5,
                ..e(1, 0, b"a", Kind::Dir)
            }],
            vec![Entry {
                target: vec![],
                ..e(1, 0, b"a", Kind::Symlink)
            }],
        ];
        for (i, c) in cases.into_iter().enumerate() {
            assert!(
                matches!(Manifest::validate(c), Err(Error::InvalidManifest(_))),
                "case {i} was accepted"
            );
        }
    }
}
