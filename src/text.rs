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
    if !s.chars().any(is_unsafe) {
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
}
