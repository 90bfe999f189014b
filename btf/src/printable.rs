//! Names read from untrusted input (BTF strings, ELF symbols and sections), made safe
//! to print on a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `name` with every character that could change what a terminal shows escaped:
/// control characters (a newline that would start a spoofed line, `ESC` that would
/// start an escape sequence) and the Unicode bidirectional overrides, as `\n`, `\t`,
/// `\r` or `\u{..}`; a backslash is doubled so the escaping cannot be forged. A name
/// with none of these (every real one) is returned as it is.
///
/// Every text rendering of names in the workspace goes through this function; JSON
/// output escapes by its own rules.
#[must_use]
pub fn printable(name: &str) -> Cow<'_, str> {
    if !name.chars().any(needs_escape) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        // Bidirectional embeddings, overrides and isolates reorder the text around them.
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn plain_names_are_borrowed_unchanged() {
        for n in ["flow_key", ".rodata", "struct bpf_map *", "é"] {
            assert!(matches!(printable(n), std::borrow::Cow::Borrowed(s) if s == n));
        }
    }

    #[test]
    fn control_characters_and_overrides_are_escaped() {
        assert_eq!(printable("a\nmap x: reuse"), "a\\nmap x: reuse");
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(printable("tab\there\r"), "tab\\there\\r");
        assert_eq!(printable("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(printable("del\u{7f}"), "del\\u{7f}");
        assert_eq!(printable("c1\u{9b}"), "c1\\u{9b}");
        // A backslash is doubled, so `\n` spelled out cannot pass for an escaped newline.
        assert_eq!(printable("x\\ny"), "x\\\\ny");
        for s in ["a\nb", "\u{1b}", "\u{0}", "\u{202e}", "\\"] {
            assert!(!printable(s).chars().any(char::is_control), "{s:?}");
        }
    }
}
