//! The batch readers on arbitrary bytes in every format: no panic, and for line formats one
//! record per input line (N in, N out), numbered in order.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use tremble::records::{from_reader, Format, ReadOpts};

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let opts = ReadOpts {
        max_line_bytes: 1 + usize::from(first >> 2) * 8,
        ..ReadOpts::default()
    };
    let format = match first & 3 {
        0 => Format::Text,
        1 => Format::Jsonl,
        2 => Format::Csv,
        _ => Format::Auto,
    };
    let Ok(records) = from_reader(Cursor::new(bytes.to_vec()), "in".into(), format, &opts) else {
        assert_eq!(
            format,
            Format::Csv,
            "only a CSV header can fail a whole input"
        );
        return;
    };
    let records: Vec<_> = records
        .collect::<Result<_, _>>()
        .expect("in-memory input has no I/O error");
    if format != Format::Csv {
        let lines = bytes.split(|&b| b == b'\n').count() - usize::from(bytes.ends_with(b"\n"));
        let lines = if bytes.is_empty() { 0 } else { lines };
        assert_eq!(records.len(), lines);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.origin, format!("in:{}", i + 1));
            if let Ok(t) = &r.text {
                assert!(t.len() <= opts.max_line_bytes);
            }
        }
    }
});
