//! Python's `repr()` of the few value kinds fstest and fsdump print (`bytes`, one-character
//! ASCII `str`), so that zodbctl's messages are byte-for-byte those of the Python tools.

/// `repr(b)` for a Python `bytes` object: `b'/ bob'`, `b"it's"`, `b'\xc3\xa9'`.
pub fn bytes_repr(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() + 3);
    out.push('b');
    push_quoted(&mut out, b.iter().map(|&c| c as char), |c| {
        c == ' ' || c.is_ascii_graphic()
    });
    out
}

/// `repr(s)` for a Python `str` made of ASCII characters (a transaction status decoded with
/// `bytes.decode('ascii')`, as FileStorage does): `' '`, `'p'`, `'\x00'`.
///
/// Python's `str` repr keeps printable non-ASCII characters; callers only pass ASCII, and any
/// non-ASCII character is escaped as `\xhh`/`\uhhhh` defensively.
pub fn ascii_str_repr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s.chars(), |c| c == ' ' || c.is_ascii_graphic());
    out
}

/// Python's quoting rule: single quotes unless the text contains `'` and no `"`.
fn push_quoted(
    out: &mut String,
    chars: impl Iterator<Item = char> + Clone,
    printable: impl Fn(char) -> bool,
) {
    let has_single = chars.clone().any(|c| c == '\'');
    let has_double = chars.clone().any(|c| c == '"');
    let quote = if has_single && !has_double { '"' } else { '\'' };
    out.push(quote);
    for c in chars {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_like_python() {
        assert_eq!(bytes_repr(b"/ bob"), "b'/ bob'");
        assert_eq!(bytes_repr(b""), "b''");
        assert_eq!(bytes_repr(b"x"), "b'x'");
        assert_eq!(bytes_repr(b"it's"), "b\"it's\"");
        assert_eq!(bytes_repr(b"'\""), "b'\\'\"'");
        assert_eq!(
            bytes_repr(b"a\\b\t\n\r\x00\x7f"),
            "b'a\\\\b\\t\\n\\r\\x00\\x7f'"
        );
        assert_eq!(bytes_repr("é".as_bytes()), "b'\\xc3\\xa9'");
    }

    #[test]
    fn ascii_str_like_python() {
        assert_eq!(ascii_str_repr(" "), "' '");
        assert_eq!(ascii_str_repr("p"), "'p'");
        assert_eq!(ascii_str_repr("'"), "\"'\"");
        assert_eq!(ascii_str_repr("\x00"), "'\\x00'");
        assert_eq!(ascii_str_repr("\x7f"), "'\\x7f'");
    }
}
