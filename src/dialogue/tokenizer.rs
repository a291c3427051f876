//! Token counting with a real BPE tokenizer (OpenAI's o200k_base via
//! tiktoken-rs, tables embedded in the crate: nothing is downloaded). Other
//! vendors' tokenizers differ by a few percent; the count is used to fit
//! history into context windows and to estimate usage a backend did not
//! report.

use tiktoken_rs::CoreBPE;

fn bpe() -> &'static CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

/// Loads the tokenizer tables (about 100 ms) so the first turn does not pay.
pub fn warm_up() {
    let _ = bpe();
}

pub fn count_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    bpe().encode_ordinary(text).len() as u64
}

/// `text` cut to at most `max` tokens (whole tokens, valid UTF-8).
pub fn truncate_to_tokens(text: &str, max: usize) -> String {
    let tokens = bpe().encode_ordinary(text);
    if tokens.len() <= max {
        return text.to_owned();
    }
    // A cut can split a multi-byte character; back off until it decodes.
    (0..=max.min(4))
        .find_map(|back| bpe().decode(&tokens[..max - back]).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_real_tokens_not_bytes() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("hello"), 1);
        // Common words are single tokens; the byte heuristic would say ~11.
        let n = count_tokens("the quick brown fox jumps over the lazy dog");
        assert!((9..=10).contains(&n), "{n}");
    }

    #[test]
    fn truncation_keeps_whole_tokens() {
        let text = "the quick brown fox jumps over the lazy dog";
        assert_eq!(truncate_to_tokens(text, 100), text);
        let cut = truncate_to_tokens(text, 3);
        assert_eq!(cut, "the quick brown");
        let accented = truncate_to_tokens("héllo wörld ünïcode", 2);
        assert!(!accented.is_empty() && "héllo wörld ünïcode".starts_with(&accented));
    }
}
