//! The path every scored text takes before the tokenizer: the size/repetition bounds, then the
//! normalizer's views and signals. Invariants: no panic, the cap holds, views stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let max_bytes = 64 + usize::from(first) * 64;
    let (scored, _) = tremble::signals::dos::check(text, max_bytes);
    assert!(scored.len() <= max_bytes);
    assert!(text.starts_with(scored));
    let max_views = usize::from(first % 6);
    let n = tremble::normalize::normalize(scored, max_views);
    assert!(n.views.len() <= max_views);
    let _ = tremble::normalize::canonical(scored);
});
