//! A Responses request: `instructions` and `input` items into the chat-vocabulary
//! prompt, everything else read as chat reads its top level.
//!
//! Refused, with a [`ParseError`] naming the field: a body that is not a JSON
//! object, a `model` that is missing or not a string, a `stream` that is not a
//! boolean, `tools` that are not an array, `instructions` that are not a string,
//! an `input` that is neither a string nor an array, an input item that is not an
//! object, and a message item without a string `role` or with a `content` that is
//! neither a string nor an array of parts. Everything else is tolerated: unknown
//! item and part types contribute no text.

use std::collections::HashSet;

use celgate_engine::exchange::{Api, Exchange, Message, Operation, ToolCall};
use serde_json::{Map, Value};

use super::super::super::RequestFacts;
use super::super::super::json::{
    BodyKind, KeepEntries, ParseError, dedup_last_wins, invalid, parse_top_level, string_field,
};
use super::super::{arguments_text, content_text};

/// Top-level keys read into their own fields of the exchange (or deliberately not
/// kept), never into [`Exchange::params`].
const NON_PARAM_KEYS: [&str; 8] = [
    "model",
    "input",
    "instructions",
    "tools",
    "stream",
    "metadata",
    "user",
    "safety_identifier",
];

/// The modelled top-level fields of a request.
#[derive(Default)]
struct Fields {
    model: Option<Value>,
    stream: Option<Value>,
    tools: Option<Value>,
    instructions: Option<Value>,
    input: Option<Value>,
    user: Option<Value>,
    safety_identifier: Option<Value>,
}

/// The tools offered by `additional_tools` input items (Codex sends its tools there
/// rather than in `tools`), as sent.
fn additional_tools(input: Option<&Value>) -> Vec<Value> {
    let Some(Value::Array(items)) = input else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("additional_tools"))
        .filter_map(|item| item.get("tools").and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect()
}

/// Parses a request body into `ex`: `operation` (chat), `api`, `request_model`,
/// `streaming`, `system`, `prompt`, `tools`, `params` (of a key given twice, the
/// last value at the first position), `user_id` and `request_body`, which is set
/// even when the body is refused.
pub(super) fn parse(body: &[u8], ex: &mut Exchange) -> Result<RequestFacts, ParseError> {
    ex.operation = Operation::Chat;
    ex.api = Api::Responses;
    ex.request_body = Some(String::from_utf8_lossy(body).into_owned());

    let entries = parse_top_level(BodyKind::Request, body, KeepEntries { keep: |_| true })?;
    let duplicate_keys = {
        let mut seen = HashSet::with_capacity(entries.len());
        !entries.iter().all(|(k, _)| seen.insert(k.as_str()))
    };
    let mut fields = Fields::default();
    let mut params = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let slot = match key.as_str() {
            "model" => &mut fields.model,
            "stream" => &mut fields.stream,
            "tools" => &mut fields.tools,
            "instructions" => &mut fields.instructions,
            "input" => &mut fields.input,
            "user" => &mut fields.user,
            "safety_identifier" => &mut fields.safety_identifier,
            "metadata" => continue,
            _ => {
                params.push((key, value));
                continue;
            }
        };
        *slot = Some(value);
    }
    debug_assert!(
        params
            .iter()
            .all(|(k, _)| !NON_PARAM_KEYS.contains(&k.as_str()))
    );

    let request_model = match fields.model {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => {
            return Err(ParseError::MissingField {
                path: "model".to_owned(),
            });
        }
        Some(other) => return Err(invalid("model", "a string", &other)),
    };
    let streaming = match fields.stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(other) => return Err(invalid("stream", "a boolean", &other)),
    };
    let mut tools = match fields.tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(invalid("tools", "an array", &other)),
    };
    tools.extend(additional_tools(fields.input.as_ref()));
    let instructions = match fields.instructions {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(invalid("instructions", "a string", &other)),
    };
    let input = parse_input(fields.input)?;

    let mut system: Vec<String> = instructions.iter().cloned().collect();
    system.extend(
        input
            .iter()
            .filter(|m| matches!(m.role.as_str(), "system" | "developer"))
            .filter_map(|m| m.content.clone()),
    );
    let mut prompt = Vec::with_capacity(input.len() + 1);
    prompt.extend(instructions.map(|text| message("system", Some(text))));
    prompt.extend(input);

    ex.request_model = Some(request_model);
    ex.streaming = streaming;
    ex.tools = tools;
    ex.system = system;
    ex.prompt = prompt;
    ex.user_id = [fields.user, fields.safety_identifier]
        .into_iter()
        .find_map(|v| match v {
            Some(Value::String(s)) => Some(s),
            _ => None,
        });
    ex.params = if duplicate_keys {
        dedup_last_wins(params)
    } else {
        params
    };
    Ok(RequestFacts { duplicate_keys })
}

fn message(role: &str, content: Option<String>) -> Message {
    Message {
        role: role.to_owned(),
        content,
        ..Message::default()
    }
}

/// The request's `input`: a string is one user message; a list of items becomes
/// the messages they say, in order.
fn parse_input(input: Option<Value>) -> Result<Vec<Message>, ParseError> {
    let items = match input {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => return Ok(vec![message("user", Some(text))]),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(invalid("input", "a string or an array of items", &other)),
    };
    let mut prompt = Vec::with_capacity(items.len());
    // The last message holds only the tool calls of `function_call` items, so the
    // next call joins it.
    let mut calls_open = false;
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(item) = item else {
            return Err(invalid(format!("input[{i}]"), "an object", &item));
        };
        match read_item(i, item)? {
            Read::Message(m) => {
                prompt.push(m);
                calls_open = false;
            }
            Read::Call(call) => match prompt.last_mut() {
                Some(last) if calls_open => last.tool_calls.push(call),
                _ => {
                    prompt.push(Message {
                        tool_calls: vec![call],
                        ..message("assistant", None)
                    });
                    calls_open = true;
                }
            },
            Read::Nothing => {}
        }
    }
    Ok(prompt)
}

/// What one input item contributes to the prompt.
enum Read {
    Message(Message),
    /// A tool call of the assistant.
    Call(ToolCall),
    /// No prompt text (reasoning, hosted-tool calls, references, unknown types).
    Nothing,
}

/// Reads `input[i]`.
fn read_item(i: usize, mut item: Map<String, Value>) -> Result<Read, ParseError> {
    let kind = match item.get("type") {
        None | Some(Value::Null) => "message",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Ok(Read::Nothing),
    };
    Ok(match kind {
        "message" => Read::Message(read_message(i, item)?),
        "function_call" => Read::Call(call(item, "arguments")),
        "custom_tool_call" => Read::Call(call(item, "input")),
        "function_call_output" | "custom_tool_call_output" => Read::Message(Message {
            tool_call_id: string_field(&mut item, "call_id"),
            ..message("tool", item.remove("output").and_then(output_text))
        }),
        _ => Read::Nothing,
    })
}

/// A message item: `{role, content}`, `content` a string or a list of parts whose
/// text parts (`input_text`, `output_text`) are joined with `\n`.
fn read_message(i: usize, mut item: Map<String, Value>) -> Result<Message, ParseError> {
    let role = match item.remove("role") {
        Some(Value::String(role)) => role,
        None | Some(Value::Null) => {
            return Err(ParseError::MissingField {
                path: format!("input[{i}].role"),
            });
        }
        Some(other) => return Err(invalid(format!("input[{i}].role"), "a string", &other)),
    };
    let content = match item.remove("content") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::String(_) | Value::Array(_))) => content_text(v),
        Some(other) => {
            return Err(invalid(
                format!("input[{i}].content"),
                "a string or an array of content parts",
                &other,
            ));
        }
    };
    Ok(message(&role, content))
}

/// A `function_call` (`arguments`) or `custom_tool_call` (`input`) item as a tool
/// call: its `call_id` is the id the output refers to.
fn call(mut item: Map<String, Value>, arguments: &str) -> ToolCall {
    ToolCall {
        id: string_field(&mut item, "call_id").unwrap_or_default(),
        name: string_field(&mut item, "name").unwrap_or_default(),
        arguments: arguments_text(item.remove(arguments)),
    }
}

/// The text of a tool output: a string as is, parts' text joined, any other JSON
/// as its compact text.
fn output_text(output: Value) -> Option<String> {
    match output {
        Value::Null => None,
        v @ (Value::String(_) | Value::Array(_)) => content_text(v),
        other => Some(other.to_string()),
    }
}
