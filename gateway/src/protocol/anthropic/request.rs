//! A Messages request read into the chat vocabulary the engine speaks.
//!
//! The top level names `model` (required: a call without one cannot be routed),
//! `stream`, `system`, `messages`, `tools` and `metadata`; every other key is a
//! generation parameter, kept as sent in request order. `system` (a string or text
//! blocks, their `cache_control` irrelevant to a span) becomes the system
//! instructions and opens the prompt as one `system` message. Each message's content
//! blocks become chat messages: `text` blocks are its text, `tool_use` blocks its
//! `tool_calls`, each `tool_result` block a `tool` message of its own (emitted before
//! the text of the message that carried it); images, documents, thinking and server
//! tool blocks carry no prompt text. A `role: "system"` message (Claude Code sends
//! one) is kept in place and its text joins the system instructions. Only what makes
//! the exchange unusable is refused: not JSON, no model, a field of the wrong type, a
//! message that is not an object with a string role.

use std::collections::HashSet;

use celgate_engine::exchange::{Exchange, Message};
use serde_json::{Map, Value};

use super::super::RequestFacts;
use super::super::json::{
    BodyKind, KeepEntries, ParseError, dedup_last_wins, invalid, parse_top_level, string_field,
};
use super::{block_type, join, metadata, tool_use};

/// The top-level fields read apart from the parameters.
#[derive(Default)]
struct Fields {
    model: Option<Value>,
    stream: Option<Value>,
    system: Option<Value>,
    messages: Option<Value>,
    tools: Option<Value>,
    metadata: Option<Value>,
}

/// Reads a request body into `ex`: `request_model`, `streaming`, `system`, `prompt`,
/// `tools`, `params`, the session and user `metadata` names, and `request_body`
/// (set even when the body is refused). A key given twice means its last value, as
/// it does to most JSON parsers ([`RequestFacts::duplicate_keys`] says so).
pub(super) fn parse(body: &[u8], ex: &mut Exchange) -> Result<RequestFacts, ParseError> {
    ex.request_body = Some(String::from_utf8_lossy(body).into_owned());
    let entries = parse_top_level(BodyKind::Request, body, KeepEntries { keep: |_| true })?;
    let duplicate_keys = {
        let mut seen = HashSet::with_capacity(entries.len());
        !entries.iter().all(|(k, _)| seen.insert(k.as_str()))
    };
    let mut fields = Fields::default();
    let mut params = Vec::with_capacity(entries.len());
    for (key, value) in dedup_last_wins(entries) {
        let slot = match key.as_str() {
            "model" => &mut fields.model,
            "stream" => &mut fields.stream,
            "system" => &mut fields.system,
            "messages" => &mut fields.messages,
            "tools" => &mut fields.tools,
            "metadata" => &mut fields.metadata,
            _ => {
                params.push((key, value));
                continue;
            }
        };
        *slot = Some(value);
    }

    let model = match fields.model {
        Some(Value::String(model)) => model,
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
    let tools = match fields.tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools,
        Some(other) => return Err(invalid("tools", "an array", &other)),
    };
    let instructions = system_texts(fields.system)?;
    let messages = parse_messages(fields.messages)?;

    let mut system = instructions.clone();
    let in_messages = messages.iter().filter(|m| m.role == "system");
    system.extend(in_messages.filter_map(|m| m.content.clone()));
    let mut prompt = Vec::with_capacity(messages.len() + 1);
    if let Some(text) = join(instructions, "\n") {
        prompt.push(Message {
            role: "system".to_owned(),
            content: Some(text),
            ..Message::default()
        });
    }
    prompt.extend(messages);

    if let Some(Value::Object(meta)) = &fields.metadata {
        metadata::read(meta, ex);
    }
    ex.request_model = Some(model);
    ex.streaming = streaming;
    ex.tools = tools;
    ex.system = system;
    ex.prompt = prompt;
    ex.params = params;
    Ok(RequestFacts { duplicate_keys })
}

/// The text parts of `system`: a string, or text blocks (strings among them are
/// taken as text; other blocks carry none).
fn system_texts(system: Option<Value>) -> Result<Vec<String>, ParseError> {
    match system {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(blocks)) => Ok(blocks.into_iter().filter_map(text_of).collect()),
        Some(other) => Err(invalid(
            "system",
            "a string or an array of text blocks",
            &other,
        )),
    }
}

/// The text of a block that is text: a `text` block's `text`, or a bare string.
fn text_of(block: Value) -> Option<String> {
    match block {
        Value::String(s) => Some(s),
        Value::Object(mut block) if block_type(&block) == "text" => {
            string_field(&mut block, "text")
        }
        _ => None,
    }
}

/// The `messages` array as chat messages (a message may become several).
fn parse_messages(messages: Option<Value>) -> Result<Vec<Message>, ParseError> {
    let items = match messages {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(invalid("messages", "an array of messages", &other)),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        read_message(i, item, &mut out)?;
    }
    Ok(out)
}

/// Reads `messages[i]` into `out`.
fn read_message(i: usize, item: Value, out: &mut Vec<Message>) -> Result<(), ParseError> {
    let Value::Object(mut map) = item else {
        return Err(invalid(format!("messages[{i}]"), "an object", &item));
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
    let message = |content| Message {
        role: role.clone(),
        content,
        ..Message::default()
    };
    match map.remove("content") {
        None | Some(Value::Null) => out.push(message(None)),
        Some(Value::String(text)) => out.push(message(Some(text))),
        Some(Value::Array(blocks)) => read_blocks(role.clone(), blocks, out),
        Some(other) => {
            return Err(invalid(
                format!("messages[{i}].content"),
                "a string, an array of content blocks, or null",
                &other,
            ));
        }
    }
    Ok(())
}

/// One message's content blocks: each `tool_result` a `tool` message, then the
/// message itself with its text and `tool_use` calls (left out when the message was
/// only tool results).
fn read_blocks(role: String, blocks: Vec<Value>, out: &mut Vec<Message>) {
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    let mut results = 0usize;
    for block in blocks {
        let mut block = match block {
            Value::String(text) => {
                texts.push(text);
                continue;
            }
            Value::Object(block) => block,
            _ => continue,
        };
        match block_type(&block) {
            "text" => texts.extend(string_field(&mut block, "text")),
            "tool_use" => tool_calls.push(tool_use(block)),
            "tool_result" => {
                out.push(tool_result(block));
                results += 1;
            }
            // image, document, thinking, redacted_thinking, server tools: no text.
            _ => {}
        }
    }
    if results == 0 || !texts.is_empty() || !tool_calls.is_empty() {
        out.push(Message {
            role,
            content: join(texts, "\n"),
            tool_calls,
            ..Message::default()
        });
    }
}

/// A `tool_result` block `{tool_use_id, content, is_error}` as a `tool` message:
/// its content a string or blocks whose text parts are joined.
fn tool_result(mut block: Map<String, Value>) -> Message {
    let content = match block.remove("content") {
        Some(Value::String(text)) => Some(text),
        Some(Value::Array(blocks)) => join(blocks.into_iter().filter_map(text_of), "\n"),
        _ => None,
    };
    Message {
        role: "tool".to_owned(),
        content,
        tool_call_id: string_field(&mut block, "tool_use_id"),
        ..Message::default()
    }
}
