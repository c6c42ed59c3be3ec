//! The code prompt on a terminal, as magic-wormhole's: Tab completes the word being typed from
//! the code list (BIP39 English; a second Tab lists the words it could be), and once its first
//! letters name one word the rest of it shows dimmed. The terminal is the controlling one
//! (`/dev/tty`), so standard output stays free for `--json` and `--stdout`.

use std::borrow::Cow;

use rustyline::completion::Completer;
use rustyline::config::{Behavior, CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::MemHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use zeroize::Zeroizing;

/// Characters that separate the words of a code (as [`crate::code::Code::parse`] takes them).
fn is_separator(c: char) -> bool {
    c == '-' || c == '_' || c.is_whitespace()
}

/// Where the word under the cursor starts, and its letters so far (lowercase).
fn word_before(line: &str, pos: usize) -> (usize, String) {
    let start = line[..pos]
        .rfind(is_separator)
        .map(|i| i + line[i..].chars().next().map_or(1, char::len_utf8))
        .unwrap_or(0);
    (start, line[start..pos].to_lowercase())
}

/// The code list's words that start with `prefix` (none for an empty one: not 2,048 of them).
fn words(prefix: &str) -> Vec<&'static str> {
    if prefix.is_empty() {
        return Vec::new();
    }
    bip39::Language::English.words_by_prefix(prefix).to_vec()
}

struct Words {
    dim: bool,
}

impl Completer for Words {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let (start, prefix) = word_before(line, pos);
        Ok((
            start,
            words(&prefix).iter().map(|w| w.to_string()).collect(),
        ))
    }
}

impl Hinter for Words {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if pos < line.len() {
            return None;
        }
        let (_, prefix) = word_before(line, pos);
        match words(&prefix)[..] {
            [one] if one.len() > prefix.len() => Some(one[prefix.len()..].to_string()),
            _ => None,
        }
    }
}

impl Highlighter for Words {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.dim {
            Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
        } else {
            Cow::Borrowed(hint)
        }
    }
}

impl Validator for Words {}
impl Helper for Words {}

/// What the prompt got.
pub(super) enum Typed {
    Line(Zeroizing<String>),
    /// Ctrl-D on an empty line.
    End,
    /// Ctrl-C.
    Interrupted,
}

/// Asks for the code on the terminal with completion. `Err`: no terminal to edit on (the
/// caller then reads a plain line).
pub(super) fn ask(prompt: &str) -> std::io::Result<Typed> {
    let config = Config::builder()
        .behavior(Behavior::PreferTerm)
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .build();
    let mut rl: Editor<Words, MemHistory> =
        Editor::with_history(config, MemHistory::new()).map_err(std::io::Error::other)?;
    rl.set_helper(Some(Words {
        dim: std::env::var_os("NO_COLOR").is_none(),
    }));
    match rl.readline(prompt) {
        Ok(line) => Ok(Typed::Line(Zeroizing::new(line))),
        Err(ReadlineError::Eof) => Ok(Typed::End),
        Err(ReadlineError::Interrupted) => Ok(Typed::Interrupted),
        Err(ReadlineError::Io(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_under_the_cursor_completes_from_the_code_list() {
        assert_eq!(word_before("abandon-abi", 11), (8, "abi".into()));
        assert_eq!(word_before("Abandon abi", 11), (8, "abi".into()));
        assert_eq!(word_before("zoo", 3), (0, "zoo".into()));
        assert_eq!(word_before("zoo-", 4), (4, String::new()));
        assert_eq!(words("abil"), ["ability"]);
        assert!(words("ab").len() > 5);
        assert!(words("").is_empty());
        assert!(words("xq").is_empty());
        let w = Words { dim: false };
        let h = MemHistory::new();
        let ctx = Context::new(&h);
        assert_eq!(w.hint("abandon-abil", 12, &ctx), Some("ity".into()));
        // Not yet one word, already whole, or the cursor not at the end: no hint.
        assert_eq!(w.hint("abandon-ab", 10, &ctx), None);
        assert_eq!(w.hint("abandon", 7, &ctx), None);
        assert_eq!(w.hint("abil-x", 4, &ctx), None);
        let (start, c) = w.complete("abandon-abs", 11, &ctx).unwrap();
        assert_eq!(
            (start, c),
            (
                8,
                vec![
                    "absent".into(),
                    "absorb".into(),
                    "abstract".into(),
                    "absurd".into()
                ]
            )
        );
    }
}
