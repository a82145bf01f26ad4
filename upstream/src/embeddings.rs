//! `POST /v1/embeddings`: one vector per input (a string, a token array, or an array
//! of either), 8 dimensions unless `dimensions` asks for others, derived from a hash
//! of the input so the same input always gets the same vector; as JSON floats, or as
//! base64 of little-endian `f32`s when `encoding_format` is `base64` (what the OpenAI
//! SDKs send by default).

use std::hash::Hasher as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::body::ScriptedBody;
use crate::request::word_count;
use crate::wire::{Ids, json_response};

/// Dimensions of an embedding when the request does not ask for `dimensions`.
pub const EMBEDDING_DIMENSIONS: usize = 8;

/// Most dimensions an embedding request may ask for (keeps responses small).
const MAX_EMBEDDING_DIMENSIONS: usize = 4096;

/// The answer to an embeddings request.
pub(crate) fn embeddings(request: &Map<String, Value>, ids: &Ids<'_>) -> Response<ScriptedBody> {
    // One item per input: a string, a token array, or an array of either.
    let inputs: Vec<&Value> = match request.get("input") {
        Some(Value::Array(items)) if !items.is_empty() && !items.iter().all(|i| i.is_number()) => {
            items.iter().collect()
        }
        Some(input) => vec![input],
        None => Vec::new(),
    };
    let dimensions = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .filter(|d| (1..=MAX_EMBEDDING_DIMENSIONS).contains(d))
        .unwrap_or(EMBEDDING_DIMENSIONS);
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");

    let mut prompt_tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let (text, tokens) = match input {
                Value::String(text) => (text.clone(), word_count(text)),
                Value::Array(tokens) => (input.to_string(), tokens.len()),
                other => (other.to_string(), 1),
            };
            prompt_tokens += tokens;
            let vector = embedding(&text, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(BASE64.encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt_tokens = prompt_tokens.max(1);
    let body = json!({
        "object": "list",
        "data": data,
        "model": ids.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    });
    json_response(StatusCode::OK, ids.seq, &body)
}

/// A deterministic unit-range vector for `text`, rounded to 4 decimals.
fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    // FNV-1a seeds SplitMix64: both stable across runs and platforms.
    let mut hash = fnv::FnvHasher::default();
    hash.write(text.as_bytes());
    let mut state = hash.finish();
    (0..dimensions)
        .map(|_| {
            state = splitmix64(state);
            // 24 random bits → [-1, 1), rounded so the JSON stays short.
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            ((unit * 2.0 - 1.0) * 10_000.0).round() / 10_000.0
        })
        .collect()
}

/// One step of SplitMix64.
fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_embeddings_are_the_little_endian_f32s() {
        let request = json!({"model": "m", "input": "c", "encoding_format": "base64"});
        let Value::Object(request) = request else {
            unreachable!()
        };
        let ids = Ids { seq: 1, model: "m" };
        let response = embeddings(&request, &ids);
        let body: Vec<u8> = response
            .body()
            .events
            .iter()
            .flat_map(|b| b.to_vec())
            .collect();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let encoded = body["data"][0]["embedding"].as_str().unwrap();
        let floats: Vec<f32> = BASE64
            .decode(encoded)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(floats, embedding("c", EMBEDDING_DIMENSIONS));
        // RFC 4648 padding: 8 floats are 32 bytes, 44 characters with one `=`.
        assert_eq!(encoded.len(), 44);
        assert!(encoded.ends_with('=') && !encoded.ends_with("=="));
    }
}
