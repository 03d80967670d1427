//! Streaming record readers (text, JSONL, CSV) and the JSONL verdict writer. A record that
//! cannot be read becomes an error record naming file and line; only a failure of the whole
//! input (unopenable file, I/O error) stops the run.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::args::Format;

/// One input record: its text, or why it could not be read, and where it came from.
pub struct Record {
    pub text: std::result::Result<String, String>,
    pub origin: String,
}

/// Options of the readers.
#[derive(Clone)]
pub struct ReadOpts {
    pub format: Format,
    pub field: String,
    pub column: String,
}

type Records = Box<dyn Iterator<Item = Result<Record>>>;

/// All records of all inputs, in order; `-` is standard input.
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

fn open(path: &Path, opts: &ReadOpts) -> Result<Records> {
    let stdin = path == Path::new("-");
    let name = if stdin {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    let source: Box<dyn Read> = if stdin {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| format!("cannot open input {name}"))?)
    };
    let format = match opts.format {
        Format::Auto if stdin => Format::Text,
        Format::Auto => match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("jsonl" | "ndjson") => Format::Jsonl,
            Some("csv") => Format::Csv,
            _ => Format::Text,
        },
        f => f,
    };
    let reader = BufReader::with_capacity(1 << 16, source);
    Ok(match format {
        Format::Csv => csv_records(reader, name, &opts.column)?,
        Format::Jsonl => {
            let field = opts.field.clone();
            Box::new(
                lines(reader, name)
                    .map(move |r| r.map(|(origin, bytes)| jsonl_record(origin, &bytes, &field))),
            )
        }
        _ => Box::new(lines(reader, name).map(|r| {
            r.map(|(origin, bytes)| Record {
                text: String::from_utf8(bytes)
                    .map_err(|e| format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to())),
                origin,
            })
        })),
    })
}

/// Lines as bytes with their `file:line` origin; `\n` and `\r\n` endings and a leading BOM
/// are removed. A final line without a newline still counts; no newline after it adds nothing.
fn lines(
    mut reader: impl BufRead + 'static,
    name: String,
) -> impl Iterator<Item = Result<(String, Vec<u8>)>> {
    let mut line_no = 0usize;
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                line_no += 1;
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                if line_no == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
                    buf.drain(..3);
                }
                Some(Ok((format!("{name}:{line_no}"), buf)))
            }
            Err(e) => Some(Err(anyhow!("cannot read {name} after line {line_no}: {e}"))),
        }
    })
}

fn jsonl_record(origin: String, bytes: &[u8], field: &str) -> Record {
    let text = match serde_json::from_slice::<Value>(bytes) {
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
    };
    Record { text, origin }
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

fn csv_records(reader: impl Read + 'static, name: String, column: &str) -> Result<Records> {
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = csv
        .byte_headers()
        .with_context(|| format!("cannot read the CSV header of {name}"))?
        .clone();
    let strip_bom = |h: &[u8]| {
        h.strip_prefix(b"\xEF\xBB\xBF")
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| h.to_vec())
    };
    let col = headers.iter().position(|h| strip_bom(h) == column.as_bytes()).ok_or_else(|| {
        let names: Vec<String> = headers.iter().map(|h| String::from_utf8_lossy(&strip_bom(h)).into_owned()).collect();
        anyhow!("{name}: no column {column:?} in the CSV header (columns: {}); choose one with --column", names.join(", "))
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
                    Some(b) => {
                        String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8".to_string())
                    }
                };
                Ok(Record { text, origin })
            }
            Err(e) => match e.kind() {
                csv::ErrorKind::Io(_) => Err(anyhow!("cannot read {name}: {e}")),
                _ => Ok(Record {
                    text: Err(format!("malformed CSV: {e}")),
                    origin: format!("{name}:?"),
                }),
            },
        })
    })))
}
