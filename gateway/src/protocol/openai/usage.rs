//! An answer's `usage` object, read key by key.
//!
//! OpenAI's chat and completions answers count tokens as `prompt_tokens` /
//! `completion_tokens` / `total_tokens` with `prompt_tokens_details` and
//! `completion_tokens_details`; backends that speak the Responses API's names
//! (`input_tokens`, `output_tokens`, `*_details`) are read too, the chat names
//! winning. Only those keys are read (a count is a number: no allocation), the
//! rest skipped unbuilt; building the object as a `Value` (a dozen owned keys
//! and maps) was ~8k instructions of a ~130k-instruction call. Of a key given
//! twice the last counts, whatever its type.

use celgate_engine::exchange::{Exchange, TokenDetails};
use serde::de::{IgnoredAny, MapAccess};
use serde_json::Value;

use super::super::json::{Key, ObjectOrNone, ObjectReader};
use super::super::tokens::{Usage, json_count, set_usage};

/// The counts a `usage` object holds, each its last value as given.
#[derive(Debug, Default)]
pub(crate) struct UsageFields {
    prompt_tokens: Option<Value>,
    input_tokens: Option<Value>,
    completion_tokens: Option<Value>,
    output_tokens: Option<Value>,
    total_tokens: Option<Value>,
    /// Outer `None`: the key is absent; inner `None`: present but not an object.
    prompt_details: Option<Option<Details>>,
    input_details: Option<Option<Details>>,
    completion_details: Option<Option<Details>>,
    output_details: Option<Option<Details>>,
}

/// A `*_tokens_details` object's counts.
#[derive(Debug, Default)]
struct Details {
    cached_tokens: Option<Value>,
    cache_write_tokens: Option<Value>,
    audio_tokens: Option<Value>,
    reasoning_tokens: Option<Value>,
}

/// Reads a `usage` object into [`UsageFields`].
pub(crate) struct UsageReader;

impl ObjectReader for UsageReader {
    type Out = UsageFields;

    fn read<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<UsageFields, A::Error> {
        let mut u = UsageFields::default();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let details = || ObjectOrNone(DetailsReader);
            match key.as_ref() {
                "prompt_tokens" => u.prompt_tokens = Some(map.next_value()?),
                "input_tokens" => u.input_tokens = Some(map.next_value()?),
                "completion_tokens" => u.completion_tokens = Some(map.next_value()?),
                "output_tokens" => u.output_tokens = Some(map.next_value()?),
                "total_tokens" => u.total_tokens = Some(map.next_value()?),
                "prompt_tokens_details" => u.prompt_details = Some(map.next_value_seed(details())?),
                "input_tokens_details" => u.input_details = Some(map.next_value_seed(details())?),
                "completion_tokens_details" => {
                    u.completion_details = Some(map.next_value_seed(details())?);
                }
                "output_tokens_details" => u.output_details = Some(map.next_value_seed(details())?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(u)
    }
}

struct DetailsReader;

impl ObjectReader for DetailsReader {
    type Out = Details;

    fn read<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<Details, A::Error> {
        let mut d = Details::default();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match key.as_ref() {
                "cached_tokens" => d.cached_tokens = Some(map.next_value()?),
                "cache_write_tokens" => d.cache_write_tokens = Some(map.next_value()?),
                "audio_tokens" => d.audio_tokens = Some(map.next_value()?),
                "reasoning_tokens" => d.reasoning_tokens = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(d)
    }
}

/// A count, if `v` is one.
fn count(v: &Option<Value>) -> Option<i64> {
    v.as_ref().and_then(json_count)
}

/// Records the token counts of a `usage` object: the chat names, else the
/// Responses API's; the details object present under the chat name wins even when
/// it is not an object (it then holds no counts).
pub(crate) fn apply(ex: &mut Exchange, u: &UsageFields) {
    let prompt = u.prompt_details.as_ref().or(u.input_details.as_ref());
    let completion = u.completion_details.as_ref().or(u.output_details.as_ref());
    let detail = |d: Option<&Option<Details>>, pick: fn(&Details) -> &Option<Value>| {
        d.and_then(Option::as_ref).and_then(|d| count(pick(d)))
    };
    set_usage(
        ex,
        Usage {
            input: count(&u.prompt_tokens).or_else(|| count(&u.input_tokens)),
            output: count(&u.completion_tokens).or_else(|| count(&u.output_tokens)),
            total: count(&u.total_tokens),
            details: TokenDetails {
                cache_read: detail(prompt, |d| &d.cached_tokens),
                cache_write: detail(prompt, |d| &d.cache_write_tokens),
                input_audio: detail(prompt, |d| &d.audio_tokens),
                reasoning: detail(completion, |d| &d.reasoning_tokens),
                output_audio: detail(completion, |d| &d.audio_tokens),
            },
        },
    );
}
