//! From CEL values to typed span attributes.
//!
//! The rules (DESIGN.md, "From a CEL value to span attributes"): string, int, double
//! and bool stay typed; a homogeneous list of scalars becomes an OTel array; a map or
//! a mixed list that was not flattened becomes its JSON string; null adds nothing.
//! A value produced by `flatten`/`flattenRecursive` expands to one attribute per entry.
//!
//! The rules for scalars and lists are written once ([`Scalar`], [`array`]); the
//! interpreter's values go through them here ([`push_value`]), the native
//! evaluator's in `native::emit`.

use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use serde_json::Value as Json;

use crate::functions::Flattened;

/// Nesting beyond which values are cut off (rendered as `"…"`), so that hostile
/// request data (say a tool schema nested 10,000 deep) cannot exhaust the stack.
pub const MAX_VALUE_DEPTH: usize = 64;

/// A typed OTel attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    String(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    StringArray(Vec<String>),
    IntArray(Vec<i64>),
    DoubleArray(Vec<f64>),
    BoolArray(Vec<bool>),
}

impl AttrValue {
    /// The value as JSON, with JSON types matching the attribute type (arrays for
    /// OTel arrays). Used by `celgate preview --format json`.
    pub fn to_json(&self) -> Json {
        match self {
            AttrValue::String(s) => Json::from(s.as_str()),
            AttrValue::Int(i) => Json::from(*i),
            AttrValue::Double(d) => Json::from(*d),
            AttrValue::Bool(b) => Json::from(*b),
            AttrValue::StringArray(v) => Json::from(v.clone()),
            AttrValue::IntArray(v) => Json::from(v.clone()),
            AttrValue::DoubleArray(v) => Json::from(v.clone()),
            AttrValue::BoolArray(v) => Json::from(v.clone()),
        }
    }

    /// Cut string values (and string array elements) to at most `max` bytes, on a
    /// character boundary.
    pub fn truncate(&mut self, max: usize) {
        match self {
            AttrValue::String(s) => truncate_str(s, max),
            AttrValue::StringArray(v) => v.iter_mut().for_each(|s| truncate_str(s, max)),
            _ => {}
        }
    }
}

impl std::fmt::Display for AttrValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrValue::String(s) => write!(f, "{s:?}"),
            other => write!(f, "{}", other.to_json()),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary: the one way celgate cuts a string (attributes, span names, metric
/// labels, export budgets, captured text).
pub fn cut_str(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Cut `s` to at most `max` bytes, on a character boundary.
pub fn truncate_str(s: &mut String, max: usize) {
    let end = cut_str(s, max).len();
    s.truncate(end);
}

/// Convert the result of one expression into attributes under `key`, appending them
/// to `out`. Null adds nothing.
pub fn push_value(key: &str, value: &dyn Val, out: &mut Vec<(String, AttrValue)>) {
    if let Some(flat) = value.downcast_ref::<Flattened>() {
        for (suffix, v) in &flat.entries {
            let full = if suffix.is_empty() {
                key.to_owned()
            } else {
                format!("{key}.{suffix}")
            };
            out.push((full, v.clone()));
        }
        return;
    }
    if let Some(v) = scalar(value) {
        out.push((key.to_owned(), v));
        return;
    }
    if value.downcast_ref::<CelNull>().is_some() {
        return;
    }
    if let Some(list) = value.downcast_ref::<CelList>()
        && let Some(array) = array(
            list.inner().len(),
            list.inner().iter().map(|v| scalar(v.as_ref())),
        )
    {
        out.push((key.to_owned(), array));
        return;
    }
    out.push((
        key.to_owned(),
        AttrValue::String(to_json(value).to_string()),
    ));
}

/// A scalar as either evaluator holds it. [`Scalar::attr`] is the one rule for
/// how a scalar becomes an attribute, and [`array`] the one rule for lists: the
/// interpreter's values ([`scalar`], [`push_value`]) and the native evaluator's
/// ([`crate::value::Value::scalar`]) both go through them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scalar<'s> {
    Str(&'s str),
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
}

impl Scalar<'_> {
    /// Strings, ints, doubles and bools keep their type; a uint is an int when
    /// it fits and its decimal string when it does not (OTel has no uint).
    #[inline]
    pub(crate) fn attr(self) -> AttrValue {
        match self {
            Scalar::Str(s) => AttrValue::String(s.to_owned()),
            Scalar::Int(i) => AttrValue::Int(i),
            Scalar::Double(d) => AttrValue::Double(d),
            Scalar::Bool(b) => AttrValue::Bool(b),
            Scalar::UInt(u) => match i64::try_from(u) {
                Ok(i) => AttrValue::Int(i),
                Err(_) => AttrValue::String(u.to_string()),
            },
        }
    }
}

/// A scalar value as an attribute; `None` for null, lists, maps and other kinds.
pub fn scalar(value: &dyn Val) -> Option<AttrValue> {
    let s = if let Some(s) = value.downcast_ref::<CelString>() {
        Scalar::Str(s.inner())
    } else if let Some(i) = value.downcast_ref::<CelInt>() {
        Scalar::Int(*i.inner())
    } else if let Some(d) = value.downcast_ref::<CelDouble>() {
        Scalar::Double(*d.inner())
    } else if let Some(b) = value.downcast_ref::<CelBool>() {
        Scalar::Bool(*b.inner())
    } else if let Some(u) = value.downcast_ref::<CelUInt>() {
        Scalar::UInt(*u.inner())
    } else {
        return None;
    };
    Some(s.attr())
}

/// A list of `len` items, each as its scalar attribute (`None`: not a scalar),
/// as an OTel array: all scalars of one type. An empty list is an empty string
/// array; anything else is `None` (the caller renders the list as JSON).
pub(crate) fn array(
    len: usize,
    mut items: impl Iterator<Item = Option<AttrValue>>,
) -> Option<AttrValue> {
    let first = match items.next() {
        None => return Some(AttrValue::StringArray(Vec::new())),
        Some(first) => first?,
    };
    macro_rules! collect {
        ($variant:ident, $array:ident, $first:expr) => {{
            let mut out = Vec::with_capacity(len);
            out.push($first);
            for s in items {
                match s? {
                    AttrValue::$variant(x) => out.push(x),
                    _ => return None,
                }
            }
            Some(AttrValue::$array(out))
        }};
    }
    match first {
        AttrValue::String(s) => collect!(String, StringArray, s),
        AttrValue::Int(i) => collect!(Int, IntArray, i),
        AttrValue::Double(d) => collect!(Double, DoubleArray, d),
        AttrValue::Bool(b) => collect!(Bool, BoolArray, b),
        _ => None,
    }
}

/// Any CEL value as JSON. Map keys are sorted (CEL maps are unordered; sorted keys
/// keep output stable). Bytes become base64-free lossy UTF-8; values nested deeper
/// than [`MAX_VALUE_DEPTH`] become the string `"…"`.
pub fn to_json(value: &dyn Val) -> Json {
    to_json_depth(value, 0)
}

fn to_json_depth(value: &dyn Val, depth: usize) -> Json {
    if depth > MAX_VALUE_DEPTH {
        return Json::from("…");
    }
    if let Some(flat) = value.downcast_ref::<Flattened>() {
        let map = flat
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        return Json::Object(map);
    }
    if let Some(s) = scalar(value) {
        return s.to_json();
    }
    if value.downcast_ref::<CelNull>().is_some() {
        return Json::Null;
    }
    if let Some(list) = value.downcast_ref::<CelList>() {
        return Json::Array(
            list.inner()
                .iter()
                .map(|v| to_json_depth(v.as_ref(), depth + 1))
                .collect(),
        );
    }
    if let Some(map) = value.downcast_ref::<CelMap>() {
        let obj: serde_json::Map<String, Json> = map
            .inner()
            .iter()
            .map(|(k, v)| (key_string(k), to_json_depth(v.as_ref(), depth + 1)))
            .collect();
        return Json::Object(obj);
    }
    if let Some(b) = value.downcast_ref::<CelBytes>() {
        return Json::from(String::from_utf8_lossy(b.inner()).into_owned());
    }
    // Types, durations, timestamps, optionals: their CEL rendering.
    Json::from(format!("{value:?}"))
}

/// A map key as the string used in JSON objects and flattened attribute names.
pub fn key_string(key: &CelMapKey<'_>) -> String {
    match key {
        CelMapKey::String(s) => s.inner().to_owned(),
        CelMapKey::Int(i) => i.inner().to_string(),
        CelMapKey::UInt(u) => u.inner().to_string(),
        CelMapKey::Bool(b) => b.inner().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut v = AttrValue::String("héllo".into());
        v.truncate(2);
        assert_eq!(v, AttrValue::String("h".into()));
        let mut v = AttrValue::StringArray(vec!["abc".into(), "de".into()]);
        v.truncate(2);
        assert_eq!(v, AttrValue::StringArray(vec!["ab".into(), "de".into()]));
    }
}
