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
}
