//! What the answers read from a request: which endpoint it is for, whether it asks to
//! stream and for usage, its token limit, and the words of its texts (token counts
//! are word counts, and a streamed reply is sent a word per event).

use serde_json::{Map, Value};

/// The endpoints with a JSON request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

pub(crate) fn wants_stream(request: &Map<String, Value>) -> bool {
    request.get("stream").and_then(Value::as_bool) == Some(true)
}

pub(crate) fn wants_usage(request: &Map<String, Value>) -> bool {
    request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// `max_completion_tokens`, else `max_tokens`.
pub(crate) fn token_limit(request: &Map<String, Value>) -> Option<usize> {
    request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_u64)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Splits `text` into words, each with the whitespace before it, so the pieces
/// concatenate back to `text`.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() && in_word {
            words.push(std::mem::take(&mut current));
            in_word = false;
        } else if !c.is_whitespace() {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Keeps at most `limit` words; `true` when some were dropped.
pub(crate) fn limit_words(mut words: Vec<String>, limit: Option<usize>) -> (Vec<String>, bool) {
    match limit {
        Some(limit) if words.len() > limit => {
            words.truncate(limit);
            (words, true)
        }
        _ => (words, false),
    }
}

pub(crate) fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_concatenate_back() {
        for text in ["", "a", " a  b\nc ", "héllo wörld"] {
            assert_eq!(words(text).concat(), text);
        }
        assert_eq!(words("a b  c"), ["a", " b", "  c"]);
    }
}
