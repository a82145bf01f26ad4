//! One `GenerateContentResponse` chunk as JSON, read leniently and borrowing.
//!
//! A chunk (an SSE event's data, an element of the JSON-array stream, or a whole
//! answer) is parsed once into the small structs below, built of the protocol-free
//! [`lenient`](crate::protocol::lenient) fields. They are stricter about nothing than
//! a reader of hostile answers can afford to be: a value of the wrong type reads as
//! absent (a candidate that is a number is an empty candidate), a key given twice
//! means its last value (serde's derive would refuse the whole chunk), and keys are
//! read in camelCase and snake_case, as Google's JSON mapping allows. So a chunk that
//! is JSON always parses. The `parts` of a content are folded as they are read
//! ([`Parts`]): a chunk of a million one-byte text parts costs the text, not a
//! million structs. Lists keep at most [`MAX_TRACKED`] elements and say when they
//! dropped some.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::super::lenient::{Int, Text};
use super::super::limits::MAX_TRACKED;

/// Visitor methods that turn any value but the one a type reads into its `Default`.
macro_rules! default_for_other_values {
    ($out:ty; $($skip:ident),*) => {
        $(default_for_other_values!(@one $out; $skip);)*
    };
    (@one $out:ty; bool) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok(<$out>::default())
        }
    };
    (@one $out:ty; numbers) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$out, E> {
            Ok(<$out>::default())
        }
    };
    (@one $out:ty; str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$out, E> {
            Ok(<$out>::default())
        }
    };
    (@one $out:ty; unit) => {
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok(<$out>::default())
        }
    };
    (@one $out:ty; seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$out, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(<$out>::default())
        }
    };
    (@one $out:ty; map) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$out, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(<$out>::default())
        }
    };
}

/// A struct read from a JSON object by key (each field from any of its spellings,
/// the last occurrence winning, unknown keys skipped); any other JSON value reads as
/// the struct's `Default`.
macro_rules! lenient_object {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident: $ty:ty = $($key:literal)|+,)* }) => {
        $(#[$meta])*
        #[derive(Default)]
        pub(super) struct $name<'a> {
            $(pub $field: $ty,)*
            _borrows: PhantomData<&'a str>,
        }

        impl<'de: 'a, 'a> Deserialize<'de> for $name<'a> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor<'a>(PhantomData<&'a str>);

                impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
                    type Value = $name<'a>;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " object"))
                    }

                    fn visit_map<A: MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Self::Value, A::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<Text<'de>>()? {
                            match key.0.as_deref() {
                                $(Some($($key)|+) => out.$field = map.next_value()?,)*
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(out)
                    }

                    default_for_other_values!($name<'a>; bool, numbers, str, unit, seq);
                }

                deserializer.deserialize_any(ObjectVisitor(PhantomData))
            }
        }
    };
}

lenient_object! {
    /// One `GenerateContentResponse`: a whole answer or one chunk of a stream.
    struct RawChunk {
        candidates: List<RawCandidate<'a>> = "candidates",
        usage: Option<RawUsage<'a>> = "usageMetadata" | "usage_metadata",
        model_version: Text<'a> = "modelVersion" | "model_version",
        response_id: Text<'a> = "responseId" | "response_id",
        prompt_feedback: Option<RawFeedback<'a>> = "promptFeedback" | "prompt_feedback",
        error: Option<IgnoredAny> = "error",
    }
}

lenient_object! {
    /// `candidates[]`: one answer the model gave.
    struct RawCandidate {
        content: Option<RawContent<'a>> = "content",
        finish_reason: Text<'a> = "finishReason" | "finish_reason",
        index: Int = "index",
    }
}

lenient_object! {
    /// A candidate's `content` (its `role` is always `model`).
    struct RawContent {
        parts: Parts<'a> = "parts",
    }
}

lenient_object! {
    /// One `parts[]` element, of the kinds an answer's span reads.
    struct RawPart {
        text: Text<'a> = "text",
        thought: Flag = "thought",
        function_call: Option<RawFunctionCall<'a>> = "functionCall" | "function_call",
    }
}

lenient_object! {
    /// A `functionCall` part: `{name, args, id?}`.
    struct RawFunctionCall {
        name: Text<'a> = "name",
        args: Option<Value> = "args",
        id: Text<'a> = "id",
    }
}

lenient_object! {
    /// `usageMetadata`, the counts the exchange records.
    struct RawUsage {
        prompt: Int = "promptTokenCount" | "prompt_token_count",
        candidates: Int = "candidatesTokenCount" | "candidates_token_count",
        cached: Int = "cachedContentTokenCount" | "cached_content_token_count",
        thoughts: Int = "thoughtsTokenCount" | "thoughts_token_count",
        tool_use_prompt: Int = "toolUsePromptTokenCount" | "tool_use_prompt_token_count",
        total: Int = "totalTokenCount" | "total_token_count",
    }
}

lenient_object! {
    /// `promptFeedback`: set when the prompt itself was blocked (then there are no
    /// candidates).
    struct RawFeedback {
        block_reason: Text<'a> = "blockReason" | "block_reason",
    }
}

/// `true` only for JSON `true`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FlagVisitor;

        impl<'de> Visitor<'de> for FlagVisitor {
            type Value = Flag;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }

            default_for_other_values!(Flag; numbers, str, unit, seq, map);
        }

        deserializer.deserialize_any(FlagVisitor)
    }
}

/// A JSON array's first [`MAX_TRACKED`] elements; any other value is an empty list.
pub(super) struct List<T> {
    pub items: Vec<T>,
    /// The array had more elements; they were skipped unread.
    pub dropped: bool,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            items: Vec::new(),
            dropped: false,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = List<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut list = List::default();
                while list.items.len() < MAX_TRACKED {
                    match seq.next_element()? {
                        Some(item) => list.items.push(item),
                        None => return Ok(list),
                    }
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    list.dropped = true;
                }
                Ok(list)
            }

            default_for_other_values!(List<T>; bool, numbers, str, unit, map);
        }

        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

/// A content's `parts`, folded as they are read: the text parts joined, the thought
/// parts (`thought: true`) joined apart, the function calls in order (at most
/// [`MAX_TRACKED`]). Text is borrowed while it is one unescaped part.
#[derive(Default)]
pub(super) struct Parts<'a> {
    pub text: Option<Cow<'a, str>>,
    pub thought: Option<Cow<'a, str>>,
    pub calls: Vec<RawFunctionCall<'a>>,
    /// Function calls past the cap were dropped.
    pub dropped: bool,
}

impl<'a> Parts<'a> {
    fn add(&mut self, part: RawPart<'a>) {
        if let Some(text) = part.text.0 {
            let slot = if part.thought.0 {
                &mut self.thought
            } else {
                &mut self.text
            };
            match slot {
                Some(joined) => joined.to_mut().push_str(&text),
                None => *slot = Some(text),
            }
        }
        if let Some(call) = part.function_call {
            if self.calls.len() < MAX_TRACKED {
                self.calls.push(call);
            } else {
                self.dropped = true;
            }
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Parts<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PartsVisitor<'a>(PhantomData<&'a str>);

        impl<'de: 'a, 'a> Visitor<'de> for PartsVisitor<'a> {
            type Value = Parts<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of parts")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parts<'a>, A::Error> {
                let mut parts = Parts::default();
                while let Some(part) = seq.next_element::<RawPart<'de>>()? {
                    parts.add(part);
                }
                Ok(parts)
            }

            default_for_other_values!(Parts<'a>; bool, numbers, str, unit, map);
        }

        deserializer.deserialize_any(PartsVisitor(PhantomData))
    }
}
