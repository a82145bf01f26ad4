//! A whole (non-streamed) Messages answer.
//!
//! An answer is one message, `{id, type: "message", role, model, content: [blocks],
//! stop_reason, stop_sequence, usage}`, read in one pass without building the body
//! as a [`Value`]: its `content` blocks become one [`Choice`] (text, `tool_use` calls,
//! `thinking` as reasoning; redacted thinking and server tool blocks carry none),
//! at most [`MAX_TRACKED`] of them, the rest skipped and the span marked truncated.
//! An error body (`{"type": "error", "error": {...}}`) is not a parse error: it has
//! no choice. Only a body that is not JSON or not an object errs.

use std::fmt;

use celgate_engine::exchange::Exchange;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::super::json::{BodyKind, Key, ObjectReader, ParseError, parse_top_level, string_field};
#[cfg(doc)]
use super::super::limits::MAX_TRACKED;
use super::super::limits::capped_seq;
use super::super::tokens::set_usage;
use super::{Counts, block_type, choice, tool_use};

/// Reads a response body into `ex` and keeps it as `response_body`.
pub(super) fn parse(body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
    ex.response_body = Some(String::from_utf8_lossy(body).into_owned());
    parse_fields(body, ex)
}

/// [`parse`] for a body the caller no longer needs: it becomes `response_body`
/// without a copy.
pub(super) fn parse_owned(body: Vec<u8>, ex: &mut Exchange) -> Result<(), ParseError> {
    match String::from_utf8(body) {
        Ok(text) => {
            let parsed = parse_fields(text.as_bytes(), ex);
            ex.response_body = Some(text);
            parsed
        }
        Err(e) => {
            let bytes = e.into_bytes();
            let parsed = parse_fields(&bytes, ex);
            ex.response_body = Some(String::from_utf8_lossy(&bytes).into_owned());
            parsed
        }
    }
}

/// Everything [`parse`] sets but `response_body`.
fn parse_fields(body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
    let fields = parse_top_level(BodyKind::Response, body, AnswerReader)?;
    let is_message = match fields.kind.as_deref() {
        Some(kind) => kind == "message",
        None => fields.content.is_some() || fields.role.is_some(),
    };
    if let Some(id) = fields.id {
        ex.response_id = Some(id);
    }
    if let Some(model) = fields.model {
        ex.response_model = Some(model);
    }
    if let Some(usage) = &fields.usage {
        let counts = Counts::of(usage);
        if counts.any() {
            set_usage(ex, counts.usage());
        }
    }
    if is_message {
        let (blocks, truncated) = fields.content.unwrap_or_default();
        let role = fields.role.unwrap_or_else(|| "assistant".to_owned());
        ex.choices = vec![message_choice(role, blocks, fields.stop_reason)];
        ex.response_truncated |= truncated;
    } else {
        ex.choices = Vec::new();
    }
    Ok(())
}

/// The choice an answer's content blocks make.
fn message_choice(
    role: String,
    blocks: Vec<Map<String, Value>>,
    stop_reason: Option<String>,
) -> celgate_engine::exchange::Choice {
    let mut texts = Vec::new();
    let mut thinking = Vec::new();
    let mut tool_calls = Vec::new();
    for mut block in blocks {
        match block_type(&block) {
            "text" => texts.extend(string_field(&mut block, "text")),
            "thinking" => thinking.extend(string_field(&mut block, "thinking")),
            "tool_use" => tool_calls.push(tool_use(block)),
            _ => {}
        }
    }
    choice(role, texts, thinking, tool_calls, stop_reason)
}

/// What an answer's top level says, of the keys the span reads; of a key given
/// twice the last counts, even when mistyped.
#[derive(Default)]
struct AnswerFields {
    id: Option<String>,
    /// `type`: `message`, or `error`.
    kind: Option<String>,
    role: Option<String>,
    model: Option<String>,
    stop_reason: Option<String>,
    /// The object blocks of `content` (up to [`MAX_TRACKED`]) and whether some were
    /// skipped; `None` when `content` is not an array.
    content: Option<(Vec<Map<String, Value>>, bool)>,
    usage: Option<Map<String, Value>>,
}

struct AnswerReader;

impl ObjectReader for AnswerReader {
    type Out = AnswerFields;

    fn read<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<AnswerFields, A::Error> {
        let mut fields = AnswerFields::default();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let slot = match key.as_ref() {
                "id" => &mut fields.id,
                "type" => &mut fields.kind,
                "role" => &mut fields.role,
                "model" => &mut fields.model,
                "stop_reason" => &mut fields.stop_reason,
                "content" => {
                    fields.content = map.next_value_seed(BlocksSeed)?;
                    continue;
                }
                "usage" => {
                    fields.usage = match map.next_value::<Value>()? {
                        Value::Object(usage) => Some(usage),
                        _ => None,
                    };
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = match map.next_value::<Value>()? {
                Value::String(s) => Some(s),
                _ => None,
            };
        }
        Ok(fields)
    }
}

/// An answer's `content`: its object blocks, built one at a time up to
/// [`MAX_TRACKED`], the rest skipped unbuilt; any value but an array is `None`.
struct BlocksSeed;

type Blocks = Option<(Vec<Map<String, Value>>, bool)>;

impl<'de> DeserializeSeed<'de> for BlocksSeed {
    type Value = Blocks;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Blocks, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BlocksSeed {
    type Value = Blocks;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of content blocks")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Blocks, A::Error> {
        let blocks = capped_seq(seq, |v| match v {
            Value::Object(block) => Some(block),
            _ => None,
        })?;
        Ok(Some(blocks))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Blocks, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Blocks, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Blocks, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Blocks, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Blocks, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Blocks, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Blocks, E> {
        Ok(None)
    }
}
