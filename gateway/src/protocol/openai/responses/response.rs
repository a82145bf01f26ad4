//! A Responses answer: the `response` object, whole (a JSON body) or as a stream's
//! final event carries it, and the one [`Choice`] its output items make.
//!
//! The object's top level is read in one pass without building it as a [`Value`]:
//! `id`, `model`, `status`, `incomplete_details`, `error`, `usage` and `output`,
//! whose items are built one at a time into [`Item`]s (at most [`MAX_TRACKED`]; the
//! rest are skipped and the answer marked truncated); everything else is skipped
//! unread. The stream reader (`stream.rs`) builds the same [`Item`]s from its events
//! and makes its choice with the same [`choice`], so a streamed answer and the same
//! answer as one body describe the call alike.

use std::fmt;

use celgate_engine::exchange::{Choice, Exchange, ToolCall};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::super::json::{BodyKind, Key, ObjectReader, ParseError, parse_top_level};
#[cfg(doc)]
use super::super::super::limits::MAX_TRACKED;
use super::super::super::limits::capped_seq;
use super::super::super::tokens::{Usage, json_count, set_usage};
use super::super::{arguments_text, content_text, token_details};
use super::finish_reason;

/// Reads a whole answer into `ex` (all but `response_body`): `response_id`,
/// `response_model`, the token counts and one choice when the body is a response
/// (it has `output` or `status`; an error body `{"error": {...}}` has no choice).
pub(super) fn parse(body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
    let fields = parse_top_level(BodyKind::Response, body, ResponseReader)?;
    if let Some(id) = &fields.id {
        ex.response_id = Some(id.clone());
    }
    if let Some(model) = &fields.model {
        ex.response_model = Some(model.clone());
    }
    if let Some(usage) = fields.usage() {
        set_usage(ex, usage);
    }
    ex.choices = fields.choice().into_iter().collect();
    ex.response_truncated |= fields.truncated;
    Ok(())
}

/// What an output item is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `message`: `output_text` parts.
    Message,
    /// `function_call`: a call of a function tool.
    FunctionCall,
    /// `custom_tool_call`: a call of a free-form tool, its `input` as arguments.
    CustomToolCall,
    /// `reasoning`: summary (and reasoning text) parts.
    Reasoning,
    /// Anything else (`web_search_call`, ...), by its `type`: no text.
    Other(String),
}

impl Kind {
    fn of(kind: Option<&str>) -> Kind {
        match kind {
            None | Some("message") => Kind::Message,
            Some("function_call") => Kind::FunctionCall,
            Some("custom_tool_call") => Kind::CustomToolCall,
            Some("reasoning") => Kind::Reasoning,
            Some(other) => Kind::Other(other.to_owned()),
        }
    }

    fn is_call(&self) -> bool {
        matches!(self, Kind::FunctionCall | Kind::CustomToolCall)
    }
}

/// One text part of an item, by the index the stream's events give it.
pub(super) type Part = (u32, String);

/// One output item, as far as the span reads it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Item {
    pub kind: Kind,
    /// The item's own `id` (`msg_...`, `fc_...`), for the rendered body.
    pub id: Option<String>,
    /// A message's text parts (a whole item's read as one, its parts joined); a
    /// reasoning item's summary parts. By index.
    pub text: Vec<Part>,
    /// A reasoning item's `reasoning_text` content parts, by index.
    pub reasoning_text: Vec<Part>,
    /// A call item's `call_id`, name and arguments.
    pub call: ToolCall,
}

impl Item {
    pub fn new(kind: Kind) -> Item {
        Item {
            kind,
            id: None,
            text: Vec::new(),
            reasoning_text: Vec::new(),
            call: ToolCall::default(),
        }
    }

    /// Reads an output item; `None` for a value that is not an object.
    pub fn from_value(v: Value) -> Option<Item> {
        let Value::Object(mut m) = v else {
            return None;
        };
        let mut item = Item::new(Kind::of(m.get("type").and_then(Value::as_str)));
        item.id = string(m.remove("id"));
        match item.kind {
            Kind::Message => {
                item.text = m
                    .remove("content")
                    .and_then(content_text)
                    .map(|text| (0, text))
                    .into_iter()
                    .collect();
            }
            Kind::FunctionCall | Kind::CustomToolCall => {
                let arguments = if item.kind == Kind::FunctionCall {
                    "arguments"
                } else {
                    "input"
                };
                item.call = ToolCall {
                    id: string(m.remove("call_id")).unwrap_or_default(),
                    name: string(m.remove("name")).unwrap_or_default(),
                    arguments: arguments_text(m.remove(arguments)),
                };
            }
            Kind::Reasoning => {
                item.text = part_texts(m.remove("summary"));
                item.reasoning_text = part_texts(m.remove("content"));
            }
            Kind::Other(_) => {}
        }
        Some(item)
    }

    /// The bytes of text the item holds (what a stream's budget charged for it).
    pub fn text_bytes(&self) -> usize {
        let parts = self.text.iter().chain(&self.reasoning_text);
        parts.map(|(_, t)| t.len()).sum::<usize>() + self.call.arguments.len()
    }
}

fn string(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// The `text` of each object in a list of parts (`summary_text`, `reasoning_text`),
/// indexed by position.
fn part_texts(parts: Option<Value>) -> Vec<Part> {
    let Some(Value::Array(parts)) = parts else {
        return Vec::new();
    };
    let texts = parts.into_iter().filter_map(|part| match part {
        Value::Object(mut part) => string(part.remove("text")),
        _ => None,
    });
    (0..).zip(texts).collect()
}

/// The one choice output items make (see the module doc of
/// [`super`]): message text and reasoning joined with `\n`, the calls in order,
/// the finish reason derived from `status`.
pub(super) fn choice(items: &[Item], status: Option<&str>, incomplete: Option<&str>) -> Choice {
    let of = |kind: Kind| items.iter().filter(move |i| i.kind == kind);
    let text = of(Kind::Message).flat_map(|i| &i.text);
    let reasoning = of(Kind::Reasoning).flat_map(|i| {
        // A summary, else the reasoning text itself.
        if i.text.is_empty() {
            &i.reasoning_text
        } else {
            &i.text
        }
    });
    let tool_calls: Vec<ToolCall> = items
        .iter()
        .filter(|i| i.kind.is_call())
        .map(|i| i.call.clone())
        .collect();
    Choice {
        index: 0,
        role: "assistant".to_owned(),
        content: join(text),
        finish_reason: finish_reason(status, incomplete, !tool_calls.is_empty()),
        tool_calls,
        reasoning: join(reasoning),
    }
}

/// Parts' texts joined with `\n`; `None` when there is no part.
fn join<'a>(parts: impl Iterator<Item = &'a Part>) -> Option<String> {
    let mut out: Option<String> = None;
    for (_, text) in parts {
        match &mut out {
            Some(s) => {
                s.push('\n');
                s.push_str(text);
            }
            None => out = Some(text.clone()),
        }
    }
    out
}

/// A response object's top level, of the keys the span reads. Of a key given twice
/// the last one counts, even when its value is not of the expected type.
#[derive(Debug, Default)]
pub(super) struct ResponseFields {
    pub id: Option<String>,
    pub model: Option<String>,
    pub status: Option<String>,
    /// As sent, when an object.
    pub incomplete_details: Option<Value>,
    /// As sent, when not null.
    pub error: Option<Value>,
    /// As sent, when an object.
    pub usage: Option<Map<String, Value>>,
    /// `output`, when it is an array.
    pub output: Option<Vec<Item>>,
    /// `output` had more than [`MAX_TRACKED`] items; the rest were skipped.
    pub truncated: bool,
}

impl ResponseFields {
    /// `incomplete_details.reason`.
    pub fn incomplete_reason(&self) -> Option<&str> {
        self.incomplete_details.as_ref()?.get("reason")?.as_str()
    }

    /// The token counts of `usage`.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(usage)
    }

    /// The answer's choice; `None` for a body that is no response (no `output`
    /// list and no `status`).
    fn choice(&self) -> Option<Choice> {
        if self.output.is_none() && self.status.is_none() {
            return None;
        }
        let items = self.output.as_deref().unwrap_or_default();
        Some(choice(
            items,
            self.status.as_deref(),
            self.incomplete_reason(),
        ))
    }
}

/// A Responses `usage` object's counts (negative or mistyped ones are none).
pub(super) fn usage(usage: &Map<String, Value>) -> Usage {
    let count = |key: &str| usage.get(key).and_then(json_count);
    Usage {
        input: count("input_tokens"),
        output: count("output_tokens"),
        total: count("total_tokens"),
        details: token_details(
            usage.get("input_tokens_details"),
            usage.get("output_tokens_details"),
        ),
    }
}

/// Reads a response object's top level into [`ResponseFields`].
pub(super) struct ResponseReader;

impl ObjectReader for ResponseReader {
    type Out = ResponseFields;

    fn read<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<ResponseFields, A::Error> {
        let mut fields = ResponseFields::default();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match key.as_ref() {
                "id" => fields.id = string(Some(map.next_value()?)),
                "model" => fields.model = string(Some(map.next_value()?)),
                "status" => fields.status = string(Some(map.next_value()?)),
                "incomplete_details" => {
                    fields.incomplete_details =
                        Some(map.next_value::<Value>()?).filter(Value::is_object);
                }
                "error" => fields.error = Some(map.next_value::<Value>()?).filter(|v| !v.is_null()),
                "usage" => {
                    fields.usage = match map.next_value::<Value>()? {
                        Value::Object(usage) => Some(usage),
                        _ => None,
                    };
                }
                "output" => {
                    let output = map.next_value_seed(OutputSeed)?;
                    fields.truncated = output.as_ref().is_some_and(|(_, cut)| *cut);
                    fields.output = output.map(|(items, _)| items);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A response object inside a stream event (`response.created` ... `.completed`):
/// `None` when the value is not an object.
#[derive(Debug, Default)]
pub(super) struct EventResponse(pub Option<ResponseFields>);

impl<'de> Deserialize<'de> for EventResponse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EventResponseVisitor)
    }
}

struct EventResponseVisitor;

/// Skips any value but an object, yielding `Default`.
macro_rules! nothing_but_maps {
    ($out:ty) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok(<$out>::default())
        }
    };
}

impl<'de> Visitor<'de> for EventResponseVisitor {
    type Value = EventResponse;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a response object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EventResponse, A::Error> {
        ResponseReader
            .read(map)
            .map(|fields| EventResponse(Some(fields)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventResponse, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(EventResponse(None))
    }

    nothing_but_maps!(EventResponse);
}

/// A response's `output`: each object element becomes an [`Item`] as it is read, up
/// to [`MAX_TRACKED`]; `None` when it is not an array. With the items: whether some
/// were skipped.
struct OutputSeed;

type Output = Option<(Vec<Item>, bool)>;

impl<'de> DeserializeSeed<'de> for OutputSeed {
    type Value = Output;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Output, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OutputSeed {
    type Value = Output;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of output items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Output, A::Error> {
        Ok(Some(capped_seq(seq, Item::from_value)?))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Output, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    nothing_but_maps!(Output);
}

// ---------------------------------------------------------------------------------
// Rendering items back (a stream's equivalent non-streaming body).

/// Text parts as a body has them, each of type `kind`.
fn parts<'a>(parts: &'a [Part], kind: &'static str) -> Vec<RenderedPart<'a>> {
    parts
        .iter()
        .map(|(_, text)| RenderedPart { kind, text })
        .collect()
}

/// An item as the `output` of a response body.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum RenderedItem<'a> {
    Message {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        role: &'static str,
        content: Vec<RenderedPart<'a>>,
    },
    FunctionCall {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    CustomToolCall {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        call_id: &'a str,
        name: &'a str,
        input: &'a str,
    },
    Reasoning {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        summary: Vec<RenderedPart<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        content: Vec<RenderedPart<'a>>,
    },
}

/// A text part, with its type (`output_text`, `summary_text`, `reasoning_text`).
#[derive(Serialize)]
pub(super) struct RenderedPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl Item {
    /// The item as a response body's `output` has it; an item of another kind
    /// renders as `{type, id}` only.
    pub fn render(&self) -> Value {
        let id = self.id.as_deref();
        let call = &self.call;
        let rendered = match &self.kind {
            Kind::Message => RenderedItem::Message {
                id,
                role: "assistant",
                content: parts(&self.text, "output_text"),
            },
            Kind::FunctionCall => RenderedItem::FunctionCall {
                id,
                call_id: &call.id,
                name: &call.name,
                arguments: &call.arguments,
            },
            Kind::CustomToolCall => RenderedItem::CustomToolCall {
                id,
                call_id: &call.id,
                name: &call.name,
                input: &call.arguments,
            },
            Kind::Reasoning => RenderedItem::Reasoning {
                id,
                summary: parts(&self.text, "summary_text"),
                content: parts(&self.reasoning_text, "reasoning_text"),
            },
            Kind::Other(kind) => {
                let mut other = Map::new();
                other.insert("type".to_owned(), Value::String(kind.clone()));
                if let Some(id) = id {
                    other.insert("id".to_owned(), Value::String(id.to_owned()));
                }
                return Value::Object(other);
            }
        };
        serde_json::to_value(rendered).unwrap_or(Value::Null)
    }
}
