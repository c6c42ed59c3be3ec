//! The store's tests: reads, hashes, runs of zeros and compression, against real files.

use super::*;

pub(super) fn share_of(dir: &std::path::Path, data: &[u8]) -> (Share, u64) {
    let p = dir.join("f");
    std::fs::write(&p, data).unwrap();
    let share = Share::new(LocalTree::build(&[p]).unwrap());
    let id = share.tree().entries[0].id;
    (share, id)
}

/// Both ways, with and without room around the bytes (the bytes after `before`, capacity
/// for `after` more, so a tag is appended without moving them).
#[test]
fn reads_from_the_page_cache_or_the_disk_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (share, id) = share_of(dir.path(), &data);
    let framed = Room {
        before: DATA_ROOM,
        after: TAG,
    };
    for room in [Room::default(), framed] {
        let bytes = |buf: &Vec<u8>| {
            assert!(buf.capacity() >= buf.len() + room.after, "no room after");
            buf[room.before..].to_vec()
        };
        for (off, len) in [
            (0u64, 4096u32),
            (12_345, 70_000),
            (299_000, 4096),
            (300_000, 10),
        ] {
            let want = &data[off as usize..(off as usize + len as usize).min(data.len())];
            let (blocking, _) = share.read(id, off, len, room, false).unwrap();
            assert_eq!(bytes(&blocking), want);
            // Just written, so in the page cache: the no-wait read gets it all.
            match share.read(id, off, len, room, true) {
                Ok((cached, _)) => assert_eq!(bytes(&cached), want),
                Err(e) => panic!("a read of cached data failed: {e:?}"),
            }
        }
        // A fallback goes on from what a no-wait read got.
        let mut got = vec![0; room.before];
        got.extend_from_slice(&data[1000..1100]);
        let (rest, _) = share.read_into(id, 1000, 50_000, room, got, false).unwrap();
        assert_eq!(bytes(&rest), &data[1000..51_000]);
        // A read of the whole file carries its hash.
        let (_, hash) = share.read(id, 0, 300_000, room, false).unwrap();
        assert_eq!(hash, Some(*blake3::hash(&data).as_bytes()));
    }
    // Past the end and over the limit are refused.
    assert!(matches!(
        share.read(id, 300_001, 1, Room::default(), false),
        Err(ReadError::Failed(_))
    ));
    assert!(matches!(
        share.read(id, 0, MAX_READ + 1, Room::default(), true),
        Err(ReadError::Failed(_))
    ));
}

/// Small reads of pages the page cache does not hold (dropped with `POSIX_FADV_DONTNEED`)
/// wait for the disk polling (the first no-wait try started the read) and get the right bytes,
/// whole or in part cached.
#[tokio::test]
async fn small_reads_from_the_disk_poll_for_their_pages() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i * 13 % 251) as u8).collect();
    let (share, id) = share_of(dir.path(), &data);
    let share = Arc::new(share);
    let f = std::fs::File::open(dir.path().join("f")).unwrap();
    f.sync_all().unwrap();
    for (off, len) in [
        (0u64, 4096u32),
        (1 << 20, 4096),
        (3 << 20, 65536),
        (5_000_000, 10_000),
    ] {
        // SAFETY: fadvise on an open descriptor.
        assert_eq!(
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) },
            0
        );
        let r = crate::proto::Read {
            file: id,
            offset: off,
            len,
            hash: false,
            zeros: false,
            compress: false,
        };
        let (buf, _) = share
            .read_cached_or_not(r, Room::default())
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            buf,
            &data[off as usize..(off + len as u64) as usize],
            "at {off}"
        );
    }
}

/// A receive's reads (`Read.hash`) bring the file's hash with the one that completes it,
/// whatever order they complete in; reads without the flag bring none. Once known, it
/// comes with the last read of a later receive and answers a `HashRequest` at once.
#[tokio::test]
async fn served_reads_put_the_hash_together() {
    let dir = tempfile::tempdir().unwrap();
    let piece = MAX_READ as usize;
    let data: Vec<u8> = (0..3 * piece + 5000)
        .map(|i| (i * 13 % 251) as u8)
        .collect();
    let want = blake3::hash(&data).as_bytes().to_vec();
    let (share, id) = share_of(dir.path(), &data);
    let share = Arc::new(share);
    let read = |k: u64, hash| Request {
        id: k,
        op: Some(request::Op::Read(crate::proto::Read {
            file: id,
            offset: k * MAX_READ as u64,
            len: MAX_READ,
            hash,
            zeros: false,
            compress: false,
        })),
    };
    let bytes = |k: u64| &data[k as usize * piece..data.len().min((k as usize + 1) * piece)];
    for k in 0..4 {
        assert!(matches!(
            share.clone().answer(read(k, false)).await,
            Answer::Data { .. }
        ));
    }
    assert!(share.cell(id).get().is_none());
    for (n, k) in [2u64, 0, 3, 1].into_iter().enumerate() {
        match share.clone().answer(read(k, true)).await {
            Answer::Data { buf, at, .. } => {
                assert!(n < 3, "read {k} completed the hash but did not carry it");
                assert_eq!(&buf[at..], bytes(k));
            }
            Answer::Other(r) => {
                assert_eq!(n, 3, "read {k} carried a hash before the last piece");
                assert_eq!(r.hash, want);
                assert_eq!(&r.data[..], bytes(k));
            }
        }
    }
    for k in 0..4 {
        match share.clone().answer(read(k, true)).await {
            Answer::Other(r) if k == 3 => assert_eq!(r.hash, want),
            Answer::Data { .. } if k < 3 => {}
            _ => panic!("read {k} of a file whose hash is known"),
        }
    }
    assert_eq!(share.hash(id).await.unwrap().to_vec(), want);
}

#[test]
fn a_file_that_shrank_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (share, id) = share_of(dir.path(), &[7u8; 10_000]);
    std::fs::write(dir.path().join("f"), [7u8; 100]).unwrap();
    for nowait in [false, true] {
        match share.read(id, 0, 10_000, Room::default(), nowait) {
            Err(ReadError::Failed(f)) => assert_eq!(f.code, ErrorCode::Changed as i32),
            other => panic!("{other:?}"),
        }
    }
}

/// A read asked for compressed comes compressed where that saves enough, its hash that of the
/// bytes themselves; a file whose reads do not compress stops being tried for a while.
#[tokio::test]
async fn compressed_where_asked_and_worth_it() {
    let dir = tempfile::tempdir().unwrap();
    let text: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("{} ", i % 313).into_bytes())
        .collect();
    let (share, id) = share_of(dir.path(), &text);
    let share = Arc::new(share);
    let read = |compress, len: usize| Request {
        id: 1,
        op: Some(request::Op::Read(crate::proto::Read {
            file: id,
            offset: 0,
            len: len as u32,
            hash: false,
            zeros: false,
            compress,
        })),
    };
    match share.clone().answer(read(true, text.len())).await {
        Answer::Other(r) => {
            assert_eq!(r.compressed, text.len() as u64);
            assert!(r.data.len() < text.len() / 3, "{}", r.data.len());
            assert_eq!(crate::pack::decompress(&r.data, text.len()).unwrap(), text);
            assert_eq!(r.hash, blake3::hash(&text).as_bytes().to_vec());
        }
        Answer::Data { .. } => panic!("not compressed"),
    }
    // Not asked for, or too short to be worth it: as they are.
    assert!(matches!(
        share.clone().answer(read(false, 65536)).await,
        Answer::Data { .. }
    ));
    assert!(matches!(
        share.clone().answer(read(true, 1000)).await,
        Answer::Data { ref buf, at, .. } if buf.len() - at == 1000
    ));

    // Random bytes: two reads tried, then only every 16th.
    let noise = crate::pack::noise(1 << 20, 7);
    let sub = tempfile::tempdir().unwrap();
    let (share, id) = share_of(sub.path(), &noise);
    for _ in 0..20 {
        assert!(share.pack(id, &noise[..65536]).is_none());
    }
    // Tried at the 1st, 2nd and 16th read; the count goes on.
    let misses = share.unpacked.lock().unwrap().get(&id).copied();
    assert_eq!(misses, Some(20));
    // A read that compresses again starts the count over.
    assert!(share.pack(id, &text[..65536]).is_none(), "not its turn");
    let turn = (22..).find(|m| m % 16 == 0).unwrap() - 22;
    for _ in 0..turn {
        assert!(share.pack(id, &text[..65536]).is_none());
    }
    assert!(share.pack(id, &text[..65536]).is_some());
    assert_eq!(share.unpacked.lock().unwrap().get(&id), None);
}

/// A 16 MiB file in `dir` holding 1 MiB of 7s at 4 MiB, holes around it.
fn sparse_image(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(16 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 1 << 20], 4 << 20).unwrap();
    p
}

/// A sparse file: the manifest says what it takes on disk, a read inside a hole is zeros, and
/// `Seek` answers as `lseek` does, refusing offsets at or past the end.
#[test]
fn holes_are_found_and_read_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let p = sparse_image(dir.path());
    let share = Share::new(LocalTree::build(std::slice::from_ref(&p)).unwrap());
    let e = &share.tree().entries[0];
    // The data's blocks (a filesystem may allocate a little more around them).
    assert!(e.allocated.is_some_and(|a| (1 << 20..4 << 20).contains(&a)));
    assert!(e.sparse());
    let (buf, _) = share.read(e.id, 0, 1 << 20, Room::default(), true).unwrap();
    assert!(buf.len() == 1 << 20 && buf.iter().all(|&b| b == 0));
    let (buf, _) = share
        .read(e.id, 4 << 20, 4096, Room::default(), true)
        .unwrap();
    assert_eq!(buf, vec![7u8; 4096]);
    let seek = |offset, hole| {
        share.seek(&crate::proto::Seek {
            file: e.id,
            offset,
            hole,
        })
    };
    // The position, then where data and hole alternate after it, up to the size.
    let (m, size) = (1u64 << 20, 16u64 << 20);
    assert_eq!(seek(0, false), Ok((4 * m, vec![5 * m, size])));
    assert_eq!(seek(0, true), Ok((0, vec![4 * m, 5 * m, size])));
    assert_eq!(seek(4 * m + 1, true), Ok((5 * m, vec![size])));
    // No data after 5 MiB: the size, and nothing after it.
    assert_eq!(seek(5 * m, false), Ok((size, vec![])));
    // Hashes, the holes hashed as zeros without reading them.
    let mut whole = vec![0u8; 16 << 20];
    whole[4 << 20..5 << 20].fill(7);
    assert_eq!(
        share.hash_blocking(e.id).unwrap(),
        *blake3::hash(&whole).as_bytes()
    );
    assert_eq!(
        share.range_hash(e.id, 3 << 20, 6 << 20).unwrap(),
        *blake3::hash(&whole[3 << 20..9 << 20]).as_bytes()
    );
    let code = |r: std::result::Result<(u64, Vec<u64>), Failure>| r.unwrap_err().code;
    assert_eq!(code(seek(16 << 20, false)), ErrorCode::BadRange as i32);
    let none = crate::proto::Seek {
        file: 99,
        offset: 0,
        hole: false,
    };
    assert_eq!(code(share.seek(&none)), ErrorCode::NoSuchFile as i32);
}

/// Bytes this thread has read through system calls (`rchar`).
fn thread_rchar() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// A read inside a hole is answered as its count of zeros without a byte read from the file,
/// and a whole-file hash reads only the data (counted on this thread: a small read of an
/// uncached range would be read right here).
#[test]
fn holes_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = sparse_image(dir.path());
    let share = Arc::new(Share::new(
        LocalTree::build(std::slice::from_ref(&p)).unwrap(),
    ));
    let id = share.tree().entries[0].id;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let read = Request {
        id: 1,
        op: Some(request::Op::Read(crate::proto::Read {
            file: id,
            offset: 8 << 20,
            len: 64 << 10,
            zeros: true,
            ..Default::default()
        })),
    };
    let before = thread_rchar();
    let answer = rt.block_on(share.clone().answer(read));
    assert!(thread_rchar() - before < 4096, "the hole was read");
    assert!(matches!(answer, Answer::Other(r) if r.zeros == 64 << 10 && r.error.is_none()));
    let before = thread_rchar();
    share.hash_blocking(id).unwrap();
    let read = thread_rchar() - before;
    assert!(
        (1 << 20..2 << 20).contains(&read),
        "{read} bytes read to hash"
    );
}
