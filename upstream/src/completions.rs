//! `POST /v1/completions`: the legacy `text_completion`, ` Scripted completion of:
//! {prompt}`, as one body or streamed a word per event (the same chunk shape, as
//! OpenAI streams it).

use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::CREATED;
use crate::body::ScriptedBody;
use crate::pace::Pace;
use crate::request::{limit_words, token_limit, wants_usage, word_count, words};
use crate::wire::{Ids, json_response, sse_response};

/// The answer to a legacy completion request, paced as `pace` says.
pub(crate) fn completions(
    request: &Map<String, Value>,
    ids: &Ids<'_>,
    pace: &Pace,
) -> Response<ScriptedBody> {
    let prompt = match request.get("prompt") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let prompt_tokens = word_count(&prompt).max(1);
    let (words, truncated) = limit_words(
        words(&format!(" Scripted completion of: {prompt}")),
        token_limit(request),
    );
    let finish_reason = if truncated { "length" } else { "stop" };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": words.len(),
        "total_tokens": prompt_tokens + words.len()
    });
    let id = format!("cmpl-scripted{}", ids.seq);

    if !pace.streams(request) {
        let body = json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": ids.model,
            "choices": [{
                "text": words.concat(),
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason
            }],
            "usage": usage
        });
        return json_response(StatusCode::OK, ids.seq, &body);
    }

    let include_usage = wants_usage(request);
    let chunk = |text: &str, finish_reason: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": ids.model,
            "choices": [{
                "text": text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason
            }]
        });
        if include_usage && let Value::Object(object) = &mut chunk {
            object.insert("usage".to_owned(), Value::Null);
        }
        chunk
    };
    let mut chunks: Vec<Value> = words.iter().map(|w| chunk(w, Value::Null)).collect();
    chunks.push(chunk("", json!(finish_reason)));
    if include_usage {
        chunks.push(json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": ids.model,
            "choices": [],
            "usage": usage
        }));
    }
    sse_response(ids.seq, &chunks, pace)
}
