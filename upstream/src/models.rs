//! The model lists: OpenAI's `GET /v1/models` (a `list` of a few model ids, so the
//! gateway's `/v1/models` has something to merge) and Gemini's `GET /v1beta/models`
//! and `GET /v1beta/models/{model}`.

use serde_json::{Value, json};

use crate::CREATED;

/// Models listed by `GET /v1/models`.
const LISTED_MODELS: [&str; 5] = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "scripted",
];

/// The `list` answer.
pub(crate) fn models() -> Value {
    json!({
        "object": "list",
        "data": LISTED_MODELS.iter().map(|id| json!({
            "id": id,
            "object": "model",
            "created": CREATED,
            "owned_by": "scripted"
        })).collect::<Vec<_>>()
    })
}

/// Models listed by Gemini's `GET /v1beta/models`.
const GEMINI_MODELS: [&str; 3] = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"];

/// Gemini's `GET /v1beta/models`: `{"models": [...]}`.
pub(crate) fn gemini_models() -> Value {
    json!({"models": GEMINI_MODELS.iter().map(|id| gemini_model(id)).collect::<Vec<_>>()})
}

/// One Gemini `Model`; any name is answered, as any model is scripted.
pub(crate) fn gemini_model(id: &str) -> Value {
    json!({
        "name": format!("models/{id}"),
        "version": "001",
        "displayName": id,
        "description": "A scripted model: it answers deterministically, without a model.",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": true
    })
}
