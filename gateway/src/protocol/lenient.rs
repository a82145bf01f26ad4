//! Fields of a streamed event read leniently, borrowing from the event's bytes.
//!
//! A stream chunk is parsed once into small structs of `Text` and `Int` fields:
//! a string without escapes is borrowed from the event data (no allocation per
//! delta), and a field of an unexpected type reads as absent instead of making the
//! whole event unreadable (a backend's odd `created: "soon"` costs the span one
//! field, not the event). Protocol-free: every protocol's stream accumulator builds
//! its chunk structs from these.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string borrowed from the event data when it has no escapes; any non-string
/// value reads as `None`.
#[derive(Default)]
pub(crate) struct Text<'a>(pub Option<Cow<'a, str>>);

/// An integer; any other value (including fractions) reads as `None`.
#[derive(Default)]
pub(crate) struct Int(pub Option<i64>);

impl Int {
    pub fn as_u32(&self) -> Option<u32> {
        self.0.and_then(|i| u32::try_from(i).ok())
    }

    /// A token count: a negative one is no count at all.
    pub fn count(&self) -> Option<i64> {
        self.0.filter(|n| *n >= 0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntVisitor)
    }
}

struct TextVisitor;

/// Skips any value, yielding `Default` for it.
macro_rules! skip_other_values {
    ($out:ty) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$out, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(<$out>::default())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$out, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(<$out>::default())
        }
    };
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Owned(v))))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'de>, E> {
        Ok(Text(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'de>, E> {
        Ok(Text(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'de>, E> {
        Ok(Text(None))
    }

    skip_other_values!(Text<'de>);
}

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Int;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
        Ok(Int(Some(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
        Ok(Int(i64::try_from(v).ok()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
        Ok(Int(integral_f64(v)))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Int, E> {
        Ok(Int(None))
    }

    skip_other_values!(Int);
}

/// An integral float as an `i64` (`12.0` → 12); `None` for fractions, NaN and values
/// out of range.
pub(crate) fn integral_f64(f: f64) -> Option<i64> {
    // -2^63 is exact as f64; 2^63 is the first value out of range.
    const RANGE: std::ops::Range<f64> = -9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && RANGE.contains(&f)).then_some(f as i64)
}
