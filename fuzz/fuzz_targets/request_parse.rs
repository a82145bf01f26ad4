//! Arbitrary bytes as a request body (`celgate::protocol::openai::parse_request`, every
//! operation) and as a response body (`parse_response`, every operation).
//!
//! Must hold: no panic; a body is refused only when a JSON parser (serde_json's
//! `Value`, which like most parsers keeps the last of duplicate keys) rejects it, finds
//! no object, or finds a modelled field of the wrong type; and when it parses, what it
//! reports is what the JSON parser finds: the model, `stream`, `tools`, every other
//! top-level key as a parameter (once, with its last value), one prompt message per
//! chat message, and the body itself.
#![no_main]

use std::collections::BTreeMap;

use celgate::protocol::ParseError;
use celgate::protocol::openai::{parse_request, parse_response};
use celgate_engine::exchange::{Exchange, Operation};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const OPERATIONS: [Operation; 4] = [
    Operation::Chat,
    Operation::TextCompletion,
    Operation::Embeddings,
    Operation::Other,
];

const NOT_PARAMS: [&str; 6] = ["model", "messages", "tools", "stream", "prompt", "input"];

fn check_request(op: Operation, data: &[u8], json: Option<&Value>) {
    let mut ex = Exchange::default();
    let result = parse_request(op, data, &mut ex);
    let body = String::from_utf8_lossy(data);
    assert_eq!(
        ex.request_body.as_deref(),
        Some(&*body),
        "the body is kept, parsed or not"
    );
    let map = match (&result, json) {
        (Ok(_), Some(Value::Object(map))) => map,
        (Ok(_), other) => panic!("{op:?}: accepted, but serde_json finds {other:?}"),
        (Err(ParseError::InvalidJson { .. }), None) => return,
        // A top-level non-object is refused as such without reading it through, so
        // it may hold what a strict parser would call invalid.
        (Err(ParseError::NotAnObject { .. }), v) if !v.is_some_and(Value::is_object) => return,
        (
            Err(ParseError::InvalidField { .. } | ParseError::MissingField { .. }),
            Some(Value::Object(_)),
        ) => return,
        (Err(e), other) => panic!("{op:?}: refused ({e}), but serde_json finds {other:?}"),
    };
    assert_eq!(ex.operation, op);
    assert_eq!(
        ex.request_model.as_deref(),
        map.get("model").and_then(Value::as_str)
    );
    assert_eq!(
        ex.streaming,
        map.get("stream").and_then(Value::as_bool).unwrap_or(false)
    );
    let tools = match map.get("tools") {
        Some(Value::Array(items)) => items.as_slice(),
        _ => &[],
    };
    assert_eq!(ex.tools, tools);
    let expected: BTreeMap<&str, &Value> = map
        .iter()
        .filter(|(k, _)| !NOT_PARAMS.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let params: BTreeMap<&str, &Value> = ex.params.iter().map(|(k, v)| (k.as_str(), v)).collect();
    assert_eq!(
        params.len(),
        ex.params.len(),
        "a parameter listed twice: {:?}",
        ex.params
    );
    assert_eq!(params, expected);
    if op == Operation::Chat {
        let messages = match map.get("messages") {
            Some(Value::Array(items)) => items.len(),
            _ => 0,
        };
        assert_eq!(ex.prompt.len(), messages);
    }
}

fn check_response(op: Operation, data: &[u8], strict: Option<&Value>, json: Option<&Value>) {
    let mut ex = Exchange::default();
    let result = parse_response(op, data, &mut ex);
    let map: &Map<String, Value> = match (&result, json) {
        (Ok(()), Some(Value::Object(map))) => map,
        (Ok(()), other) => panic!("{op:?}: accepted, but serde_json finds {other:?}"),
        (Err(ParseError::InvalidJson { .. }), _) if strict.is_none() => return,
        // A top-level non-object is refused as such without reading it through, so
        // it may hold what a strict parser would call invalid.
        (Err(ParseError::NotAnObject { .. }), v) if !v.is_some_and(Value::is_object) => return,
        (Err(e), other) => panic!("{op:?}: refused ({e}), but serde_json finds {other:?}"),
    };
    assert_eq!(
        ex.response_model.as_deref(),
        map.get("model").and_then(Value::as_str)
    );
    assert_eq!(
        ex.response_id.as_deref(),
        map.get("id").and_then(Value::as_str)
    );
    let choices = match map.get("choices") {
        Some(Value::Array(items)) if op != Operation::Embeddings => {
            items.iter().filter(|c| c.is_object()).count()
        }
        _ => 0,
    };
    assert_eq!(ex.choices.len(), choices);
    if let (Some(input), Some(output), Some(total)) =
        (ex.input_tokens, ex.output_tokens, ex.total_tokens)
    {
        // Computed when absent; otherwise as reported.
        let reported = map.get("usage").and_then(|u| u.get("total_tokens"));
        if reported.is_none_or(Value::is_null) {
            assert_eq!(input.checked_add(output), Some(total));
        }
    }
    if op == Operation::Embeddings {
        assert_eq!(
            ex.response_body, None,
            "embedding vectors never reach the trace"
        );
    } else {
        assert_eq!(
            ex.response_body.as_deref(),
            Some(&*String::from_utf8_lossy(data))
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let unmarked = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let json = serde_json::from_slice::<Value>(unmarked).ok();
    // Response parsing skips the values it does not read without checking that their
    // text is UTF-8 (a backend's odd bytes in a field nobody reads cost no model or
    // usage); what it does read must match the lossily decoded body.
    let json_lossy = json
        .clone()
        .or_else(|| serde_json::from_str::<Value>(&String::from_utf8_lossy(unmarked)).ok());
    for op in OPERATIONS {
        check_request(op, data, json.as_ref());
        check_response(op, data, json.as_ref(), json_lossy.as_ref());
    }
});
