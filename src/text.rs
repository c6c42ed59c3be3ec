//! Text that came from a peer (names, reasons, messages), made safe for a terminal: every
//! control character (C0, DEL, C1) and every bidirectional override or isolate is shown as an
//! escape instead of acting on the terminal, so a peer cannot move the cursor, rewrite earlier
//! lines, set the window title or reorder what the user reads (croc's CVE-2023-43621 class).
//! Everything pcp prints goes through [`printable`].

use std::borrow::Cow;

/// Whether `c` would act on a terminal instead of showing as itself.
fn is_unsafe(c: char) -> bool {
    c.is_control() // C0, DEL and C1
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// `s` with every unsafe character escaped (`\x1b`, `\u{202e}`); borrowed when nothing is.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape(s, is_unsafe)
}

/// [`printable`] for a text of several lines: newlines and tabs stay as they are.
pub fn printable_text(s: &str) -> Cow<'_, str> {
    escape(s, |c| c != '\n' && c != '\t' && is_unsafe(c))
}

fn escape(s: &str, is_unsafe: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// Bytes from a peer for a terminal, a piece at a time, as [`printable_text`]: a character
/// split between two pieces is kept whole, and bytes that are not UTF-8 show as U+FFFD.
#[derive(Debug, Default)]
pub struct TerminalText {
    pending: Vec<u8>,
}

impl TerminalText {
    /// What to show for `bytes`, following the pieces before.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            let (good, bad) = match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(&printable_text(s));
                    self.pending.clear();
                    return out;
                }
                Err(e) => (e.valid_up_to(), e.error_len()),
            };
            let valid = std::str::from_utf8(&self.pending[..good]).expect("valid up to here");
            out.push_str(&printable_text(valid));
            match bad {
                Some(n) => {
                    out.push('\u{fffd}');
                    self.pending.drain(..good + n);
                }
                // A character cut at the end: wait for the next piece.
                None => {
                    self.pending.drain(..good);
                    return out;
                }
            }
        }
    }

    /// What to show at the end (a character left incomplete).
    pub fn finish(&mut self) -> String {
        let cut = !self.pending.is_empty();
        self.pending.clear();
        if cut {
            "\u{fffd}".into()
        } else {
            String::new()
        }
    }
}

/// A byte count for people: `40.00 MiB`.
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// A name from a peer (any bytes), for a line of text.
pub fn name(bytes: &[u8]) -> String {
    printable(&String::from_utf8_lossy(bytes)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(printable("photos/"), "photos/");
        assert!(matches!(printable("plain é ü 日本"), Cow::Borrowed(_)));
        assert_eq!(printable("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(printable("line\nfake line"), "line\\x0afake line");
        assert_eq!(printable("\x7f\u{9b}"), "\\x7f\\u{9b}");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(printable("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        assert_eq!(name(b"\xff\x1b]0;title\x07"), "\u{fffd}\\x1b]0;title\\x07");
    }

    #[test]
    fn text_keeps_its_lines_and_loses_its_escapes_across_pieces() {
        assert_eq!(printable_text("a\n\tb\r\x1b[2J"), "a\n\tb\\x0d\\x1b[2J");
        let mut t = TerminalText::default();
        let s = "é\u{202e}日本\n".as_bytes();
        let mut out = String::new();
        for b in s {
            out.push_str(&t.push(&[*b]));
        }
        assert_eq!(out, "é\\u{202e}日本\n");
        assert_eq!(t.push(b"x\xffy\xe6"), "x\u{fffd}y");
        assert_eq!(t.finish(), "\u{fffd}");
        assert_eq!(t.finish(), "");
    }
}
