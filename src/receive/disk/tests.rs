//! The receiver's disk helpers against real files and folders.

use super::*;

#[test]
fn the_out_folder_is_checked_up_to_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    check_out_folder(dir.path()).unwrap();
    check_out_folder(&dir.path().join("new/deeper")).unwrap();
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let e = check_out_folder(&dir.path().join("file/below")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
    // Read-only for everyone; root may still write there, so only the mode is checked
    // when the test runs as root.
    use std::os::unix::fs::PermissionsExt;
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let e = check_out_folder(&ro.join("x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    }
}

#[test]
fn a_part_is_kept_for_resuming_or_emptied_for_a_whole_rewrite() {
    let t = tempfile::tempdir().unwrap();
    let out = File::open(t.path()).unwrap();
    std::fs::write(t.path().join("p"), b"an earlier run's bytes").unwrap();
    assert_eq!(open_part(&out, b"p").unwrap().metadata().unwrap().len(), 22);
    assert_eq!(
        open_empty_part(&out, b"p")
            .unwrap()
            .metadata()
            .unwrap()
            .len(),
        0
    );
    // A new one is created either way.
    assert_eq!(
        open_empty_part(&out, b"q")
            .unwrap()
            .metadata()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn nothing_is_followed_and_nothing_is_replaced() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), t.path().join("link")).unwrap();
    let out = File::open(t.path()).unwrap();
    // A symlink is never walked through, nor opened as a file.
    assert!(open_dir(&out, b"link").is_err());
    assert!(open_file(&out, b"link").is_err());
    assert!(open_part(&out, b"link").is_err());
    // Exclusive creation, then a no-replace rename that refuses an existing name.
    let _ = create_new(&out, b"a").unwrap();
    assert!(create_new(&out, b"a").is_err());
    let _ = create_new(&out, b"b").unwrap();
    assert!(rename(&out, b"a", b"b", false).is_err());
    rename(&out, b"a", b"b", true).unwrap();
    assert!(stat(&out, b"a").unwrap().is_none());
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
}

/// An unnamed file shows up only once linked, with what was written to it, and linking it
/// over a name that is taken fails without touching what is there.
#[test]
fn an_unnamed_file_appears_whole_and_never_over_a_taken_name() {
    use std::os::unix::fs::FileExt;
    let t = tempfile::tempdir().unwrap();
    let out = File::open(t.path()).unwrap();
    let f = unnamed(&out).expect("the temporary folder's file system has O_TMPFILE");
    f.write_all_at(b"whole", 0).unwrap();
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    link_new(&f, &out, b"a").unwrap();
    assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"whole");
    std::fs::write(t.path().join("b"), b"theirs").unwrap();
    let g = unnamed(&out).unwrap();
    g.write_all_at(b"ours", 0).unwrap();
    let e = link_new(&g, &out, b"b").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(t.path().join("b")).unwrap(), b"theirs");
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2);
}
