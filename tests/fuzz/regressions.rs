//! Inputs the fuzzing found (or that were once wrong), kept as plain tests.

use csrd::domain::{CreateCsr, NamePolicy, OwnerKind};

#[test]
fn no_crash_found_yet_these_stay_covered() {
    // Deep nesting, a lone surrogate escape, a NUL, a huge number: refused, never a panic.
    for body in [
        "[".repeat(10_000),
        r#"{"common_name":"\ud800"}"#.to_owned(),
        "{\"sans\":[\"a\u{0}b\"]}".to_owned(),
        r#"{"page":1e999999}"#.to_owned(),
    ] {
        assert!(
            CreateCsr::parse(body.as_bytes(), OwnerKind::Account, NamePolicy::Permissive).is_err()
        );
    }
}
