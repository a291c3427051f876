//! Blocked terms, matched with one multi-pattern automaton (aho-corasick):
//! a user message containing one is refused; a reply is cut just before the
//! first one (finish reason CONTENT_FILTER). While streaming, the last few
//! bytes are held back until it is clear they do not begin a blocked term,
//! so no part of one ever reaches the client.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

pub struct ContentFilter {
    matcher: AhoCorasick,
    /// Longest term, in bytes: how much text a stream holds back.
    longest: usize,
    check_output: bool,
}

impl ContentFilter {
    /// `None` when no terms are configured.
    pub fn new(terms: &[String], check_output: bool) -> Result<Option<ContentFilter>, String> {
        let terms: Vec<&str> = terms
            .iter()
            .map(String::as_str)
            .filter(|t| !t.is_empty())
            .collect();
        if terms.is_empty() {
            return Ok(None);
        }
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(&terms)
            .map_err(|e| e.to_string())?;
        Ok(Some(ContentFilter {
            longest: terms.iter().map(|t| t.len()).max().unwrap_or(0),
            matcher,
            check_output,
        }))
    }

    /// Byte offset of the first blocked term in `text`.
    pub fn first_match(&self, text: &str) -> Option<usize> {
        self.matcher.find(text).map(|m| m.start())
    }

    pub fn checks_output(&self) -> bool {
        self.check_output
    }

    /// A filter for one streamed reply.
    pub fn stream(&self) -> StreamFilter<'_> {
        StreamFilter {
            filter: self,
            text: String::new(),
            released: 0,
            blocked: false,
        }
    }
}

/// Output filtering of one reply as it streams.
pub struct StreamFilter<'a> {
    filter: &'a ContentFilter,
    text: String,
    /// Bytes of `text` already handed out.
    released: usize,
    blocked: bool,
}

impl StreamFilter<'_> {
    /// Adds a piece; returns the text now safe to send (maybe empty). Once
    /// a blocked term is seen, nothing more is released.
    pub fn push(&mut self, piece: &str) -> String {
        if self.blocked {
            return String::new();
        }
        self.text.push_str(piece);
        let safe_end = match self.filter.first_match(&self.text) {
            Some(start) => {
                self.blocked = true;
                self.text.truncate(start);
                start
            }
            // Anything closer to the end than the longest term may be the
            // start of one.
            None => floor_char_boundary(
                &self.text,
                self.text.len().saturating_sub(self.filter.longest - 1),
            ),
        };
        self.release_to(safe_end.max(self.released))
    }

    fn release_to(&mut self, end: usize) -> String {
        let out = self.text[self.released..end].to_owned();
        self.released = end;
        out
    }

    /// At the end: the held-back rest, and whether the reply was cut.
    pub fn finish(&mut self) -> (String, bool) {
        let rest = self.release_to(self.text.len());
        (rest, self.blocked)
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The reply as released (cut before any blocked term).
    pub fn text(&self) -> &str {
        &self.text
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> ContentFilter {
        ContentFilter::new(&["forbidden".into(), "Secret Sauce".into()], true)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn finds_terms_in_any_case() {
        let f = filter();
        assert_eq!(f.first_match("the SECRET sauce recipe"), Some(4));
        assert_eq!(f.first_match("all fine"), None);
        assert!(ContentFilter::new(&[], true).unwrap().is_none());
    }

    #[test]
    fn a_term_split_across_pieces_never_leaks() {
        let f = filter();
        let mut s = f.stream();
        let mut sent = String::new();
        for piece in ["this is ", "forb", "idden ", "stuff"] {
            sent.push_str(&s.push(piece));
        }
        let (rest, cut) = s.finish();
        sent.push_str(&rest);
        assert!(cut);
        assert_eq!(sent, "this is ");
        assert_eq!(s.text(), "this is ");
    }

    #[test]
    fn clean_text_is_released_whole_by_the_end() {
        let f = filter();
        let mut s = f.stream();
        let mut sent = String::new();
        for piece in ["héllo ", "wörld, ", "nothing to see"] {
            sent.push_str(&s.push(piece));
        }
        assert!(
            sent.len() < "héllo wörld, nothing to see".len(),
            "a tail is held back"
        );
        let (rest, cut) = s.finish();
        sent.push_str(&rest);
        assert!(!cut);
        assert_eq!(sent, "héllo wörld, nothing to see");
    }
}
