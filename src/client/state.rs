//! The state file (`<output>.partial`): what earlier runs settled, one JSON line per input
//! line, appended a group at a time, so an interrupted run can go on where it stopped.
//!
//! Each entry is `{"line": N, "line_sha256": "<hex of the input line's bytes>", "output": {…}}`.
//! An entry is reused only for an input line with the same hash: when the input changed since
//! the file was written, the run stops and names the line (the CSR made for the old line
//! exists already; whether to keep it is the user's call, so nothing is guessed). Files of
//! earlier csrd versions, whose entries carry no hash, are refused the same way. Either way,
//! deleting the state file starts over safely: groups of unchanged lines are submitted under
//! the same Idempotency-Keys and find the batches made before.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::input::InputLine;
use super::record::Output;

/// Appends settled output lines to the state file, whole lines at a time.
pub struct PartialWriter {
    file: Mutex<std::fs::File>,
    /// The hash of each input line, by line number, recorded beside its output.
    digests: HashMap<usize, String>,
}

impl PartialWriter {
    pub fn open(path: &Path, lines: &[InputLine]) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            file: Mutex::new(file),
            digests: lines.iter().map(|l| (l.line, l.digest_hex())).collect(),
        })
    }

    /// Records the outputs, each as the text it is (never parsed again here).
    pub fn append(&self, outputs: &[Output]) -> anyhow::Result<()> {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(outputs.iter().map(|o| o.json().len() + 120).sum());
        for output in outputs {
            let digest = self.digests.get(&output.line).map_or("", String::as_str);
            // The digest is hex: nothing in it needs escaping.
            let _ = writeln!(
                text,
                r#"{{"line":{},"line_sha256":"{digest}","output":{}}}"#,
                output.line,
                output.json()
            );
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(text.as_bytes())?;
        file.flush()?;
        Ok(())
    }
}

/// What earlier runs settled, by line, checked against the input as it is now. A last entry
/// cut short by a crash is ignored (its group is simply submitted again).
pub fn load(
    path: &Path,
    input: &Path,
    lines: &[InputLine],
) -> anyhow::Result<HashMap<usize, Output>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let digests: HashMap<usize, String> = lines.iter().map(|l| (l.line, l.digest_hex())).collect();
    let start_over = format!(
        "to start over, delete {} and run again (groups of unchanged lines are found again \
         under their Idempotency-Keys; CSRs already made for changed lines stay in the account)",
        path.display()
    );
    let mut settled = HashMap::new();
    #[derive(Deserialize)]
    struct Entry<'a> {
        line: Option<usize>,
        line_sha256: Option<String>,
        #[serde(borrow)]
        output: Option<&'a RawValue>,
    }
    for entry in text
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Entry<'_>>(l).ok())
    {
        let Some(line) = entry.line else {
            continue;
        };
        let Some(recorded) = entry.line_sha256.as_deref() else {
            bail!(
                "{} was written by an earlier csrd that did not record what each input line \
                 was, so it cannot tell whether {} changed since: finish the run with that \
                 version, or {start_over}",
                path.display(),
                input.display()
            );
        };
        if digests.get(&line).map(String::as_str) != Some(recorded) {
            bail!(
                "line {line} of {} changed since {} recorded it as settled: {start_over}",
                input.display(),
                path.display()
            );
        }
        let Some(output) = entry.output else {
            continue;
        };
        settled.insert(line, Output::recorded(line, output));
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::input::{Format, parse};
    use serde_json::json;

    fn scratch() -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("csrd-state-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn entries_are_reused_only_for_unchanged_lines() {
        let dir = scratch();
        let partial = dir.join("out.jsonl.partial");
        let before = parse(&b"{\"a\":1}\n{\"a\":2}\n"[..], Format::Jsonl).unwrap();
        let writer = PartialWriter::open(&partial, &before).unwrap();
        writer
            .append(&[
                Output::from_value(json!({"line": 1, "id": "x"})),
                Output::from_value(json!({"line": 2, "id": "y"})),
            ])
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&partial)
            .unwrap()
            .write_all(b"{\"line\": 3, \"line_sha")
            .unwrap();
        let input = Path::new("in.jsonl");
        let settled = load(&partial, input, &before).unwrap();
        assert_eq!(settled.len(), 2, "the entry cut short is ignored");
        assert_eq!(settled[&2].to_value(), json!({"line": 2, "id": "y"}));

        let after = parse(&b"{\"a\":1}\n{\"a\":3}\n"[..], Format::Jsonl).unwrap();
        let err = load(&partial, input, &after).unwrap_err().to_string();
        assert!(err.contains("line 2 of in.jsonl changed"), "{err}");
        assert!(err.contains("delete"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_state_file_without_line_hashes_is_refused() {
        let dir = scratch();
        let partial = dir.join("out.jsonl.partial");
        std::fs::write(&partial, "{\"line\": 1, \"id\": \"x\"}\n").unwrap();
        let lines = parse(&b"{\"a\":1}\n"[..], Format::Jsonl).unwrap();
        let err = load(&partial, Path::new("in.jsonl"), &lines)
            .unwrap_err()
            .to_string();
        assert!(err.contains("earlier csrd"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
