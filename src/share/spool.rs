//! Bytes that are not a file yet (standard input, a text message) become one: read to the end
//! into an unnamed temporary file (`O_TMPFILE`, mode 0600, in `$TMPDIR`), hashed on the way, so
//! the share knows their size and BLAKE3 before it offers them. The file has no name, so
//! nothing is left behind however pcp ends (an error, Ctrl-C, even SIGKILL); the share reads it
//! through `/proc/self/fd/N`, which reopens the same inode.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::error::{Error, Result};

const SPOOL_FAILED: &str = "cannot spool standard input to a temporary file";

/// An unnamed temporary file with the spooled bytes; gone when dropped.
#[derive(Debug)]
pub struct Spool {
    file: File,
    len: u64,
    hash: [u8; 32],
}

impl Spool {
    /// Reads `r` to the end into a new spool.
    pub fn from_reader(r: impl Read) -> Result<Spool> {
        let file = tempfile::tempfile().map_err(|e| Error::io(SPOOL_FAILED, e))?;
        Spool::fill(file, r)
    }

    fn fill(mut file: File, mut r: impl Read) -> Result<Spool> {
        let err = |e| Error::io(SPOOL_FAILED, e);
        // O_TMPFILE creates it with the umask's mode; it has no name anyone could open it by,
        // but /proc/self/fd reopens it, so it is made private before a byte goes in.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("cannot read standard input", e)),
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(err)?;
            len += n as u64;
        }
        file.flush().map_err(err)?;
        Ok(Spool {
            file,
            len,
            hash: hasher.finalize().into(),
        })
    }

    /// A spool holding `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Spool> {
        Spool::from_reader(bytes)
    }

    /// A path that opens the spooled bytes while this spool lives.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// BLAKE3 of the spooled bytes.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_has_no_name_is_private_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"from a pipe\n".repeat(1000);
        let s = Spool::fill(tempfile::tempfile_in(dir.path()).unwrap(), &data[..]).unwrap();
        assert_eq!(s.len(), data.len() as u64);
        assert_eq!(s.hash(), *blake3::hash(&data).as_bytes());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(std::fs::read(s.path()).unwrap(), data);
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
