//! Reading a whole JSON body the way every protocol needs it, and saying what is wrong
//! with it.
//!
//! Request and response bodies of every JSON protocol are top-level objects read in
//! one pass: `parse_top_level` hands the object's entries to an `ObjectReader`
//! that builds only the values it keeps (a response's large `data` is skipped, never
//! materialized), in document order, and refuses what is not JSON or not an object
//! with a [`ParseError`] written for the API client. What a protocol reads *out of*
//! the object is its own business (see [`crate::protocol::openai`]); this module knows
//! JSON, not any wire format, so a new protocol reuses it as is.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value};

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

/// Why a body could not be turned into an
/// [`Exchange`](celgate_engine::exchange::Exchange).
///
/// The `Display` text is written for the API client: the gateway returns it verbatim as
/// the `message` of a 400 in the protocol's error shape (OpenAI's
/// `invalid_request_error`), so it names the offending field with a JSON-ish path
/// (`messages[2].role`).
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

/// Takes a string field out of `map`; any other type counts as absent.
pub(crate) fn string_field(map: &mut Map<String, Value>, key: &str) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

pub(crate) fn invalid(
    path: impl Into<String>,
    expected: &'static str,
    found: &Value,
) -> ParseError {
    ParseError::InvalidField {
        path: path.into(),
        expected,
        found: json_type(found),
    }
}

/// The JSON type of a value, as a client-facing noun phrase.
pub(crate) fn json_type(v: &Value) -> &'static str {
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
pub(crate) fn dedup_last_wins(entries: Vec<(String, Value)>) -> Vec<(String, Value)> {
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
pub(crate) fn parse_top_level<R: ObjectReader>(
    body_kind: BodyKind,
    body: &[u8],
    reader: R,
) -> Result<R::Out, ParseError> {
    // A UTF-8 byte-order mark is not JSON, but some clients send one.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    // Checked as UTF-8 once, in one pass, a body's strings need no check each (one
    // per string, ~100 instructions apiece, was 4% of a call); a body that is not
    // UTF-8 is read as bytes, so its error names the string at fault as before.
    let top = match std::str::from_utf8(body) {
        Ok(text) => read_top(serde_json::Deserializer::from_str(text), reader),
        Err(_) => read_top(serde_json::Deserializer::from_slice(body), reader),
    }
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

/// The whole document of `de` as a [`TopLevel`], trailing characters refused.
fn read_top<'de, D: serde_json::de::Read<'de>, R: ObjectReader>(
    mut de: serde_json::Deserializer<D>,
    reader: R,
) -> Result<TopLevel<R::Out>, serde_json::Error> {
    let top = TopLevelSeed { reader }.deserialize(&mut de)?;
    de.end()?;
    Ok(top)
}

/// A top-level JSON document: what an [`ObjectReader`] made of an object, or the type
/// it was instead.
enum TopLevel<T> {
    Object(T),
    Other(&'static str),
}

/// Reads a top-level JSON object's entries, skipping what it does not need.
pub(crate) trait ObjectReader {
    type Out;
    fn read<'de, A: MapAccess<'de>>(self, map: A) -> Result<Self::Out, A::Error>;
}

/// The object's entries in order, building only the values whose key passes `keep`.
pub(crate) struct KeepEntries {
    pub keep: fn(&str) -> bool,
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

/// An object's key, borrowed from the body unless it holds an escape: reading the
/// keys of an object to pick a few of them allocates nothing.
pub(crate) struct Key<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

/// A nested value read by `R` when it is an object; `None` (the value read and
/// dropped) when it is of any other type.
pub(crate) struct ObjectOrNone<R>(pub R);

impl<'de, R: ObjectReader> DeserializeSeed<'de> for ObjectOrNone<R> {
    type Value = Option<R::Out>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Ok(
            match (TopLevelSeed { reader: self.0 }).deserialize(deserializer)? {
                TopLevel::Object(out) => Some(out),
                TopLevel::Other(_) => None,
            },
        )
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
