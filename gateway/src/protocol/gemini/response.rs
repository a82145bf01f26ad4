//! A whole Gemini answer: one `GenerateContentResponse`, or the JSON array of them
//! that `:streamGenerateContent` answers without `alt=sse`.
//!
//! The body is read in one pass, chunk by chunk, into an [`Answer`] (an array is
//! merged as its stream would be), without building it as a `Value`. Only a body
//! that is not JSON, or neither an object nor an array, is an error; an error body
//! (`{"error": {...}}`, also as an array element) yields no choice.

use std::fmt;

use celgate_engine::exchange::Exchange;
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::super::json::{BodyKind, ParseError};
use super::answer::Answer;
use super::wire::RawChunk;

/// Parses a whole answer into `ex`, keeping the body as `response_body`.
pub(super) fn parse(body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
    ex.response_body = Some(String::from_utf8_lossy(body).into_owned());
    read(body, ex)
}

/// [`parse`] for a body the caller no longer needs: it becomes `response_body`
/// without a copy.
pub(super) fn parse_owned(body: Vec<u8>, ex: &mut Exchange) -> Result<(), ParseError> {
    match String::from_utf8(body) {
        Ok(text) => {
            let parsed = read(text.as_bytes(), ex);
            ex.response_body = Some(text);
            parsed
        }
        Err(e) => {
            let bytes = e.into_bytes();
            let parsed = read(&bytes, ex);
            ex.response_body = Some(String::from_utf8_lossy(&bytes).into_owned());
            parsed
        }
    }
}

/// Everything [`parse`] sets but `response_body`.
fn read(body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
    // A UTF-8 byte-order mark is not JSON, but some servers send one.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut answer = Answer::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let shape = ChunksSeed {
        answer: &mut answer,
    }
    .deserialize(&mut de)
    .and_then(|shape| de.end().map(|()| shape))
    .map_err(|source| ParseError::InvalidJson {
        body: BodyKind::Response,
        source,
    })?;
    if let Shape::Other(found) = shape {
        return Err(ParseError::NotAnObject {
            body: BodyKind::Response,
            found,
        });
    }
    answer.write(ex);
    Ok(())
}

/// What the top level of a body was.
enum Shape {
    /// An object or an array: read into the answer.
    Chunks,
    /// Neither: its JSON type.
    Other(&'static str),
}

/// Reads a top-level object (one chunk) or array (a chunk per element) into an
/// [`Answer`].
struct ChunksSeed<'s> {
    answer: &'s mut Answer,
}

impl ChunksSeed<'_> {
    fn apply(&mut self, chunk: RawChunk<'_>) {
        if chunk.error.is_none() {
            self.answer.apply(chunk);
        }
    }
}

impl<'de> DeserializeSeed<'de> for ChunksSeed<'_> {
    type Value = Shape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChunksSeed<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a GenerateContentResponse or an array of them")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<Shape, A::Error> {
        let chunk = RawChunk::deserialize(MapAccessDeserializer::new(map))?;
        self.apply(chunk);
        Ok(Shape::Chunks)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Shape, A::Error> {
        while let Some(chunk) = seq.next_element::<RawChunk<'de>>()? {
            self.apply(chunk);
        }
        Ok(Shape::Chunks)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Other("null"))
    }
}
