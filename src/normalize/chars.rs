//! Character classes answered from ranges before the standard library's tables.
//! `char::is_alphabetic` searches a table for every non-ASCII character, and the normalizer
//! asks it several times per character: on non-Latin text that search was about a third of
//! the normalizer's time. The ranges below are exactly alphabetic (or exactly not); anything
//! else still goes to the standard library, so the answers are identical (tested on every
//! code point).

/// Same as [`char::is_alphabetic`].
#[inline]
pub fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    match c as u32 {
        // Latin-1 letters, Greek, Cyrillic, Hebrew, Arabic, Devanagari consonants, kana,
        // CJK ideographs, Hangul syllables.
        0xC0..=0xD6
        | 0xD8..=0xF6
        | 0xF8..=0x2C1
        | 0x391..=0x3A1
        | 0x3A3..=0x3F5
        | 0x400..=0x481
        | 0x48A..=0x52F
        | 0x5D0..=0x5EA
        | 0x620..=0x64A
        | 0x915..=0x939
        | 0x3041..=0x3096
        | 0x30A1..=0x30FA
        | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7A3 => true,
        // General punctuation, CJK symbols and punctuation without the iteration marks,
        // full-width ASCII punctuation: no letter among them.
        0x2000..=0x206F | 0x3000..=0x3004 | 0x3008..=0x3020 | 0xFF01..=0xFF0F => false,
        _ => c.is_alphabetic(),
    }
}

/// Same as [`char::is_alphanumeric`].
#[inline]
pub fn is_letter_or_digit(c: char) -> bool {
    is_letter(c) || c.is_numeric()
}

/// Characters that every normalization form leaves alone and that never reorder or combine
/// with a neighbour (NFD and NFKC quick check yes, canonical class 0, not a mark; tested on
/// every member): ASCII, basic Cyrillic letters but й, Hebrew and Arabic letters without
/// marks, Arabic punctuation, Thai consonants and vowels, the ideographic comma and full stop,
/// CJK ideographs.
#[inline]
pub fn is_normal_form_stable(c: char) -> bool {
    matches!(c as u32,
        0..=0x7F
        | 0x410..=0x418
        | 0x41A..=0x438
        | 0x43A..=0x44F
        | 0x5D0..=0x5EA
        | 0x60C
        | 0x61B
        | 0x61F
        | 0x627..=0x63A
        | 0x641..=0x64A
        | 0xE01..=0xE30
        | 0x3001..=0x3002
        | 0x4E00..=0x9FFF)
}

/// Same as [`str::to_lowercase`]. ASCII, basic Cyrillic and the scripts without case (Hebrew,
/// Arabic, the Indic scripts, Thai, kana, CJK ideographs, Hangul) are mapped from ranges; other
/// characters go to the standard library one by one, and text with a capital sigma (whose
/// lowercase depends on its neighbours) as a whole.
pub fn lowercase(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    if text.contains('Σ') {
        return text.to_lowercase();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c as u32 {
            0..=0x7F => out.push(c.to_ascii_lowercase()),
            0x400..=0x42F => {
                let shift = if (c as u32) < 0x410 { 0x50 } else { 0x20 };
                out.push(char::from_u32(c as u32 + shift).unwrap_or(c));
            }
            0x430..=0x45F
            | 0x590..=0x8FF
            | 0x900..=0xDFF
            | 0xE00..=0xFFF
            | 0x3000..=0x9FFF
            | 0xAC00..=0xD7A3 => out.push(c),
            _ => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// Script families as bits: a character carries a family's bit only when its TR39 augmented
/// script set holds that family's script (tested on every code point), so a word whose
/// characters share a bit is single-script.
mod family {
    pub const LATIN: u16 = 1;
    pub const GREEK: u16 = 1 << 1;
    pub const CYRILLIC: u16 = 1 << 2;
    pub const HEBREW: u16 = 1 << 3;
    pub const ARABIC: u16 = 1 << 4;
    pub const DEVANAGARI: u16 = 1 << 5;
    pub const THAI: u16 = 1 << 6;
    pub const HAN: u16 = 1 << 7;
    pub const HIRAGANA: u16 = 1 << 8;
    pub const KATAKANA: u16 = 1 << 9;
    pub const HANGUL: u16 = 1 << 10;
    /// TR39's augmented sets: Japanese (Han, kana), Korean (Han, Hangul), Han with Bopomofo.
    pub const JAPANESE: u16 = 1 << 11;
    pub const KOREAN: u16 = 1 << 12;
    pub const HAN_BOPOMOFO: u16 = 1 << 13;
}

/// The script families of the letters of the common scripts; 0 for everything else.
fn families(c: char) -> u16 {
    use family::*;
    match c as u32 {
        0x41..=0x5A | 0x61..=0x7A | 0xC0..=0xD6 | 0xD8..=0xF6 | 0xF8..=0x24F => LATIN,
        0x386 | 0x388..=0x38A | 0x38C | 0x38E..=0x3A1 | 0x3A3..=0x3CE => GREEK,
        0x400..=0x482 | 0x48A..=0x52F => CYRILLIC,
        0x5D0..=0x5EA => HEBREW,
        0x620..=0x63F | 0x641..=0x64A => ARABIC,
        0x904..=0x939 => DEVANAGARI,
        0xE01..=0xE30 => THAI,
        0x4E00..=0x9FFF => HAN | JAPANESE | KOREAN | HAN_BOPOMOFO,
        0x3041..=0x3096 => HIRAGANA | JAPANESE,
        0x30A1..=0x30FA => KATAKANA | JAPANESE,
        0xAC00..=0xD7A3 => HANGUL | KOREAN,
        _ => 0,
    }
}

/// Letters whose TR39 augmented script set is exactly their family's bits: one script, and
/// only the augmented sets that script implies (tested on every member).
fn exactly_one_family(c: char) -> bool {
    matches!(c as u32,
        0x41..=0x5A
        | 0x61..=0x7A
        | 0x391..=0x3A1
        | 0x3A3..=0x3C9
        | 0x410..=0x44F
        | 0x5D0..=0x5EA
        | 0x621..=0x63A
        | 0x641..=0x64A
        | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7A3)
}

/// Whether `word` is single-script in TR39's sense, from the script families alone: `Some`
/// when its characters share a family (single) or are all [`exactly_one_family`] letters
/// that share none (mixed, e.g. Latin with Cyrillic look-alikes); `None` when the ranges
/// cannot tell and the full lookup must.
pub fn single_script_by_family(word: &str) -> Option<bool> {
    let (mut shared, mut exact) = (u16::MAX, true);
    for c in word.chars() {
        shared &= families(c);
        exact &= exactly_one_family(c);
        if shared == 0 && !exact {
            return None;
        }
    }
    Some(shared != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_standard_library_on_every_code_point() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            assert_eq!(is_letter(c), c.is_alphabetic(), "{c:?} U+{:04X}", c as u32);
            assert_eq!(
                is_letter_or_digit(c),
                c.is_alphanumeric(),
                "U+{:04X}",
                c as u32
            );
        }
    }
    #[test]
    fn lowercase_agrees_with_the_standard_library() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let one = c.to_string();
            assert_eq!(lowercase(&one), one.to_lowercase(), "U+{:04X}", c as u32);
        }
        for text in [
            "ΣΟΦΟΣ σοφός",
            "Привет, ЁЖ! Ѐ",
            "İstanbul ǅ ẞ",
            "今日はいい天気 مرحبا שלום",
            "MiXeD Ünïcödé",
        ] {
            assert_eq!(lowercase(text), text.to_lowercase(), "{text}");
        }
    }

    #[test]
    fn each_script_family_is_one_script_for_tr39() {
        use unicode_security::mixed_script::AugmentedScriptSet;
        for bit in 0..16 {
            let mut all: Option<AugmentedScriptSet> = None;
            let members = (0..=0x10FFFFu32)
                .filter_map(char::from_u32)
                .filter(|&c| families(c) & (1 << bit) != 0);
            for c in members {
                let set = all.get_or_insert_with(Default::default);
                set.intersect_with(AugmentedScriptSet::for_char(c));
                assert!(
                    !set.is_empty(),
                    "family bit {bit} mixes scripts at U+{:04X}",
                    c as u32
                );
            }
        }
        // Exact letters: their augmented set is their family representative's, and two
        // representatives' sets meet exactly when their bits do.
        let letters: Vec<char> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| exactly_one_family(c))
            .collect();
        let mut reps: Vec<char> = Vec::new();
        for &c in &letters {
            assert_ne!(families(c), 0, "U+{:04X}", c as u32);
            match reps.iter().find(|&&r| families(r) == families(c)) {
                Some(&r) => assert!(
                    AugmentedScriptSet::for_char(c) == AugmentedScriptSet::for_char(r),
                    "U+{:04X}",
                    c as u32
                ),
                None => reps.push(c),
            }
        }
        for &a in &reps {
            for &b in &reps {
                let mut set = AugmentedScriptSet::for_char(a);
                set.intersect_with(AugmentedScriptSet::for_char(b));
                assert_eq!(set.is_empty(), families(a) & families(b) == 0, "{a} {b}");
            }
        }
        use unicode_security::MixedScript;
        for word in [
            "Привет",
            "今日は",
            "天気",
            "مرحبا",
            "hello",
            "한국어",
            "日本한국",
            "Ignоrе",
            "aΩ",
            "天気ab",
        ] {
            if let Some(single) = single_script_by_family(word) {
                assert_eq!(single, word.is_single_script(), "{word}");
            }
        }
        assert_eq!(single_script_by_family("Ignоrе"), Some(false));
        assert_eq!(single_script_by_family("今日は"), Some(true));
        assert_eq!(single_script_by_family("Ignоrе—"), None);
    }
    #[test]
    fn normal_form_stable_characters_are_left_alone_by_every_form() {
        use unicode_normalization::char::{canonical_combining_class, is_combining_mark};
        use unicode_normalization::UnicodeNormalization;
        use unicode_normalization::{is_nfd_quick, is_nfkc_quick, IsNormalized};
        let stable = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_normal_form_stable(c));
        for c in stable {
            let one = std::iter::once(c);
            let u = c as u32;
            assert_eq!(is_nfkc_quick(one.clone()), IsNormalized::Yes, "U+{u:04X}");
            assert_eq!(is_nfd_quick(one.clone()), IsNormalized::Yes, "U+{u:04X}");
            assert_eq!(canonical_combining_class(c), 0, "U+{u:04X}");
            assert!(!is_combining_mark(c), "U+{u:04X}");
            assert!(
                one.clone().nfkc().eq(one.clone()) && one.clone().nfd().eq(one),
                "U+{u:04X}"
            );
        }
    }
}
