//! What an answer says, decided once for every conversational endpoint: the reply to a
//! user text, the thinking about it, the answer to a tool result, which tool calls a
//! user asked for (`call <name>`), the arguments a call gets (given in the text, or
//! synthesized from the tool's schema), call ids by hash and the fragments a streamed
//! call's arguments are sent in. Each protocol module only reads its request into a
//! [`Turn`] and writes the [`Reply`] in its own shape, so the four protocols say the
//! same thing to the same conversation.

use std::hash::Hasher as _;

use serde_json::{Map, Value, json};

use crate::request::{limit_words, words};

/// Characters per streamed tool-call argument fragment.
const ARGUMENT_FRAGMENT_CHARS: usize = 7;

/// Characters of a tool result quoted in the reply to it.
const QUOTED_RESULT_CHARS: usize = 200;

/// A tool a request offers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offered<'a> {
    pub(crate) name: &'a str,
    /// Its parameters' JSON schema, if it has one.
    pub(crate) schema: Option<&'a Value>,
    /// The namespace it is declared in (a Responses `namespace` tool), if any.
    pub(crate) namespace: Option<&'a str>,
}

/// What the conversation ends with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Last {
    /// A user turn with this text.
    User(String),
    /// A turn carrying tool results, with their text.
    ToolResult(String),
    /// Nothing, or a turn of the assistant's own.
    Other,
}

/// A request read into what the answer depends on.
#[derive(Clone, Debug)]
pub(crate) struct Turn<'a> {
    pub(crate) last: Last,
    /// The text of the last user turn that has text (thought about, and given to
    /// synthesized string arguments).
    pub(crate) user_text: Option<String>,
    pub(crate) tools: Vec<Offered<'a>>,
    /// False when the request forbids tool calls (`tool_choice` none).
    pub(crate) tools_allowed: bool,
    /// Most words of text the reply may have.
    pub(crate) limit: Option<usize>,
    /// Whether the request asks to see the model think.
    pub(crate) thinking: bool,
}

/// One tool call of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    /// 16 hex digits of a hash of the call: the same request gets the same ids.
    pub(crate) hash: String,
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    /// A JSON object, as text.
    pub(crate) arguments: String,
}

impl Call {
    /// The call's arguments as JSON (an empty object if they are somehow not).
    pub(crate) fn arguments_json(&self) -> Value {
        serde_json::from_str(&self.arguments).unwrap_or_else(|_| json!({}))
    }
}

/// What the assistant says after thinking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Said {
    /// Words a stream sends one per delta; `truncated`: cut at the token limit.
    Text {
        words: Vec<String>,
        truncated: bool,
    },
    Calls(Vec<Call>),
}

/// The assistant's reply to a [`Turn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The words of its thinking, when the request asked to see it.
    pub(crate) thinking: Option<Vec<String>>,
    pub(crate) said: Said,
}

impl Reply {
    pub(crate) fn thinking_text(&self) -> Option<String> {
        self.thinking.as_ref().map(|words| words.concat())
    }

    pub(crate) fn thinking_tokens(&self) -> usize {
        self.thinking.as_ref().map_or(0, Vec::len)
    }

    /// Tokens of what is said: its words, or the fragments its calls stream in.
    pub(crate) fn said_tokens(&self) -> usize {
        match &self.said {
            Said::Text { words, .. } => words.len(),
            Said::Calls(calls) => calls.iter().map(|c| fragments(&c.arguments).len()).sum(),
        }
    }

    pub(crate) fn output_tokens(&self) -> usize {
        self.thinking_tokens() + self.said_tokens()
    }

    pub(crate) fn truncated(&self) -> bool {
        matches!(
            self.said,
            Said::Text {
                truncated: true,
                ..
            }
        )
    }
}

/// The reply of the three newer protocols: tool calls only when the last turn is a
/// user's asking `call <name>` of an offered tool; a tool result is answered by
/// quoting it; anything else by replying to the last user text.
pub(crate) fn reply(turn: &Turn<'_>) -> Reply {
    let user_text = turn.user_text.as_deref().unwrap_or_default();
    let thinking = turn
        .thinking
        .then(|| words(&format!("Scripted thinking about: {user_text}")));
    let calls = match &turn.last {
        Last::User(text) if turn.tools_allowed => requested_calls(text, &turn.tools, user_text),
        _ => Vec::new(),
    };
    if !calls.is_empty() {
        return Reply {
            thinking,
            said: Said::Calls(calls),
        };
    }
    let content = match &turn.last {
        Last::ToolResult(result) => tool_result_reply(result),
        Last::User(text) => reply_text(Some(text)),
        Last::Other => reply_text(turn.user_text.as_deref()),
    };
    let (words, truncated) = limit_words(words(&content), turn.limit);
    Reply {
        thinking,
        said: Said::Text { words, truncated },
    }
}

/// `Scripted reply to: {text}`, or a greeting when there is no user text.
pub(crate) fn reply_text(user_text: Option<&str>) -> String {
    match user_text {
        Some(text) => format!("Scripted reply to: {text}"),
        None => "Hello from the scripted upstream.".to_owned(),
    }
}

fn tool_result_reply(result: &str) -> String {
    let quoted: String = result.chars().take(QUOTED_RESULT_CHARS).collect();
    format!("Scripted reply to tool result: {quoted}")
}

/// The calls `text` asks for: each `call <name>` naming an offered tool (the longest
/// name that matches, ending at a word boundary), in order.
fn requested_calls(text: &str, tools: &[Offered<'_>], user_text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    for (at, _) in text.match_indices("call ") {
        let starts_word = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_name_char(c));
        if !starts_word {
            continue;
        }
        let after = &text[at + "call ".len()..];
        let named = tools
            .iter()
            .filter(|tool| {
                !tool.name.is_empty()
                    && after.starts_with(tool.name)
                    && after[tool.name.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| !is_name_char(c))
            })
            .max_by_key(|tool| tool.name.len());
        let Some(tool) = named else { continue };
        let arguments = given_arguments(&after[tool.name.len()..])
            .unwrap_or_else(|| synthesized_arguments(tool.schema, user_text));
        let arguments = Value::Object(arguments).to_string();
        calls.push(Call {
            hash: call_hash(calls.len(), tool.name, &arguments),
            name: tool.name.to_owned(),
            namespace: tool.namespace.map(str::to_owned),
            arguments,
        });
    }
    calls
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// The JSON object that follows a tool's name in a `call` request, if one does.
fn given_arguments(rest: &str) -> Option<Map<String, Value>> {
    let rest = rest.trim_start();
    if !rest.starts_with('{') {
        return None;
    }
    match serde_json::Deserializer::from_str(rest)
        .into_iter::<Value>()
        .next()
    {
        Some(Ok(Value::Object(object))) => Some(object),
        _ => None,
    }
}

/// Arguments with one member per property of `schema` (a JSON schema, types in any
/// case as Gemini writes them): strings get `user_text`, enums their first value,
/// integers 1, numbers 1.5, booleans true, arrays `[]`, objects `{}`.
pub(crate) fn synthesized_arguments(schema: Option<&Value>, user_text: &str) -> Map<String, Value> {
    let mut arguments = Map::new();
    let Some(properties) = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    else {
        return arguments;
    };
    for (key, property) in properties {
        let first_enum = property
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|values| values.first());
        let value = if let Some(first) = first_enum {
            first.clone()
        } else {
            let kind = property
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase);
            match kind.as_deref() {
                Some("string") => json!(user_text),
                Some("integer") => json!(1),
                Some("number") => json!(1.5),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => Value::Null,
            }
        };
        arguments.insert(key.clone(), value);
    }
    arguments
}

/// 16 hex digits of an FNV-1a hash of call `index` (stable across runs and platforms,
/// as std's hashers are not promised to be).
pub(crate) fn call_hash(index: usize, name: &str, arguments: &str) -> String {
    format!("{:016x}", hash_of(&format!("{index}\0{name}\0{arguments}")))
}

/// FNV-1a of `text`.
pub(crate) fn hash_of(text: &str) -> u64 {
    let mut hash = fnv::FnvHasher::default();
    hash.write(text.as_bytes());
    hash.finish()
}

/// `arguments` in fragments of [`ARGUMENT_FRAGMENT_CHARS`] characters (at least one,
/// possibly empty, so a call always streams its arguments).
pub(crate) fn fragments(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(ARGUMENT_FRAGMENT_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn<'a>(text: &str, tools: &[Offered<'a>]) -> Turn<'a> {
        Turn {
            last: Last::User(text.to_owned()),
            user_text: Some(text.to_owned()),
            tools: tools.to_vec(),
            tools_allowed: true,
            limit: None,
            thinking: false,
        }
    }

    fn offered(name: &str) -> Offered<'_> {
        Offered {
            name,
            schema: None,
            namespace: None,
        }
    }

    #[test]
    fn a_call_needs_an_offered_tool_named_exactly() {
        let tools = [offered("Read"), offered("ReadMany")];
        let names = |text: &str| match reply(&turn(text, &tools)).said {
            Said::Calls(calls) => calls.into_iter().map(|c| c.name).collect::<Vec<_>>(),
            Said::Text { .. } => Vec::new(),
        };
        assert_eq!(names("please call Read."), ["Read"]);
        assert_eq!(names("call ReadMany now"), ["ReadMany"]);
        assert!(names("call Reader").is_empty());
        assert!(names("recall Read").is_empty());
        assert!(names("call Write").is_empty());
        assert!(names("read the file").is_empty());
        assert_eq!(names("call Read then call ReadMany"), ["Read", "ReadMany"]);
    }

    #[test]
    fn given_arguments_win_over_synthesized_ones() {
        let schema = json!({"properties": {"path": {"type": "STRING"}, "n": {"type": "integer"}}});
        let tools = [Offered {
            name: "Read",
            schema: Some(&schema),
            namespace: None,
        }];
        let call = |text: &str| match reply(&turn(text, &tools)).said {
            Said::Calls(calls) => calls[0].arguments_json(),
            Said::Text { .. } => Value::Null,
        };
        assert_eq!(
            call(r#"call Read {"path": "/etc/hosts"} please"#),
            json!({"path": "/etc/hosts"})
        );
        assert_eq!(
            call("call Read"),
            json!({"path": "call Read", "n": 1}),
            "synthesized from the schema"
        );
        assert_eq!(
            call("call Read {not json"),
            json!({"path": "call Read {not json", "n": 1})
        );
    }

    #[test]
    fn tool_results_are_quoted_and_forbidden_tools_are_not_called() {
        let mut result = turn("", &[]);
        result.last = Last::ToolResult("x".repeat(300));
        let Said::Text { words, .. } = reply(&result).said else {
            panic!("text expected")
        };
        assert_eq!(
            words.concat(),
            format!("Scripted reply to tool result: {}", "x".repeat(200))
        );

        let tools = [offered("Read")];
        let mut forbidden = turn("call Read", &tools);
        forbidden.tools_allowed = false;
        assert!(matches!(reply(&forbidden).said, Said::Text { .. }));
    }

    #[test]
    fn thinking_is_about_the_user_text() {
        let mut asked = turn("What is CEL?", &[]);
        asked.thinking = true;
        let reply = reply(&asked);
        assert_eq!(
            reply.thinking_text().as_deref(),
            Some("Scripted thinking about: What is CEL?")
        );
        assert_eq!((reply.thinking_tokens(), reply.output_tokens()), (6, 12));
    }
}
