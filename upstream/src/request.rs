//! What the answers read from a request: which endpoint it is for, whether it asks to
//! stream and for usage, its token limit, and the words of its texts (token counts
//! are word counts, and a streamed reply is sent a word per event).

use serde_json::{Map, Value};

use crate::dialect::Dialect;

/// The endpoints with a JSON request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    MessagesCountTokens,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Gemini `:generateContent`.
    GeminiGenerate,
    /// Gemini `:streamGenerateContent`; `sse`: asked with `alt=sse` (else the chunks
    /// are one JSON array).
    GeminiStream {
        sse: bool,
    },
    /// Gemini `:countTokens`.
    GeminiCountTokens,
}

impl Endpoint {
    /// The protocol's error shape.
    pub(crate) fn dialect(self) -> Dialect {
        match self {
            Endpoint::Chat | Endpoint::Completions | Endpoint::Embeddings => Dialect::OpenAi,
            Endpoint::Responses => Dialect::Responses,
            Endpoint::Messages | Endpoint::MessagesCountTokens => Dialect::Anthropic,
            Endpoint::GeminiGenerate
            | Endpoint::GeminiStream { .. }
            | Endpoint::GeminiCountTokens => Dialect::Gemini,
        }
    }

    /// Whether its answer can be a stream.
    pub(crate) fn streams(self) -> bool {
        !matches!(
            self,
            Endpoint::Embeddings | Endpoint::MessagesCountTokens | Endpoint::GeminiCountTokens
        )
    }

    /// Whether it answers a conversation (the `echo-key-*` scripts apply).
    pub(crate) fn converses(self) -> bool {
        self.streams() && self != Endpoint::Completions
    }
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

/// The member of `request` at a JSON pointer (`/a/b`), as `Value::pointer` finds it.
pub(crate) fn at<'a>(request: &'a Map<String, Value>, pointer: &str) -> Option<&'a Value> {
    let path = pointer.strip_prefix('/')?;
    match path.split_once('/') {
        Some((first, rest)) => request.get(first)?.pointer(&format!("/{rest}")),
        None => request.get(path),
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
