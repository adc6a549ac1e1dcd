//! Values quoted in error messages: bounded, so a 5 MB value (or a secret pasted into the
//! wrong field) is never echoed whole by `config check` or the journal.

/// Up to 60 characters of `text`, quoted and escaped, with "..." when cut.
pub fn excerpt(text: &str) -> String {
    format!("{:?}", shorten(text, 60))
}

/// At most `max` characters of `text`, with "..." when cut.
pub fn shorten(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_whole_long_ones_cut_control_characters_escaped() {
        assert_eq!(excerpt("eni-1"), "\"eni-1\"");
        assert_eq!(shorten("abcdef", 3), "abc...");
        assert_eq!(shorten("abc", 3), "abc");
        let long = "x".repeat(5_000_000);
        let cut = excerpt(&long);
        assert_eq!(cut.len(), 60 + 3 + 2);
        assert_eq!(excerpt("a\u{1b}[2J\nb"), "\"a\\u{1b}[2J\\nb\"");
    }
}
