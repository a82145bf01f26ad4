//! `POST /v1/chat/completions`: chat completions, the prompt in `messages`.
//!
//! Each `messages[]` element must be an object with a string `role`; its `content`
//! (a string or content parts, reduced to their text), `name`, `tool_calls` (and the
//! legacy `function_call`) and `tool_call_id` are read. Answers (`choices[].message`)
//! and streams (`choices[].delta`) are read by the family (`response.rs`,
//! `chat_stream.rs`).

use celgate_engine::exchange::{Message, Operation};
use serde_json::Value;

use super::super::json::{ParseError, invalid, string_field};
use super::request::PromptFields;
use super::{Endpoint, content_text, function_call, tool_call};

/// The chat completions endpoint.
pub static CHAT: Endpoint = Endpoint {
    operation: Operation::Chat,
    path: "/v1/chat/completions",
    read_prompt: prompt,
    choices: true,
};

/// The prompt of a chat request: its `messages`, which must be well-formed.
fn prompt(fields: PromptFields) -> Result<Vec<Message>, ParseError> {
    match fields.messages {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => parse_messages(v),
    }
}

/// The prompt of a request celgate does not otherwise read ([`Operation::Other`]):
/// its `messages` when they are well-formed, else none.
pub(crate) fn lenient_prompt(fields: PromptFields) -> Result<Vec<Message>, ParseError> {
    Ok(match fields.messages {
        Some(v @ Value::Array(_)) => parse_messages(v).unwrap_or_default(),
        _ => Vec::new(),
    })
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
