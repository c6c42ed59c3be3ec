//! The code phrase: BIP39 words that name a channel (the first word) and carry the secret
//! that both peers feed into SPAKE2 (the whole phrase).
//!
//! Only [`Code::channel`] is ever published (inside [`identifier`]); the phrase itself never
//! leaves this process, and `Debug` does not print it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bip39::Language;
use rand::Rng;
use zeroize::{Zeroize, Zeroizing};

/// Fewest words a code may have: with 2048 words each, 4 words leave 33 secret bits after the
/// channel word (which is public), so 3 online guesses succeed with odds of 3 in 2^33.
pub const MIN_WORDS: usize = 4;
/// Most words a code may have.
pub const MAX_WORDS: usize = 12;
/// Length of one discovery time slot.
pub const SLOT: Duration = Duration::from_secs(300);

/// Why a code phrase was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    #[error(
        "a code has {MIN_WORDS} to {MAX_WORDS} words separated by '-' or spaces; this one has {0}"
    )]
    WordCount(usize),
    #[error(
        "'{word}' is not a word of the code list (BIP39 English); {}",
        did_you_mean(near)
    )]
    UnknownWord {
        word: String,
        /// The closest words of the list (by edit distance), best first.
        near: Vec<&'static str>,
    },
    #[error(
        "a code of your own needs at least 3 different words among its {MIN_WORDS} or more, \
         or it is easy to guess; leave out --code to get a random one"
    )]
    TooWeak,
}

fn did_you_mean(near: &[&str]) -> String {
    match near {
        [] => "check the spelling".into(),
        [one] => format!("did you mean '{one}'?"),
        [init @ .., last] => format!(
            "did you mean {} or '{last}'?",
            init.iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Letters that name a word of the list: no two of its words share their first four letters
/// (BIP39's own rule), so "bubb" or "enem" are enough, as on a hardware wallet.
const UNIQUE_PREFIX: usize = 4;

/// The index of lower-case `w` in the list: the word itself, or its first four or more letters.
fn word_index(w: &str) -> Result<u16, CodeError> {
    let list = Language::English.word_list();
    if let Some(i) = Language::English.find_word(w) {
        return Ok(i);
    }
    if w.chars().count() >= UNIQUE_PREFIX {
        let mut starting = list.iter().enumerate().filter(|(_, x)| x.starts_with(w));
        if let (Some((i, _)), None) = (starting.next(), starting.next()) {
            return Ok(i as u16);
        }
    }
    // A few letters too few ("abo"): the words they begin.
    let starting: Vec<&'static str> = list.iter().filter(|x| x.starts_with(w)).copied().collect();
    let near = match starting.len() {
        1..=3 if !w.is_empty() => starting,
        _ => nearest(w, list),
    };
    Err(CodeError::UnknownWord {
        word: w.to_string(),
        near,
    })
}

/// The words of `list` closest to `w`, at most three: those within two edits of it (one for
/// words of up to four letters), and of those only the closest.
fn nearest(w: &str, list: &[&'static str]) -> Vec<&'static str> {
    let w: Vec<char> = w.chars().collect();
    let most = if w.len() <= UNIQUE_PREFIX { 1 } else { 2 };
    let scored: Vec<(usize, &'static str)> = list
        .iter()
        .map(|x| (edits(&w, &x.chars().collect::<Vec<_>>()), *x))
        .filter(|(d, _)| *d <= most)
        .collect();
    let best = scored.iter().map(|(d, _)| *d).min().unwrap_or(0);
    scored
        .into_iter()
        .filter(|(d, _)| *d == best)
        .take(3)
        .map(|(_, x)| x)
        .collect()
}

/// Edits (insert, delete, replace, or swap two neighbours) that turn `a` into `b`: the
/// optimal string alignment distance, so "bubbel" is one edit from "bubble".
fn edits(a: &[char], b: &[char]) -> usize {
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let replace = d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = replace.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// A normalised code phrase: lower-case BIP39 English words, kept as their indices in the
/// list and wiped from memory when dropped (as is every phrase built from it).
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    words: Vec<u16>,
}

impl Drop for Code {
    fn drop(&mut self) {
        self.words.zeroize();
    }
}

impl Code {
    /// A fresh random code of `n` words (clamped to the allowed range).
    pub fn generate(n: usize) -> Code {
        let mut rng = rand::rngs::OsRng;
        let n = n.clamp(MIN_WORDS, MAX_WORDS);
        Code {
            words: (0..n).map(|_| rng.gen_range(0..2048u16)).collect(),
        }
    }

    /// Parses a phrase typed by a person: words separated by `-`, `_`, spaces or tabs, in any
    /// letter case.
    pub fn parse(s: &str) -> Result<Code, CodeError> {
        let parts: Zeroizing<Vec<String>> = Zeroizing::new(
            s.split(|c: char| c == '-' || c == '_' || c.is_whitespace())
                .filter(|w| !w.is_empty())
                .map(|w| w.to_lowercase())
                .collect(),
        );
        if !(MIN_WORDS..=MAX_WORDS).contains(&parts.len()) {
            return Err(CodeError::WordCount(parts.len()));
        }
        let words = parts
            .iter()
            .map(|w| word_index(w))
            .collect::<Result<_, _>>()?;
        Ok(Code { words })
    }

    /// Parses a code the user chose (`pcp send --code`): like [`parse`](Self::parse), and it
    /// must not be easy to guess (at least 3 different words).
    pub fn parse_custom(s: &str) -> Result<Code, CodeError> {
        let c = Code::parse(s)?;
        let distinct: std::collections::HashSet<_> = c.words.iter().collect();
        if distinct.len() < 3 {
            return Err(CodeError::TooWeak);
        }
        Ok(c)
    }

    /// The public channel number: the first word's index in the BIP39 list (0..2048).
    pub fn channel(&self) -> u16 {
        self.words[0]
    }

    /// The canonical phrase, `w1-w2-w3-w4`: what SPAKE2 is keyed with and what users see.
    pub fn phrase(&self) -> Zeroizing<String> {
        Zeroizing::new(self.words().join("-"))
    }

    pub fn words(&self) -> Vec<&'static str> {
        let list = Language::English.word_list();
        self.words.iter().map(|&i| list[i as usize]).collect()
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Code(channel {}, {} words)",
            self.channel(),
            self.words.len()
        )
    }
}

/// The discovery time slot that contains `t`.
pub fn slot_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / SLOT.as_secs()
}

/// The identifier published for discovery: `/pcp/{slot}/{channel}`.
pub fn identifier(slot: u64, channel: u16) -> String {
    format!("/pcp/{slot}/{channel}")
}

/// Time until the slot after the one containing `t` begins.
pub fn until_next_slot(t: SystemTime) -> Duration {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let next = (slot_of(t) + 1) * SLOT.as_secs();
    Duration::from_secs(next).saturating_sub(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_separator_and_case() {
        let a = Code::parse("Bubble-ENEMY result  increase").unwrap();
        assert_eq!(a.phrase().as_str(), "bubble-enemy-result-increase");
        assert_eq!(a.channel(), Language::English.find_word("bubble").unwrap());
        let b = Code::parse(" bubble_enemy\tresult-increase ").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn refuses_bad_codes() {
        assert_eq!(Code::parse("bubble-enemy"), Err(CodeError::WordCount(2)));
        assert_eq!(Code::parse(""), Err(CodeError::WordCount(0)));
        assert_eq!(
            Code::parse("bubble-enemy-result"),
            Err(CodeError::WordCount(3)),
            "a word missing is refused before anything is tried"
        );
        assert_eq!(
            Code::parse("bubble-enemy-resultt-increase"),
            Err(CodeError::UnknownWord {
                word: "resultt".into(),
                near: vec!["result"]
            })
        );
        assert_eq!(
            Code::parse("bubble-enemy-result-abo")
                .unwrap_err()
                .to_string(),
            "'abo' is not a word of the code list (BIP39 English); did you mean 'about' or 'above'?"
        );
        assert_eq!(
            Code::parse("bubble-enemy-result-xqzv")
                .unwrap_err()
                .to_string(),
            "'xqzv' is not a word of the code list (BIP39 English); check the spelling"
        );
        assert_eq!(
            Code::parse("bubble-enemy-result-fogg")
                .unwrap_err()
                .to_string(),
            "'fogg' is not a word of the code list (BIP39 English); did you mean 'fog'?"
        );
        // Swapped letters are one edit; only the closest words are named.
        let e = |c: &str| Code::parse(c).unwrap_err().to_string();
        assert!(e("bubbel-enemy-result-increase").ends_with("did you mean 'bubble'?"));
        assert!(e("enemmy-bubble-result-increase").ends_with("did you mean 'enemy'?"));
        let two = e("bubble-enemy-result-tabel");
        assert!(two.ends_with("did you mean 'label' or 'table'?"), "{two}");
        let three = e("bubble-enemy-result-fild");
        assert!(
            three.ends_with("did you mean 'field', 'file' or 'film'?"),
            "{three}"
        );
        // Three letters are not enough to name a word by its start.
        assert!(matches!(
            Code::parse("bub-enemy-result-increase"),
            Err(CodeError::UnknownWord { .. })
        ));
        assert_eq!(
            Code::parse_custom("zoo zoo zoo zoo"),
            Err(CodeError::TooWeak)
        );
        assert_eq!(
            Code::parse_custom("zoo zoo zoo zoo zoo zoo"),
            Err(CodeError::TooWeak)
        );
        assert!(Code::parse_custom("zoo zoo abandon ability").is_ok());
        let long = vec!["zoo"; 13].join("-");
        assert_eq!(Code::parse(&long), Err(CodeError::WordCount(13)));
    }

    #[test]
    fn four_letters_name_a_word() {
        let full = Code::parse("bubble-enemy-result-increase").unwrap();
        assert_eq!(Code::parse("bubb enem resu incr").unwrap(), full);
        assert_eq!(Code::parse("BUBBL-enemy-resul-increa").unwrap(), full);
        // Every word of the list is named by its first four letters, and by nothing shorter
        // than a whole word.
        for (i, w) in Language::English.word_list().iter().enumerate() {
            let four: String = w.chars().take(UNIQUE_PREFIX).collect();
            assert_eq!(word_index(&four), Ok(i as u16), "{w}");
        }
    }

    #[test]
    fn generated_codes_parse_back() {
        for n in MIN_WORDS..=MAX_WORDS {
            let c = Code::generate(n);
            assert_eq!(c.words().len(), n);
            assert_eq!(Code::parse(&c.phrase()).unwrap(), c);
        }
    }

    #[test]
    fn debug_hides_the_words() {
        let c = Code::parse("bubble-enemy-result-increase").unwrap();
        assert!(!format!("{c:?}").contains("enemy"));
    }

    #[test]
    fn slots() {
        let t = UNIX_EPOCH + Duration::from_secs(600 + 299);
        assert_eq!(slot_of(t), 2);
        assert_eq!(until_next_slot(t), Duration::from_secs(1));
        assert_eq!(identifier(2, 7), "/pcp/2/7");
    }
}
