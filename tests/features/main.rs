//! The real `pcp` binary for what surrounds a transfer: shell completions, the manual page,
//! `--version`, `pcp node` as a service (an identity kept in a key file, bootstrapping from a
//! plain address), and the kinds of share (a text, standard input, `--stdout`, `--exclude` and
//! `--gitignore`). Nodes listen on loopback only, with --discovery none, and bootstrap only from
//! each other.

#[path = "../common/mod.rs"]
mod common;
mod node;
mod sharing;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{send_cmd, Sending, PCP};

const COMMANDS: [&str; 6] = ["send", "receive", "mount", "node", "completions", "man"];

fn pcp(args: &[&str]) -> Output {
    Command::new(PCP)
        .args(args)
        .env_remove("PCP_BOOTSTRAP")
        .stdin(Stdio::null())
        .output()
        .expect("pcp runs")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "pcp failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8")
}

#[test]
fn every_shell_gets_a_completion_script_and_bash_knows_the_commands() {
    let bash = stdout(&pcp(&["completions", "bash"]));
    assert!(bash.contains("complete -F _pcp"), "{bash}");
    assert!(
        bash.contains(&format!("opts=\"{} help\"", COMMANDS.join(" "))),
        "{bash}"
    );
    for c in COMMANDS {
        assert!(bash.contains(&format!("pcp,{c})")), "no {c} in:\n{bash}");
    }
    // The options of a command are completed too.
    assert!(bash.contains("--allow-relay") && bash.contains("--key"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let s = stdout(&pcp(&["completions", shell]));
        assert!(s.contains("receive") && s.contains("mount"), "{shell}: {s}");
    }
    let bad = pcp(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());
}

#[test]
fn the_manual_page_is_roff_and_lists_the_commands() {
    let page = stdout(&pcp(&["man"]));
    assert!(page.starts_with(".TH pcp 1 "), "{page}");
    assert!(page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"));
    for c in COMMANDS {
        assert!(
            page.contains(&format!("pcp\\-{c}(1)")),
            "no {c} in:\n{page}"
        );
    }
    assert!(
        !page.contains("pcp\\-help(1)"),
        "no page for `help`:\n{page}"
    );
    let node = stdout(&pcp(&["man", "node"]));
    assert!(node.starts_with(".TH pcp-node 1 "), "{node}");
    assert!(node.contains("\\-\\-key"), "{node}");
    // Stopping early (`pcp man | head`) is no error.
    let mut child = Command::new(PCP)
        .arg("man")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_version_names_the_commit_and_the_build_date() {
    let v = stdout(&pcp(&["--version"]));
    let rest = v
        .trim()
        .strip_prefix(&format!("pcp {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{v:?}"));
    let (commit, date) = rest.split_once(' ').unwrap_or_else(|| panic!("{v:?}"));
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit, head, "{v:?}"),
        None => assert!(
            commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{v:?}"
        ),
    }
    let d: Vec<&str> = date.split('-').collect();
    assert!(
        d.len() == 3
            && [4, 2, 2]
                .iter()
                .zip(&d)
                .all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_digit())),
        "{v:?}"
    );
}
