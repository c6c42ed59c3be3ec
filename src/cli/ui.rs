//! Terminal helpers shared by the commands: progress bars, counts and names for humans, the
//! code from an argument, `PCP_CODE` or a prompt, yes/no questions, sizes like `256M`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use zeroize::Zeroizing;

use crate::code::Code;
use crate::error::{Error, Result};

#[derive(Clone, Copy)]
pub(super) struct Ui {
    pub(super) progress: bool,
    pub(super) verbose: u8,
}

impl Ui {
    pub(super) fn bar(&self, total: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "{wide_bar:.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec}{left} {msg}",
            )
            .expect("valid template")
            .with_key("left", left)
            .progress_chars("=> "),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }

    /// The sender's status line while a receiver has the share mounted: a mount reads on demand,
    /// so there is no total and no ETA, only what it has read ([`MountRate`] sets the message).
    pub(super) fn served(&self) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::no_length();
        pb.set_style(
            ProgressStyle::with_template("{spinner:.cyan} the mount has read {bytes}{msg}")
                .expect("valid template"),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }
}

/// " ETA 12s" once bytes move; nothing before (indicatif's own `{eta}` says "0s" then).
fn left(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    if state.pos() > 0 && state.per_sec() > 0.0 {
        let _ = write!(w, " ETA {:#}", indicatif::HumanDuration(state.eta()));
    }
}

/// How fast a mount reads right now: bytes over about the last second of samples, "" when it
/// read nothing in that time (an idle mount shows no made-up rate).
#[derive(Default)]
pub(super) struct MountRate(std::collections::VecDeque<(std::time::Instant, u64)>);

impl MountRate {
    pub(super) fn update(&mut self, now: std::time::Instant, served: u64) -> String {
        self.0.push_back((now, served));
        while self.0.len() > 2 && now - self.0[1].0 >= Duration::from_secs(1) {
            self.0.pop_front();
        }
        let (t0, b0) = self.0[0];
        let secs = (now - t0).as_secs_f64();
        if served <= b0 || secs <= 0.0 {
            return String::new();
        }
        format!(
            ", {}/s",
            indicatif::HumanBytes(((served - b0) as f64 / secs) as u64)
        )
    }
}

/// "6 files", "6 files in 3 folders, 2 symlinks": the folders once there is more than one.
pub(super) fn tally(files: u64, folders: u64, links: u64) -> String {
    let mut s = plural(files, "file");
    if folders > 1 {
        s += &format!(" in {folders} folders");
    }
    if links > 0 {
        s += &format!(", {}", plural(links, "symlink"));
    }
    s
}

pub(super) fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// A duration for a line of text: "41.0 s", "0.35 s", "12 ms", "under 1 ms" (a fast LAN
/// transfer is not "0.0 s").
pub(super) fn seconds(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.1} s")
    } else if secs >= 0.1 {
        format!("{secs:.2} s")
    } else if secs >= 0.0005 {
        format!("{} ms", (secs * 1000.0).round() as u64)
    } else {
        "under 1 ms".into()
    }
}

/// The first few top-level names of a share, for a line of text.
pub(super) fn roots(roots: &[Vec<u8>]) -> String {
    let names: Vec<String> = roots
        .iter()
        .take(3)
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    let more = roots.len().saturating_sub(3);
    if more > 0 {
        format!("{} and {more} more", names.join(", "))
    } else {
        names.join(", ")
    }
}

/// The code from the arguments (its words, or `-`), PCP_CODE, or a prompt. A code on the
/// command line is visible to every local user (`ps`, /proc) for as long as pcp runs.
pub(super) fn read_code(args: &[String]) -> Result<Code> {
    if !args.is_empty() && args != ["-"] {
        say!(
            "warning: a code on the command line is visible to other users of this machine; \
             next time leave it out (or give -) and type it, or set PCP_CODE"
        );
        return Ok(Code::parse(&Zeroizing::new(args.join(" ")))?);
    }
    if let Ok(c) = std::env::var("PCP_CODE") {
        return Ok(Code::parse(&Zeroizing::new(c))?);
    }
    // On a terminal a mistyped code is asked for again (nothing went out yet), with Tab
    // completing its words; from a pipe the first answer is the only one.
    let terminal = std::io::stdin().is_terminal();
    let mut tries = if terminal { 3 } else { 1 };
    loop {
        let typed = match terminal {
            true => super::prompt::ask("Enter the code: "),
            false => Err(std::io::ErrorKind::Unsupported.into()),
        };
        let line = match typed {
            Ok(super::prompt::Typed::Line(l)) => l,
            Ok(super::prompt::Typed::End) => return Err(Error::Usage("no code was given".into())),
            Ok(super::prompt::Typed::Interrupted) => return Err(Error::Interrupted),
            Err(_) => {
                say_part!("Enter the code: ");
                let _ = std::io::stderr().flush();
                let mut line = Zeroizing::new(String::new());
                let n = std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| Error::io("reading the code", e))?;
                if n == 0 {
                    say!("");
                    return Err(Error::Usage("no code was given".into()));
                }
                line
            }
        };
        tries -= 1;
        match Code::parse(line.trim()) {
            Ok(code) => return Ok(code),
            Err(e) if tries > 0 => say!("{e}"),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Asks a yes/no question on the terminal (no terminal: an error that says to pass --yes).
pub(super) fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::io(
            "cannot ask whether to accept",
            std::io::Error::other("standard input is not a terminal; pass --yes to accept"),
        ));
    }
    say_part!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::io("reading the answer", e))?;
    Ok(matches!(line.trim().to_lowercase().as_str(), "y" | "yes"))
}

/// Parses sizes like `256M`, `1G`, `4096`, `512k` (binary units).
pub(super) fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_lowercase();
            let m = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

/// `--compress[=WHEN]`: whether to ask the sender for compressed file data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Compress {
    /// When the round trip to the sender is at least 5 ms (beyond a wired LAN).
    Auto,
    Yes,
    No,
}

/// `--compress[=WHEN]`, shared by `receive` and `mount`.
#[derive(Debug, clap::Args)]
pub(super) struct CompressArg {
    /// Ask the sender for file data compressed with zstd where that saves at least an eighth
    /// (text, source, logs, disk images): auto when the round trip to it is 5 ms or more
    /// (beyond a wired LAN, where compressing costs both sides CPU for little gain), always
    /// with --compress (or =yes), never with --compress=no.
    #[arg(
        long = "compress",
        value_enum,
        value_name = "WHEN",
        default_value = "auto",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "yes"
    )]
    pub when: Compress,
}

/// The round trip from which `--compress=auto` asks for compressed data: a wired LAN answers
/// in well under a millisecond, an internet path in tens of them.
pub(super) const AUTO_COMPRESS_RTT: Duration = Duration::from_millis(5);

/// Asks for compressed data if `when` says so (saying so when `auto` decided it); returns
/// what came compressed, counted as it comes.
pub(super) async fn ask_compressed(
    receiver: &mut crate::receive::run::Receiver,
    when: Compress,
) -> Option<std::sync::Arc<crate::pack::Packed>> {
    let (on, rtt) = match when {
        Compress::Yes => (true, None),
        Compress::No => (false, None),
        Compress::Auto => match receiver.round_trip().await {
            Some(rtt) if rtt >= AUTO_COMPRESS_RTT => {
                say!(
                    "The round trip to the sender is {} ms: asking for compressed data \
                     (--compress=no to turn it off).",
                    rtt.as_millis()
                );
                (true, Some(rtt))
            }
            rtt => (false, rtt),
        },
    };
    super::json::emit(
        "compression",
        serde_json::json!({
            "on": on,
            "round_trip_ms": rtt.map(|r| r.as_secs_f64() * 1000.0),
        }),
    );
    on.then(|| receiver.compress())
}

/// Of the bytes that moved, those that did not cross as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Wire {
    /// Runs of zeros sent as their length.
    pub zeros: u64,
    /// Bytes sent compressed, and their size on the wire.
    pub packed: (u64, u64),
}

impl Wire {
    /// "; 1.00 GiB of it runs of zeros sent as their length; 30.00 MiB of it compressed to
    /// 8.00 MiB", or nothing.
    pub(super) fn note(&self) -> String {
        let mut note = String::new();
        if self.zeros > 0 {
            note += &format!(
                "; {} of it runs of zeros sent as their length",
                indicatif::HumanBytes(self.zeros)
            );
        }
        if self.packed.0 > 0 {
            note += &format!(
                "; {} of it compressed to {}",
                indicatif::HumanBytes(self.packed.0),
                indicatif::HumanBytes(self.packed.1)
            );
        }
        note
    }

    /// Its fields for a `--json` event.
    pub(super) fn json(&self, mut fields: serde_json::Value) -> serde_json::Value {
        fields["zeros"] = self.zeros.into();
        fields["compressed"] = self.packed.0.into();
        fields["compressed_wire"] = self.packed.1.into();
        fields
    }
}

/// A rate for `--limit-rate`: a size a second (`500K`, `10M`, `10M/s`), at least 1K.
pub(super) fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("/S"))
        .unwrap_or(t);
    match parse_size(t)? {
        r if r < 1024 => Err(format!(
            "{s:?} is below the lowest rate, 1K (1 KiB a second)"
        )),
        r => Ok(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_sizes_a_second_and_not_too_low() {
        assert_eq!(parse_rate("10M"), Ok(10 << 20));
        assert_eq!(parse_rate("500K/s"), Ok(500 << 10));
        assert_eq!(parse_rate("1KiB/s"), Ok(1024));
        assert!(parse_rate("100").unwrap_err().contains("lowest rate"));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn a_mount_rate_is_the_last_second_and_nothing_when_idle() {
        let t = std::time::Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut r = MountRate::default();
        assert_eq!(r.update(t, 0), "");
        assert_eq!(r.update(ms(500), 1 << 20), ", 2.00 MiB/s");
        assert_eq!(r.update(ms(1000), 2 << 20), ", 2.00 MiB/s");
        // Older samples drop out: 1 MiB over the last second, not 3 over 1.5.
        assert_eq!(r.update(ms(1500), 3 << 20), ", 2.00 MiB/s");
        assert_eq!(r.update(ms(2000), 7 << 19), ", 1.50 MiB/s");
        // Idle for a second: no rate at all, not a decaying one.
        assert_eq!(r.update(ms(3000), 7 << 19), "");
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn roots_name_three_and_count_the_rest() {
        let r: Vec<Vec<u8>> = ["a", "b/", "c", "d", "e"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(roots(&r), "a, b/, c and 2 more");
        assert_eq!(roots(&r[..1]), "a");
        assert_eq!(plural(1, "file"), "1 file");
        assert_eq!(tally(1, 1, 0), "1 file");
        assert_eq!(tally(6, 3, 2), "6 files in 3 folders, 2 symlinks");
        assert_eq!(tally(0, 2, 1), "0 files in 2 folders, 1 symlink");
        assert_eq!(plural(2, "file"), "2 files");
    }

    #[test]
    fn durations_keep_their_figures_when_short() {
        assert_eq!(seconds(41.04), "41.0 s");
        assert_eq!(seconds(1.0), "1.0 s");
        assert_eq!(seconds(0.354), "0.35 s");
        assert_eq!(seconds(0.0123), "12 ms");
        assert_eq!(seconds(0.0006), "1 ms");
        assert_eq!(seconds(0.0), "under 1 ms");
    }
}
