//! A node identity kept in a file (`pcp node --key FILE`), so a helper's peer ID, and so the
//! `/p2p/` addresses others bootstrap from, stay the same across restarts. The file holds the
//! Ed25519 keypair in libp2p's protobuf encoding, is created with mode 0600 (exclusively,
//! written and fsynced before use) and is refused when group or others may access it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use libp2p::identity::Keypair;

use crate::error::{Error, Result};

/// More than any protobuf-encoded keypair libp2p writes (an Ed25519 one is 68 bytes).
const MAX_KEY_FILE: u64 = 8 * 1024;

/// Whether [`load_or_create`] found the key or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Loaded,
    Created,
}

fn refuse(path: &Path, why: String) -> Error {
    Error::io(
        format!("refusing the node key {}", path.display()),
        io::Error::new(io::ErrorKind::InvalidData, why),
    )
}

/// Loads the keypair in `path`, or creates a new Ed25519 one there if there is no such file.
pub fn load_or_create(path: &Path) -> Result<(Keypair, KeyOrigin)> {
    match load(path) {
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        other => return other.map(|k| (k, KeyOrigin::Loaded)),
    }
    match create(path) {
        Ok(k) => Ok((k, KeyOrigin::Created)),
        // Another process created it first: use theirs.
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            load(path).map(|k| (k, KeyOrigin::Loaded))
        }
        Err(e) => Err(e),
    }
}

/// Reads a key file, checking its mode on the opened file (no window for a swap).
pub fn load(path: &Path) -> Result<Keypair> {
    let file = File::open(path)
        .map_err(|e| Error::io(format!("cannot open the node key {}", path.display()), e))?;
    let md = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat the node key {}", path.display()), e))?;
    if !md.is_file() {
        return Err(refuse(path, "it is not a regular file".into()));
    }
    let mode = md.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(
            path,
            format!(
                "group or others may access it (mode {mode:04o}); a node key must be private: \
                 run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read the node key {}", path.display()), e))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(refuse(path, "it is too large to be a node key".into()));
    }
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
        refuse(
            path,
            format!(
                "it is not a libp2p keypair in protobuf encoding ({e}); move it away to let \
                 `pcp node` create a new key (a new peer ID)"
            ),
        )
    })
}

/// Writes a new Ed25519 keypair to `path`, which must not exist: mode 0600, written and
/// fsynced (the folder too) before the key is used. A file left half-written is removed.
pub fn create(path: &Path) -> Result<Keypair> {
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| Error::Network(format!("cannot encode the node key: {e}")))?;
    let ctx = || format!("cannot create the node key {}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(ctx(), e))?;
    if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(Error::io(ctx(), e));
    }
    // The name, too, should survive a crash right after the node printed its address.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_created_private_and_loaded_as_the_same_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let (a, origin) = load_or_create(&path).unwrap();
        assert_eq!(origin, KeyOrigin::Created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, origin) = load_or_create(&path).unwrap();
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    }

    #[test]
    fn a_readable_or_garbled_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");

        std::fs::write(&path, b"not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("not a libp2p keypair"), "{e}");
        // Refused files are left alone.
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key");
    }

    #[test]
    fn a_missing_folder_is_an_error_not_a_new_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("key");
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("cannot create the node key"), "{e}");
        assert!(!dir.path().join("nope").exists());
    }
}
