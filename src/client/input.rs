//! `csrd batch` input: JSONL (one create body per line) or CSV (a header row of field names,
//! `sans` separated by `;`). Every input line becomes a create body or the reason it is not
//! one; blank lines are skipped, so line numbers always name the file's lines.
//!
//! The file is read line by line as bytes, never as one string: a line that is not UTF-8, not
//! JSON (or not CSV), or longer than [`MAX_LINE_BYTES`] is a failed line with its number, and
//! the others go on. A CSV record is one line (a quoted field cannot hold a line break).

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// An input line longer than this (without its line break) is refused without being parsed.
/// It is the API's limit on one create body: such an item could never be created on its own,
/// and a batch submission (at most `--max-batch-bytes`, 8 MiB by default) always has room for
/// one such line. Reading a line stops storing it at this length, so a 48 MB line costs no
/// more memory than a 1 MiB one.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// How the input is written: chosen by `--format` or the file's extension, never guessed
/// from the content (a JSONL file whose first line is broken is still JSONL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

impl Format {
    /// `given`, else the extension: `.jsonl`, `.ndjson`, `.json` are JSONL, `.csv` is CSV.
    pub fn of(path: &Path, given: Option<Format>) -> anyhow::Result<Format> {
        if let Some(format) = given {
            return Ok(format);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl" | "ndjson" | "json") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            _ => bail!(
                "cannot tell the format of {} from its extension (.jsonl, .ndjson, .json or .csv): \
                 pass --format jsonl or --format csv",
                path.display()
            ),
        }
    }
}

/// One line of input: its 1-based line number in the file, the SHA-256 of its bytes (for CSV,
/// of the header line and then its own: both make the item), and its body as compact JSON text,
/// or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub struct InputLine {
    pub line: usize,
    pub digest: [u8; 32],
    pub body: Result<String, String>,
}

impl InputLine {
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }
}

pub fn read(path: &Path, format: Format) -> anyhow::Result<Vec<InputLine>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    parse(BufReader::with_capacity(64 * 1024, file), format)
        .with_context(|| format!("reading {}", path.display()))
}

pub fn parse(reader: impl BufRead, format: Format) -> anyhow::Result<Vec<InputLine>> {
    let mut lines = Lines::new(reader, MAX_LINE_BYTES);
    let mut out = Vec::new();
    let mut csv_header: Option<(Vec<u8>, Vec<String>)> = None;
    while let Some(raw) = lines.next_line()? {
        let line = raw.number;
        let bytes = match raw.bytes {
            Ok(bytes) => bytes,
            Err(length) => {
                out.push(InputLine {
                    line,
                    digest: raw.digest,
                    body: Err(format!(
                        "longer than {MAX_LINE_BYTES} bytes ({length} bytes): no create body is"
                    )),
                });
                continue;
            }
        };
        // A byte-order mark is not part of the first line's content.
        let bytes = if line == 1 {
            bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes)
        } else {
            &bytes
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format!("not UTF-8 (byte {} of the line)", e.valid_up_to() + 1));
        match format {
            Format::Jsonl => out.push(InputLine {
                line,
                digest: raw.digest,
                body: text.and_then(jsonl_body),
            }),
            Format::Csv => match &csv_header {
                None => {
                    let text =
                        text.map_err(|e| anyhow::anyhow!("the CSV header, line {line}: {e}"))?;
                    let names = csv_record(text)
                        .map_err(|e| anyhow::anyhow!("the CSV header, line {line}: {e}"))?;
                    csv_header = Some((bytes.to_vec(), names));
                }
                Some((header_bytes, names)) => {
                    let mut h = Sha256::new();
                    h.update(header_bytes);
                    h.update(b"\n");
                    h.update(bytes);
                    out.push(InputLine {
                        line,
                        digest: h.finalize().into(),
                        body: text.and_then(|t| csv_body(names, &csv_record(t)?)),
                    });
                }
            },
        }
    }
    Ok(out)
}

fn jsonl_body(text: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(text) {
        // Compact and re-serialized: the Idempotency-Keys of earlier versions hashed this form.
        Ok(v @ Value::Object(_)) => Ok(v.to_string()),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// One line read: its number, its bytes (without the line break and a `\r` before it), or its
/// length when that is over the limit, and the SHA-256 of all of it.
struct RawLine {
    number: usize,
    bytes: Result<Vec<u8>, u64>,
    digest: [u8; 32],
}

/// Reads lines of any length holding at most `max` bytes of one.
struct Lines<R> {
    reader: R,
    max: usize,
    number: usize,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            max,
            number: 0,
        }
    }

    fn next_line(&mut self) -> std::io::Result<Option<RawLine>> {
        let mut bytes = Vec::new();
        let mut length: u64 = 0;
        let mut hash = Sha256::new();
        let mut started = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !started {
                    return Ok(None);
                }
                break;
            }
            started = true;
            let newline = available.iter().position(|&b| b == b'\n');
            let piece = &available[..newline.unwrap_or(available.len())];
            length += piece.len() as u64;
            hash.update(piece);
            if length <= self.max as u64 {
                bytes.extend_from_slice(piece);
            } else {
                // Over the limit: count and hash the rest, keep none of it.
                bytes = Vec::new();
            }
            let used = piece.len() + usize::from(newline.is_some());
            self.reader.consume(used);
            if newline.is_some() {
                break;
            }
        }
        self.number += 1;
        let bytes = if length > self.max as u64 {
            Err(length)
        } else {
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            Ok(bytes)
        };
        Ok(Some(RawLine {
            number: self.number,
            bytes,
            digest: hash.finalize().into(),
        }))
    }
}

/// Fields whose CSV cell is a list (`;`-separated).
const LIST_FIELDS: &[&str] = &["sans"];

/// The fields of one CSV line.
fn csv_record(text: &str) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    match reader.records().next() {
        Some(Ok(record)) => Ok(record.iter().map(|f| f.trim().to_owned()).collect()),
        Some(Err(e)) => Err(format!("not valid CSV: {e}")),
        None => Ok(Vec::new()),
    }
}

fn csv_body(headers: &[String], record: &[String]) -> Result<String, String> {
    if record.len() != headers.len() {
        return Err(format!(
            "{} fields where the header has {}",
            record.len(),
            headers.len()
        ));
    }
    let mut body = Map::new();
    for (name, cell) in headers.iter().zip(record) {
        // An empty cell is an absent field (optional fields stay optional).
        if cell.is_empty() {
            continue;
        }
        let value = if LIST_FIELDS.contains(&name.as_str()) {
            Value::Array(
                cell.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            )
        } else {
            Value::String(cell.clone())
        };
        body.insert(name.clone(), value);
    }
    Ok(Value::Object(body).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_bytes(bytes: &[u8], format: Format) -> Vec<InputLine> {
        parse(bytes, format).unwrap()
    }

    fn body(line: &InputLine) -> Value {
        serde_json::from_str(line.body.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn jsonl_lines_keep_their_numbers_and_bad_lines_say_why() {
        let lines = parse_bytes(b"{\"a\":1}\n\nnot json\n[1]\n{\"b\": 2}\r\n", Format::Jsonl);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].line, 1);
        assert_eq!(lines[1].line, 3);
        assert!(lines[1].body.as_ref().unwrap_err().contains("JSON"));
        assert!(lines[2].body.is_err());
        assert_eq!(lines[3].line, 5);
        assert_eq!(lines[3].body.as_deref(), Ok("{\"b\":2}"), "compact");
    }

    #[test]
    fn a_jsonl_file_whose_first_line_is_broken_is_still_jsonl() {
        let lines = parse_bytes(b"oops,not,json\n{\"a\":1}\n", Format::Jsonl);
        assert!(lines[0].body.is_err());
        assert_eq!(body(&lines[1]), json!({"a": 1}));
    }

    #[test]
    fn a_line_that_is_not_utf8_fails_alone() {
        let lines = parse_bytes(b"{\"a\":1}\n{\"a\":\"\xff\"}\n{\"a\":3}", Format::Jsonl);
        assert_eq!(lines.len(), 3);
        assert!(lines[1].body.as_ref().unwrap_err().contains("UTF-8"));
        assert_eq!(body(&lines[2]), json!({"a": 3}), "a last line without \\n");
    }

    #[test]
    fn an_overlong_line_fails_alone_and_is_not_kept() {
        let mut reader = Lines::new(&b"12345\n123456\n\n1"[..], 5);
        let first = reader.next_line().unwrap().unwrap();
        assert_eq!(first.bytes, Ok(b"12345".to_vec()));
        let second = reader.next_line().unwrap().unwrap();
        assert_eq!((second.number, second.bytes), (2, Err(6)));
        assert_eq!(second.digest, <[u8; 32]>::from(Sha256::digest(b"123456")));
        assert_eq!(reader.next_line().unwrap().unwrap().bytes, Ok(vec![]));
        assert_eq!(reader.next_line().unwrap().unwrap().number, 4);
        assert!(reader.next_line().unwrap().is_none());
    }

    #[test]
    fn the_format_comes_from_the_flag_or_the_extension() {
        let of = |p: &str, f| Format::of(Path::new(p), f);
        assert_eq!(of("a.jsonl", None).unwrap(), Format::Jsonl);
        assert_eq!(of("a.NDJSON", None).unwrap(), Format::Jsonl);
        assert_eq!(of("a.json", None).unwrap(), Format::Jsonl);
        assert_eq!(of("a.csv", None).unwrap(), Format::Csv);
        assert_eq!(of("a.txt", Some(Format::Csv)).unwrap(), Format::Csv);
        let err = of("a.txt", None).unwrap_err().to_string();
        assert!(err.contains("--format"), "{err}");
        assert!(of("noext", None).is_err());
    }

    #[test]
    fn csv_rows_become_bodies_with_sans_split() {
        let text: &[u8] = b"common_name,sans,country,organizational_unit\n\
                    a.io,a.io; www.a.io,US,\n\
                    \"b,c.io\",b.io,US,Eng\n\
                    short\n\
                    \n\
                    d.io,d\xff.io,US,\n";
        let lines = parse_bytes(text, Format::Csv);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].line, 2);
        assert_eq!(
            body(&lines[0]),
            json!({"common_name": "a.io", "sans": ["a.io", "www.a.io"], "country": "US"})
        );
        assert_eq!(body(&lines[1])["common_name"], "b,c.io");
        assert_eq!(body(&lines[1])["organizational_unit"], "Eng");
        assert_eq!(lines[2].line, 4);
        assert!(lines[2].body.is_err());
        assert_eq!(lines[3].line, 6);
        assert!(lines[3].body.as_ref().unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn a_csv_line_digest_covers_the_header() {
        let a = parse_bytes(b"common_name\nx.io\n", Format::Csv);
        let b = parse_bytes(b"organization\nx.io\n", Format::Csv);
        assert_ne!(a[0].digest, b[0].digest);
    }
}
