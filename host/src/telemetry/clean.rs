//! Client-supplied text made safe to log and to echo: cut to a bounded length (a
//! 1 MB model name must not make a 1 MB log line or error body), and characters
//! that change how a log reads escaped — control characters, Unicode format
//! characters (bidirectional overrides such as U+202E, zero-width characters) and
//! line and paragraph separators (U+2028, U+2029, which JavaScript-based log
//! viewers take for line breaks).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest client-supplied text Berry logs or echoes, in characters.
pub const MAX_ECHO_CHARS: usize = 256;

/// `text` cut to [`MAX_ECHO_CHARS`], marked as cut (with its full length).
pub fn clip(text: &str) -> Cow<'_, str> {
    // Bytes bound characters from above: most texts need no count at all.
    if text.len() <= MAX_ECHO_CHARS {
        return Cow::Borrowed(text);
    }
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…(cut: {} bytes in all)", &text[..end], text.len())),
    }
}

/// Whether `c` must not reach a log line as itself.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_format_or_separator(c)
}

/// Unicode's format characters (category Cf) and the line and paragraph separators
/// (Zl, Zp).
fn is_format_or_separator(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// `text` with every unsafe character written as `\u{XXXX}`: for free text that
/// goes into a log message.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
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
    fn long_text_is_cut_and_says_so() {
        assert_eq!(clip("gpt-4"), "gpt-4");
        let long = "é".repeat(1000);
        let cut = clip(&long);
        assert!(cut.starts_with(&"é".repeat(256)) && cut.ends_with("…(cut: 2000 bytes in all)"), "{cut}");
        assert_eq!(cut.chars().filter(|c| *c == 'é').count(), 256);
    }

    #[test]
    fn format_and_separator_characters_are_escaped() {
        assert_eq!(
            escape("a\u{202E}b\u{2028}c\u{2029}d\u{200B}e\u{7}"),
            "a\\u{202e}b\\u{2028}c\\u{2029}d\\u{200b}e\\u{0007}"
        );
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    }
}
