//! Validation failures carry the Cloudflare error code and a JSON pointer to the field.

use std::fmt;

use super::ErrorCode;

/// A client's value as an error message may quote it: at most 40 characters, so a megabyte of
/// input is never echoed back.
pub fn echo(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let mut short: String = value.chars().take(MAX).collect();
        short.push('…');
        short
    }
}

/// One rejected field: Cloudflare code, human message, JSON pointer (`/sans/3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub code: ErrorCode,
    pub message: String,
    pub pointer: String,
}

impl FieldError {
    pub fn new(code: ErrorCode, pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            pointer: pointer.into(),
        }
    }
}

/// Every field error found in one request, in field order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn single(error: FieldError) -> Self {
        Self(vec![error])
    }

    pub fn codes(&self) -> Vec<u32> {
        self.0.iter().map(|e| e.code.as_u32()).collect()
    }
}

/// Errors listed in one answer, at most. A batch of 10,000 items with 150 bad SANs each holds
/// 1.5 million of them: listed whole, that was a 181 MB answer. The rest are counted, in one
/// last entry.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Collects field errors, keeping the first [`MAX_REPORTED_ERRORS`] and counting the others,
/// so memory stays bounded however many a request holds.
#[derive(Debug, Default)]
pub struct ErrorCollector {
    kept: Vec<FieldError>,
    omitted: usize,
}

impl ErrorCollector {
    pub fn push(&mut self, error: FieldError) {
        if self.kept.len() < MAX_REPORTED_ERRORS {
            self.kept.push(error);
        } else {
            self.omitted += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The errors kept, and an entry counting the omitted ones; `None` when there was none.
    pub fn finish(mut self) -> Option<ValidationErrors> {
        if self.kept.is_empty() {
            return None;
        }
        if self.omitted > 0 {
            self.kept.push(omitted(self.omitted));
        }
        Some(ValidationErrors(self.kept))
    }
}

fn omitted(n: usize) -> FieldError {
    FieldError::new(
        ErrorCode::InvalidRequest,
        "",
        format!("{n} more errors not listed (an answer lists the first {MAX_REPORTED_ERRORS})"),
    )
}

impl ValidationErrors {
    /// At most [`MAX_REPORTED_ERRORS`] errors and one entry counting the rest.
    pub fn capped(mut self) -> Self {
        if self.0.len() > MAX_REPORTED_ERRORS + 1 {
            let rest = self.0.len() - MAX_REPORTED_ERRORS;
            self.0.truncate(MAX_REPORTED_ERRORS);
            self.0.push(omitted(rest));
        }
        self
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{} ({}): {}", e.pointer, e.code, e.message))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for ValidationErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(i: usize) -> FieldError {
        FieldError::new(ErrorCode::InvalidSan, format!("/sans/{i}"), "bad")
    }

    #[test]
    fn the_collector_keeps_the_first_errors_and_counts_the_rest() {
        let mut errors = ErrorCollector::default();
        assert!(errors.is_empty());
        for i in 0..1_000 {
            errors.push(error(i));
        }
        let listed = errors.finish().unwrap();
        assert_eq!(listed.0.len(), MAX_REPORTED_ERRORS + 1);
        assert_eq!(listed.0[99].pointer, "/sans/99");
        assert!(
            listed.0[100].message.starts_with("900 more errors"),
            "{:?}",
            listed.0[100]
        );
        assert_eq!(ErrorCollector::default().finish(), None);
    }

    #[test]
    fn capping_leaves_short_lists_alone() {
        let short = ValidationErrors((0..101).map(error).collect());
        assert_eq!(short.clone().capped(), short);
        let long = ValidationErrors((0..150).map(error).collect()).capped();
        assert_eq!(long.0.len(), 101);
        assert!(long.0[100].message.starts_with("50 more errors"));
    }
}
