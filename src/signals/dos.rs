//! Denial-of-service bounds: a byte cap per record (the rest is not scored), repetition
//! (long repeated strings, copy-pasted blocks) and many-shot stuffing (hundreds of faux dialogue
//! turns). Linear time and bounded memory whatever the input; no model involved.

use std::collections::HashSet;

use crate::rng::hash_str;
use crate::verdict::DosEvidence;

/// Default byte cap per record: far more than the window cap lets the model read (≈ 50 KB of
/// English), small enough that normalizing and tokenizing it takes milliseconds.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;

/// Inputs with fewer word chunks are too short to call repetitive.
const MIN_CHUNKS: usize = 200;
/// Below this share of distinct 4-chunk shingles an input repeats itself (natural text: > 0.8).
const MAX_REPEAT_RATIO: f32 = 0.25;
/// Dialogue-turn markers that make a record many-shot stuffing.
const MAX_TURNS: usize = 64;
/// Chunk length for long tokens (so a 10 MB run of one character is still seen to repeat).
const CHUNK_BYTES: usize = 16;

/// The part of `text` to score and, when a bound fired, the evidence.
pub fn check(text: &str, max_bytes: usize) -> (&str, Option<DosEvidence>) {
    let truncated = text.len() > max_bytes;
    let scored = if truncated {
        &text[..floor_char_boundary(text, max_bytes)]
    } else {
        text
    };
    let distinct_ratio = distinct_shingle_ratio(scored);
    let repetitive = distinct_ratio < MAX_REPEAT_RATIO;
    let turns = dialogue_turns(scored);
    let abuse = truncated || repetitive || turns >= MAX_TURNS;
    let evidence = abuse.then_some(DosEvidence {
        bytes: text.len(),
        truncated,
        distinct_ratio,
        repetitive,
        turns,
        abuse,
    });
    (scored, evidence)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Share of distinct shingles of four consecutive word chunks (1.0 for short inputs).
pub fn distinct_shingle_ratio(text: &str) -> f32 {
    if text.len() < 1024 {
        return 1.0;
    }
    let mut chunks: Vec<u64> = Vec::with_capacity(text.len() / 5);
    for tok in text.split_whitespace() {
        if tok.len() <= 2 * CHUNK_BYTES {
            chunks.push(hash_str(0, tok));
        } else {
            let mut start = 0;
            while start < tok.len() {
                let end = floor_char_boundary(tok, (start + CHUNK_BYTES).min(tok.len()));
                let end = if end <= start { tok.len() } else { end };
                chunks.push(hash_str(0, &tok[start..end]));
                start = end;
            }
        }
    }
    if chunks.len() < MIN_CHUNKS {
        return 1.0;
    }
    let shingles = chunks.len() - 3;
    let mut seen = HashSet::with_capacity(shingles);
    for w in chunks.windows(4) {
        seen.insert(w[0] ^ w[1].rotate_left(16) ^ w[2].rotate_left(32) ^ w[3].rotate_left(48));
    }
    seen.len() as f32 / shingles as f32
}

/// Lines that open a dialogue turn (`User:`, `Assistant:`, `Human:`, `Q:`, chat-template tags).
pub fn dialogue_turns(text: &str) -> usize {
    const MARKERS: &[&str] = &[
        "user:",
        "assistant:",
        "human:",
        "ai:",
        "q:",
        "a:",
        "system:",
        "### instruction",
        "### response",
        "<|im_start|>",
        "[inst]",
    ];
    text.lines()
        .filter(|l| {
            let l = l.trim_start().as_bytes();
            MARKERS
                .iter()
                .any(|m| l.len() >= m.len() && l[..m.len()].eq_ignore_ascii_case(m.as_bytes()))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_passes() {
        let prose = "The committee met on Tuesday to review the budget proposal. ".to_string()
            + &(0..400).map(|i| format!("word{i} ")).collect::<String>();
        assert!(check(&prose, DEFAULT_MAX_BYTES).1.is_none());
        assert!(check("short", DEFAULT_MAX_BYTES).1.is_none());
    }

    #[test]
    fn repetition_and_size_fire() {
        let rep = "please say yes ".repeat(2000);
        let (_, e) = check(&rep, DEFAULT_MAX_BYTES);
        let e = e.unwrap();
        assert!(e.repetitive && e.abuse && !e.truncated);
        let one = "A".repeat(100_000);
        assert!(check(&one, DEFAULT_MAX_BYTES).1.unwrap().repetitive);
        let accents = "é".repeat(1000);
        let (scored, e) = check(&accents, 101);
        assert_eq!(scored.len(), 100);
        assert!(e.unwrap().truncated);
    }

    #[test]
    fn many_shot_stuffing_fires() {
        let shots: String = (0..40)
            .map(|i| format!("User: how do I do thing {i}?\nAssistant: Sure, step {i} is easy.\n"))
            .collect();
        let (_, e) = check(&shots, DEFAULT_MAX_BYTES);
        assert_eq!(e.unwrap().turns, 80);
        assert_eq!(dialogue_turns("User: hi\nAssistant: hello"), 2);
    }
}
