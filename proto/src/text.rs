//! Text from a peer, made safe to log and to keep: control characters
//! escaped (a newline or an ANSI escape in a host name must not forge log
//! lines or repaint a terminal) and length bounded (a peer must not fill the
//! disk through our logs).

/// Longest peer text written to a log line, in characters.
pub const MAX_LOGGED_CHARS: usize = 256;

/// `text` with control characters escaped (`\n`, `\u{1b}`...) and cut to
/// `max_chars`, saying how much was cut.
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    for (shown, (i, c)) in text.char_indices().enumerate() {
        if shown == max_chars {
            out.push_str(&format!("... ({} more bytes)", text.len() - i));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`printable`] with the log bound.
pub fn loggable(text: &str) -> String {
    printable(text, MAX_LOGGED_CHARS)
}

/// `text` cut to at most `max_bytes` at a character boundary (for what an
/// agent keeps from a peer).
pub fn truncated(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines_or_escape_sequences() {
        let forged = "node1\nERROR forged line\u{1b}[31mred";
        let safe = loggable(forged);
        assert!(!safe.chars().any(char::is_control), "{safe:?}");
        assert_eq!(safe, "node1\\nERROR forged line\\u{1b}[31mred");
    }

    #[test]
    fn long_text_is_cut_with_what_was_left_out() {
        let long = "é".repeat(1000);
        let cut = printable(&long, 10);
        assert_eq!(cut, format!("{}... (1980 more bytes)", "é".repeat(10)));
        assert_eq!(truncated(&long, 5), "éé");
        assert_eq!(truncated("short", 100), "short");
    }
}
