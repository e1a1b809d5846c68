//! `csrd batch` input: JSONL (one create body per line) or CSV (a header row of field names,
//! `sans` separated by `;`). Every input line becomes a create body or the reason it is not
//! one; blank JSONL lines are skipped, so line numbers always name the file's lines.

use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value};

/// One line of input: its 1-based line number in the file and its body, or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub struct InputLine {
    pub line: usize,
    pub body: Result<Value, String>,
}

pub fn read(path: &Path) -> anyhow::Result<Vec<InputLine>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        || !text.trim_start().starts_with('{');
    if is_csv {
        parse_csv(&text)
    } else {
        Ok(parse_jsonl(&text))
    }
}

pub fn parse_jsonl(text: &str) -> Vec<InputLine> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| InputLine {
            line: i + 1,
            body: match serde_json::from_str::<Value>(l) {
                Ok(v @ Value::Object(_)) => Ok(v),
                Ok(_) => Err("not a JSON object".into()),
                Err(e) => Err(format!("not valid JSON: {e}")),
            },
        })
        .collect()
}

/// Fields whose CSV cell is a list (`;`-separated).
const LIST_FIELDS: &[&str] = &["sans"];

pub fn parse_csv(text: &str) -> anyhow::Result<Vec<InputLine>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .context("reading the CSV header row")?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let mut lines = Vec::new();
    for record in reader.records() {
        let (line, body) = match record {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line() as usize);
                if r.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                (line, csv_body(&headers, &r))
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                (line, Err(format!("not valid CSV: {e}")))
            }
        };
        lines.push(InputLine { line, body });
    }
    Ok(lines)
}

fn csv_body(headers: &[String], record: &csv::StringRecord) -> Result<Value, String> {
    if record.len() != headers.len() {
        return Err(format!(
            "{} fields where the header has {}",
            record.len(),
            headers.len()
        ));
    }
    let mut body = Map::new();
    for (name, cell) in headers.iter().zip(record.iter()) {
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
            Value::String(cell.to_owned())
        };
        body.insert(name.clone(), value);
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonl_lines_keep_their_numbers_and_bad_lines_say_why() {
        let lines = parse_jsonl("{\"a\":1}\n\nnot json\n[1]\n{\"b\":2}\n");
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].line, 1);
        assert_eq!(lines[1].line, 3);
        assert!(lines[1].body.as_ref().unwrap_err().contains("JSON"));
        assert!(lines[2].body.is_err());
        assert_eq!(
            lines[3],
            InputLine {
                line: 5,
                body: Ok(json!({"b": 2}))
            }
        );
    }

    #[test]
    fn csv_rows_become_bodies_with_sans_split() {
        let text = "common_name,sans,country,organizational_unit\n\
                    a.io,a.io; www.a.io,US,\n\
                    \"b,c.io\",b.io,US,Eng\n\
                    short\n";
        let lines = parse_csv(text).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].line, 2);
        assert_eq!(
            lines[0].body.as_ref().unwrap(),
            &json!({"common_name": "a.io", "sans": ["a.io", "www.a.io"], "country": "US"})
        );
        assert_eq!(lines[1].body.as_ref().unwrap()["common_name"], "b,c.io");
        assert_eq!(
            lines[1].body.as_ref().unwrap()["organizational_unit"],
            "Eng"
        );
        assert_eq!(lines[2].line, 4);
        assert!(lines[2].body.is_err());
    }
}
