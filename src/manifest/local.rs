//! The sending side's tree: local paths walked into manifest entries (without following
//! symlinks below them), with `--exclude`/`--gitignore` rules, and where each file's bytes live.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

use super::is_temp_name;
use crate::error::{Error, IoContext, Result};
use crate::proto::{Entry, Kind, MAX_ENTRIES};

/// What the sender needs to serve one file and to notice that it changed since the share began.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
}

impl Source {
    /// Whether `m` still describes the file the manifest was built from.
    pub fn unchanged(&self, m: &std::fs::Metadata) -> bool {
        m.dev() == self.dev
            && m.ino() == self.ino
            && m.len() == self.size
            && (m.mtime(), m.mtime_nsec()) == self.mtime
    }
}

/// A sender's view: the entries it offers and where each file's bytes live.
#[derive(Debug, Default)]
pub struct LocalTree {
    pub entries: Vec<Entry>,
    /// Indexed like `entries`; `Some` for files.
    pub sources: Vec<Option<Source>>,
    /// Things skipped while walking (special files, unreadable folders), for the user.
    pub warnings: Vec<String>,
    /// Entries the [`Rules`] left out (a folder counts once: nothing below it is looked at).
    pub left_out: u64,
    /// The share is a text message (`pcp send --text`): one small file the receiver prints.
    pub text: bool,
}

/// One path given to `pcp send` and the name it gets at the top of the share (by default its
/// last component).
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
    pub name: Option<OsString>,
}

impl From<PathBuf> for Root {
    fn from(path: PathBuf) -> Root {
        Root { path, name: None }
    }
}

/// What a scan leaves out below the given paths (never a given path itself).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// gitignore-style globs (`--exclude`), matched against paths relative to each given path.
    pub exclude: Vec<String>,
    /// Skip what `.gitignore`, `.ignore` and `.git/info/exclude` ignore, and `.git` itself.
    pub gitignore: bool,
}

impl Rules {
    /// Checks the `--exclude` patterns (an error names the bad one).
    pub fn check(&self) -> Result<()> {
        self.exclude_matcher().map(|_| ())
    }

    /// One matcher for all `--exclude` patterns, matched against relative paths (root `.`, so
    /// nothing is stripped), later patterns winning as in a `.gitignore`.
    fn exclude_matcher(&self) -> Result<Option<Gitignore>> {
        if self.exclude.is_empty() {
            return Ok(None);
        }
        let mut b = GitignoreBuilder::new(".");
        for pat in &self.exclude {
            b.add_line(None, pat)
                .map_err(|e| Error::Usage(format!("invalid --exclude pattern: {e}")))?;
        }
        b.build()
            .map(Some)
            .map_err(|e| Error::Usage(format!("invalid --exclude pattern: {e}")))
    }
}

/// The rules while one given path is walked: the `--exclude` matcher, and for `--gitignore` a
/// stack of ignore files, one level per folder from the repository root down (deeper levels
/// win, as in git).
struct Filter {
    exclude: Option<Gitignore>,
    gitignore: bool,
    /// Canonical path of the given path being walked (ignore files match absolute paths).
    base: PathBuf,
    levels: Vec<Gitignore>,
}

impl Filter {
    /// Whether the entry at `rel` (relative to the given path) is left out.
    fn skips(&self, rel: &Path, name: &OsStr, is_dir: bool) -> bool {
        if self.gitignore && name == ".git" {
            return true;
        }
        if let Some(ex) = &self.exclude {
            if ex.matched(rel, is_dir).is_ignore() {
                return true;
            }
        }
        if self.gitignore {
            let abs = self.base.join(rel);
            for level in self.levels.iter().rev() {
                match level.matched(&abs, is_dir) {
                    Match::Ignore(_) => return true,
                    Match::Whitelist(_) => return false,
                    Match::None => {}
                }
            }
        }
        false
    }

    /// Pushes the ignore files of folder `dir` (canonical): `.git/info/exclude` if it is a
    /// repository root, below its `.gitignore` and `.ignore` (`.ignore` wins). Returns how many
    /// levels to pop when leaving it.
    fn enter(&mut self, dir: &Path, warnings: &mut Vec<String>) -> usize {
        if !self.gitignore {
            return 0;
        }
        let mut pushed = 0;
        let exclude = dir.join(".git/info/exclude");
        if exclude.is_file() {
            pushed += self.push(dir, &[exclude], warnings);
        }
        pushed
            + self.push(
                dir,
                &[dir.join(".gitignore"), dir.join(".ignore")],
                warnings,
            )
    }

    fn push(&mut self, dir: &Path, files: &[PathBuf], warnings: &mut Vec<String>) -> usize {
        let mut b = GitignoreBuilder::new(dir);
        let mut any = false;
        for f in files.iter().filter(|f| f.is_file()) {
            any = true;
            if let Some(e) = b.add(f) {
                warnings.push(format!("{}: {e}", f.display()));
            }
        }
        match b.build() {
            Ok(g) if any && !g.is_empty() => {
                self.levels.push(g);
                1
            }
            Ok(_) => 0,
            Err(e) => {
                warnings.push(format!("ignored {}: {e}", dir.display()));
                0
            }
        }
    }

    fn leave(&mut self, pushed: usize) {
        self.levels.truncate(self.levels.len() - pushed);
    }

    /// For a given path inside a git repository: the ignore files of the folders from the
    /// repository root down to the path's parent (the ones of the path itself come with it).
    fn enter_ancestors(&mut self, warnings: &mut Vec<String>) -> usize {
        if !self.gitignore {
            return 0;
        }
        let base = self.base.clone();
        let parents: Vec<&Path> = base.ancestors().skip(1).collect();
        let Some(top) = parents.iter().position(|d| d.join(".git").exists()) else {
            return 0;
        };
        let mut pushed = 0;
        for d in parents[..=top].iter().rev() {
            pushed += self.enter(d, warnings);
        }
        pushed
    }
}

impl LocalTree {
    /// Walks `paths` without following symlinks below them. Each path becomes a top-level entry
    /// named after its last component.
    pub fn build(paths: &[PathBuf]) -> Result<LocalTree> {
        let roots: Vec<Root> = paths.iter().cloned().map(Root::from).collect();
        LocalTree::scan(&roots, &Rules::default())
    }

    /// [`build`](Self::build) with names of one's choosing and [`Rules`] that leave entries
    /// out below the given paths (counted in `left_out`).
    pub fn scan(roots: &[Root], rules: &Rules) -> Result<LocalTree> {
        let mut t = LocalTree::default();
        let mut top = HashSet::new();
        let exclude = rules.exclude_matcher()?;
        for r in roots {
            let p = &r.path;
            let name = match (&r.name, p.file_name()) {
                (Some(n), _) => n.clone(),
                (None, Some(n)) => n.to_os_string(),
                (None, None) => std::fs::canonicalize(p)
                    .ctx(|| format!("cannot share {}", p.display()))?
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_else(|| OsString::from("root")),
            };
            if !top.insert(name.clone()) {
                return Err(Error::io(
                    format!("cannot share {}", p.display()),
                    std::io::Error::other(format!(
                        "two paths are named {}",
                        name.to_string_lossy()
                    )),
                ));
            }
            // A path the user named is followed if it is a symlink; nothing below it is.
            let meta = std::fs::metadata(p).ctx(|| format!("cannot share {}", p.display()))?;
            let base = if rules.gitignore {
                std::fs::canonicalize(p).ctx(|| format!("cannot share {}", p.display()))?
            } else {
                PathBuf::new()
            };
            let mut filter = Filter {
                exclude: exclude.clone(),
                gitignore: rules.gitignore,
                base,
                levels: Vec::new(),
            };
            let mut warnings = Vec::new();
            let pushed = filter.enter_ancestors(&mut warnings);
            t.warnings.append(&mut warnings);
            t.add(&mut filter, 0, &name, p, Path::new(""), &meta)?;
            filter.leave(pushed);
        }
        if t.entries.is_empty() {
            // Every path was skipped (a device, a FIFO, an unfinished download): no code for
            // nothing.
            return Err(Error::io(
                "nothing to share",
                std::io::Error::other(t.warnings.join("; ")),
            ));
        }
        Ok(t)
    }

    fn add(
        &mut self,
        filter: &mut Filter,
        parent: u64,
        name: &OsStr,
        path: &Path,
        rel: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<()> {
        if self.entries.len() as u64 >= MAX_ENTRIES {
            return Err(Error::io(
                "cannot share",
                std::io::Error::other(format!("more than {MAX_ENTRIES} entries")),
            ));
        }
        if is_temp_name(name.as_bytes()) {
            self.warnings.push(format!(
                "skipped {} (an unfinished pcp download)",
                path.display()
            ));
            return Ok(());
        }
        let ft = meta.file_type();
        let (kind, size, target) = if ft.is_file() {
            (Kind::File, meta.len(), Vec::new())
        } else if ft.is_dir() {
            (Kind::Dir, 0, Vec::new())
        } else if ft.is_symlink() {
            match std::fs::read_link(path) {
                Ok(target) => (Kind::Symlink, 0, target.into_os_string().into_vec()),
                Err(e) => {
                    self.warnings
                        .push(format!("skipped unreadable link {}: {e}", path.display()));
                    return Ok(());
                }
            }
        } else {
            self.warnings
                .push(format!("skipped special file {}", path.display()));
            return Ok(());
        };
        // What this user cannot read is left out, said once here, rather than failing every
        // receive of the share when it gets there.
        if kind == Kind::File {
            if let Err(e) = readable(path, meta) {
                self.warnings
                    .push(format!("skipped unreadable file {}: {e}", path.display()));
                return Ok(());
            }
        }
        let listing = if kind == Kind::Dir {
            match std::fs::read_dir(path) {
                Ok(rd) => Some(rd),
                Err(e) => {
                    self.warnings
                        .push(format!("skipped unreadable folder {}: {e}", path.display()));
                    return Ok(());
                }
            }
        } else {
            None
        };
        let id = self.entries.len() as u64 + 1;
        self.entries.push(Entry {
            id,
            parent,
            name: name.as_bytes().to_vec(),
            kind: kind as i32,
            size,
            mode: meta.mode() & 0o7777,
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
            target,
            allocated: (kind == Kind::File).then(|| allocated(path, meta)),
        });
        self.sources.push((kind == Kind::File).then(|| Source {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }));
        if let Some(rd) = listing {
            let mut children: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
            children.sort();
            let mut warnings = Vec::new();
            let dir = filter.base.join(rel);
            let pushed = filter.enter(&dir, &mut warnings);
            self.warnings.append(&mut warnings);
            for c in children {
                let cp = path.join(&c);
                let crel = rel.join(&c);
                match std::fs::symlink_metadata(&cp) {
                    Ok(m) if filter.skips(&crel, &c, m.is_dir()) => self.left_out += 1,
                    Ok(m) => self.add(filter, id, &c, &cp, &crel, &m)?,
                    Err(e) => self.warnings.push(format!("skipped {}: {e}", cp.display())),
                }
            }
            filter.leave(pushed);
        }
        Ok(())
    }

    pub fn totals(&self) -> (u64, u64) {
        let files = self.sources.iter().flatten().count() as u64;
        let bytes = self.sources.iter().flatten().map(|s| s.size).sum();
        (files, bytes)
    }
}

/// A file's `Entry.allocated`: `st_blocks × 512` when that covers its size. Below it the file
/// has holes, or its filesystem counts it compressed (ZFS): then the bytes its data extents
/// span (`lseek` with `SEEK_DATA` / `SEEK_HOLE`, which see through compression), so only a file
/// with real holes counts as sparse, and a receiver looks for room for its data as it will be
/// written. Any doubt (it cannot be opened, `lseek` fails) keeps `st_blocks × 512`.
fn allocated(path: &Path, meta: &std::fs::Metadata) -> u64 {
    let blocks = meta.blocks().saturating_mul(512);
    if blocks >= meta.len() {
        return blocks;
    }
    match data_extents(path, meta.len()) {
        Ok(data) => data.max(blocks),
        Err(_) => blocks,
    }
}

/// The bytes of `path`'s first `size` that lie in data extents, walked with `lseek`; past
/// `MAX_EXTENTS` extents the rest counts as data (a few ms of system calls at most per file).
fn data_extents(path: &Path, size: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    const MAX_EXTENTS: u32 = 65_536;
    // Not following a link, not waiting on a FIFO that took the file's place since its stat.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let (mut at, mut data) = (0u64, 0u64);
    for _ in 0..MAX_EXTENTS {
        let Some(start) = lseek(&f, at, false)?.filter(|&s| s < size) else {
            return Ok(data);
        };
        let end = lseek(&f, start, true)?.unwrap_or(size).min(size);
        data += end.saturating_sub(start);
        at = end;
        if at >= size || end <= start {
            return Ok(data);
        }
    }
    Ok(data + (size - at))
}

/// `lseek(2)` of `f` from `offset` to the next data (`hole` false, `SEEK_DATA`) or hole
/// (`SEEK_HOLE`): `None` where there is none (`ENXIO`: no data after `offset`). Callers read
/// with positioned calls only, so the descriptor's own offset is nobody's.
pub(crate) fn lseek(f: &std::fs::File, offset: u64, hole: bool) -> std::io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    let whence = if hole {
        libc::SEEK_HOLE
    } else {
        libc::SEEK_DATA
    };
    let off = i64::try_from(offset).map_err(std::io::Error::other)?;
    // SAFETY: lseek on an open descriptor.
    match unsafe { libc::lseek(f.as_raw_fd(), off, whence) } {
        r if r >= 0 => Ok(Some(r as u64)),
        _ => match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            e => Err(e),
        },
    }
}

/// Whether this process may read the file at `path`: at once when everyone may (no system
/// call for the usual file), else as the kernel decides.
fn readable(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    if meta.mode() & 0o004 != 0 {
        return Ok(());
    }
    access(path, libc::R_OK)
}

/// Whether this process may use `path` as `mode` (`libc::R_OK`, `W_OK`, `X_OK`) says, as the
/// kernel decides for its effective ids (ACLs included): `faccessat(2)` with `AT_EACCESS`.
pub fn access(path: &Path, mode: libc::c_int) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in the path")
    })?;
    // SAFETY: `c` is a valid C string for the duration of the call.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    fn scanned(roots: &[PathBuf], rules: &Rules) -> (Vec<String>, u64) {
        let roots: Vec<Root> = roots.iter().cloned().map(Root::from).collect();
        let t = LocalTree::scan(&roots, rules).unwrap();
        let m = Manifest::validate(t.entries).unwrap();
        let names = (1..=m.len() as u64)
            .map(|id| m.rel_path(id).to_string_lossy().into_owned())
            .collect();
        (names, t.left_out)
    }

    #[test]
    fn rules_match_below_each_given_path_and_the_repository_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join("sub/a")).unwrap();
        std::fs::write(repo.join(".gitignore"), "*.bak\n/top.txt\n").unwrap();
        for f in ["sub/x.bak", "sub/top.txt", "sub/a/y", "sub/keep"] {
            std::fs::write(repo.join(f), "").unwrap();
        }
        let sub = vec![repo.join("sub")];
        // The repository's .gitignore applies to a folder shared from inside it; `/top.txt` is
        // anchored to the repository root, so sub/top.txt stays.
        let git = Rules {
            gitignore: true,
            ..Rules::default()
        };
        assert_eq!(
            scanned(&sub, &git),
            (
                vec!["sub", "sub/a", "sub/a/y", "sub/keep", "sub/top.txt"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                1
            )
        );
        // --exclude paths are relative to the given path: `/a` is sub/a, `sub` matches nothing
        // below it, and a given path is never left out.
        let ex = |pats: &[&str]| Rules {
            exclude: pats.iter().map(|p| p.to_string()).collect(),
            gitignore: false,
        };
        let (names, out) = scanned(&sub, &ex(&["/a", "sub", "*.bak", "!x.bak"]));
        assert_eq!(names, ["sub", "sub/keep", "sub/top.txt", "sub/x.bak"]);
        assert_eq!(out, 1);
        let (names, out) = scanned(&[repo.join("sub/keep")], &ex(&["keep"]));
        assert_eq!((names, out), (vec!["keep".to_string()], 0));
        // Without --gitignore, .git is shared like any folder.
        let (names, _) = scanned(std::slice::from_ref(&repo), &Rules::default());
        assert!(names.contains(&"repo/.git".to_string()), "{names:?}");
        assert!(Rules::check(&ex(&["[z-a]"])).is_err());
    }

    /// `allocated` is the bytes of a file's data: its holes left out, and a file without
    /// holes never below its size (what a filesystem that counts compressed blocks would say).
    #[test]
    fn allocated_counts_the_data_extents_of_a_file_with_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (sparse, dense) = (dir.path().join("sparse"), dir.path().join("dense"));
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        for mib in [3u64, 40] {
            f.write_all_at(&vec![7u8; 1 << 20], mib << 20).unwrap();
        }
        f.sync_all().unwrap();
        std::fs::write(&dense, vec![1u8; 3 << 20]).unwrap();
        let at = |p: &Path| allocated(p, &std::fs::metadata(p).unwrap());
        let data = at(&sparse);
        assert!((2 << 20..4 << 20).contains(&data), "{data}");
        assert_eq!(data_extents(&sparse, 64 << 20).unwrap(), data);
        // Walked only to the size asked about; a file past its data has none.
        assert_eq!(data_extents(&sparse, 3 << 20).unwrap(), 0);
        assert!(at(&dense) >= 3 << 20);
        // As a filesystem that reports compressed blocks would have it: no hole, all data.
        assert_eq!(data_extents(&dense, 3 << 20).unwrap(), 3 << 20);
    }
}
