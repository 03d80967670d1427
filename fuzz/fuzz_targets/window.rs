//! Tokenize-and-window on arbitrary text and window geometry: every window is framed by the
//! start and end tokens, fits the geometry, and the windows cover every content token.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tremble::tokenize::{TextTokenizer, WindowSpec};

fn tokenizer() -> &'static TextTokenizer {
    static T: OnceLock<TextTokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let json = tremble::testing::tiny_tokenizer_json();
        let inner: tokenizers::Tokenizer = json.parse().expect("tiny tokenizer parses");
        TextTokenizer::new(inner).expect("tiny tokenizer has its special tokens")
    })
}

fuzz_target!(|data: &[u8]| {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let spec = WindowSpec {
        max_tokens: usize::from(*a),
        overlap: usize::from(*b),
    };
    if spec.validate().is_err() {
        return;
    }
    let t = tokenizer();
    let ids = t
        .content_ids(text)
        .expect("the tokenizer accepts any UTF-8");
    let windows = t.frame(&ids, spec);
    assert!(!windows.is_empty());
    let mut covered = 0usize;
    for (w, start) in windows.iter().zip(spec.starts(ids.len())) {
        assert!(w.len() >= 2 && w.len() <= spec.max_tokens);
        assert!(start <= covered, "a gap before window start {start}");
        covered = covered.max(start + w.len() - 2);
    }
    assert_eq!(covered, ids.len());
});
