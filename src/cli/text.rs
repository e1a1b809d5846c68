//! Plain output for a terminal. Stored strings an operator or a client chose (names, emails,
//! audit details) are printed with their control and formatting characters escaped, so no
//! value can start a line of its own, move the cursor or recolour what follows. `--json`
//! output needs none of this: JSON escapes control characters itself.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with backslashes, control characters and invisible formatting characters escaped
/// (`\n`, `\t`, `\r`, `\\`, `\u{1b}`); unchanged (and not copied) when it holds none.
pub fn plain(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control() || crate::auth::credentials::is_format_char(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_formatting_characters_are_escaped() {
        assert!(matches!(plain("plain name"), Cow::Borrowed(_)));
        assert_eq!(plain("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(plain("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(plain("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(plain("back\\slash"), "back\\\\slash");
        assert_eq!(plain("Zürich"), "Zürich");
    }
}
