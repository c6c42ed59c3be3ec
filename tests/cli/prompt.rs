//! The code prompt on a pseudo-terminal.

use std::process::Command;

use super::common::{receive_cmd, send_loopback};

/// A terminal for a child: its controlling tty (so `/dev/tty` is it) on stdin, stdout and
/// stderr; the parent reads what the child shows and types through `master`.
struct Pty {
    master: std::fs::File,
}

impl Pty {
    fn spawn(cmd: &mut Command) -> (Pty, std::process::Child) {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty fills two descriptors, which are owned right after.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty");
        // SAFETY: fresh descriptors from openpty, owned once each.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        (
            Pty {
                master: std::fs::File::from(master),
            },
            child,
        )
    }

    /// What the terminal shows until `want` appears (or 10 s pass), without its escapes.
    fn read_until(&mut self, seen: &mut String, want: &str) -> bool {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !seen.contains(want) && std::time::Instant::now() < end {
            let mut p = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd on a descriptor we own.
            if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen.contains(want)
    }

    fn type_in(&mut self, keys: &str) {
        use std::io::Write;
        self.master.write_all(keys.as_bytes()).unwrap();
    }
}

/// On a terminal the code prompt completes words: Tab fills in the word begun, the rest of a
/// word shows as soon as its letters name one, and a too-short word gets the words it begins.
#[test]
fn the_code_prompt_completes_words_on_a_terminal() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"typed").unwrap();
    let mut s = send_loopback(&src.path().join("f"), &[]);
    let out = tempfile::tempdir().unwrap();
    let (mut t, mut child) =
        Pty::spawn(receive_cmd(&s.loopback_addr(), out.path()).arg("--no-progress"));
    let words: Vec<&str> = s.code.split('-').collect();
    let mut seen = String::new();
    assert!(t.read_until(&mut seen, "Enter the code: "), "{seen}");
    // A first try with a word too short to name one: asked again, with the candidates.
    t.type_in("zoo-zoo-zoo-ab\r");
    assert!(t.read_until(&mut seen, "'ab' is not a word"), "{seen}");
    assert!(t.read_until(&mut seen, "Enter the code: "), "{seen}");
    for (i, w) in words.iter().enumerate() {
        let begun: String = w.chars().take(4).collect();
        seen.clear();
        t.type_in(&begun);
        if w.len() > 4 {
            // The rest of the word, shown dimmed before it is completed.
            let hint = format!("\x1b[2m{}\x1b[0m", &w[4..]);
            assert!(t.read_until(&mut seen, &hint), "{seen:?}");
        }
        t.type_in("\t");
        seen.clear();
        assert!(t.read_until(&mut seen, w), "{w}: {seen}");
        t.type_in(if i + 1 < words.len() { "-" } else { "\r" });
    }
    assert!(t.read_until(&mut seen, "all verified"), "{seen}");
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read(out.path().join("f")).unwrap(), b"typed");
    assert_eq!(s.wait(10), Some(0));
}
