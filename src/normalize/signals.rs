//! Cheap obfuscation signals: counts of the tricks found in a text, serialised as evidence.
//! Counts only; whether they matter is decided downstream (views to score, fusion).

use serde::{Deserialize, Serialize};
use unicode_security::MixedScript;

use super::blobs::wrapper_phrases;
use super::candidates::{digit_in_word_ratio, single_char_runs};
use super::chars::is_letter;
use super::fold::{excess_marks, flip_glyphs};
use super::hidden::HiddenScan;

/// What the normalizer found, with counts as evidence. Zero everywhere for ordinary text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObfuscationSignals {
    /// Invisible format characters outside legitimate joiner use.
    pub invisible_chars: usize,
    /// Unicode tag characters (U+E0000–E007F).
    pub tag_chars: usize,
    /// Variation selectors in runs (beyond one per emoji).
    pub variation_selectors: usize,
    /// Explicit bidi controls.
    pub bidi_controls: usize,
    /// Backspace / delete control characters.
    pub backspaces: usize,
    /// Combining marks stacked beyond two per character (zalgo).
    pub stacked_marks: usize,
    /// Words mixing scripts that are not normally mixed (TR39), e.g. Latin with Cyrillic.
    pub mixed_script_words: usize,
    /// Characters folded to an ASCII look-alike in the scoring view.
    pub confusables: usize,
    /// Characters only upside-down text uses.
    pub flip_glyphs: usize,
    /// Runs of ≥ 4 single-character tokens (spaced-out letters).
    pub single_char_runs: usize,
    /// Encoded blobs that decoded to text.
    pub encoded_blobs: usize,
    /// Phrases announcing an encoded payload ("decode the following", "base64"…).
    pub wrapper_phrases: usize,
    /// Share of words mixing letters with digits (leetspeak).
    pub digit_in_word_ratio: f32,
}

impl ObfuscationSignals {
    /// Counts the signals of `text` given its hidden-channel scan.
    pub fn measure(text: &str, hidden: &HiddenScan) -> Self {
        let ascii = text.is_ascii();
        Self {
            invisible_chars: hidden.invisible_chars,
            tag_chars: hidden.tag_chars,
            variation_selectors: hidden.vs_chars,
            bidi_controls: hidden.bidi_controls,
            backspaces: hidden.backspaces,
            stacked_marks: if ascii { 0 } else { excess_marks(text) },
            mixed_script_words: if ascii { 0 } else { mixed_script_words(text) },
            confusables: 0,
            flip_glyphs: flip_glyphs(text),
            single_char_runs: single_char_runs(text),
            encoded_blobs: 0,
            wrapper_phrases: wrapper_phrases(text),
            digit_in_word_ratio: digit_in_word_ratio(text),
        }
    }

    /// Whether any trick was found: a hidden channel, a control trick, glyph substitution,
    /// spaced letters, an encoded payload or heavy leetspeak. Wrapper phrases alone do not
    /// count (they are ordinary words in technical text).
    pub fn any(&self) -> bool {
        self.invisible_chars > 0
            || self.tag_chars > 0
            || self.variation_selectors > 0
            || self.bidi_controls > 0
            || self.backspaces > 0
            || self.stacked_marks > 0
            || self.mixed_script_words > 0
            || self.confusables > 0
            || self.flip_glyphs >= 3
            || self.single_char_runs > 0
            || self.encoded_blobs > 0
            || self.digit_in_word_ratio >= 0.2
    }

    /// Names of the signals that fired, for logs and evidence.
    pub fn fired(&self) -> Vec<&'static str> {
        let checks: [(&str, bool); 12] = [
            ("invisible_chars", self.invisible_chars > 0),
            ("tag_chars", self.tag_chars > 0),
            ("variation_selectors", self.variation_selectors > 0),
            ("bidi_controls", self.bidi_controls > 0),
            ("backspaces", self.backspaces > 0),
            ("stacked_marks", self.stacked_marks > 0),
            ("mixed_script_words", self.mixed_script_words > 0),
            ("confusables", self.confusables > 0),
            ("flip_glyphs", self.flip_glyphs >= 3),
            ("single_char_runs", self.single_char_runs > 0),
            ("encoded_blobs", self.encoded_blobs > 0),
            ("leetspeak", self.digit_in_word_ratio >= 0.2),
        ];
        checks
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect()
    }
}

/// Words (alphabetic runs) that TR39 says mix scripts no single writing system mixes.
fn mixed_script_words(text: &str) -> usize {
    text.split(|c: char| !is_letter(c))
        .filter(|w| {
            !w.is_ascii()
                && w.chars().count() > 1
                && !super::chars::single_script_by_family(w).unwrap_or_else(|| w.is_single_script())
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::hidden::scan;

    fn measure(t: &str) -> ObfuscationSignals {
        ObfuscationSignals::measure(t, &scan(t))
    }

    #[test]
    fn ordinary_text_in_many_languages_fires_nothing() {
        for t in [
            "What's the weather like in Paris tomorrow?",
            "Ça va très bien, merci! Où est la gare?",
            "Привет, как дела? Всё хорошо.",
            "مرحبا كيف حالك؟",
            "東京は日本の首都です。",
            "नमस्ते, आप कैसे हैं?",
            "Family: 👨‍👩‍👧 and ❤️ and 👍🏽",
            "def f(x): return x + 1  # v2 of the API, see RFC 7231",
        ] {
            let s = measure(t);
            assert!(!s.any(), "{t}: {:?}", s.fired());
        }
    }

    #[test]
    fn tricks_fire_their_signal() {
        assert_eq!(measure("ig\u{200B}nore").fired(), ["invisible_chars"]);
        assert_eq!(measure("Ignоrе").fired(), ["mixed_script_words"]);
        assert_eq!(measure("i g n o r e").fired(), ["single_char_runs"]);
        assert_eq!(measure("1gn0r3 411 pr3v10u5").fired(), ["leetspeak"]);
        assert_eq!(measure("a\u{8}b").fired(), ["backspaces"]);
    }
}
