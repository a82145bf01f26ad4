//! OpenAI request bodies the tests send, and small edits of them.
//!
//! Depends on no celgate crate, so the scripted upstream's own tests include it too.
#![allow(dead_code)]

use serde_json::{Value, json};

/// A chat request: a system and a user message.
pub fn chat_body(model: &str, user: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": user}
        ]
    })
}

pub fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

/// The chat request the scripted upstream's tests ask: a system and a user message
/// (`What is CEL?`), whose answer is `Scripted reply to: What is CEL?`.
pub fn chat_request() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is CEL?"}
        ]
    })
}

/// `request` with member `key` set to `value`.
pub fn with(mut request: Value, key: &str, value: Value) -> Value {
    request
        .as_object_mut()
        .expect("a JSON object")
        .insert(key.to_owned(), value);
    request
}
