//! Values quoted in error messages: bounded, so a 5 MB value (or a secret pasted into the
//! wrong field) is never echoed whole by `config check` or the journal.

/// Up to 60 characters of `text`, quoted and escaped, with "..." when cut.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 60;
    let mut out: String = text.chars().take(MAX).collect();
    if text.chars().nth(MAX).is_some() {
        out.push_str("...");
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_whole_long_ones_cut_control_characters_escaped() {
        assert_eq!(excerpt("eni-1"), "\"eni-1\"");
        let long = "x".repeat(5_000_000);
        let cut = excerpt(&long);
        assert_eq!(cut.len(), 60 + 3 + 2);
        assert_eq!(excerpt("a\u{1b}[2J\nb"), "\"a\\u{1b}[2J\\nb\"");
    }
}
