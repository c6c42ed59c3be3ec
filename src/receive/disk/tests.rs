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

/// Direct writes put the same bytes where buffered ones would: whole pages around the
/// page cache, an unaligned start and a last partial page through the file itself.
#[test]
fn direct_writes_land_where_buffered_ones_would() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let mut w = DirectWriter::open(&f)
        .expect("the temporary folder's filesystem takes O_DIRECT (ext4, xfs, tmpfs 6.6+)");
    let data: Vec<u8> = (0..3 * PAGE as u32 * 100 + 777)
        .map(|i| (i * 17 % 253) as u8)
        .collect();
    let cut = PAGE * 100;
    // Out of order, as a resume may: the middle, the start, then a last partial page.
    w.write_at(&f, &data[cut..2 * cut], cut as u64).unwrap();
    w.write_at(&f, &data[..cut], 0).unwrap();
    w.write_at(&f, &data[2 * cut..], 2 * cut as u64).unwrap();
    assert!(w.direct.is_some(), "a direct write was refused");
    // Bytes that start on a page (a pooled frame's) go without the copy.
    let mut aligned = pages::take(cut);
    pages::bytes_mut(&mut aligned)[..cut].copy_from_slice(&data[cut..2 * cut]);
    w.write_at(&f, &pages::bytes(&aligned)[..cut], cut as u64)
        .unwrap();
    // An unaligned start goes the usual way, and so the file is its bytes.
    w.write_at(&f, &data[5..PAGE + 9], 5).unwrap();
    let mut got = vec![0; data.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got == data, "the file differs from what was written");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), data.len() as u64);
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
