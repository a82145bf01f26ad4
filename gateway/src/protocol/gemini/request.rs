//! The request side of a Gemini call: a `GenerateContentRequest` in the chat
//! vocabulary.
//!
//! The model and whether the call streams come from the path; the body gives the
//! rest. `systemInstruction` is the system instructions (its text parts in order,
//! also opening the prompt as one `system` message); each `contents[]` turn is a
//! message (`model` is `assistant`), its text parts joined with `\n` (thought parts
//! are not prompt text, media parts carry none), its `functionCall` parts the
//! message's tool calls and each `functionResponse` part a `tool` message of its
//! own, ahead of the turn's text. `tools` are the function declarations one by one
//! and any other tool object as sent. The parameters are the members of
//! `generationConfig` in request order, then `toolConfig` and `safetySettings` (in
//! request order); no other field is one (`cachedContent`, `labels`).
//! Every field is read in camelCase and in snake_case, as the REST API accepts.
//!
//! Only what makes the exchange unusable is refused: a body that is not a JSON
//! object, `contents` that is not an array of objects, a turn whose `role` is not a
//! string or whose `parts` is not an array, `tools` that is not an array.

use std::collections::HashSet;
use std::fmt;

use celgate_engine::exchange::{Api, Exchange, Message, Operation, ToolCall};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::super::RequestFacts;
use super::super::json::{
    BodyKind, ObjectReader, ParseError, dedup_last_wins, invalid, parse_top_level, string_field,
};
use super::{decode_model, split_path};

/// Parses a request body into `ex`: operation, api, model and `streaming` (from
/// `ex.request.path`), system instructions, prompt, tools, params and
/// `request_body` (set even when the body is refused).
pub(super) fn parse(body: &[u8], ex: &mut Exchange) -> Result<RequestFacts, ParseError> {
    ex.operation = Operation::GenerateContent;
    ex.api = Api::GenerateContent;
    ex.request_body = Some(String::from_utf8_lossy(body).into_owned());
    if let Some((model, streaming)) = split_path(&ex.request.path) {
        ex.request_model = Some(decode_model(model));
        ex.streaming = streaming;
    }

    let top = parse_top_level(BodyKind::Request, body, RequestReader)?;
    let entries = if top.duplicate_keys {
        dedup_last_wins(top.entries)
    } else {
        top.entries
    };
    let mut system = None;
    let mut contents = None;
    let mut tools = None;
    let mut late_params = Vec::new();
    for (key, value) in entries {
        match key.as_str() {
            "systemInstruction" | "system_instruction" => system = Some(value),
            "contents" => contents = Some(value),
            "tools" => tools = Some(value),
            "toolConfig" | "tool_config" | "safetySettings" | "safety_settings"
                if !value.is_null() =>
            {
                late_params.push((key, value));
            }
            _ => {}
        }
    }

    let prompt = contents.map(read_contents).transpose()?.unwrap_or_default();
    let tools = tools.map(read_tools).transpose()?.unwrap_or_default();
    let system = system.map(system_texts).unwrap_or_default();

    let mut params = top.config.map(dedup_last_wins).unwrap_or_default();
    params.extend(late_params);

    ex.prompt = Vec::with_capacity(prompt.len() + 1);
    if !system.is_empty() {
        ex.prompt.push(Message {
            role: "system".to_owned(),
            content: Some(system.join("\n")),
            ..Message::default()
        });
    }
    ex.prompt.extend(prompt);
    ex.system = system;
    ex.tools = tools;
    ex.params = params;
    Ok(RequestFacts {
        duplicate_keys: top.duplicate_keys,
    })
}

/// The text parts of `systemInstruction`: a `Content` (`{parts: [{text}]}`), leniently
/// also a single part object or a bare string. Anything else has none.
fn system_texts(v: Value) -> Vec<String> {
    let parts = match v {
        Value::String(s) => return vec![s],
        Value::Object(mut content) => content.remove("parts"),
        _ => None,
    };
    let parts = match parts {
        Some(Value::Array(parts)) => parts,
        Some(part @ Value::Object(_)) => vec![part],
        _ => Vec::new(),
    };
    parts
        .into_iter()
        .filter_map(|part| match part {
            Value::Object(mut part) if !is_thought(&part) => string_field(&mut part, "text"),
            _ => None,
        })
        .collect()
}

/// `contents`: every turn's messages, in order.
fn read_contents(v: Value) -> Result<Vec<Message>, ParseError> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(invalid("contents", "an array of contents", &other)),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        read_turn(i, item, &mut out)?;
    }
    Ok(out)
}

/// The chat role of a turn's `role` (absent or empty: `user`, as Gemini reads it).
fn chat_role(role: String) -> String {
    match role.as_str() {
        "" => "user".to_owned(),
        "model" => "assistant".to_owned(),
        "function" => "tool".to_owned(),
        _ => role,
    }
}

/// `contents[i]`: its tool results as `tool` messages, then its text and function
/// calls as one message (unless the turn held tool results only).
fn read_turn(i: usize, item: Value, out: &mut Vec<Message>) -> Result<(), ParseError> {
    let Value::Object(mut turn) = item else {
        return Err(invalid(format!("contents[{i}]"), "an object", &item));
    };
    let role = match turn.remove("role") {
        None | Some(Value::Null) => "user".to_owned(),
        Some(Value::String(role)) => chat_role(role),
        Some(other) => return Err(invalid(format!("contents[{i}].role"), "a string", &other)),
    };
    let parts = match turn.remove("parts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(parts)) => parts,
        Some(other) => {
            return Err(invalid(
                format!("contents[{i}].parts"),
                "an array of parts",
                &other,
            ));
        }
    };
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    let mut results = 0;
    for part in parts {
        let Value::Object(mut part) = part else {
            continue;
        };
        if let Some(Value::Object(call)) = take(&mut part, "functionCall", "function_call") {
            tool_calls.push(function_call(call));
        }
        if let Some(Value::Object(response)) =
            take(&mut part, "functionResponse", "function_response")
        {
            out.push(function_response(response));
            results += 1;
        }
        if !is_thought(&part)
            && let Some(text) = string_field(&mut part, "text")
        {
            texts.push(text);
        }
    }
    if results == 0 || !texts.is_empty() || !tool_calls.is_empty() {
        out.push(Message {
            role,
            content: (!texts.is_empty()).then(|| texts.join("\n")),
            tool_calls,
            ..Message::default()
        });
    }
    Ok(())
}

/// Takes a field given in either spelling (the camelCase one wins).
fn take(map: &mut Map<String, Value>, camel: &str, snake: &str) -> Option<Value> {
    let snake = map.remove(snake);
    map.remove(camel).or(snake)
}

/// A part with `thought: true` (the model's reasoning, not prompt text).
fn is_thought(part: &Map<String, Value>) -> bool {
    part.get("thought").and_then(Value::as_bool) == Some(true)
}

/// A `functionCall` part: `{name, args, id?}`; `args` as compact JSON text.
fn function_call(mut call: Map<String, Value>) -> ToolCall {
    ToolCall {
        id: string_field(&mut call, "id").unwrap_or_default(),
        name: string_field(&mut call, "name").unwrap_or_default(),
        arguments: json_text(call.remove("args")),
    }
}

/// A `functionResponse` part: a `tool` message answering the call of its `id` (else
/// its `name`), the `response` object as compact JSON text.
fn function_response(mut response: Map<String, Value>) -> Message {
    let name = string_field(&mut response, "name");
    let id = string_field(&mut response, "id");
    let content = json_text(response.remove("response"));
    Message {
        role: "tool".to_owned(),
        content: (!content.is_empty()).then_some(content),
        tool_call_id: id.or_else(|| name.clone()),
        name,
        ..Message::default()
    }
}

/// A JSON value as compact text; nothing (or null) is the empty text.
fn json_text(v: Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(v) => v.to_string(),
    }
}

/// `tools`: each function declaration as one tool, any other tool object (or what is
/// left of one beside its declarations: `googleSearch`, `codeExecution`) as sent.
fn read_tools(v: Value) -> Result<Vec<Value>, ParseError> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(invalid("tools", "an array of tools", &other)),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(mut tool) = item else {
            out.push(item);
            continue;
        };
        for key in ["functionDeclarations", "function_declarations"] {
            if matches!(tool.get(key), Some(Value::Array(_)))
                && let Some(Value::Array(declarations)) = tool.remove(key)
            {
                out.extend(declarations);
            }
        }
        if !tool.is_empty() {
            out.push(Value::Object(tool));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// The top level, read in order: `generationConfig`'s members keep theirs.

/// The request's top-level entries, with `generationConfig` read apart.
struct TopLevel {
    /// Every entry but `generationConfig`, in order.
    entries: Vec<(String, Value)>,
    /// The members of the last `generationConfig` (either spelling), in order; `None`
    /// when it was not an object.
    config: Option<Vec<(String, Value)>>,
    /// Some top-level key occurred more than once.
    duplicate_keys: bool,
}

struct RequestReader;

impl ObjectReader for RequestReader {
    type Out = TopLevel;

    fn read<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut top = TopLevel {
            entries: Vec::with_capacity(map.size_hint().unwrap_or(0).min(64)),
            config: None,
            duplicate_keys: false,
        };
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            top.duplicate_keys |= !seen.insert(key.clone());
            if matches!(key.as_str(), "generationConfig" | "generation_config") {
                top.config = map.next_value_seed(OrderedObject)?;
            } else {
                let value = map.next_value::<Value>()?;
                top.entries.push((key, value));
            }
        }
        Ok(top)
    }
}

/// An object's members in document order (serde_json's `Map` sorts them); `None`
/// for any other value.
struct OrderedObject;

type Members = Option<Vec<(String, Value)>>;

impl<'de> DeserializeSeed<'de> for OrderedObject {
    type Value = Members;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Members, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OrderedObject {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            members.push((key, value));
        }
        Ok(Some(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Members, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Members, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Members, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Members, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Members, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Members, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Members, E> {
        Ok(None)
    }
}
