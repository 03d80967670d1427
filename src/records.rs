//! Streaming record readers for batch scoring: plain text (one record per line), JSONL (the
//! text in one field) and CSV (the text in one column). A record that cannot be read becomes
//! an error record naming its file and line, so N records in give N records out; only a
//! failure of the whole input (an unopenable file, an I/O error, a CSV without the column)
//! is an `Err`. Memory is bounded by the longest line kept, and lines longer than
//! [`ReadOpts::max_line_bytes`] are skipped without being buffered.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// How the bytes of an input are split into records. The variants' docs are also the
/// CLI's `--format` help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Format {
    /// By file extension (.jsonl/.ndjson, .csv, anything else text); stdin is text.
    #[default]
    Auto,
    /// One record per line.
    Text,
    /// One JSON object per line; the text is in --field.
    Jsonl,
    /// CSV with a header row; the text is in --column.
    Csv,
}

/// Default cap on one line (text, JSONL) or one CSV record; far above what the detector
/// reads of a record (its `max_bytes`), low enough that one line cannot exhaust memory.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// Options of the readers.
#[derive(Debug, Clone)]
pub struct ReadOpts {
    pub format: Format,
    /// JSONL field that holds the text.
    pub field: String,
    /// CSV column that holds the text.
    pub column: String,
    /// Longer lines become error records and are never held in memory whole.
    pub max_line_bytes: usize,
}

impl Default for ReadOpts {
    fn default() -> Self {
        ReadOpts {
            format: Format::Auto,
            field: "text".into(),
            column: "text".into(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// One input record: its text, or why it could not be read, and where it came from
/// (`file:line`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub text: std::result::Result<String, String>,
    pub origin: String,
}

/// A stream of records; an `Err` item ends the input it came from.
pub type Records = Box<dyn Iterator<Item = Result<Record>>>;

/// All records of all inputs, in order; `-` (or no input at all) is standard input.
///
/// # Errors
/// [`Error::Io`] when an input cannot be opened; a CSV input without the column.
pub fn read_all(inputs: &[PathBuf], opts: &ReadOpts) -> Result<Records> {
    let inputs: Vec<PathBuf> = if inputs.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        inputs.to_vec()
    };
    let mut readers: Vec<Records> = Vec::new();
    for path in inputs {
        readers.push(open(&path, opts)?);
    }
    Ok(Box::new(readers.into_iter().flatten()))
}

/// Records of one input; `-` is standard input.
///
/// # Errors
/// As [`read_all`].
pub fn open(path: &Path, opts: &ReadOpts) -> Result<Records> {
    let stdin = path == Path::new("-");
    let name = if stdin {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    let source: Box<dyn Read> = if stdin {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).map_err(|e| Error::io(format!("cannot open input {name}"), e))?)
    };
    let format = match opts.format {
        Format::Auto if stdin => Format::Text,
        Format::Auto => format_of(path),
        f => f,
    };
    from_reader(source, name, format, opts)
}

/// The format [`Format::Auto`] picks for a path.
pub fn format_of(path: &Path) -> Format {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("jsonl" | "ndjson") => Format::Jsonl,
        Some("csv") => Format::Csv,
        _ => Format::Text,
    }
}

/// Records read from any byte source named `name` in error messages; [`Format::Auto`] reads
/// text.
///
/// # Errors
/// A CSV source whose header cannot be read or lacks the column.
pub fn from_reader(
    source: impl Read + 'static,
    name: String,
    format: Format,
    opts: &ReadOpts,
) -> Result<Records> {
    let reader = BufReader::with_capacity(1 << 16, source);
    let cap = opts.max_line_bytes.max(1);
    Ok(match format {
        Format::Csv => csv_records(reader, name, &opts.column, cap)?,
        Format::Jsonl => {
            let field = opts.field.clone();
            Box::new(lines(reader, name, cap).map(move |r| {
                r.map(|(origin, line)| Record {
                    text: line.and_then(|bytes| jsonl_text(&bytes, &field)),
                    origin,
                })
            }))
        }
        Format::Text | Format::Auto => Box::new(lines(reader, name, cap).map(|r| {
            r.map(|(origin, line)| Record {
                text: line.and_then(|bytes| {
                    String::from_utf8(bytes).map_err(|e| {
                        format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to())
                    })
                }),
                origin,
            })
        })),
    })
}

type Line = std::result::Result<Vec<u8>, String>;

/// Lines as bytes with their `file:line` origin; `\n` and `\r\n` endings and a leading BOM
/// are removed. A final line without a newline still counts; no newline after it adds
/// nothing. A line over `cap` bytes is consumed but not kept.
fn lines(
    mut reader: impl BufRead + 'static,
    name: String,
    cap: usize,
) -> impl Iterator<Item = Result<(String, Line)>> {
    let mut line_no = 0usize;
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match read_capped_line(&mut reader, &mut buf, cap) {
            Ok(None) => None,
            Ok(Some(over)) => {
                line_no += 1;
                let origin = format!("{name}:{line_no}");
                if over {
                    let msg = format!(
                        "line longer than the {cap}-byte read cap, skipped (raise --max-line-bytes)"
                    );
                    return Some(Ok((origin, Err(msg))));
                }
                if line_no == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
                    buf.drain(..3);
                }
                Some(Ok((origin, Ok(buf))))
            }
            Err(e) => Some(Err(Error::io(
                format!("cannot read {name} after line {line_no}"),
                e,
            ))),
        }
    })
}

/// Reads through the next `\n` into `buf`, without the `\n` or `\r\n` ending, keeping at most
/// `cap` bytes. `None` at end of input; `Some(true)` when the line was longer than `cap`: it
/// is consumed and `buf` holds only its start.
fn read_capped_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<bool>> {
    let (mut seen, mut total) = (false, 0usize);
    let done = loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            if !seen {
                return Ok(None);
            }
            break false;
        }
        seen = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let content = take - usize::from(done);
        // One byte of slack keeps the `\r` of a `\r\n` ending.
        let keep = content.min((cap + 1).saturating_sub(buf.len()));
        buf.extend_from_slice(&chunk[..keep]);
        total += content;
        reader.consume(take);
        if done {
            break true;
        }
    };
    let crlf = done && total == buf.len() && buf.last() == Some(&b'\r');
    if crlf {
        buf.pop();
    }
    Ok(Some(total - usize::from(crlf) > cap))
}

fn jsonl_text(bytes: &[u8], field: &str) -> std::result::Result<String, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Err(e) if std::str::from_utf8(bytes).is_err() => Err(format!("invalid UTF-8 ({e})")),
        Err(e) => Err(format!("invalid JSON: {e}")),
        Ok(Value::Object(map)) => match map.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("field {field:?} is {}, not a string", kind(other))),
            None => Err(format!(
                "missing field {field:?} (choose another with --field)"
            )),
        },
        Ok(other) => Err(format!("expected a JSON object, found {}", kind(&other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn csv_records(
    reader: impl Read + 'static,
    name: String,
    column: &str,
    cap: usize,
) -> Result<Records> {
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let header_err = |msg: String| Error::Config(format!("{name}: {msg}"));
    let headers = csv
        .byte_headers()
        .map_err(|e| header_err(format!("cannot read the CSV header: {e}")))?
        .clone();
    let strip_bom = |h: &[u8]| {
        h.strip_prefix(b"\xEF\xBB\xBF")
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| h.to_vec())
    };
    let col = headers
        .iter()
        .position(|h| strip_bom(h) == column.as_bytes())
        .ok_or_else(|| {
            let names: Vec<String> = headers
                .iter()
                .map(|h| String::from_utf8_lossy(&strip_bom(h)).into_owned())
                .collect();
            header_err(format!(
                "no column {column:?} in the CSV header (columns: {}); choose one with --column",
                names.join(", ")
            ))
        })?;
    let mut records = csv.into_byte_records();
    let column = column.to_string();
    Ok(Box::new(std::iter::from_fn(move || {
        let rec = records.next()?;
        Some(match rec {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line());
                let origin = format!("{name}:{line}");
                let text = match r.get(col) {
                    None => Err(format!("row has {} fields, no column {column:?}", r.len())),
                    Some(b) if b.len() > cap => Err(format!(
                        "field longer than the {cap}-byte read cap (raise --max-line-bytes)"
                    )),
                    Some(b) => {
                        String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8".to_string())
                    }
                };
                Ok(Record { text, origin })
            }
            Err(e) => match e.kind() {
                csv::ErrorKind::Io(_) => Err(Error::io(
                    format!("cannot read {name}"),
                    io::Error::other(e.to_string()),
                )),
                _ => Ok(Record {
                    text: Err(format!("malformed CSV: {e}")),
                    origin: format!("{name}:?"),
                }),
            },
        })
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], format: Format, cap: usize) -> Vec<Record> {
        let opts = ReadOpts {
            max_line_bytes: cap,
            ..ReadOpts::default()
        };
        from_reader(io::Cursor::new(bytes.to_vec()), "in".into(), format, &opts)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap()
    }

    fn texts(records: &[Record]) -> Vec<std::result::Result<&str, &str>> {
        records
            .iter()
            .map(|r| r.text.as_deref().map_err(String::as_str))
            .collect()
    }

    #[test]
    fn lines_at_and_over_the_cap() {
        let recs = read(b"abcd\r\nabcde\nab\n\xEF\xBB\xBFx", Format::Text, 4);
        let got = texts(&recs);
        assert_eq!(got[0], Ok("abcd"));
        assert!(got[1].unwrap_err().contains("4-byte read cap"), "{got:?}");
        assert_eq!(got[2], Ok("ab"));
        // A BOM is only stripped on the first line; here it makes the line 4 bytes long.
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[3].origin, "in:4");
    }

    #[test]
    fn a_line_over_the_cap_is_not_buffered_across_reader_chunks() {
        let mut bytes = vec![b'a'; 300_000];
        bytes.extend_from_slice(b"\nok\n");
        let recs = read(&bytes, Format::Text, 1000);
        assert_eq!(recs.len(), 2);
        assert!(recs[0].text.is_err());
        assert_eq!(recs[1].text.as_deref(), Ok("ok"));
        assert_eq!(recs[1].origin, "in:2");
    }

    #[test]
    fn jsonl_errors_are_records_in_order() {
        let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let input = format!(
            "{{\"text\":\"a\"}}\n{nested}\n{{\"other\":1}}\n{{\"text\":3}}\nnot json\n{{\"text\":\"b\\u0000c\"}}\n"
        );
        let recs = read(input.as_bytes(), Format::Jsonl, 1 << 20);
        let got = texts(&recs);
        assert_eq!(got.len(), 6);
        assert_eq!(got[0], Ok("a"));
        assert!(got[1].unwrap_err().contains("invalid JSON"), "{got:?}");
        assert!(got[2].unwrap_err().contains("missing field"), "{got:?}");
        assert!(got[3].unwrap_err().contains("a number"), "{got:?}");
        assert!(got[4].unwrap_err().contains("invalid JSON"), "{got:?}");
        assert_eq!(got[5], Ok("b\0c"));
    }

    #[test]
    fn csv_fields_over_the_cap_and_short_rows() {
        let recs = read(b"id,text\n1,hello\n2\n3,abcdefgh\n", Format::Csv, 4);
        let got = texts(&recs);
        assert_eq!(
            got[0],
            Err("field longer than the 4-byte read cap (raise --max-line-bytes)")
        );
        assert!(got[1].unwrap_err().contains("no column"));
        assert!(got[2].is_err());
        let recs = read(b"id,text\n1,hey\n", Format::Csv, 4);
        assert_eq!(texts(&recs), vec![Ok("hey")]);
    }
}
