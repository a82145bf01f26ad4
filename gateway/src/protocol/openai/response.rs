//! The answer side every OpenAI endpoint shares: a whole (non-streamed) response.
//!
//! An answer's top level is read in one pass without building it as a [`Value`]:
//! `id`, `model`, the `usage` object and, but for embeddings, `choices` (chat
//! `message`s or legacy `text`, one [`Choice`] at a time, capped at
//! [`MAX_TRACKED`]); everything else is skipped unread. An error body
//! (`{"error": {...}}`) is not a parse error: it simply has no choices.

use std::fmt;

use celgate_engine::exchange::{Choice, Exchange};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::super::json::{BodyKind, Key, ObjectOrNone, ObjectReader, ParseError, parse_top_level};
#[cfg(doc)]
use super::super::limits::MAX_TRACKED;
use super::super::limits::capped_seq_seeded;
use super::usage::{self, UsageFields, UsageReader};
use super::{content_text, function_call, tool_call};

/// Parses a response body into `ex` (see [`super::parse_response`]); `choices`:
/// read them and keep the body as `response_body`.
pub(crate) fn parse(choices: bool, body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
    if choices {
        ex.response_body = Some(String::from_utf8_lossy(body).into_owned());
    }
    parse_fields(choices, body, ex)
}

/// [`parse`] for a body the caller no longer needs: it becomes `response_body`
/// without being copied (a large answer is held once, not twice).
pub(crate) fn parse_owned(
    choices: bool,
    body: Vec<u8>,
    ex: &mut Exchange,
) -> Result<(), ParseError> {
    if !choices {
        return parse_fields(choices, &body, ex);
    }
    match String::from_utf8(body) {
        Ok(text) => {
            let parsed = parse_fields(choices, text.as_bytes(), ex);
            ex.response_body = Some(text);
            parsed
        }
        Err(e) => {
            let bytes = e.into_bytes();
            let parsed = parse_fields(choices, &bytes, ex);
            ex.response_body = Some(String::from_utf8_lossy(&bytes).into_owned());
            parsed
        }
    }
}

/// Everything [`parse`] sets but `response_body`.
///
/// Read in one pass without building the body as a [`Value`]: `choices` are turned
/// into [`Choice`]s one at a time, and past [`MAX_TRACKED`] of them the rest are
/// skipped and `response_truncated` is set (a hostile body of 300k choices once cost
/// half a gigabyte).
fn parse_fields(choices: bool, body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
    let reader = ResponseReader { choices };
    let fields = parse_top_level(BodyKind::Response, body, reader)?;
    if let Some(id) = fields.id {
        ex.response_id = Some(id);
    }
    if let Some(model) = fields.model {
        ex.response_model = Some(model);
    }
    if let Some(usage) = fields.usage {
        usage::apply(ex, &usage);
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
    usage: Option<UsageFields>,
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
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match key.as_ref() {
                "id" => fields.id = string_value(map.next_value::<Value>()?),
                "model" => fields.model = string_value(map.next_value::<Value>()?),
                "usage" => fields.usage = map.next_value_seed(ObjectOrNone(UsageReader))?,
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

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        // A choice's position counts every element read, objects or not.
        capped_seq_seeded(seq, |at| ObjectOrNone(ChoiceReader { at }))
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

/// One `choices[]` element of a chat or text completion response, read without
/// building it: `index`, `finish_reason`, the `message` (or a legacy `text`); the
/// rest (`logprobs`, ...) is skipped. Of a key given twice the last one counts.
struct ChoiceReader {
    /// Its position in `choices`: its index when it names none.
    at: usize,
}

impl ObjectReader for ChoiceReader {
    type Out = Choice;

    fn read<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<Choice, A::Error> {
        let (mut index, mut finish_reason, mut message, mut text) = (None, None, None, None);
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match key.as_ref() {
                "index" => index = map.next_value::<Value>()?.as_u64(),
                "finish_reason" => finish_reason = string_value(map.next_value()?),
                "message" => message = map.next_value_seed(ObjectOrNone(MessageReader))?,
                "text" => text = string_value(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let index = index
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| u32::try_from(self.at).unwrap_or(u32::MAX));
        let mut choice = Choice {
            index,
            role: "assistant".to_owned(),
            finish_reason,
            ..Choice::default()
        };
        match message {
            Some(message) => message.into_choice(&mut choice),
            None => choice.content = text,
        }
        Ok(choice)
    }
}

/// A choice's `message`, as far as the span reads it.
#[derive(Default)]
struct MessageFields {
    role: Option<String>,
    content: Option<Value>,
    tool_calls: Option<Value>,
    function_call: Option<Value>,
}

impl MessageFields {
    fn into_choice(self, choice: &mut Choice) {
        if let Some(role) = self.role {
            choice.role = role;
        }
        choice.content = self.content.and_then(content_text);
        if let Some(Value::Array(calls)) = self.tool_calls {
            choice.tool_calls = calls
                .into_iter()
                .filter_map(|c| match c {
                    Value::Object(call) => Some(tool_call(call)),
                    _ => None,
                })
                .collect();
        }
        if let Some(Value::Object(call)) = self.function_call {
            choice.tool_calls.push(function_call(call));
        }
    }
}

/// Reads a choice's `message` object into [`MessageFields`].
struct MessageReader;

impl ObjectReader for MessageReader {
    type Out = MessageFields;

    fn read<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<MessageFields, A::Error> {
        let mut fields = MessageFields::default();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match key.as_ref() {
                "role" => fields.role = string_value(map.next_value()?),
                "content" => fields.content = Some(map.next_value()?),
                "tool_calls" => fields.tool_calls = Some(map.next_value()?),
                "function_call" => fields.function_call = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}
