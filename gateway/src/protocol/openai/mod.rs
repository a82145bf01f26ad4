//! OpenAI-compatible request and (non-streaming) response bodies → [`Exchange`].
//!
//! The gateway forwards bodies unchanged; this module only *reads* them so the engine
//! can describe the call. Request parsing is the one place where a malformed body is
//! refused (the client gets an OpenAI-style 400 carrying the [`ParseError`] message),
//! so it rejects only what makes the exchange unusable (not JSON, not an object,
//! `messages` that is not a list of role-carrying objects, ...) and is lenient about
//! everything else: unknown keys, extra fields, content-part types it does not know.
//! Response parsing never judges the backend: a body that is JSON but has an unexpected
//! shape simply yields less information.
//!
//! Streaming responses (`text/event-stream`) are handled by [`crate::protocol::sse`].

use std::collections::{HashMap, HashSet};
use std::fmt;

use celgate_engine::exchange::{Choice, Exchange, Message, Operation, TokenDetails, ToolCall};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::protocol::sse::MAX_TRACKED;

/// Which body a [`ParseError`] is about; part of the client-facing message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// The client's request body.
    Request,
    /// The backend's response body.
    Response,
}

impl fmt::Display for BodyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyKind::Request => "request",
            BodyKind::Response => "response",
        })
    }
}

/// Why a body could not be turned into an [`Exchange`].
///
/// The `Display` text is written for the API client: the gateway returns it verbatim as
/// the `message` of an OpenAI-style `400 invalid_request_error`, so it names the
/// offending field with a JSON-ish path (`messages[2].role`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is not a JSON document.
    #[error("{body} body is not valid JSON: {source}")]
    InvalidJson {
        body: BodyKind,
        #[source]
        source: serde_json::Error,
    },
    /// The body is JSON but its top level is not an object.
    #[error("{body} body must be a JSON object, not {found}")]
    NotAnObject { body: BodyKind, found: &'static str },
    /// A field the exchange depends on has the wrong JSON type.
    #[error("`{path}` must be {expected}, not {found}")]
    InvalidField {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    /// A field the exchange depends on is absent (or null).
    #[error("`{path}` is required")]
    MissingField { path: String },
}

/// Top-level request keys that are modelled explicitly and therefore never appear in
/// [`Exchange::params`].
const NON_PARAM_KEYS: [&str; 6] = ["model", "messages", "tools", "stream", "prompt", "input"];

/// Parses an OpenAI-compatible request body into `ex`.
///
/// Sets `operation`, `request_model`, `streaming`, `prompt` (from `messages`, `prompt`
/// or `input` depending on `operation`), `tools`, `params` (every other top-level key,
/// in request order; for a duplicated key the last value wins at the first position)
/// and `request_body`. `request_body` is set even when parsing fails, so a rejected
/// call can still be traced.
///
/// For [`Operation::Other`] only the generic fields are read; `messages` is used when
/// it is well-formed and ignored otherwise.
///
/// A top-level key given twice means its last value everywhere (`model` included), as
/// it does to most JSON parsers; [`RequestFacts::duplicate_keys`] tells the caller, so
/// the proxy can forward a body that says the same to every parser upstream.
pub fn parse_request(
    operation: Operation,
    body: &[u8],
    ex: &mut Exchange,
) -> Result<RequestFacts, ParseError> {
    ex.operation = operation;
    ex.request_body = Some(String::from_utf8_lossy(body).into_owned());

    let entries = parse_top_level(BodyKind::Request, body, KeepEntries { keep: |_| true })?;
    let duplicate_keys = {
        let mut seen = HashSet::with_capacity(entries.len());
        !entries.iter().all(|(k, _)| seen.insert(k.as_str()))
    };

    let mut model = None;
    let mut stream = None;
    let mut tools = None;
    let mut messages = None;
    let mut prompt = None;
    let mut input = None;
    let mut params = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match key.as_str() {
            "model" => model = Some(value),
            "stream" => stream = Some(value),
            "tools" => tools = Some(value),
            "messages" => messages = Some(value),
            "prompt" => prompt = Some(value),
            "input" => input = Some(value),
            _ => params.push((key, value)),
        }
    }
    debug_assert!(
        params
            .iter()
            .all(|(k, _)| !NON_PARAM_KEYS.contains(&k.as_str()))
    );

    let request_model = match model {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(invalid("model", "a string", &other)),
    };
    let streaming = match stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(other) => return Err(invalid("stream", "a boolean", &other)),
    };
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(invalid("tools", "an array", &other)),
    };
    let prompt = match operation {
        Operation::Chat => match messages {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => parse_messages(v)?,
        },
        Operation::TextCompletion => texts_as_user_messages("prompt", prompt)?,
        Operation::Embeddings => texts_as_user_messages("input", input)?,
        Operation::Other => match messages {
            Some(v @ Value::Array(_)) => parse_messages(v).unwrap_or_default(),
            _ => Vec::new(),
        },
    };

    ex.request_model = request_model;
    ex.streaming = streaming;
    ex.tools = tools;
    ex.prompt = prompt;
    ex.params = if duplicate_keys {
        dedup_last_wins(params)
    } else {
        params
    };
    Ok(RequestFacts { duplicate_keys })
}

/// What [`parse_request`] found out about a request body beyond the [`Exchange`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestFacts {
    /// The top-level object has a key more than once. JSON leaves the meaning open
    /// (RFC 8259 §4): most parsers keep the last, some the first, some refuse it.
    pub duplicate_keys: bool,
}

/// Parses a non-streaming OpenAI-compatible response body into `ex`.
///
/// Sets `response_model`, `response_id`, `choices` (chat `message`s or legacy `text`),
/// the token counts (`total_tokens` is computed when the backend only sent the two
/// parts) and `response_body`. An error body (`{"error": {...}}`) is not a parse
/// error: it simply has no choices. Embeddings responses only yield model, id and
/// usage, and their body is *not* copied into `response_body` (the vectors are large
/// and useless in a trace); their `data` is skipped without being materialized.
///
/// Only a body that is not JSON or not an object is an error; any other unexpected
/// shape yields less information. Of a key given twice, the last one counts (as for
/// the client's JSON parser), even when its value is not of the expected type. Values
/// of keys it does not read are skipped without checking that their text is UTF-8, so
/// stray bytes in such a field cost the span nothing.
pub fn parse_response(
    operation: Operation,
    body: &[u8],
    ex: &mut Exchange,
) -> Result<(), ParseError> {
    if operation != Operation::Embeddings {
        ex.response_body = Some(String::from_utf8_lossy(body).into_owned());
    }
    parse_response_fields(operation, body, ex)
}

/// [`parse_response`] for a body the caller no longer needs: it becomes
/// `response_body` without being copied (a large answer is held once, not twice).
pub fn parse_response_owned(
    operation: Operation,
    body: Vec<u8>,
    ex: &mut Exchange,
) -> Result<(), ParseError> {
    if operation == Operation::Embeddings {
        return parse_response_fields(operation, &body, ex);
    }
    match String::from_utf8(body) {
        Ok(text) => {
            let parsed = parse_response_fields(operation, text.as_bytes(), ex);
            ex.response_body = Some(text);
            parsed
        }
        Err(e) => {
            let bytes = e.into_bytes();
            let parsed = parse_response_fields(operation, &bytes, ex);
            ex.response_body = Some(String::from_utf8_lossy(&bytes).into_owned());
            parsed
        }
    }
}

/// Everything [`parse_response`] sets but `response_body`.
///
/// Read in one pass without building the body as a [`Value`]: `choices` are turned
/// into [`Choice`]s one at a time, and past [`MAX_TRACKED`] of them the rest are
/// skipped and `response_truncated` is set (a hostile body of 300k choices once cost
/// half a gigabyte).
fn parse_response_fields(
    operation: Operation,
    body: &[u8],
    ex: &mut Exchange,
) -> Result<(), ParseError> {
    let reader = ResponseReader {
        choices: operation != Operation::Embeddings,
    };
    let fields = parse_top_level(BodyKind::Response, body, reader)?;
    if let Some(id) = fields.id {
        ex.response_id = Some(id);
    }
    if let Some(model) = fields.model {
        ex.response_model = Some(model);
    }
    if let Some(usage) = fields.usage {
        apply_usage_object(ex, &usage);
    }
    ex.choices = fields.choices;
    ex.response_truncated |= fields.choices_truncated;
    Ok(())
}

/// What a response body's top level says, of the keys the span reads. Of a key
/// given twice the last one counts (as for the client's JSON parser), even when its
/// value is not of the expected type.
#[derive(Debug, Default)]
struct ResponseFields {
    id: Option<String>,
    model: Option<String>,
    usage: Option<Map<String, Value>>,
    choices: Vec<Choice>,
    /// `choices` had more than [`MAX_TRACKED`] entries; the rest were skipped.
    choices_truncated: bool,
}

/// Reads a response's top-level object into [`ResponseFields`].
struct ResponseReader {
    /// Read `choices` (not for embeddings).
    choices: bool,
}

impl ObjectReader for ResponseReader {
    type Out = ResponseFields;

    fn read<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<ResponseFields, A::Error> {
        let mut fields = ResponseFields::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "id" => fields.id = string_value(map.next_value::<Value>()?),
                "model" => fields.model = string_value(map.next_value::<Value>()?),
                "usage" => {
                    fields.usage = match map.next_value::<Value>()? {
                        Value::Object(usage) => Some(usage),
                        _ => None,
                    };
                }
                "choices" if self.choices => {
                    let (choices, truncated) = map.next_value_seed(ChoicesSeed)?;
                    fields.choices = choices;
                    fields.choices_truncated = truncated;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

fn string_value(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// A response's `choices`: each object element becomes a [`Choice`] as it is read,
/// up to [`MAX_TRACKED`]; any other value yields none. Returns the choices and
/// whether some were skipped.
struct ChoicesSeed;

impl<'de> DeserializeSeed<'de> for ChoicesSeed {
    type Value = (Vec<Choice>, bool);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChoicesSeed {
    type Value = (Vec<Choice>, bool);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of choices")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut choices = Vec::new();
        let mut truncated = false;
        let mut pos = 0;
        loop {
            if choices.len() >= MAX_TRACKED {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                truncated = true;
                continue;
            }
            match seq.next_element::<Value>()? {
                None => break,
                Some(Value::Object(map)) => choices.push(response_choice(pos, map)),
                Some(_) => {}
            }
            pos += 1;
        }
        Ok((choices, truncated))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok((Vec::new(), false))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), false))
    }
}

/// Token counts as an upstream reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub total: Option<i64>,
    pub details: TokenDetails,
}

/// Records token usage, computing `total` as `input + output` when it is absent.
pub(crate) fn set_usage(ex: &mut Exchange, usage: Usage) {
    ex.input_tokens = usage.input;
    ex.output_tokens = usage.output;
    ex.total_tokens = usage
        .total
        .or_else(|| usage.input?.checked_add(usage.output?));
    ex.token_details = usage.details;
}

/// Reads an OpenAI `usage` object (`prompt_tokens` / `completion_tokens` /
/// `total_tokens`, falling back to the Responses-API `input_tokens` / `output_tokens`).
fn apply_usage_object(ex: &mut Exchange, usage: &Map<String, Value>) {
    let get = |primary: &str, fallback: &str| {
        usage
            .get(primary)
            .and_then(json_count)
            .or_else(|| usage.get(fallback).and_then(json_count))
    };
    let details =
        |primary: &str, fallback: &str| usage.get(primary).or_else(|| usage.get(fallback));
    set_usage(
        ex,
        Usage {
            input: get("prompt_tokens", "input_tokens"),
            output: get("completion_tokens", "output_tokens"),
            total: usage.get("total_tokens").and_then(json_count),
            details: token_details(
                details("prompt_tokens_details", "input_tokens_details"),
                details("completion_tokens_details", "output_tokens_details"),
            ),
        },
    );
}

/// The token breakdowns from a usage object's `prompt_tokens_details` and
/// `completion_tokens_details` (anything not an object reads as no details).
pub(crate) fn token_details(prompt: Option<&Value>, completion: Option<&Value>) -> TokenDetails {
    let count = |details: Option<&Value>, key: &str| details?.get(key).and_then(json_count);
    TokenDetails {
        cache_read: count(prompt, "cached_tokens"),
        cache_write: count(prompt, "cache_write_tokens"),
        input_audio: count(prompt, "audio_tokens"),
        reasoning: count(completion, "reasoning_tokens"),
        output_audio: count(completion, "audio_tokens"),
    }
}

/// An integer token count; integral floats (`12.0`) are accepted, anything else is not
/// a count.
fn json_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(integral_f64)),
        _ => None,
    }
}

/// A token count: an integer that is not negative (a negative count from a backend
/// is no count at all, so it cannot reach a span or a histogram).
fn json_count(v: &Value) -> Option<i64> {
    json_i64(v).filter(|n| *n >= 0)
}

/// An integral float as an `i64` (`12.0` → 12); `None` for fractions, NaN and values
/// out of range.
pub(crate) fn integral_f64(f: f64) -> Option<i64> {
    // -2^63 is exact as f64; 2^63 is the first value out of range.
    const RANGE: std::ops::Range<f64> = -9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && RANGE.contains(&f)).then_some(f as i64)
}

/// One `choices[]` element of a chat or text completion response.
fn response_choice(pos: usize, mut map: Map<String, Value>) -> Choice {
    let index = map
        .get("index")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or_else(|| u32::try_from(pos).unwrap_or(u32::MAX));
    let finish_reason = match map.remove("finish_reason") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let mut choice = Choice {
        index,
        role: "assistant".to_owned(),
        finish_reason,
        ..Choice::default()
    };
    match map.remove("message") {
        Some(Value::Object(mut message)) => {
            if let Some(Value::String(role)) = message.remove("role") {
                choice.role = role;
            }
            choice.content = message.remove("content").and_then(content_text);
            if let Some(Value::Array(calls)) = message.remove("tool_calls") {
                choice.tool_calls = calls
                    .into_iter()
                    .filter_map(|c| match c {
                        Value::Object(call) => Some(tool_call(call)),
                        _ => None,
                    })
                    .collect();
            }
            if let Some(Value::Object(call)) = message.remove("function_call") {
                choice.tool_calls.push(function_call(call));
            }
        }
        _ => {
            if let Some(Value::String(text)) = map.remove("text") {
                choice.content = Some(text);
            }
        }
    }
    choice
}

/// Parses the chat `messages` array.
fn parse_messages(v: Value) -> Result<Vec<Message>, ParseError> {
    let Value::Array(items) = v else {
        return Err(invalid("messages", "an array of messages", &v));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_message(i, item))
        .collect()
}

/// Parses `messages[i]`.
fn parse_message(i: usize, v: Value) -> Result<Message, ParseError> {
    let Value::Object(mut map) = v else {
        return Err(invalid(format!("messages[{i}]"), "an object", &v));
    };
    let role = match map.remove("role") {
        Some(Value::String(role)) => role,
        None | Some(Value::Null) => {
            return Err(ParseError::MissingField {
                path: format!("messages[{i}].role"),
            });
        }
        Some(other) => return Err(invalid(format!("messages[{i}].role"), "a string", &other)),
    };
    let content = match map.remove("content") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::String(_) | Value::Array(_))) => content_text(v),
        Some(other) => {
            return Err(invalid(
                format!("messages[{i}].content"),
                "a string, an array of content parts, or null",
                &other,
            ));
        }
    };
    let mut tool_calls = match map.remove("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .into_iter()
            .enumerate()
            .map(|(j, call)| match call {
                Value::Object(call) => Ok(tool_call(call)),
                other => Err(invalid(
                    format!("messages[{i}].tool_calls[{j}]"),
                    "an object",
                    &other,
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(invalid(
                format!("messages[{i}].tool_calls"),
                "an array",
                &other,
            ));
        }
    };
    if let Some(Value::Object(call)) = map.remove("function_call") {
        tool_calls.push(function_call(call));
    }
    Ok(Message {
        role,
        content,
        name: string_field(&mut map, "name"),
        tool_calls,
        tool_call_id: string_field(&mut map, "tool_call_id"),
    })
}

/// The text of a `content` value: a string as is; for an array of content parts, the
/// text parts joined with `\n` (image, audio and file parts are skipped). `None` when
/// there is no text at all.
fn content_text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Array(parts) => {
            let mut texts = parts.into_iter().filter_map(|part| match part {
                Value::String(s) => Some(s),
                Value::Object(mut part) => {
                    let is_text = matches!(
                        part.get("type").and_then(Value::as_str),
                        Some("text" | "input_text" | "output_text")
                    );
                    if is_text {
                        string_field(&mut part, "text")
                    } else {
                        None
                    }
                }
                _ => None,
            });
            let mut joined = texts.next()?;
            for text in texts {
                joined.push('\n');
                joined.push_str(&text);
            }
            Some(joined)
        }
        _ => None,
    }
}

/// A `tool_calls[]` element: `{id, type: "function", function: {name, arguments}}`
/// (custom tools, `{type: "custom", custom: {name, input}}`, are read the same way).
fn tool_call(mut call: Map<String, Value>) -> ToolCall {
    let id = string_field(&mut call, "id").unwrap_or_default();
    let (name, arguments) = match call.remove("function") {
        Some(Value::Object(mut f)) => (
            string_field(&mut f, "name").unwrap_or_default(),
            arguments_text(f.remove("arguments")),
        ),
        _ => match call.remove("custom") {
            Some(Value::Object(mut c)) => (
                string_field(&mut c, "name").unwrap_or_default(),
                arguments_text(c.remove("input")),
            ),
            _ => (String::new(), String::new()),
        },
    };
    ToolCall {
        id,
        name,
        arguments,
    }
}

/// The legacy single `function_call: {name, arguments}`; it has no id.
fn function_call(mut call: Map<String, Value>) -> ToolCall {
    ToolCall {
        id: String::new(),
        name: string_field(&mut call, "name").unwrap_or_default(),
        arguments: arguments_text(call.remove("arguments")),
    }
}

/// Tool-call arguments as text. They are a JSON document *as a string* on the wire;
/// some clients send the object itself, which is rendered back to JSON text.
fn arguments_text(v: Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

/// A legacy `prompt` or embeddings `input`: a string, or an array whose strings each
/// become one user message (token arrays carry no text and are skipped).
fn texts_as_user_messages(field: &str, v: Option<Value>) -> Result<Vec<Message>, ParseError> {
    let user = |text: String| Message {
        role: "user".to_owned(),
        content: Some(text),
        ..Message::default()
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![user(s)]),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => out.push(user(s)),
                    Value::Number(_) | Value::Array(_) => {}
                    other => {
                        return Err(invalid(
                            format!("{field}[{i}]"),
                            "a string or an array of token ids",
                            &other,
                        ));
                    }
                }
            }
            Ok(out)
        }
        Some(other) => Err(invalid(
            field,
            "a string, an array of strings, or an array of token ids",
            &other,
        )),
    }
}

/// Takes a string field out of `map`; any other type counts as absent.
fn string_field(map: &mut Map<String, Value>, key: &str) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn invalid(path: impl Into<String>, expected: &'static str, found: &Value) -> ParseError {
    ParseError::InvalidField {
        path: path.into(),
        expected,
        found: json_type(found),
    }
}

/// The JSON type of a value, as a client-facing noun phrase.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keeps the first position of each key with the value of its last occurrence (what a
/// JSON object with duplicate keys means to most parsers, serde_json's `Value`
/// included). Allocates nothing extra in the usual duplicate-free case.
fn dedup_last_wins(entries: Vec<(String, Value)>) -> Vec<(String, Value)> {
    let mut seen = HashSet::with_capacity(entries.len());
    if entries.iter().all(|(k, _)| seen.insert(k.as_str())) {
        return entries;
    }
    let mut out: Vec<(String, Value)> = Vec::with_capacity(entries.len());
    let mut position: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    for (key, value) in entries {
        match position.get(&key).and_then(|&i| out.get_mut(i)) {
            Some(slot) => slot.1 = value,
            None => {
                position.insert(key.clone(), out.len());
                out.push((key, value));
            }
        }
    }
    out
}

/// Parses a whole body whose top level must be an object, keeping its entries in
/// document order (this crate's serde_json has no `preserve_order`). Values of keys
/// for which `keep` is false are skipped without being built.
fn parse_top_level<R: ObjectReader>(
    body_kind: BodyKind,
    body: &[u8],
    reader: R,
) -> Result<R::Out, ParseError> {
    // A UTF-8 byte-order mark is not JSON, but some clients send one.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = TopLevelSeed { reader }
        .deserialize(&mut de)
        .and_then(|top| de.end().map(|()| top))
        .map_err(|source| ParseError::InvalidJson {
            body: body_kind,
            source,
        })?;
    match top {
        TopLevel::Object(entries) => Ok(entries),
        TopLevel::Other(found) => Err(ParseError::NotAnObject {
            body: body_kind,
            found,
        }),
    }
}

/// A top-level JSON document: what an [`ObjectReader`] made of an object, or the type
/// it was instead.
enum TopLevel<T> {
    Object(T),
    Other(&'static str),
}

/// Reads a top-level JSON object's entries, skipping what it does not need.
trait ObjectReader {
    type Out;
    fn read<'de, A: MapAccess<'de>>(self, map: A) -> Result<Self::Out, A::Error>;
}

/// The object's entries in order, building only the values whose key passes `keep`.
struct KeepEntries {
    keep: fn(&str) -> bool,
}

impl ObjectReader for KeepEntries {
    type Out = Vec<(String, Value)>;

    fn read<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key::<String>()? {
            if (self.keep)(&key) {
                let value = map.next_value::<Value>()?;
                entries.push((key, value));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(entries)
    }
}

/// Deserializes a [`TopLevel`] with `reader`.
struct TopLevelSeed<R> {
    reader: R,
}

impl<'de, R: ObjectReader> DeserializeSeed<'de> for TopLevelSeed<R> {
    type Value = TopLevel<R::Out>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, R: ObjectReader> Visitor<'de> for TopLevelSeed<R> {
    type Value = TopLevel<R::Out>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.reader.read(map).map(TopLevel::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Other("an array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(operation: Operation, body: &[u8]) -> Exchange {
        let mut ex = Exchange::default();
        parse_request(operation, body, &mut ex).expect("request parses");
        ex
    }

    fn request_err(operation: Operation, body: &str) -> String {
        let mut ex = Exchange::default();
        parse_request(operation, body.as_bytes(), &mut ex)
            .expect_err("request is rejected")
            .to_string()
    }

    fn response(operation: Operation, body: &[u8]) -> Exchange {
        let mut ex = Exchange::default();
        parse_response(operation, body, &mut ex).expect("response parses");
        ex
    }

    fn msg(role: &str, content: Option<&str>) -> Message {
        Message {
            role: role.to_owned(),
            content: content.map(str::to_owned),
            ..Message::default()
        }
    }

    fn keys(ex: &Exchange) -> Vec<&str> {
        ex.params.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn chat_request_fixture() {
        let body = fixture!("chat_request.json");
        let ex = request(Operation::Chat, body);
        assert_eq!(ex.operation, Operation::Chat);
        assert_eq!(ex.request_model.as_deref(), Some("gpt-4o-mini"));
        assert!(!ex.streaming);
        assert_eq!(
            ex.prompt,
            vec![
                msg(
                    "system",
                    Some("You are a concise travel assistant. Answer in at most two sentences.")
                ),
                msg("user", Some("What is the capital of Portugal?")),
                msg("assistant", Some("The capital of Portugal is Lisbon.")),
                msg("user", Some("What is the best month to visit it?")),
            ]
        );
        assert_eq!(
            ex.params,
            vec![
                ("temperature".to_owned(), json!(0.2)),
                ("max_tokens".to_owned(), json!(256)),
                ("top_p".to_owned(), json!(1)),
            ]
        );
        assert!(ex.tools.is_empty());
        assert_eq!(ex.request_body.as_deref().map(str::as_bytes), Some(body));
    }

    #[test]
    fn chat_stream_request_fixture() {
        let ex = request(Operation::Chat, fixture!("chat_stream_request.json"));
        assert!(ex.streaming);
        assert_eq!(ex.prompt.len(), 4);
        assert_eq!(
            keys(&ex),
            ["temperature", "max_tokens", "top_p", "stream_options"]
        );
        assert_eq!(ex.params[3].1, json!({"include_usage": true}));
    }

    #[test]
    fn tools_request_fixture() {
        let ex = request(Operation::Chat, fixture!("tools_request.json"));
        assert!(ex.streaming);
        let names: Vec<_> = ex
            .tools
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(names, ["get_weather", "get_time"]);
        assert_eq!(
            ex.tools[0]["function"]["parameters"]["required"],
            json!(["location"])
        );
        assert_eq!(
            keys(&ex),
            [
                "tool_choice",
                "parallel_tool_calls",
                "temperature",
                "stream_options"
            ]
        );
        assert_eq!(
            ex.prompt[1].content.as_deref(),
            Some("What's the weather in Paris right now, and what time is it in Tokyo?")
        );
    }

    #[test]
    fn tools_followup_request_fixture() {
        let ex = request(Operation::Chat, fixture!("tools_followup_request.json"));
        assert!(!ex.streaming);
        assert_eq!(ex.tools.len(), 2);
        let roles: Vec<_> = ex.prompt.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"]);
        // Multi-part user content is reduced to its text.
        assert_eq!(
            ex.prompt[1].content.as_deref(),
            Some("What's the weather in Paris right now, and what time is it in Tokyo?")
        );
        let assistant = &ex.prompt[2];
        assert_eq!(assistant.content, None);
        assert_eq!(
            assistant.tool_calls,
            vec![
                ToolCall {
                    id: "call_wX3kQ9ZpLm2v".to_owned(),
                    name: "get_weather".to_owned(),
                    arguments: r#"{"location":"Paris, France","unit":"celsius"}"#.to_owned(),
                },
                ToolCall {
                    id: "call_T7fYb0RnHs4c".to_owned(),
                    name: "get_time".to_owned(),
                    arguments: r#"{"timezone":"Asia/Tokyo"}"#.to_owned(),
                },
            ]
        );
        assert_eq!(
            ex.prompt[3].tool_call_id.as_deref(),
            Some("call_wX3kQ9ZpLm2v")
        );
        assert_eq!(
            ex.prompt[3].content.as_deref(),
            Some(r#"{"temperature":18,"unit":"celsius","conditions":"partly cloudy"}"#)
        );
        assert_eq!(
            ex.prompt[4].tool_call_id.as_deref(),
            Some("call_T7fYb0RnHs4c")
        );
        assert!(ex.prompt[4].tool_calls.is_empty());
        assert_eq!(keys(&ex), ["tool_choice", "temperature"]);
    }

    #[test]
    fn completions_fixtures() {
        let ex = request(
            Operation::TextCompletion,
            fixture!("completions_request.json"),
        );
        assert_eq!(ex.operation, Operation::TextCompletion);
        assert_eq!(ex.request_model.as_deref(), Some("gpt-3.5-turbo-instruct"));
        assert_eq!(
            ex.prompt,
            vec![msg("user", Some("Write a tagline for an ice cream shop."))]
        );
        assert_eq!(keys(&ex), ["max_tokens", "temperature", "n", "stop"]);
        assert_eq!(ex.params[3].1, json!(["\n\n\n"]));

        let body = fixture!("completions_response.json");
        let ex = response(Operation::TextCompletion, body);
        assert_eq!(
            ex.response_id.as_deref(),
            Some("cmpl-9t5vXhQk2LwJ8nB4cR6dE1fG")
        );
        assert_eq!(ex.response_model.as_deref(), Some("gpt-3.5-turbo-instruct"));
        assert_eq!(
            ex.choices,
            vec![Choice {
                index: 0,
                role: "assistant".to_owned(),
                content: Some("\n\nScoops of happiness in every cone.".to_owned()),
                tool_calls: vec![],
                finish_reason: Some("stop".to_owned()),
            }]
        );
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (Some(10), Some(9), Some(19))
        );
        assert_eq!(ex.response_body.as_deref().map(str::as_bytes), Some(body));
    }

    #[test]
    fn embeddings_fixtures() {
        let ex = request(Operation::Embeddings, fixture!("embeddings_request.json"));
        assert_eq!(ex.request_model.as_deref(), Some("text-embedding-3-small"));
        assert_eq!(
            ex.prompt,
            vec![
                msg(
                    "user",
                    Some("The food was delicious and the waiter was friendly.")
                ),
                msg("user", Some("The service was slow.")),
            ]
        );
        assert_eq!(keys(&ex), ["encoding_format", "dimensions"]);

        let ex = response(Operation::Embeddings, fixture!("embeddings_response.json"));
        assert_eq!(ex.response_model.as_deref(), Some("text-embedding-3-small"));
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (Some(15), None, Some(15))
        );
        assert!(ex.choices.is_empty());
        assert_eq!(ex.response_body, None, "vectors never reach the trace");
    }

    #[test]
    fn chat_response_fixture() {
        let body = fixture!("chat_response.json");
        let ex = response(Operation::Chat, body);
        assert_eq!(ex.response_id.as_deref(), Some("chatcmpl-abc123"));
        assert_eq!(ex.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert_eq!(
            ex.choices,
            vec![Choice {
                index: 0,
                role: "assistant".to_owned(),
                content: Some("May or September: warm, sunny days and fewer crowds.".to_owned()),
                tool_calls: vec![],
                finish_reason: Some("stop".to_owned()),
            }]
        );
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (Some(42), Some(12), Some(54))
        );
        assert_eq!(ex.response_body.as_deref().map(str::as_bytes), Some(body));
    }

    #[test]
    fn response_with_tool_calls_and_multiple_choices() {
        let body = json!({
            "id": "chatcmpl-x",
            "model": "m",
            "choices": [
                {"index": 1, "message": {"role": "assistant", "content": "b"}, "finish_reason": "length"},
                {"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": {"b": 2}}}
                ]}, "finish_reason": "tool_calls"}
            ]
        });
        let ex = response(Operation::Chat, body.to_string().as_bytes());
        assert_eq!(ex.choices.len(), 2);
        assert_eq!(ex.choices[0].index, 1);
        assert_eq!(ex.choices[0].content.as_deref(), Some("b"));
        assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("length"));
        let c = &ex.choices[1];
        assert_eq!(c.content, None);
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(c.tool_calls[0].id, "call_1");
        assert_eq!(c.tool_calls[0].arguments, r#"{"a":1}"#);
        assert_eq!(c.tool_calls[1].name, "g");
        assert_eq!(c.tool_calls[1].arguments, r#"{"b":2}"#);
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (None, None, None)
        );
    }

    #[test]
    fn usage_details_are_read_in_both_api_spellings_and_junk_is_ignored() {
        let ex = response(
            Operation::Chat,
            br#"{"usage":{"prompt_tokens":100,"completion_tokens":50,
                "prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":32}}}"#,
        );
        assert_eq!(
            ex.token_details,
            TokenDetails {
                cache_read: Some(64),
                input_audio: Some(0),
                reasoning: Some(32),
                ..TokenDetails::default()
            }
        );
        let ex = response(
            Operation::Chat,
            br#"{"usage":{"input_tokens":10,"output_tokens":5,
                "input_tokens_details":{"cached_tokens":4},
                "output_tokens_details":{"reasoning_tokens":2}}}"#,
        );
        assert_eq!(
            (ex.token_details.cache_read, ex.token_details.reasoning),
            (Some(4), Some(2))
        );
        let ex = response(
            Operation::Chat,
            br#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":"many",
                "completion_tokens_details":{"reasoning_tokens":"3"}}}"#,
        );
        assert_eq!(ex.token_details, TokenDetails::default());
    }

    #[test]
    fn usage_total_is_computed_when_absent() {
        let ex = response(
            Operation::Chat,
            br#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5}}"#,
        );
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (Some(7), Some(5), Some(12))
        );
        let ex = response(Operation::Chat, br#"{"usage":{"prompt_tokens":7}}"#);
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (Some(7), None, None)
        );
        let ex = response(
            Operation::Chat,
            br#"{"usage":{"input_tokens":3.0,"output_tokens":4}}"#,
        );
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (Some(3), Some(4), Some(7))
        );
    }

    #[test]
    fn token_counts_must_be_integers() {
        assert_eq!(integral_f64(12.0), Some(12));
        assert_eq!(integral_f64(-9_223_372_036_854_775_808.0), Some(i64::MIN));
        assert_eq!(integral_f64(9_223_372_036_854_775_808.0), None);
        assert_eq!(integral_f64(1.5), None);
        assert_eq!(integral_f64(f64::NAN), None);
        assert_eq!(integral_f64(f64::INFINITY), None);
        let ex = response(
            Operation::Chat,
            br#"{"usage":{"prompt_tokens":"7","completion_tokens":1e30,"total_tokens":2.5}}"#,
        );
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (None, None, None)
        );
    }

    #[test]
    fn negative_token_counts_are_no_counts() {
        let ex = response(
            Operation::Chat,
            br#"{"usage":{"prompt_tokens":-1,"completion_tokens":4,"total_tokens":-9,
                "prompt_tokens_details":{"cached_tokens":-3}}}"#,
        );
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (None, Some(4), None)
        );
        assert_eq!(ex.token_details.cache_read, None);
        // A negative total with good parts: the total is computed from them.
        let ex = response(
            Operation::Chat,
            br#"{"usage":{"prompt_tokens":2,"completion_tokens":4,"total_tokens":-1}}"#,
        );
        assert_eq!(ex.total_tokens, Some(6));
    }

    #[test]
    fn choices_past_the_cap_are_skipped_and_the_exchange_says_so() {
        let n = MAX_TRACKED + 500;
        let choices: Vec<String> = (0..n)
            .map(|i| {
                format!(r#"{{"index":{i},"message":{{"content":"c{i}"}},"finish_reason":"stop"}}"#)
            })
            .collect();
        let body = format!(
            r#"{{"id":"x","choices":[{}],"model":"m"}}"#,
            choices.join(",")
        );
        let ex = response(Operation::Chat, body.as_bytes());
        assert_eq!(ex.choices.len(), MAX_TRACKED);
        assert_eq!(
            ex.choices[MAX_TRACKED - 1].content.as_deref(),
            Some("c1023")
        );
        assert!(ex.response_truncated);
        assert_eq!(
            ex.response_model.as_deref(),
            Some("m"),
            "keys after choices are read"
        );
        let ex = response(Operation::Chat, fixture!("chat_response.json"));
        assert!(!ex.response_truncated);
    }

    #[test]
    fn error_response_is_not_a_parse_error() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let mut ex = Exchange {
            choices: vec![Choice::default()],
            ..Exchange::default()
        };
        parse_response(Operation::Chat, body, &mut ex).expect("error bodies parse");
        assert!(ex.choices.is_empty());
        assert_eq!(
            ex.response_body.as_deref().map(str::as_bytes),
            Some(&body[..])
        );
        assert_eq!(ex.response_model, None);
    }

    #[test]
    fn an_owned_body_parses_like_a_borrowed_one() {
        let bodies: [&[u8]; 4] = [
            br#"{"id":"c1","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            b"<html>502</html>",
            b"{\"id\":\"bad \xff utf-8\"}",
            br#"{"object":"list","data":[{"embedding":[0.1]}],"model":"e"}"#,
        ];
        for (i, body) in bodies.iter().enumerate() {
            for operation in [Operation::Chat, Operation::Embeddings] {
                let (mut borrowed, mut owned) = (Exchange::default(), Exchange::default());
                let a = parse_response(operation, body, &mut borrowed).map_err(|e| e.to_string());
                let b = parse_response_owned(operation, body.to_vec(), &mut owned)
                    .map_err(|e| e.to_string());
                assert_eq!(a, b, "body {i}, {operation:?}");
                assert_eq!(borrowed, owned, "body {i}, {operation:?}");
            }
        }
    }

    #[test]
    fn response_bytes_in_an_unread_field_do_not_hide_the_model() {
        // Found by the request_parse fuzz target: not JSON to a strict parser (the
        // bytes are not UTF-8), yet the fields the span reads are intact.
        let body = b"{\"model\":\"m\",\"system_fingerprint\":\"\xda\xda\",\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}";
        assert!(serde_json::from_slice::<Value>(body).is_err());
        let ex = response(Operation::Chat, body);
        assert_eq!(ex.response_model.as_deref(), Some("m"));
        assert_eq!(ex.total_tokens, Some(5));
        // In a field it reads, the same bytes make the body invalid.
        let mut ex = Exchange::default();
        assert!(parse_response(Operation::Chat, b"{\"model\":\"\xda\"}", &mut ex).is_err());
    }

    #[test]
    fn response_duplicate_keys_mean_the_last_one() {
        // What an SDK's JSON parser reads: the last `model`, even when it is not a
        // string; the first one used to win whenever the last had the wrong type.
        let ex = response(
            Operation::Chat,
            br#"{"model":"a","id":"x","model":1,"choices":[{"message":{"content":"c"}}],"id":"y","choices":5,"usage":{"prompt_tokens":1},"usage":null}"#,
        );
        assert_eq!(ex.response_model, None);
        assert_eq!(ex.response_id.as_deref(), Some("y"));
        assert!(ex.choices.is_empty());
        assert_eq!(ex.input_tokens, None);
        let ex = response(Operation::Chat, br#"{"model":1,"model":"b"}"#);
        assert_eq!(ex.response_model.as_deref(), Some("b"));
    }

    #[test]
    fn response_errors() {
        let mut ex = Exchange::default();
        let err = parse_response(Operation::Chat, b"<html>502</html>", &mut ex).unwrap_err();
        assert_eq!(
            err.to_string(),
            "response body is not valid JSON: expected value at line 1 column 1"
        );
        // The body is still recorded for the trace.
        assert_eq!(ex.response_body.as_deref(), Some("<html>502</html>"));
        let err = parse_response(Operation::Chat, b"[]", &mut ex).unwrap_err();
        assert_eq!(
            err.to_string(),
            "response body must be a JSON object, not an array"
        );
    }

    #[test]
    fn content_parts() {
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "first"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "text", "text": "second"},
                {"type": "file", "file": {"file_id": "file-1"}}
            ]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "user", "content": []},
            {"role": "user", "name": "bob", "content": ""}
        ]});
        let ex = request(Operation::Chat, body.to_string().as_bytes());
        assert_eq!(ex.prompt[0].content.as_deref(), Some("first\nsecond"));
        assert_eq!(ex.prompt[1].content, None);
        assert_eq!(ex.prompt[2].content, None);
        assert_eq!(ex.prompt[3].content.as_deref(), Some(""));
        assert_eq!(ex.prompt[3].name.as_deref(), Some("bob"));
    }

    #[test]
    fn legacy_function_call() {
        let body = json!({"messages": [
            {"role": "assistant", "content": null, "function_call": {"name": "lookup", "arguments": "{\"q\":1}"}},
            {"role": "function", "name": "lookup", "content": "42"}
        ]});
        let ex = request(Operation::Chat, body.to_string().as_bytes());
        assert_eq!(
            ex.prompt[0].tool_calls,
            vec![ToolCall {
                id: String::new(),
                name: "lookup".to_owned(),
                arguments: r#"{"q":1}"#.to_owned(),
            }]
        );
        assert_eq!(ex.prompt[1].name.as_deref(), Some("lookup"));
        assert_eq!(ex.request_model, None);
    }

    #[test]
    fn params_keep_request_order_and_last_duplicate_wins() {
        let body = br#"{"zeta":1,"model":"a","alpha":{"b":1,"a":2},"messages":[],"seed":7,"zeta":2,"model":"b","prompt":"x","input":"y","stream":null}"#;
        let ex = request(Operation::Chat, body);
        assert_eq!(
            ex.params,
            vec![
                ("zeta".to_owned(), json!(2)),
                ("alpha".to_owned(), json!({"a": 2, "b": 1})),
                ("seed".to_owned(), json!(7)),
            ]
        );
        assert_eq!(ex.request_model.as_deref(), Some("b"));
        assert!(!ex.streaming);
        assert!(ex.prompt.is_empty());
    }

    #[test]
    fn duplicate_top_level_keys_are_reported() {
        let facts = |body: &[u8]| parse_request(Operation::Chat, body, &mut Exchange::default());
        assert!(!facts(fixture!("chat_request.json")).unwrap().duplicate_keys);
        assert!(!facts(br#"{"a":{"x":1,"x":2}}"#).unwrap().duplicate_keys);
        for body in [
            &br#"{"model":"a","model":"b"}"#[..],
            br#"{"seed":1,"model":"a","seed":2}"#,
            br#"{"messages":[],"messages":null}"#,
        ] {
            assert!(facts(body).unwrap().duplicate_keys, "{body:?}");
        }
    }

    #[test]
    fn prompt_and_input_shapes() {
        let ex = request(
            Operation::TextCompletion,
            br#"{"model":"m","prompt":["a","b"]}"#,
        );
        assert_eq!(
            ex.prompt,
            vec![msg("user", Some("a")), msg("user", Some("b"))]
        );
        let ex = request(
            Operation::TextCompletion,
            br#"{"model":"m","prompt":[1,2,3]}"#,
        );
        assert!(ex.prompt.is_empty());
        let ex = request(
            Operation::Embeddings,
            br#"{"model":"m","input":[[1,2],[3]]}"#,
        );
        assert!(ex.prompt.is_empty());
        let ex = request(
            Operation::Embeddings,
            br#"{"model":"m","input":"hello","prompt":"ignored"}"#,
        );
        assert_eq!(ex.prompt, vec![msg("user", Some("hello"))]);
        assert!(ex.params.is_empty());
        assert_eq!(
            request_err(Operation::Embeddings, r#"{"input":{"text":"x"}}"#),
            "`input` must be a string, an array of strings, or an array of token ids, not an object"
        );
        assert_eq!(
            request_err(Operation::TextCompletion, r#"{"prompt":["a",null]}"#),
            "`prompt[1]` must be a string or an array of token ids, not null"
        );
    }

    #[test]
    fn other_operation_is_lenient() {
        let ex = request(
            Operation::Other,
            br#"{"model":"m","messages":"nope","input":"x","foo":1}"#,
        );
        assert_eq!(ex.operation, Operation::Other);
        assert_eq!(ex.request_model.as_deref(), Some("m"));
        assert!(ex.prompt.is_empty());
        assert_eq!(keys(&ex), ["foo"]);
        let ex = request(
            Operation::Other,
            br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        );
        assert_eq!(ex.prompt, vec![msg("user", Some("hi"))]);
    }

    #[test]
    fn request_errors_are_client_facing() {
        use Operation::Chat;
        assert_eq!(
            request_err(Chat, ""),
            "request body is not valid JSON: EOF while parsing a value at line 1 column 0"
        );
        assert_eq!(
            request_err(Chat, "not json"),
            "request body is not valid JSON: expected ident at line 1 column 2"
        );
        assert_eq!(
            request_err(Chat, r#"{"model":"m"} trailing"#),
            "request body is not valid JSON: trailing characters at line 1 column 15"
        );
        assert_eq!(
            request_err(Chat, "[1,2]"),
            "request body must be a JSON object, not an array"
        );
        assert_eq!(
            request_err(Chat, "\"x\""),
            "request body must be a JSON object, not a string"
        );
        assert_eq!(
            request_err(Chat, "null"),
            "request body must be a JSON object, not null"
        );
        assert_eq!(
            request_err(Chat, r#"{"messages":{"role":"user"}}"#),
            "`messages` must be an array of messages, not an object"
        );
        assert_eq!(
            request_err(Chat, r#"{"messages":["hi"]}"#),
            "`messages[0]` must be an object, not a string"
        );
        assert_eq!(
            request_err(
                Chat,
                r#"{"messages":[{"role":"user","content":"a"},{"content":"b"}]}"#
            ),
            "`messages[1].role` is required"
        );
        assert_eq!(
            request_err(Chat, r#"{"messages":[{"role":1}]}"#),
            "`messages[0].role` must be a string, not a number"
        );
        assert_eq!(
            request_err(Chat, r#"{"messages":[{"role":"user","content":5}]}"#),
            "`messages[0].content` must be a string, an array of content parts, or null, not a number"
        );
        assert_eq!(
            request_err(
                Chat,
                r#"{"messages":[{"role":"assistant","tool_calls":{}}]}"#
            ),
            "`messages[0].tool_calls` must be an array, not an object"
        );
        assert_eq!(
            request_err(
                Chat,
                r#"{"messages":[{"role":"assistant","tool_calls":[1]}]}"#
            ),
            "`messages[0].tool_calls[0]` must be an object, not a number"
        );
        assert_eq!(
            request_err(Chat, r#"{"model":42}"#),
            "`model` must be a string, not a number"
        );
        assert_eq!(
            request_err(Chat, r#"{"stream":"yes"}"#),
            "`stream` must be a boolean, not a string"
        );
        assert_eq!(
            request_err(Chat, r#"{"tools":{}}"#),
            "`tools` must be an array, not an object"
        );
    }

    #[test]
    fn request_body_is_kept_even_when_rejected_and_bom_is_tolerated() {
        let mut ex = Exchange::default();
        assert!(parse_request(Operation::Chat, b"{oops", &mut ex).is_err());
        assert_eq!(ex.request_body.as_deref(), Some("{oops"));

        let body = b"\xEF\xBB\xBF{\"model\":\"m\"}";
        let ex = request(Operation::Chat, body);
        assert_eq!(ex.request_model.as_deref(), Some("m"));
        assert_eq!(
            ex.request_body.as_deref().map(str::as_bytes),
            Some(&body[..])
        );
    }

    #[test]
    fn unicode_and_escapes_are_preserved() {
        let body =
            r#"{"model":"m","messages":[{"role":"user","content":"Olá \"mundo\" \u00e9 🌍\n"}]}"#;
        let ex = request(Operation::Chat, body.as_bytes());
        assert_eq!(
            ex.prompt[0].content.as_deref(),
            Some("Olá \"mundo\" é 🌍\n")
        );
        assert_eq!(ex.request_body.as_deref(), Some(body));
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let body = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let mut ex = Exchange::default();
        let err = parse_request(Operation::Chat, body.as_bytes(), &mut ex).unwrap_err();
        assert!(
            err.to_string().contains("recursion limit exceeded"),
            "{err}"
        );
    }

    use crate::test_rng::Rng;

    #[test]
    fn mutated_bodies_never_panic() {
        let bodies: [&[u8]; 8] = [
            fixture!("chat_request.json"),
            fixture!("chat_response.json"),
            fixture!("tools_request.json"),
            fixture!("tools_followup_request.json"),
            fixture!("completions_request.json"),
            fixture!("completions_response.json"),
            fixture!("embeddings_request.json"),
            fixture!("embeddings_response.json"),
        ];
        let ops = [
            Operation::Chat,
            Operation::TextCompletion,
            Operation::Embeddings,
            Operation::Other,
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let alphabet = b"{}[]\":,0 -.enul\\\xff";
        for round in 0..4000 {
            let mut body = bodies[round % bodies.len()].to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(body.len());
                match rng.below(3) {
                    0 => body[at] = alphabet[rng.below(alphabet.len())],
                    1 => {
                        body.remove(at);
                    }
                    _ => body.truncate(at),
                }
                if body.is_empty() {
                    break;
                }
            }
            let op = ops[rng.below(ops.len())];
            let mut ex = Exchange::default();
            let _ = parse_request(op, &body, &mut ex);
            let _ = parse_response(op, &body, &mut ex);
        }
    }
}
