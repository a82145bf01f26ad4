//! How much of a hostile answer a span keeps.
//!
//! The client always gets every byte; the *span* keeps a bounded description of the
//! answer, whatever the protocol: at most [`MAX_TRACKED`] choices and tool calls,
//! [`MAX_TEXT_BYTES`] of text in all, [`MAX_LABEL_BYTES`] per id, name, role or finish
//! reason, [`MAX_ERROR_BYTES`] of an error message. Past a cap the span keeps what it
//! has and says so (`llm.responseTruncated`). A stream's `Budget` carries what may
//! still be kept from event to event. Protocol-free: each protocol's parsers apply
//! the same caps, so a new protocol inherits the bounds by using this module.

use celgate_engine::attributes::cut_str as prefix;
use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess};
use serde_json::Value;
use std::borrow::Cow;

/// Longest error message a stream summary keeps, in bytes.
pub const MAX_ERROR_BYTES: usize = 4096;

/// At most this many distinct choices (and tool calls in all) are tracked; more is
/// not a real response and would make the per-delta lookups quadratic.
pub const MAX_TRACKED: usize = 1024;

/// Most bytes of text (content and tool-call arguments, all choices together) a
/// stream's span keeps; the rest is dropped and the summary says it was truncated.
pub const MAX_TEXT_BYTES: usize = 8 << 20;

/// Longest id, name, role or finish reason kept (real ones are a few dozen bytes).
pub const MAX_LABEL_BYTES: usize = 256;

/// Reads a JSON array one element at a time, each turned by `keep` into at most one
/// item, until [`MAX_TRACKED`] items are kept; later elements are skipped unbuilt.
/// Returns the items and whether any element was skipped. A whole-body reader's
/// answer to a million choices, blocks or output items costs one at a time.
pub(crate) fn capped_seq<'de, A: SeqAccess<'de>, T>(
    seq: A,
    mut keep: impl FnMut(Value) -> Option<T>,
) -> Result<(Vec<T>, bool), A::Error> {
    capped(seq, |seq, _| {
        Ok(seq.next_element::<Value>()?.map(&mut keep))
    })
}

/// [`capped_seq`] for elements read by a seed rather than built as a [`Value`]:
/// `seed(position)` reads the element at `position` (every element counts) into at
/// most one item.
pub(crate) fn capped_seq_seeded<'de, A, S, T>(
    seq: A,
    mut seed: impl FnMut(usize) -> S,
) -> Result<(Vec<T>, bool), A::Error>
where
    A: SeqAccess<'de>,
    S: DeserializeSeed<'de, Value = Option<T>>,
{
    capped(seq, |seq, at| seq.next_element_seed(seed(at)))
}

/// The loop of both: `next(seq, position)` reads one element (`None` at the end)
/// into at most one item.
fn capped<'de, A: SeqAccess<'de>, T>(
    mut seq: A,
    mut next: impl FnMut(&mut A, usize) -> Result<Option<Option<T>>, A::Error>,
) -> Result<(Vec<T>, bool), A::Error> {
    let mut items = Vec::new();
    let mut truncated = false;
    let mut position = 0;
    loop {
        if items.len() >= MAX_TRACKED {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            truncated = true;
            continue;
        }
        match next(&mut seq, position)? {
            None => break,
            Some(item) => items.extend(item),
        }
        position += 1;
    }
    Ok((items, truncated))
}

/// What of a stream's text may still be kept, and whether anything was left out.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Bytes of content and arguments still allowed.
    pub text_left: usize,
    /// Tool calls (all choices together) that may still be tracked.
    pub calls_left: usize,
    /// Something was left out.
    pub truncated: bool,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            text_left: MAX_TEXT_BYTES,
            calls_left: MAX_TRACKED,
            truncated: false,
        }
    }
}

impl Budget {
    /// The part of a text fragment that still fits, cut on a character boundary.
    pub fn text<'s>(&mut self, fragment: &'s str) -> &'s str {
        let kept = prefix(fragment, self.text_left);
        self.text_left -= kept.len();
        self.truncated |= kept.len() < fragment.len();
        kept
    }

    /// A label (id, name, role, finish reason) cut to [`MAX_LABEL_BYTES`].
    pub fn label(&mut self, label: Cow<'_, str>) -> String {
        let kept = prefix(&label, MAX_LABEL_BYTES);
        if kept.len() < label.len() {
            self.truncated = true;
            kept.to_owned()
        } else {
            label.into_owned()
        }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    celgate_engine::attributes::truncate_str(&mut s, max);
    s
}
