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
}
