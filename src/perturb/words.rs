//! Word-level edits: drop, local shuffle, case/punctuation noise. A word is a maximal run of
//! non-whitespace; the whitespace between words is kept byte for byte and never moved, so line
//! structure and indentation survive every edit.

use super::{edit_count, pick, pick_mask, SHUFFLE_RADIUS};
use crate::rng::Rng;

/// Marks the noise edit adds or removes: ASCII, common in prose, each a token of its own to a
/// WordPiece tokenizer.
const PUNCT: [char; 9] = ['.', ',', '!', '?', ';', ':', '-', '\'', '"'];

/// `text` as leading whitespace, then words each followed by its whitespace (the last word's is
/// the trailing whitespace, possibly empty). Concatenating the parts gives `text` back.
struct Split<'a> {
    lead: &'a str,
    words: Vec<&'a str>,
    seps: Vec<&'a str>,
}

fn split(text: &str) -> Split<'_> {
    let start = text
        .find(|c: char| !c.is_whitespace())
        .unwrap_or(text.len());
    let mut split = Split {
        lead: &text[..start],
        words: Vec::new(),
        seps: Vec::new(),
    };
    let mut rest = &text[start..];
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_end);
        let sep_end = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        let (sep, next) = after.split_at(sep_end);
        split.words.push(word);
        split.seps.push(sep);
        rest = next;
    }
    split
}

/// `lead`, then the words in `words` (owned or borrowed) at the slots of the original, each
/// followed by its slot's whitespace.
fn join<S: AsRef<str>>(lead: &str, words: &[S], seps: &[&str]) -> String {
    let mut out = String::from(lead);
    for (w, sep) in words.iter().zip(seps) {
        out.push_str(w.as_ref());
        out.push_str(sep);
    }
    out
}

pub(super) fn drop(text: &str, rate: f64, rng: &mut Rng) -> String {
    let s = split(text);
    let n = s.words.len();
    let dropped = pick_mask(n, edit_count(rate, n), rng);
    let kept: Vec<usize> = (0..n).filter(|&i| !dropped[i]).collect();
    let mut out = String::from(s.lead);
    for (j, &i) in kept.iter().enumerate() {
        out.push_str(s.words[i]);
        if j + 1 < kept.len() {
            out.push_str(s.seps[i]);
        }
    }
    // The trailing whitespace belongs to the text, not to the last word: it stays whichever
    // words are dropped.
    out.push_str(s.seps.last().copied().unwrap_or(""));
    out
}

pub(super) fn shuffle(text: &str, rate: f64, rng: &mut Rng) -> String {
    let s = split(text);
    let n = s.words.len();
    if n < 2 {
        return text.to_string();
    }
    let mut order: Vec<&str> = s.words.clone();
    for i in pick(n, edit_count(rate / 2.0, n), rng) {
        let lo = i.saturating_sub(SHUFFLE_RADIUS);
        let hi = (i + SHUFFLE_RADIUS).min(n - 1);
        let r = lo + rng.below(hi - lo);
        let j = if r >= i { r + 1 } else { r };
        order.swap(i, j);
    }
    join(s.lead, &order, &s.seps)
}

pub(super) fn noise(text: &str, rate: f64, rng: &mut Rng) -> String {
    let s = split(text);
    let n = s.words.len();
    let hits = pick_mask(n, edit_count(rate, n), rng);
    let words: Vec<String> = s
        .words
        .iter()
        .zip(&hits)
        .map(|(&w, &hit)| if hit { noisy(w, rng) } else { w.to_string() })
        .collect();
    join(s.lead, &words, &s.seps)
}

/// One case or punctuation edit of a non-empty, whitespace-free `word`; always different from
/// `word`, never empty, never containing whitespace.
fn noisy(word: &str, rng: &mut Rng) -> String {
    let mark = PUNCT[rng.below(PUNCT.len())];
    let edited = match rng.below(5) {
        0 if word.chars().any(char::is_lowercase) => word.to_uppercase(),
        0 => word.to_lowercase(),
        1 => toggle_first(word),
        2 => format!("{word}{mark}"),
        3 => format!("{mark}{word}"),
        _ => strip_edge_punct(word, rng),
    };
    if edited == word || edited.is_empty() {
        format!("{word}{mark}")
    } else {
        edited
    }
}

fn toggle_first(word: &str) -> String {
    let mut chars = word.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let head: String = if first.is_lowercase() {
        first.to_uppercase().collect()
    } else {
        first.to_lowercase().collect()
    };
    head + chars.as_str()
}

/// `word` without one ASCII punctuation mark at its start or end (chosen at random when both
/// ends have one); `word` itself when neither has or the word is a lone mark.
fn strip_edge_punct(word: &str, rng: &mut Rng) -> String {
    let mut chars = word.chars();
    let (Some(first), Some(last)) = (chars.next(), chars.next_back()) else {
        return word.to_string();
    };
    let front = first.is_ascii_punctuation();
    let back = last.is_ascii_punctuation();
    let strip_front = match (front, back) {
        (true, true) => rng.below(2) == 0,
        (true, false) => true,
        (false, true) => false,
        (false, false) => return word.to_string(),
    };
    if strip_front {
        word[first.len_utf8()..].to_string()
    } else {
        word[..word.len() - last.len_utf8()].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_byte() {
        for text in ["", " ", "a", "  a b\t\nc  ", "héllo 世界 🙂", "x\u{3000}y"] {
            let s = split(text);
            assert_eq!(format!("{}{}", s.lead, join("", &s.words, &s.seps)), text);
            assert_eq!(s.words, text.split_whitespace().collect::<Vec<_>>());
            assert!(s.seps[..s.seps.len().saturating_sub(1)]
                .iter()
                .all(|sep| !sep.is_empty()));
        }
    }

    #[test]
    fn drop_keeps_edges_and_separators() {
        let mut rng = Rng::new(1);
        assert_eq!(drop("  one two\n", 1.0, &mut rng), "  \n");
        assert_eq!(drop("  one\n", 0.0, &mut rng), "  one\n");
        for _ in 0..50 {
            let out = drop(" a b c d\n", 0.5, &mut rng);
            assert!(out.starts_with(' ') && out.ends_with('\n'), "{out:?}");
            assert!(!out.contains("  "), "{out:?}");
            assert_eq!(out.split_whitespace().count(), 2);
        }
    }

    #[test]
    fn shuffle_moves_words_locally() {
        let text = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9";
        let mut rng = Rng::new(2);
        for _ in 0..100 {
            let out = shuffle(text, 0.4, &mut rng);
            for (slot, w) in out.split_whitespace().enumerate() {
                let from: usize = w[1..].parse().unwrap();
                // Two swaps can chain a word at most two radii away.
                assert!(from.abs_diff(slot) <= 2 * SHUFFLE_RADIUS, "{out}");
            }
        }
    }

    #[test]
    fn noise_always_changes_a_word() {
        let mut rng = Rng::new(3);
        for word in [
            "a",
            "A",
            "7",
            ".",
            "...",
            "Hello,",
            "\"quoted\"",
            "ß",
            "🙂",
            "x-y",
        ] {
            for _ in 0..50 {
                let out = noisy(word, &mut rng);
                assert_ne!(out, word);
                assert!(!out.is_empty() && !out.contains(char::is_whitespace));
            }
        }
        assert_eq!(strip_edge_punct("!", &mut rng), "!");
        assert_eq!(strip_edge_punct("hi!", &mut rng), "hi");
        assert_eq!(toggle_first("élan"), "Élan");
    }
}
