//! Strings read from a trace or a server (stage labels, model names, error messages) are
//! untrusted: a control character in one could move the cursor, clear the screen or forge
//! output when printed raw. Every terminal rendering passes them through [`printable`].

use std::borrow::Cow;

/// `s` with control characters (C0, DEL, C1) escaped as `\n`, `\u{1b}`...; unchanged, and not
/// copied, when it has none.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape_where(s, char::is_control)
}

/// A whole rendered text (a report, a table) made safe for a terminal: like [`printable`] but
/// keeping its own line breaks and tabs.
pub fn printable_text(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| c.is_control() && c != '\n' && c != '\t')
}

fn escape_where(s: &str, bad: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("rate=5 ok ü"), Cow::Borrowed(_)));
        assert_eq!(printable("a\x1b[2Jb\nc\u{9b}d"), "a\\u{1b}[2Jb\\nc\\u{9b}d");
        assert_eq!(printable_text("a\x1b[2J\tb\n"), "a\\u{1b}[2J\tb\n");
    }
}
