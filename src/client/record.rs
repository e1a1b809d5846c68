//! One output line, kept as the JSON text it is written as.
//!
//! A created CSR's result is ~1 KB of JSON that the client only passes on: parsing it into a
//! tree, adding `line`, and writing it out again (to the state file, then to the output) was
//! most of the client's CPU per item. The API's text is spliced instead: `{"line":N,` and the
//! result object's own members, never re-parsed.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

/// An output line for input line `line`: a JSON object that starts with `"line"`.
#[derive(Debug, Clone)]
pub struct Output {
    pub line: usize,
    json: String,
    failed: bool,
}

impl Output {
    /// From a JSON object built here (an error, a short result). Its `line` member is the
    /// input line.
    pub fn from_value(value: Value) -> Self {
        let line = value["line"].as_u64().unwrap_or(0) as usize;
        Self {
            line,
            failed: value.get("errors").is_some(),
            json: value.to_string(),
        }
    }

    /// `result` (a JSON object, as the API sent it) with `"line": line` in front; `None` when
    /// `result` is not an object.
    pub fn created(line: usize, result: &RawValue) -> Option<Self> {
        let members = result.get().trim_start().strip_prefix('{')?.trim_start();
        let separator = if members.starts_with('}') { "" } else { "," };
        Some(Self {
            line,
            json: format!("{{\"line\":{line}{separator}{members}"),
            failed: false,
        })
    }

    /// A line read back from the state file: `json` is the output object as written there.
    pub fn recorded(line: usize, json: &RawValue) -> Self {
        #[derive(Deserialize)]
        struct Probe {
            errors: Option<IgnoredAny>,
        }
        let failed = serde_json::from_str::<Probe>(json.get()).map_or(true, |p| p.errors.is_some());
        Self {
            line,
            json: json.get().to_owned(),
            failed,
        }
    }

    /// True when the line failed (the object has `errors`).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The object as a JSON value (tests, and the rare caller that must look inside).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn a_result_gets_its_line_in_front_and_keeps_its_text() {
        let out = Output::created(7, &raw(r#" { "id": "a", "csr": "-----BEGIN\n" }"#)).unwrap();
        assert_eq!(
            out.json(),
            r#"{"line":7,"id": "a", "csr": "-----BEGIN\n" }"#
        );
        assert_eq!(
            out.to_value(),
            json!({"line": 7, "id": "a", "csr": "-----BEGIN\n"})
        );
        assert!(!out.failed());
        assert_eq!(
            Output::created(3, &raw("{ }")).unwrap().json(),
            r#"{"line":3}"#
        );
        assert!(Output::created(3, &raw("[1]")).is_none());
        assert!(Output::created(3, &raw("\"x\"")).is_none());
    }

    #[test]
    fn errors_make_a_line_failed_however_it_came() {
        let built = Output::from_value(json!({"line": 2, "errors": [{"code": 1400}]}));
        assert!(built.failed());
        assert_eq!(built.line, 2);
        assert!(Output::recorded(2, &raw(built.json())).failed());
        assert!(!Output::recorded(2, &raw(r#"{"line":2,"id":"x"}"#)).failed());
    }
}
