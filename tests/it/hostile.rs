//! Hostile batch inputs through the `tremble` binary on the tiny model: every file gives one
//! output line per input record, in order, with an error record (naming file and line) where
//! a record cannot be read, and the run itself succeeds.

use std::path::Path;

use serde_json::Value;

use crate::cli::score;
use crate::common::{tiny_model, write};

/// `tremble score FILE --threshold 1 ARGS` → (exit code, verdicts, stderr).
fn score_file(model: &Path, file: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut all = vec![file.to_str().unwrap(), "--threshold", "1"];
    all.extend_from_slice(args);
    score(model, &all, b"")
}

fn errors(out: &[Value]) -> Vec<usize> {
    out.iter()
        .enumerate()
        .filter(|(_, v)| !v["error"].is_null())
        .map(|(i, _)| i)
        .collect()
}

fn assert_in_order(out: &[Value], n: usize) {
    assert_eq!(out.len(), n);
    assert!(out.iter().enumerate().all(|(i, v)| v["index"] == i));
}

#[test]
fn nul_bytes_and_a_10_mb_line_are_scored() {
    let m = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.txt");
    let mut data = b"a\0b\n\0\0\0\n".to_vec();
    let words: String = (0..2_000_000).map(|i| format!("w{} ", i % 9973)).collect();
    data.extend_from_slice(&words.as_bytes()[..10 << 20]);
    data.extend_from_slice(b"\nafter\n");
    write(&path, &data);
    let (code, out, stderr) = score_file(m.path(), &path, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_in_order(&out, 4);
    assert!(errors(&out).is_empty(), "{out:?}");
    let dos = &out[2]["signals"]["dos"];
    assert_eq!(dos["bytes"], 10 << 20);
    assert_eq!(dos["truncated"], true);
    assert_eq!(out[2]["category"], "resource_abuse");
    assert!(out[3]["signals"]["dos"].is_null());
}

#[test]
fn a_hundred_thousand_tiny_lines_keep_their_order() {
    let m = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.txt");
    let data: String = (0..100_000).map(|i| format!("{}\n", i % 7)).collect();
    write(&path, data.as_bytes());
    let (code, out, stderr) = score_file(m.path(), &path, &["--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    assert_in_order(&out, 100_000);
    assert!(errors(&out).is_empty());
    // Equal lines get equal verdicts wherever they sit in the batch.
    assert_eq!(out[0]["score"], out[99_995]["score"]);
}

#[test]
fn hostile_jsonl_records_become_error_records() {
    let m = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let huge = format!("{{\"text\": \"{}\"}}", "ab ".repeat(2_000_000));
    let lines: Vec<Vec<u8>> = vec![
        b"\xEF\xBB\xBF{\"text\": \"first, after a BOM\"}\r".to_vec(),
        nested.into_bytes(),
        huge.into_bytes(),
        b"{\"id\": 3}".to_vec(),
        b"{\"text\": null}".to_vec(),
        b"[\"text\"]".to_vec(),
        b"".to_vec(),
        b"{\"text\": \"nul \\u0000 inside\"}".to_vec(),
        b"{\"text\": \"ok\"}".to_vec(),
    ];
    write(&path, lines.join(&b'\n'));
    let (code, out, stderr) = score_file(m.path(), &path, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_in_order(&out, 9);
    assert_eq!(errors(&out), vec![1, 3, 4, 5, 6]);
    let msg = |i: usize| out[i]["error"].as_str().unwrap().to_string();
    assert!(msg(1).contains("in.jsonl:2") && msg(1).contains("invalid JSON"));
    assert!(msg(3).contains("missing field \"text\""));
    assert!(msg(4).contains("null"));
    assert!(msg(5).contains("expected a JSON object"));
    assert_eq!(out[2]["signals"]["dos"]["truncated"], true);
    assert_eq!(stderr.lines().count(), 5, "{stderr}");
}

#[test]
fn lines_over_the_read_cap_are_error_records() {
    let m = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.txt");
    let mut data = b"short\n".to_vec();
    data.extend(std::iter::repeat_n(b'z', 5000));
    data.extend_from_slice(b"\nalso short");
    write(&path, &data);
    let (code, out, _) = score_file(m.path(), &path, &["--max-line-bytes", "1000"]);
    assert_eq!(code, 0);
    assert_in_order(&out, 3);
    assert_eq!(errors(&out), vec![1]);
    let msg = out[1]["error"].as_str().unwrap();
    assert!(
        msg.contains("in.txt:2") && msg.contains("--max-line-bytes"),
        "{msg}"
    );
}
