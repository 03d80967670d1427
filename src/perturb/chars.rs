//! Character-level edits (SmoothLLM's swap, insert and patch, plus delete) over whole `char`s,
//! so no edit can split a UTF-8 sequence. Grapheme clusters may be split (a combining mark can
//! lose its base): for a robustness probe that is one more kind of noise, not a fault.

use super::{edit_count, pick_mask};
use crate::rng::Rng;

/// The first printable ASCII character (space) and how many follow it through `~`.
const PRINTABLE_FIRST: u8 = b' ';
const PRINTABLE_COUNT: usize = 95;

/// A random printable ASCII character.
pub(super) fn printable(rng: &mut Rng) -> char {
    char::from(PRINTABLE_FIRST + rng.below(PRINTABLE_COUNT) as u8)
}

/// A random printable ASCII character other than `c`, so a replacement always changes the text.
pub(super) fn printable_except(rng: &mut Rng, c: char) -> char {
    match u8::try_from(c) {
        Ok(b) if (PRINTABLE_FIRST..=b'~').contains(&b) => {
            let r = PRINTABLE_FIRST + rng.below(PRINTABLE_COUNT - 1) as u8;
            char::from(if r >= b { r + 1 } else { r })
        }
        _ => printable(rng),
    }
}

pub(super) fn swap(text: &str, rate: f64, rng: &mut Rng) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mask = pick_mask(chars.len(), edit_count(rate, chars.len()), rng);
    chars
        .iter()
        .zip(&mask)
        .map(|(&c, &hit)| if hit { printable_except(rng, c) } else { c })
        .collect()
}

pub(super) fn insert(text: &str, rate: f64, rng: &mut Rng) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mask = pick_mask(chars.len(), edit_count(rate, chars.len()), rng);
    let mut out = String::with_capacity(text.len() + mask.len());
    for (&c, &hit) in chars.iter().zip(&mask) {
        out.push(c);
        if hit {
            out.push(printable(rng));
        }
    }
    out
}

pub(super) fn delete(text: &str, rate: f64, rng: &mut Rng) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mask = pick_mask(chars.len(), edit_count(rate, chars.len()), rng);
    chars
        .iter()
        .zip(&mask)
        .filter(|&(_, &hit)| !hit)
        .map(|(&c, _)| c)
        .collect()
}

pub(super) fn patch(text: &str, rate: f64, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let m = edit_count(rate, n);
    if m == 0 {
        return text.to_string();
    }
    let start = rng.below(n - m + 1);
    for c in &mut chars[start..start + m] {
        *c = printable_except(rng, *c);
    }
    chars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: &str) -> usize {
        s.chars().count()
    }

    #[test]
    fn printable_except_never_returns_its_argument() {
        let mut rng = Rng::new(3);
        for b in b' '..=b'~' {
            let c = char::from(b);
            for _ in 0..200 {
                let r = printable_except(&mut rng, c);
                assert_ne!(r, c);
                assert!((' '..='~').contains(&r));
            }
        }
        assert!((0..200).all(|_| (' '..='~').contains(&printable_except(&mut rng, 'é'))));
    }

    #[test]
    fn every_printable_character_can_be_drawn() {
        let mut rng = Rng::new(9);
        let mut seen = [false; PRINTABLE_COUNT];
        for _ in 0..5000 {
            seen[(printable(&mut rng) as u8 - PRINTABLE_FIRST) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn lengths_follow_the_edit() {
        let text = "héllo 世界 🙂 and more";
        let n = count(text);
        let m = edit_count(0.2, n);
        let mut rng = Rng::new(1);
        assert_eq!(count(&swap(text, 0.2, &mut rng)), n);
        assert_eq!(count(&insert(text, 0.2, &mut rng)), n + m);
        assert_eq!(count(&delete(text, 0.2, &mut rng)), n - m);
        assert_eq!(count(&patch(text, 0.2, &mut rng)), n);
    }

    #[test]
    fn patch_is_one_contiguous_span() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = Rng::new(4);
        for _ in 0..100 {
            let out = patch(text, 0.25, &mut rng);
            let diff: Vec<usize> = text
                .chars()
                .zip(out.chars())
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(diff.len(), 9);
            assert_eq!(diff[8] - diff[0], 8);
        }
    }

    #[test]
    fn full_rate_edits_everything() {
        let mut rng = Rng::new(2);
        assert_eq!(delete("abc", 1.0, &mut rng), "");
        let s = swap("abc", 1.0, &mut rng);
        assert!(s.chars().zip("abc".chars()).all(|(a, b)| a != b));
    }
}
