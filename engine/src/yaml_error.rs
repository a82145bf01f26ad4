//! serde-saphyr's errors as celgate diagnostics, without the scalars they quote.
//!
//! serde's messages echo the offending text: `unknown variant `sk-live-…``, for an
//! API key pasted as `apiKey: sk-...`, or `unknown field `root:$6$…`` for a config
//! path that points at a secret file. Those messages reach `celgate check`, the
//! pod's log and `/config`. Here every error kind that carries text from the file is
//! rewritten from its parts: unknown fields and variants show a 3-character prefix
//! (with a "did you mean" when the text is close to a known name), wrong types name
//! the kind of value, duplicate keys show a key in full only when it reads as a
//! name. Kinds that carry no file text keep serde-saphyr's wording; the source
//! snippet serde-saphyr can attach is never printed.

use serde_saphyr::Error;

use crate::redact::{name_or_prefix, prefix};

/// The operator's message for `e`, without position (celgate prints
/// `FILE:LINE:COL:` itself).
pub fn message(e: &Error) -> String {
    match e.without_snippet() {
        Error::AliasError { error, .. } => message(error),
        Error::SerdeUnknownField {
            field, expected, ..
        } => unknown("field", field, expected),
        Error::SerdeUnknownVariant {
            variant, expected, ..
        } => unknown("value", variant, expected),
        Error::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => format!("invalid type: {}, expected {expected}", kind(unexpected)),
        Error::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => format!("invalid value: {}, expected {expected}", kind(unexpected)),
        Error::DuplicateMappingKey { key, .. } => match key {
            Some(key) => format!(
                "duplicate key `{}`: each key may appear only once in a mapping",
                name_or_prefix(key)
            ),
            None => "duplicate key: each key may appear only once in a mapping".to_owned(),
        },
        Error::TaggedEnumMismatch { tagged, target, .. } => format!(
            "tag `!{}` does not name a variant of {target}",
            prefix(tagged)
        ),
        Error::NonFiniteFloat { .. } => {
            "a non-finite number (NaN, infinity) is not allowed here".to_owned()
        }
        Error::QuotingRequired { .. } => "this value must be quoted".to_owned(),
        Error::MultipleDocuments { .. } => {
            "more than one YAML document (`---`): a config is one document".to_owned()
        }
        other => first_line(&other.to_string()),
    }
}

/// `unknown field `fei…` (did you mean `fields`?)`, or the list of what is expected.
fn unknown(what: &str, text: &str, expected: &[&'static str]) -> String {
    let shown = prefix(text);
    let hint = match crate::compile::closest(text, expected.iter().copied()) {
        Some(name) => format!(" (did you mean `{name}`?)"),
        None if expected.is_empty() => String::new(),
        None => format!(
            ", expected {}",
            expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!("unknown {what} `{shown}`{hint}")
}

/// `string "sk-…"` -> `string`: serde's description of a value, without the value.
fn kind(unexpected: &str) -> &str {
    unexpected
        .split(['"', '`', '\''])
        .next()
        .unwrap_or("")
        .trim()
}

/// The first line, without serde-saphyr's ` at line L, column C` (the position is
/// printed in front already).
fn first_line(text: &str) -> String {
    let mut first = text.lines().next().unwrap_or("invalid YAML").trim();
    if let Some(i) = first.rfind(" at line ") {
        first = &first[..i];
    }
    first.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(yaml: &str) -> String {
        match serde_saphyr::from_str::<crate::ConfigFile>(yaml) {
            Ok(_) => panic!("accepted: {yaml}"),
            Err(e) => message(&e),
        }
    }

    #[test]
    fn unknown_names_are_cut_to_a_prefix() {
        assert_eq!(
            msg("config:\n  tracing:\n    feilds: {}\n"),
            "unknown field `fei…` (did you mean `fields`?)"
        );
        assert_eq!(
            msg("root:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n"),
            "unknown field `roo…`, expected `config`, `listen`, `admin`, `server`, `auth`, `backends`, `pricing`"
        );
        assert_eq!(
            msg("config:\n  tracing:\n    otlpProtocol: sk-live-abcdef1234567890\n"),
            "unknown value `sk-…`, expected `grpc`, `http`, `http/protobuf`"
        );
        assert_eq!(
            msg("config:\n  tracing:\n    preset: phonix\n"),
            "unknown value `pho…` (did you mean `phoenix`?)"
        );
    }

    #[test]
    fn types_are_named_without_the_value() {
        let m = msg(
            "config:\n  tracing:\n    fields:\n      add:\n        a: [sk-live-abcdef1234567890]\n",
        );
        assert_eq!(
            m,
            "invalid type: sequence, expected a CEL expression (a string)"
        );
        assert_eq!(kind("string \"sk-live-1\""), "string");
        assert_eq!(kind("integer `5`"), "integer");
    }

    #[test]
    fn duplicate_keys_are_shown_when_they_are_names() {
        assert_eq!(
            msg("config:\n  tracing:\n    headers:\n      x-team: a\n      x-team: b\n"),
            "duplicate key `x-team`: each key may appear only once in a mapping"
        );
        assert_eq!(
            msg(
                "config:\n  tracing:\n    headers:\n      sk-live-abcdef1234567890: a\n      sk-live-abcdef1234567890: b\n"
            ),
            "duplicate key `sk-…`: each key may appear only once in a mapping"
        );
    }
}
