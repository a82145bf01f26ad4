//! The borrowed value: what a context variable of one [`Exchange`] is, viewed in
//! place.
//!
//! [`crate::context::read`] maps each variable of the context to a [`Value`] (the
//! one place that decides what a variable holds, privacy rules included). Both
//! evaluators read that: the native evaluator ([`crate::native`]) works on it
//! directly, without copying a message or a JSON document; the CEL interpreter's
//! resolver converts it with [`Value::to_cel`]. So the two cannot disagree on what
//! `llm.prompt` or `request.headers` is. The exchange's own shapes (messages,
//! choices, tool calls, JSON, headers) stay variants of their own here, so that a
//! field of a message is a `match`, not a map lookup.
//!
//! [`Exchange`]: crate::exchange::Exchange

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::rc::Rc;

use crate::attributes::{AttrValue, MAX_VALUE_DEPTH, Scalar};
use crate::exchange::{Choice, Message, ToolCall};

/// A field name, with the fields of the exchange's own maps (messages, choices,
/// tool calls) resolved once at load.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: Box<str>,
    pub(crate) id: FieldId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldId {
    Role,
    Content,
    Name,
    ToolCalls,
    ToolCallId,
    Id,
    Arguments,
    Index,
    FinishReason,
    Other,
}

impl Field {
    pub(crate) fn new(name: &str) -> Field {
        let id = match name {
            "role" => FieldId::Role,
            "content" => FieldId::Content,
            "name" => FieldId::Name,
            "tool_calls" => FieldId::ToolCalls,
            "tool_call_id" => FieldId::ToolCallId,
            "id" => FieldId::Id,
            "arguments" => FieldId::Arguments,
            "index" => FieldId::Index,
            "finish_reason" => FieldId::FinishReason,
            _ => FieldId::Other,
        };
        Field {
            name: name.into(),
            id,
        }
    }
}

/// Every type name an expression may use as a value (`type(x) == string`). The
/// first [`VALUE_TYPES`] are the names [`Value::type_name`] gives: the types the
/// native evaluator models; the rest (`bytes`, `type`, `dyn`) are the interpreter's.
pub(crate) const TYPE_NAMES: &[&str] = &[
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "list",
    "map",
    "null_type",
    "bytes",
    "type",
    "dyn",
];

/// How many of [`TYPE_NAMES`] name types a [`Value`] can have.
pub(crate) const VALUE_TYPES: usize = 8;

/// A value during native evaluation. Exchange data is viewed in place.
#[derive(Clone, Debug)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(&'a str),
    /// A string made during evaluation (`+`, `toJson`).
    Owned(String),
    Type(&'static str),
    List(Rc<Vec<Value<'a>>>),
    /// Distinct string keys, in insertion order.
    Map(Rc<Vec<(&'a str, Value<'a>)>>),
    Messages(&'a [Message]),
    Message(&'a Message),
    Choices(&'a [Choice]),
    Choice(&'a Choice),
    ToolCalls(&'a [ToolCall]),
    ToolCall(&'a ToolCall),
    /// `llm.completion`: each choice's content, `""` when absent.
    Contents(&'a [Choice]),
    /// `llm.reasoning`: each choice's reasoning, `""` when absent.
    Reasonings(&'a [Choice]),
    /// A list of strings (`llm.systemInstructions`).
    Strings(&'a [String]),
    /// `llm.finishReasons`: each choice's finish reason, `""` when absent.
    FinishReasons(&'a [Choice]),
    /// `llm.toolCalls`: the tool calls of every choice.
    AllToolCalls(&'a [Choice]),
    /// `llm.tools`: JSON values at depth 0.
    JsonList(&'a [Json]),
    /// A JSON array or object at a depth (see [`json`]).
    Json(&'a Json, usize),
    /// `llm.params`: a map, the last of duplicate keys winning.
    Params(&'a [(String, Json)]),
    /// Headers: a map, the last of duplicate names winning.
    Headers(&'a [(String, String)]),
    /// What `flatten*` returns.
    Flat(Rc<Vec<(String, AttrValue)>>),
    /// A JSON array or object `parseJson` made (its scalars are plain values).
    /// Only rendered (attributes, `toJson`): anything else the native evaluator
    /// leaves to the interpreter, since its parts cannot borrow from the exchange.
    Parsed(Rc<Json>),
}

/// JSON as expressions see it: nesting beyond [`MAX_VALUE_DEPTH`] is the
/// string `"…"`, numbers are ints when they fit, else doubles.
pub(crate) fn json(j: &Json, depth: usize) -> Value<'_> {
    if depth > MAX_VALUE_DEPTH {
        return Value::Str("…");
    }
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Str(s),
        Json::Array(_) | Json::Object(_) => Value::Json(j, depth),
    }
}

/// [`json`] as the interpreter's value, owning its strings: what `parseJson`
/// returns (a document parsed during evaluation, borrowed from nothing).
pub(crate) fn json_to_cel(j: &Json, depth: usize) -> Box<dyn Val + 'static> {
    if depth > MAX_VALUE_DEPTH {
        return Box::new(CelString::from("…".to_owned()));
    }
    match j {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            None => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => Box::new(CelString::from(s.clone())),
        Json::Array(a) => cel_list(a.iter().map(|x| json_to_cel(x, depth + 1))),
        Json::Object(o) => {
            let map: HashMap<CelMapKey<'static>, Box<dyn Val + 'static>> = o
                .iter()
                .map(|(k, x)| (CelMapKey::from(k.clone()), json_to_cel(x, depth + 1)))
                .collect();
            Box::new(CelMap::from(map))
        }
    }
}

/// What `parseJson` makes of a string, for the native evaluator: `None` when it is
/// not JSON (the string stays as it is).
pub(crate) fn parse_json(s: &str) -> Option<Value<'static>> {
    let j: Json = serde_json::from_str(s).ok()?;
    Some(match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Owned(s),
        j => Value::Parsed(Rc::new(j)),
    })
}

pub(crate) fn opt_str(s: Option<&str>) -> Value<'_> {
    match s {
        Some(s) => Value::Str(s),
        None => Value::Null,
    }
}

pub(crate) fn opt_int<'a>(i: Option<i64>) -> Value<'a> {
    match i {
        Some(i) => Value::Int(i),
        None => Value::Null,
    }
}

/// Fields of a message, choice and tool call as maps, in key order.
const MESSAGE_KEYS: [&str; 5] = ["content", "name", "role", "tool_call_id", "tool_calls"];
const CHOICE_KEYS: [&str; 5] = ["content", "finish_reason", "index", "role", "tool_calls"];
const TOOL_CALL_KEYS: [&str; 3] = ["arguments", "id", "name"];

impl<'a> Value<'a> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Owned(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_list(&self) -> bool {
        self.list_len().is_some()
    }

    pub(crate) fn is_map(&self) -> bool {
        matches!(
            self,
            Value::Map(_)
                | Value::Message(_)
                | Value::Choice(_)
                | Value::ToolCall(_)
                | Value::Params(_)
                | Value::Headers(_)
        ) || matches!(self, Value::Json(Json::Object(_), _))
    }

    pub(crate) fn list_len(&self) -> Option<usize> {
        Some(match self {
            Value::List(l) => l.len(),
            Value::Messages(m) => m.len(),
            Value::Choices(c)
            | Value::Contents(c)
            | Value::Reasonings(c)
            | Value::FinishReasons(c) => c.len(),
            Value::Strings(s) => s.len(),
            Value::ToolCalls(t) => t.len(),
            Value::AllToolCalls(c) => c.iter().map(|c| c.tool_calls.len()).sum(),
            Value::JsonList(j) => j.len(),
            Value::Json(Json::Array(a), _) => a.len(),
            _ => return None,
        })
    }

    /// Item `i` of a list; `i` is in range.
    pub(crate) fn list_get(&self, i: usize) -> Value<'a> {
        match self {
            Value::List(l) => l[i].clone(),
            Value::Messages(m) => Value::Message(&m[i]),
            Value::Choices(c) => Value::Choice(&c[i]),
            Value::Contents(c) => Value::Str(c[i].content.as_deref().unwrap_or("")),
            Value::Reasonings(c) => Value::Str(c[i].reasoning.as_deref().unwrap_or("")),
            Value::Strings(s) => Value::Str(&s[i]),
            Value::FinishReasons(c) => Value::Str(c[i].finish_reason.as_deref().unwrap_or("")),
            Value::ToolCalls(t) => Value::ToolCall(&t[i]),
            Value::AllToolCalls(c) => {
                let mut i = i;
                for choice in c.iter() {
                    if i < choice.tool_calls.len() {
                        return Value::ToolCall(&choice.tool_calls[i]);
                    }
                    i -= choice.tool_calls.len();
                }
                unreachable!("index checked against list_len")
            }
            Value::JsonList(j) => json(&j[i], 0),
            Value::Json(Json::Array(a), d) => json(&a[i], d + 1),
            _ => unreachable!("list_get on a list"),
        }
    }

    /// `None` when this is not a map; `Some(None)` when the key is absent.
    pub(crate) fn map_get(&self, key: &str) -> Option<Option<Value<'a>>> {
        Some(match self {
            Value::Map(m) => m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()),
            Value::Message(m) => Some(match key {
                "role" => Value::Str(&m.role),
                "content" => opt_str(m.content.as_deref()),
                "name" => opt_str(m.name.as_deref()),
                "tool_calls" => Value::ToolCalls(&m.tool_calls),
                "tool_call_id" => opt_str(m.tool_call_id.as_deref()),
                _ => return Some(None),
            }),
            Value::Choice(c) => Some(match key {
                "index" => Value::Int(i64::from(c.index)),
                "role" => Value::Str(&c.role),
                "content" => opt_str(c.content.as_deref()),
                "tool_calls" => Value::ToolCalls(&c.tool_calls),
                "finish_reason" => opt_str(c.finish_reason.as_deref()),
                _ => return Some(None),
            }),
            Value::ToolCall(t) => Some(match key {
                "id" => Value::Str(&t.id),
                "name" => Value::Str(&t.name),
                "arguments" => Value::Str(&t.arguments),
                _ => return Some(None),
            }),
            Value::Params(p) => p
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| json(v, 0)),
            Value::Headers(h) => h
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| Value::Str(v)),
            Value::Json(Json::Object(o), d) => o.get(key).map(|v| json(v, d + 1)),
            _ => return None,
        })
    }

    /// [`Value::map_get`] with the field resolved at load.
    pub(crate) fn map_get_field(&self, f: &Field) -> Option<Option<Value<'a>>> {
        let id = f.id;
        Some(Some(match (self, id) {
            (Value::Message(m), FieldId::Role) => Value::Str(&m.role),
            (Value::Message(m), FieldId::Content) => opt_str(m.content.as_deref()),
            (Value::Message(m), FieldId::Name) => opt_str(m.name.as_deref()),
            (Value::Message(m), FieldId::ToolCalls) => Value::ToolCalls(&m.tool_calls),
            (Value::Message(m), FieldId::ToolCallId) => opt_str(m.tool_call_id.as_deref()),
            (Value::Message(_), _) => return Some(None),
            (Value::Choice(c), FieldId::Index) => Value::Int(i64::from(c.index)),
            (Value::Choice(c), FieldId::Role) => Value::Str(&c.role),
            (Value::Choice(c), FieldId::Content) => opt_str(c.content.as_deref()),
            (Value::Choice(c), FieldId::ToolCalls) => Value::ToolCalls(&c.tool_calls),
            (Value::Choice(c), FieldId::FinishReason) => opt_str(c.finish_reason.as_deref()),
            (Value::Choice(_), _) => return Some(None),
            (Value::ToolCall(t), FieldId::Id) => Value::Str(&t.id),
            (Value::ToolCall(t), FieldId::Name) => Value::Str(&t.name),
            (Value::ToolCall(t), FieldId::Arguments) => Value::Str(&t.arguments),
            (Value::ToolCall(_), _) => return Some(None),
            _ => return self.map_get(&f.name),
        }))
    }

    /// A map's entries in key order (byte order), duplicates resolved.
    pub(crate) fn map_entries(&self) -> Option<Vec<(&'a str, Value<'a>)>> {
        let fixed = |keys: &[&'static str]| -> Vec<(&'a str, Value<'a>)> {
            keys.iter()
                .map(|k| (*k, self.map_get(k).flatten().unwrap_or(Value::Null)))
                .collect()
        };
        Some(match self {
            Value::Map(m) => {
                let mut e: Vec<_> = m.iter().map(|(k, v)| (*k, v.clone())).collect();
                e.sort_by(|a, b| a.0.cmp(b.0));
                e
            }
            Value::Message(_) => fixed(&MESSAGE_KEYS),
            Value::Choice(_) => fixed(&CHOICE_KEYS),
            Value::ToolCall(_) => fixed(&TOOL_CALL_KEYS),
            Value::Params(p) => last_wins(p.iter().map(|(k, v)| (k.as_str(), json(v, 0)))),
            Value::Headers(h) => last_wins(h.iter().map(|(k, v)| (k.as_str(), Value::Str(v)))),
            Value::Json(Json::Object(o), d) => {
                let mut e: Vec<_> = o
                    .iter()
                    .map(|(k, v)| (k.as_str(), json(v, d + 1)))
                    .collect();
                e.sort_by(|a, b| a.0.cmp(b.0));
                e
            }
            _ => return None,
        })
    }

    pub(crate) fn map_len(&self) -> Option<usize> {
        Some(match self {
            Value::Map(m) => m.len(),
            Value::Message(_) => MESSAGE_KEYS.len(),
            Value::Choice(_) => CHOICE_KEYS.len(),
            Value::ToolCall(_) => TOOL_CALL_KEYS.len(),
            Value::Params(_) | Value::Headers(_) => self.map_entries()?.len(),
            Value::Json(Json::Object(o), _) => o.len(),
            _ => return None,
        })
    }

    /// [`Value::scalar`], moving a string made during evaluation.
    pub(crate) fn into_scalar(self) -> Option<AttrValue> {
        match self {
            Value::Owned(s) => Some(AttrValue::String(s)),
            v => v.scalar(),
        }
    }

    /// The value as a scalar attribute, by the one rule of
    /// [`crate::attributes::Scalar`] (written out for the types that keep theirs:
    /// this is on every field's path, and a call per value shows).
    pub(crate) fn scalar(&self) -> Option<AttrValue> {
        Some(match self {
            Value::Str(s) => AttrValue::String((*s).to_owned()),
            Value::Owned(s) => AttrValue::String(s.clone()),
            Value::Int(i) => AttrValue::Int(*i),
            Value::Double(d) => AttrValue::Double(*d),
            Value::Bool(b) => AttrValue::Bool(*b),
            Value::UInt(u) => Scalar::UInt(*u).attr(),
            _ => return None,
        })
    }

    pub(crate) fn type_name(&self) -> Option<&'static str> {
        Some(match self {
            Value::Null => "null_type",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Double(_) => "double",
            Value::Str(_) | Value::Owned(_) => "string",
            Value::Type(_) | Value::Flat(_) => return None,
            v if v.is_list() => "list",
            v if v.is_map() => "map",
            _ => return None,
        })
    }
}

impl<'a> Value<'a> {
    /// The value as the CEL interpreter's, borrowing the exchange's strings:
    /// lists and maps are built here, once per variable per exchange (the
    /// resolver keeps them).
    pub(crate) fn to_cel(&self) -> Box<dyn Val + 'a> {
        match self {
            Value::Null => Box::new(CelNull),
            Value::Bool(b) => Box::new(CelBool::from(*b)),
            Value::Int(i) => Box::new(CelInt::from(*i)),
            Value::UInt(u) => Box::new(CelUInt::from(*u)),
            Value::Double(d) => Box::new(CelDouble::from(*d)),
            Value::Str(s) => Box::new(CelString::from(*s)),
            Value::Owned(s) => Box::new(CelString::from(s.clone())),
            Value::Parsed(j) => json_to_cel(j, 0),
            // Every choice's calls, in one pass (`list_get` would rescan).
            Value::AllToolCalls(choices) => cel_list(
                choices
                    .iter()
                    .flat_map(|c| c.tool_calls.iter())
                    .map(|t| Value::ToolCall(t).to_cel()),
            ),
            v => {
                if let Some(len) = v.list_len() {
                    return cel_list((0..len).map(|i| v.list_get(i).to_cel()));
                }
                match v.map_entries() {
                    Some(entries) => {
                        let map: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = entries
                            .into_iter()
                            .map(|(k, x)| (CelMapKey::from(k), x.to_cel()))
                            .collect();
                        Box::new(CelMap::from(map))
                    }
                    // Types and flattened values are made by expressions, never
                    // read from an exchange.
                    None => Box::new(CelNull),
                }
            }
        }
    }
}

fn cel_list<'a>(items: impl Iterator<Item = Box<dyn Val + 'a>>) -> Box<dyn Val + 'a> {
    Box::new(CelList::from(items.collect::<Vec<_>>()))
}

/// Sorted by key, the last value of a duplicate key kept (as collecting into a
/// `HashMap` does).
fn last_wins<'a>(
    entries: impl DoubleEndedIterator<Item = (&'a str, Value<'a>)>,
) -> Vec<(&'a str, Value<'a>)> {
    // Reversed, then sorted stably: the first of each run of equal keys is the
    // last given, and `dedup_by` keeps the first.
    let mut e: Vec<(&'a str, Value<'a>)> = entries.rev().collect();
    e.sort_by(|a, b| a.0.cmp(b.0));
    e.dedup_by(|later, first| later.0 == first.0);
    e
}
