//! Obfuscation-proof input (see EVASION.md in the project's shared notes): turns one text into
//! extra *views* for scoring — decoded hidden channels, decoded blobs, a canonical folding, and
//! guessed inverses — plus counts of the tricks found. Pure Rust, no model: the detector scores
//! the raw text and each view and keeps the highest attack probability. The text the user sees
//! is never altered; views exist only for scoring.
//!
//! Order matters (each step keeps what the next needs): decode tags / selectors / blobs into
//! views before anything strips them; render backspaces and bidi order; drop invisibles; read
//! upside-down text back before NFKC rewrites its glyphs; NFKC; strip marks; fold confusables;
//! lowercase; join spaced-out letters; then candidates (de-leet, ciphers, segmentation).

pub mod blobs;
pub mod candidates;
pub mod chars;
pub mod fold;
pub mod hidden;
pub mod signals;
pub mod words;

use serde::{Deserialize, Serialize};

pub use signals::ObfuscationSignals;

/// Which transformation produced a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    /// The text as given.
    Raw,
    /// Text carried by Unicode tag characters.
    Tags,
    /// Text carried by runs of variation selectors (emoji smuggling).
    Selectors,
    /// Base64/32/16, percent or quoted-printable blobs decoded in place.
    Decoded,
    /// The canonical folding (controls rendered, invisibles dropped, NFKC, marks stripped,
    /// confusables folded, upside-down and spaced-out text read back).
    Normalized,
    /// Leetspeak read back.
    Deleet,
    /// ROT13 read back.
    Rot13,
    /// Atbash read back.
    Atbash,
    /// The text reversed.
    Reversed,
    /// Run-together words split.
    Segmented,
}

impl ViewKind {
    /// Whether the view is a reading of the whole input (so it can stand in for the raw text)
    /// rather than a payload pulled out of it.
    pub fn reads_whole_text(self) -> bool {
        !matches!(self, ViewKind::Raw | ViewKind::Tags | ViewKind::Selectors)
    }

    /// The view's name in evidence and reports.
    pub fn name(self) -> &'static str {
        match self {
            ViewKind::Raw => "raw",
            ViewKind::Tags => "tags",
            ViewKind::Selectors => "selectors",
            ViewKind::Decoded => "decoded",
            ViewKind::Normalized => "normalized",
            ViewKind::Deleet => "deleet",
            ViewKind::Rot13 => "rot13",
            ViewKind::Atbash => "atbash",
            ViewKind::Reversed => "reversed",
            ViewKind::Segmented => "segmented",
        }
    }
}

/// The position of the first view among `kinds` that reads the whole text. The detector's
/// rule: when there is one, it replaces the raw text (whose odd glyphs or encodings would
/// otherwise flag harmless text) and wins ties; payload-only views compete with it. Without
/// one, the raw text is scored next to the views.
pub fn whole_reading(kinds: impl IntoIterator<Item = ViewKind>) -> Option<usize> {
    kinds.into_iter().position(ViewKind::reads_whole_text)
}

/// A text to score in place of (in addition to) the raw input.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub kind: ViewKind,
    pub text: String,
}

/// The views of one input (raw excluded) and the signals found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Normalized {
    /// Extra views, most telling first, at most the configured cap, none equal to what the
    /// tokenizer would make of the raw text anyway.
    pub views: Vec<View>,
    pub signals: ObfuscationSignals,
}

/// Default cap on extra views per input.
pub const DEFAULT_MAX_VIEWS: usize = 4;

/// The canonical scoring form of `text`: every exactly-undoable trick undone. Hidden channels
/// are dropped here (their payloads are separate views, see [`normalize`]).
pub fn canonical(text: &str) -> String {
    canonical_counted(text).0
}

/// How much of the canonical pipeline left the text alone, so that the tokenizer equivalent
/// of the input can be had for less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Untouched {
    /// Some character-level step changed the text.
    Nothing,
    /// No control, invisible or bidi character was rendered or dropped: the tokenizer's
    /// filter would keep every character.
    Visible,
    /// Only the steps a tokenizer takes anyway (marks, case, whitespace) changed the text:
    /// the canonical text *is* the tokenizer equivalent.
    AllButTokenizerSteps,
}

/// [`canonical`], the number of confusables it folded, and what it left alone.
fn canonical_counted(text: &str) -> (String, usize, Untouched) {
    use std::borrow::Cow;
    let untouched = |t: &Cow<'_, str>| matches!(t, Cow::Borrowed(_));
    let t = hidden::render_backspaces(text);
    let mut visible = untouched(&t);
    let t = hidden::render_bidi(&t);
    visible &= untouched(&t);
    // Drops every character the tokenizer's filter drops (and vertical tab, form feed, NEL).
    let t = hidden::strip_invisible(&t);
    visible &= untouched(&t);
    let mut plain = visible;
    let t = if fold::looks_flipped(&t) {
        plain = false;
        Cow::Owned(fold::unflip(&t))
    } else {
        t
    };
    // Before NFKC: a precomposed ǫ is the small-caps q, but NFKC also composes an o with a
    // stray ogonek (zalgo) into ǫ, and that one must read as o.
    let (t, marked) = fold::fold_marked_small_caps(&t);
    plain &= untouched(&t);
    let t = fold::nfkc(&t);
    plain &= untouched(&t);
    let t = fold::strip_marks(&t);
    let (t, folded) = fold::fold_confusables(&t);
    plain &= untouched(&t);
    let folded = folded + marked;
    let lower = chars::lowercase(&t);
    let spaced = candidates::despace(&lower);
    plain &= spaced.is_none();
    let kept = match (plain, visible) {
        (true, _) => Untouched::AllButTokenizerSteps,
        (false, true) => Untouched::Visible,
        (false, false) => Untouched::Nothing,
    };
    (
        collapse_whitespace(spaced.as_deref().unwrap_or(&lower)),
        folded,
        kept,
    )
}

/// What a BERT-style uncased tokenizer makes of the text anyway (controls and format
/// characters dropped, accents stripped, lowercased, whitespace collapsed): a view equal to
/// this adds nothing.
fn tokenizer_equivalent(text: &str) -> String {
    if text.is_ascii()
        && !text
            .bytes()
            .any(|b| b.is_ascii_control() && !b.is_ascii_whitespace())
    {
        return collapse_whitespace(&text.to_ascii_lowercase());
    }
    let t: String = text
        .chars()
        .filter(|c| !c.is_control() || c.is_whitespace())
        .filter(|&c| !hidden::is_default_ignorable(c))
        .collect();
    tokenizer_steps(&t)
}

/// [`tokenizer_equivalent`] of text the tokenizer's filter keeps whole.
fn tokenizer_steps(text: &str) -> String {
    collapse_whitespace(&chars::lowercase(&fold::strip_marks(text)))
}

fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for w in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Normalizes `text` into at most `max_views` extra views and its obfuscation signals.
pub fn normalize(text: &str, max_views: usize) -> Normalized {
    let scan = hidden::scan(text);
    let mut signals = ObfuscationSignals::measure(text, &scan);
    let mut views: Vec<View> = Vec::new();

    if !scan.tag_payload.trim().is_empty() {
        views.push(view(ViewKind::Tags, canonical(&scan.tag_payload)));
    }
    if !scan.vs_payload.trim().is_empty() {
        views.push(view(ViewKind::Selectors, canonical(&scan.vs_payload)));
    }
    if let Some((decoded, n)) = blobs::decode_blobs(text) {
        signals.encoded_blobs = n;
        // Payloads are nested in the wild (base64 of tag characters, base64 of base64).
        let inner = hidden::scan(&decoded);
        let decoded = if !inner.tag_payload.trim().is_empty() {
            inner.tag_payload
        } else {
            match blobs::decode_blobs(&decoded) {
                Some((again, m)) => {
                    signals.encoded_blobs += m;
                    again
                }
                None => decoded,
            }
        };
        views.push(view(ViewKind::Decoded, canonical(&decoded)));
    }
    let (canon, folded, kept) = canonical_counted(text);
    signals.confusables = folded;
    let same_as_raw = match kept {
        Untouched::AllButTokenizerSteps => canon.clone(),
        Untouched::Visible => tokenizer_steps(text),
        Untouched::Nothing => tokenizer_equivalent(text),
    };
    // Guesses are read off the canonical text; they rank after it.
    let mut guesses = Vec::new();
    if let Some(d) = candidates::deleet(&canon) {
        guesses.push(view(ViewKind::Deleet, d));
    }
    for (kind, v) in candidates::cipher_views(&canon) {
        guesses.push(view(kind, v));
    }
    if let Some(s) = candidates::segment_view(&canon) {
        guesses.push(view(ViewKind::Segmented, s));
    }
    views.push(view(ViewKind::Normalized, canon));
    views.extend(guesses);

    let mut kept: Vec<View> = Vec::new();
    for v in views {
        if kept.len() >= max_views {
            break;
        }
        if v.text.trim().is_empty()
            || v.text == same_as_raw
            || kept.iter().any(|k| k.text == v.text)
        {
            continue;
        }
        kept.push(v);
    }
    Normalized {
        views: kept,
        signals,
    }
}

fn view(kind: ViewKind, text: String) -> View {
    View { kind, text }
}

#[cfg(test)]
mod tests;
