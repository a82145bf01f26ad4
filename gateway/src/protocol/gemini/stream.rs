//! Reading a Gemini stream (`:streamGenerateContent?alt=sse`): every `data:` event is
//! one `GenerateContentResponse` chunk, and nothing marks the end.
//!
//! A [`GeminiStream`] is the protocol's [`StreamAccumulator`]: it parses each event's
//! JSON once (leniently and borrowing, see `wire`) and merges it into an [`Answer`],
//! as a whole body would be. A chunk with an `error` member (Google's `{"error":
//! {code, message, status}}`, which a stream sends when it fails midway) is the
//! stream's error, as is any data of an `event: error`. Data that is not a JSON
//! object is malformed. The answer is complete once every candidate has a
//! `finishReason` (or the prompt was blocked), which the SSE reader asks through
//! [`StreamAccumulator::saw_final`] since the protocol's final event is
//! [`FinalEvent::Accumulator`](crate::protocol::FinalEvent::Accumulator).

use celgate_engine::exchange::Exchange;
use serde_json::Value;

use super::super::limits::{MAX_ERROR_BYTES, truncate};
use super::super::sse::SseEvent;
use super::super::stream::{EventRead, StreamAccumulator, StreamEnd};
use super::answer::Answer;
use super::wire::RawChunk;

/// Accumulates the events of one Gemini stream.
#[derive(Debug, Default)]
pub(super) struct GeminiStream {
    answer: Answer,
    /// The message of the first error the stream reported.
    error: Option<String>,
    /// The data of the first error, when it was JSON (the body of a stream that
    /// carried nothing else).
    error_body: Option<String>,
}

impl GeminiStream {
    /// Records the first error the stream reported.
    fn record_error(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let (message, is_json) = match serde_json::from_slice::<Value>(data) {
            Ok(v) => (error_message(&v), true),
            Err(_) => (String::from_utf8_lossy(data).into_owned(), false),
        };
        self.error = Some(truncate(message, MAX_ERROR_BYTES));
        if is_json {
            self.error_body = Some(String::from_utf8_lossy(data).into_owned());
        }
    }
}

impl StreamAccumulator for GeminiStream {
    fn event(&mut self, event: &SseEvent<'_>) -> EventRead {
        let is_error = event.name == b"error";
        let data = event.data.trim_ascii();
        let chunk = match data.first() {
            Some(b'{') => serde_json::from_slice::<RawChunk<'_>>(data).ok(),
            _ => None,
        };
        match chunk {
            Some(chunk) if !is_error && chunk.error.is_none() => {
                let output = chunk.candidates.items.iter().any(|c| c.content.is_some());
                self.answer.apply(chunk);
                if output {
                    return EventRead::Output;
                }
            }
            Some(_) => self.record_error(data),
            None if is_error => self.record_error(data),
            None => return EventRead::Malformed,
        }
        EventRead::Read
    }

    fn saw_final(&self) -> bool {
        self.answer.complete()
    }

    /// Writes the response side (see [`Answer::write`]) and `response_body`: the
    /// answer rendered as the equivalent whole `GenerateContentResponse`, or the error
    /// payload when the stream carried nothing else.
    fn finish(self: Box<Self>, ex: &mut Exchange, render_body: bool) -> StreamEnd {
        let GeminiStream {
            answer,
            error,
            error_body,
        } = *self;
        if !render_body {
            // Nothing reads the body.
        } else if answer.saw_chunk {
            ex.response_body = answer.render();
        } else if let Some(body) = error_body {
            ex.response_body = Some(body);
        }
        let truncated = answer.write(ex);
        StreamEnd { error, truncated }
    }
}

/// The message of an error payload: `error.message`, a bare `error` string, or the
/// JSON itself.
fn error_message(v: &Value) -> String {
    let err = v.get("error").filter(|e| !e.is_null()).unwrap_or(v);
    match err {
        Value::String(s) => s.clone(),
        Value::Object(m) => match m.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => err.to_string(),
        },
        other => other.to_string(),
    }
}
