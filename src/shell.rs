//! Words as a POSIX shell reads them back: the launchers' commands and the command line a
//! run records.

/// Quotes a word for a POSIX shell (`'...'`, a `'` inside as `'\''`).
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A word as a shell reads it back: quoted when it is empty or holds a special character.
pub fn quoted(word: String) -> String {
    if word.is_empty() || word.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
        shell_quote(&word)
    } else {
        word
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_word_reads_back_as_itself() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(quoted("plain".into()), "plain");
        assert_eq!(quoted(String::new()), "''");
        assert_eq!(quoted("two words".into()), "'two words'");
        assert_eq!(quoted("$HOME".into()), "'$HOME'");
    }
}
