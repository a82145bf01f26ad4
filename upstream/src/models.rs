//! `GET /v1/models`: a `list` of a few model ids, so the gateway's `/v1/models` has
//! something to merge.

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
