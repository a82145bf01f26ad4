//! Emitting: a field's value as span attributes.
//!
//! What [`crate::attributes::push_value`] does with the interpreter's values, done
//! with the native evaluator's [`Value`], by the same rules ([`Scalar`] via
//! [`Value::scalar`], [`array`]): a scalar is one typed attribute, a homogeneous
//! list an OTel array, anything else its JSON text, `flatten*` one attribute per
//! entry. A `flattenRecursive` at the top of a field writes its attributes
//! straight into the span record, without building the value first
//! ([`Eval::sink`]).
//!
//! [`Scalar`]: crate::attributes::Scalar

use serde_json::Value as Json;
use std::fmt::Write as _;

use super::lower::Node;
use super::{Eval, Fail, Steps};
use crate::attributes::{AttrValue, MAX_VALUE_DEPTH, array};
use crate::value::Value;

/// Where a field's attributes go.
pub(crate) struct Out<'o> {
    pub attrs: &'o mut Vec<(String, AttrValue)>,
    /// Set when two of the attributes pushed may share a key.
    pub maybe_dup: bool,
    /// `limits.maxValueLength`: a borrowed string longer than this is cut before
    /// it is copied (the plan truncates every value again at the end), so a
    /// 10 MiB body read by `output.value` costs the limit, not another 10 MiB.
    pub max_len: usize,
}

/// A borrowed string cut to `max` bytes (at a char boundary); anything else as is.
pub(super) fn capped(v: Value<'_>, max: usize) -> Value<'_> {
    match v {
        Value::Str(s) if s.len() > max => Value::Str(crate::attributes::cut_str(s, max)),
        v => v,
    }
}

/// A key being built while flattening: the field key, then `.segment`s.
pub(super) struct KeyBuf {
    buf: String,
    /// Length of the field key: the suffix is empty while `buf` is this long.
    base: usize,
    /// No field key (the value of `flatten` itself): keys are bare suffixes,
    /// without the `.` that joins them to a field key.
    bare: bool,
}

impl KeyBuf {
    pub(super) fn field(key: &str) -> KeyBuf {
        let mut buf = String::with_capacity(key.len() + 48);
        buf.push_str(key);
        KeyBuf {
            buf,
            base: key.len(),
            bare: false,
        }
    }

    pub(super) fn bare() -> KeyBuf {
        KeyBuf {
            buf: String::new(),
            base: 0,
            bare: true,
        }
    }

    /// The key of an attribute at the current position.
    pub(super) fn key(&self) -> String {
        if self.bare && !self.buf.is_empty() {
            self.buf[1..].to_owned()
        } else {
            self.buf.clone()
        }
    }

    /// Append a segment the way `flatten` joins them (an empty suffix plus `s`
    /// is just `s`). Returns the length to restore.
    pub(super) fn push(&mut self, seg: &str, dup: &mut bool) -> usize {
        if seg.is_empty() || seg.contains('.') {
            // `a` + `b.c` and `a.b` + `c` give the same key.
            *dup = true;
        }
        self.push_plain(seg)
    }

    /// [`KeyBuf::push`] for a segment already checked.
    pub(super) fn push_plain(&mut self, seg: &str) -> usize {
        let saved = self.buf.len();
        if self.buf.len() != self.base || !seg.is_empty() {
            self.buf.push('.');
            self.buf.push_str(seg);
        }
        saved
    }

    pub(super) fn push_index(&mut self, i: usize) -> usize {
        let saved = self.buf.len();
        self.buf.push('.');
        if i < 10 {
            self.buf.push(char::from(b'0' + i as u8));
        } else {
            let _ = write!(self.buf, "{i}");
        }
        saved
    }

    pub(super) fn pop(&mut self, saved: usize) {
        self.buf.truncate(saved);
    }
}

impl<'a> Eval<'a> {
    /// Flatten the value of `n` into attributes under `kb`, without building the
    /// intermediate value where `n` is a map or list literal, a comprehension or a
    /// conditional: what `flatten*` would make of the value, directly.
    pub(super) fn sink(
        &mut self,
        n: &'a Node,
        kb: &mut KeyBuf,
        depth: usize,
        levels: usize,
        out: &mut Out,
    ) -> Result<(), Fail> {
        if depth < levels {
            match n {
                Node::Map(entries, order) => {
                    for &i in order {
                        let e = &entries[i];
                        out.maybe_dup |= e.odd_key;
                        let saved = kb.push_plain(&e.key);
                        let r = self.sink(&e.value, kb, depth + 1, levels, out);
                        kb.pop(saved);
                        r?;
                    }
                    return Ok(());
                }
                Node::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let saved = kb.push_index(i);
                        let r = self.sink(item, kb, depth + 1, levels, out);
                        kb.pop(saved);
                        r?;
                    }
                    return Ok(());
                }
                Node::Comp { range, guard, item } => {
                    let range = self.eval(range)?;
                    return self.each(&range, guard.as_deref(), |this, i| {
                        let saved = kb.push_index(i);
                        let r = this.sink(item, kb, depth + 1, levels, out);
                        kb.pop(saved);
                        r
                    });
                }
                Node::Cond(c, a, b) => {
                    return match self.eval(c)? {
                        Value::Bool(true) => self.sink(a, kb, depth, levels, out),
                        Value::Bool(false) => self.sink(b, kb, depth, levels, out),
                        _ => Err(Fail::Error),
                    };
                }
                _ => {}
            }
        }
        let v = self.eval(n)?;
        flatten_value(v, kb, depth, levels, out, &self.steps)
    }
}

/// Push the attributes of a field's value, as [`crate::attributes::push_value`].
#[inline]
pub(super) fn push_attr(key: &str, v: Value, out: &mut Out, steps: &Steps) -> Result<(), Fail> {
    if let Value::Flat(entries) = &v {
        if entries.len() > 1 {
            out.maybe_dup = true;
        }
        steps.take(entries.len())?;
        for (suffix, x) in entries.iter() {
            let full = if suffix.is_empty() {
                key.to_owned()
            } else {
                format!("{key}.{suffix}")
            };
            out.attrs.push((full, x.clone()));
        }
        return Ok(());
    }
    if let Some(leaf) = leaf(capped(v, out.max_len), steps)? {
        out.attrs.push((key.to_owned(), leaf));
    }
    Ok(())
}

/// A value as one attribute (null: none), as `push_value` renders anything but a
/// flattened value.
fn leaf(v: Value, steps: &Steps) -> Result<Option<AttrValue>, Fail> {
    if let Value::Owned(s) = v {
        return Ok(Some(AttrValue::String(s)));
    }
    if let Value::Parsed(j) = &v {
        return leaf(Value::Json(j, 0), steps);
    }
    if let Some(s) = v.scalar() {
        return Ok(Some(s));
    }
    match v {
        Value::Null => return Ok(None),
        Value::Type(_) | Value::Flat(_) => return Err(Fail::Bail),
        _ => {}
    }
    if let Some(len) = v.list_len()
        && let Some(array) = homogeneous_array(&v, len, steps)?
    {
        return Ok(Some(array));
    }
    let mut text = Vec::with_capacity(JSON_CAPACITY);
    write_json(&v, 0, &mut text, steps)?;
    String::from_utf8(text)
        .map(|s| Some(AttrValue::String(s)))
        .map_err(|_| Fail::Bail)
}

/// A list as an OTel array, by [`array`]'s rule (`None`: not homogeneous).
fn homogeneous_array(v: &Value, len: usize, steps: &Steps) -> Result<Option<AttrValue>, Fail> {
    steps.take(len)?;
    Ok(array(len, (0..len).map(|i| v.list_get(i).scalar())))
}

/// What `flatten_into` in [`crate::functions`] makes of a value.
pub(super) fn flatten_value(
    v: Value,
    kb: &mut KeyBuf,
    depth: usize,
    levels: usize,
    out: &mut Out,
    steps: &Steps,
) -> Result<(), Fail> {
    // The common leaves first.
    match v {
        Value::Null => return Ok(()),
        Value::Parsed(j) => {
            return flatten_value(Value::Json(&j, 0), kb, depth, levels, out, steps);
        }
        Value::Str(s) => {
            // Cut before the copy, as `push_attr` does (the plan cuts again).
            let Some(s) = capped(Value::Str(s), out.max_len)
                .as_str()
                .map(str::to_owned)
            else {
                return Err(Fail::Bail);
            };
            steps.copy(&s)?;
            out.attrs.push((kb.key(), AttrValue::String(s)));
            return Ok(());
        }
        _ => {}
    }
    if depth < levels {
        if let Some(len) = v.list_len() {
            steps.take(len)?;
            for i in 0..len {
                let saved = kb.push_index(i);
                let r = flatten_value(v.list_get(i), kb, depth + 1, levels, out, steps);
                kb.pop(saved);
                r?;
            }
            return Ok(());
        }
        if let Some(entries) = v.map_entries() {
            steps.take(entries.len())?;
            for (k, x) in entries {
                let saved = kb.push(k, &mut out.maybe_dup);
                let r = flatten_value(x, kb, depth + 1, levels, out, steps);
                kb.pop(saved);
                r?;
            }
            return Ok(());
        }
        if let Value::Flat(entries) = &v {
            steps.take(entries.len())?;
            for (k, x) in entries.iter() {
                let saved = kb.push(k, &mut out.maybe_dup);
                out.attrs.push((kb.key(), x.clone()));
                kb.pop(saved);
            }
            return Ok(());
        }
    }
    if let Some(leaf) = leaf(capped(v, out.max_len), steps)? {
        out.attrs.push((kb.key(), leaf));
    }
    Ok(())
}

/// A value as JSON text, exactly as `attributes::to_json(v).to_string()` renders
/// it, written directly.
pub(super) fn write_json(
    v: &Value,
    depth: usize,
    out: &mut Vec<u8>,
    steps: &Steps,
) -> Result<(), Fail> {
    let io = |_: serde_json::Error| Fail::Bail;
    if depth > MAX_VALUE_DEPTH {
        return serde_json::to_writer(&mut *out, "…").map_err(io);
    }
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => serde_json::to_writer(&mut *out, i).map_err(io)?,
        Value::UInt(u) => match i64::try_from(*u) {
            Ok(i) => serde_json::to_writer(&mut *out, &i).map_err(io)?,
            Err(_) => serde_json::to_writer(&mut *out, &u.to_string()).map_err(io)?,
        },
        // Non-finite doubles are `null`, as `Json::from(f64)` makes them.
        Value::Double(d) => serde_json::to_writer(&mut *out, d).map_err(io)?,
        Value::Str(s) => {
            steps.copy(s)?;
            json_str(s, out)
        }
        Value::Owned(s) => {
            steps.copy(s)?;
            json_str(s, out)
        }
        Value::Type(_) => return Err(Fail::Bail),
        Value::Parsed(j) => return write_json(&Value::Json(j, 0), depth, out, steps),
        // Flattened keys need not be sorted or distinct: build the object.
        Value::Flat(_) => {
            serde_json::to_writer(&mut *out, &to_json(v, depth, steps)?).map_err(io)?
        }
        _ => {
            if let Some(len) = v.list_len() {
                steps.take(len)?;
                out.push(b'[');
                for i in 0..len {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json(&v.list_get(i), depth + 1, out, steps)?;
                }
                out.push(b']');
            } else if let Some(entries) = v.map_entries() {
                // Sorted and distinct, as in a `serde_json::Map`.
                steps.take(entries.len())?;
                out.push(b'{');
                for (i, (k, x)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_str(k, out);
                    out.push(b':');
                    write_json(x, depth + 1, out, steps)?;
                }
                out.push(b'}');
            } else {
                return Err(Fail::Bail);
            }
        }
    }
    Ok(())
}

/// What a JSON text starts with room for: a small object (`llm.params`) fits
/// without growing.
pub(super) const JSON_CAPACITY: usize = 128;

/// `s` as a JSON string, byte for byte as `serde_json` writes it (`\"`, `\\`,
/// `\b \t \n \f \r`, other control bytes as `\u00xx`, nothing else escaped),
/// the runs that need no escape copied whole: message text is most of what
/// `toJson` writes, and `serde_json` looks at it a byte at a time.
pub(super) fn json_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8)
            && !needs_escape(u64::from_le_bytes(word.try_into().unwrap_or_default()))
        {
            i += 8;
            continue;
        }
        let b = bytes[i];
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            b'\t' => b't',
            b'\n' => b'n',
            0x0C => b'f',
            b'\r' => b'r',
            0..0x20 => b'u',
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(&[b'\\', short]);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xF)],
            ]);
        }
        i += 1;
        run = i;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Whether any of the eight bytes of `w` is a control byte, `"` or `\\`
/// (the exact "has a byte less than n / equal to c" word tests).
#[inline]
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (control | zero_in(w ^ (ONES * u64::from(b'"'))) | zero_in(w ^ (ONES * u64::from(b'\\')))) != 0
}

/// A value as JSON, as [`crate::attributes::to_json`].
fn to_json(v: &Value, depth: usize, steps: &Steps) -> Result<Json, Fail> {
    if depth > MAX_VALUE_DEPTH {
        return Ok(Json::from("…"));
    }
    if let Value::Flat(entries) = v {
        steps.take(entries.len())?;
        return Ok(Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        ));
    }
    if let Some(s) = v.scalar() {
        return Ok(s.to_json());
    }
    match v {
        Value::Null => return Ok(Json::Null),
        Value::Type(_) => return Err(Fail::Bail),
        Value::Parsed(j) => return to_json(&Value::Json(j, 0), depth, steps),
        _ => {}
    }
    if let Some(len) = v.list_len() {
        steps.take(len)?;
        let mut items = Vec::with_capacity(len);
        for i in 0..len {
            items.push(to_json(&v.list_get(i), depth + 1, steps)?);
        }
        return Ok(Json::Array(items));
    }
    if let Some(entries) = v.map_entries() {
        steps.take(entries.len())?;
        let mut obj = serde_json::Map::new();
        for (k, x) in entries {
            obj.insert(k.to_owned(), to_json(&x, depth + 1, steps)?);
        }
        return Ok(Json::Object(obj));
    }
    Err(Fail::Bail)
}
