//! Parse: an LLM call's body, read whole, as its protocol's request.
//!
//! The facts go into the exchange (model, prompt, parameters: what the span and
//! the router read), and the bytes to forward are decided here: a body with a
//! duplicate key is forwarded with each key once, holding the value celgate routed
//! and traced by; a UTF-8 byte-order mark, tolerated, is not forwarded. The model
//! that routes is the `x-ai-eg-model` header's, else the body's.

use bytes::Bytes;
use celgate_engine::exchange::Exchange;
use http::HeaderMap;
use http::StatusCode;

use super::failure::Failure;
use crate::error_type::ErrorType;
use crate::protocol::Protocol;

/// The header that overrides the body's `model` for routing (Envoy AI Gateway's).
pub const MODEL_HEADER: &str = "x-ai-eg-model";

/// A UTF-8 byte-order mark, which some clients put before a JSON body.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses `bytes` as a request of `protocol` into `exchange`; returns the bytes to
/// forward and the model that routes the call.
pub fn request(
    protocol: &dyn Protocol,
    bytes: Bytes,
    headers: &HeaderMap,
    exchange: &mut Exchange,
) -> Result<(Bytes, Option<String>), Failure> {
    let facts = protocol.parse_request(&bytes, exchange).map_err(|e| {
        Failure::refused(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequest,
            e.to_string(),
        )
    })?;
    // `{"model":"a","model":"b"}` routes (and is traced) as `b`, as most JSON
    // parsers read it; an upstream whose parser keeps the first key would run `a`,
    // a model the route may not allow. Forward it with each key once.
    let bytes = if facts.duplicate_keys {
        let once = last_key_wins(&bytes);
        exchange.request_body = Some(String::from_utf8_lossy(&once).into_owned());
        once
    } else if bytes.starts_with(BOM) {
        // Tolerated here, but not JSON: the upstream gets the body as parsed.
        bytes.slice(BOM.len()..)
    } else {
        bytes
    };
    let model = header_model(headers).or_else(|| exchange.request_model.clone());
    Ok((bytes, model))
}

/// The model named by the `x-ai-eg-model` header, if any.
pub fn header_model(headers: &HeaderMap) -> Option<String> {
    headers
        .get(MODEL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The body with each top-level key once, holding its last value (nested objects
/// too: a parsed JSON map keeps the last of duplicate keys). The body was already
/// parsed, so it is a JSON object.
fn last_key_wins(bytes: &Bytes) -> Bytes {
    let body = bytes.strip_prefix(BOM).unwrap_or(bytes);
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
        .and_then(|map| serde_json::to_vec(&map))
        .map_or_else(|_| bytes.clone(), Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::chat::CHAT;
    use celgate_engine::exchange::Operation;

    fn chat() -> Exchange {
        Exchange {
            operation: Operation::Chat,
            ..Exchange::default()
        }
    }

    #[test]
    fn the_header_model_routes_and_the_body_is_forwarded_as_parsed() {
        let mut headers = HeaderMap::new();
        let body = Bytes::from_static(b"\xEF\xBB\xBF{\"model\":\"m\",\"messages\":[]}");
        let (sent, model) = request(&CHAT, body.clone(), &headers, &mut chat()).unwrap();
        assert_eq!(&sent[..], &body[3..]);
        assert_eq!(model.as_deref(), Some("m"));
        headers.insert(MODEL_HEADER, " h ".parse().unwrap());
        let mut ex = chat();
        let (_, model) = request(&CHAT, body, &headers, &mut ex).unwrap();
        assert_eq!(model.as_deref(), Some("h"));
        assert_eq!(ex.request_model.as_deref(), Some("m"));
    }

    #[test]
    fn a_body_that_is_not_a_request_is_refused_as_invalid() {
        let failure = request(
            &CHAT,
            Bytes::from_static(b"[1]"),
            &HeaderMap::new(),
            &mut chat(),
        )
        .unwrap_err();
        assert_eq!(failure.error_type, ErrorType::InvalidRequest);
        assert_eq!(failure.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn duplicate_keys_are_forwarded_once_with_the_last_value() {
        let once = last_key_wins(&Bytes::from_static(
            br#"{"model":"a","messages":[{"role":"user","content":"x","content":"y"}],"model":"b"}"#,
        ));
        let v: serde_json::Value = serde_json::from_slice(&once).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model": "b", "messages": [{"role": "user", "content": "y"}]})
        );
        assert_eq!(
            String::from_utf8_lossy(&once).matches("\"model\"").count(),
            1
        );
        let bom = last_key_wins(&Bytes::from_static(b"\xEF\xBB\xBF{\"m\":1,\"m\":2}"));
        assert_eq!(&bom[..], br#"{"m":2}"#);
    }
}
