//! The request side every OpenAI endpoint shares: the top-level object.
//!
//! A request names its `model`, whether it `stream`s, its `tools` and sampling
//! parameters the same way on every endpoint; only where the prompt is differs
//! (`messages`, `prompt` or `input`), so [`parse`] reads the common fields and hands
//! the prompt-bearing ones to the endpoint's [`ReadPrompt`].

use std::collections::HashSet;

use celgate_engine::exchange::{Api, Exchange, Message, Operation};
use serde_json::Value;

use super::super::RequestFacts;
use super::super::json::{
    BodyKind, KeepEntries, ParseError, dedup_last_wins, invalid, parse_top_level,
};

/// The top-level fields a prompt may come from; each endpoint reads its own.
pub(crate) struct PromptFields {
    pub messages: Option<Value>,
    pub prompt: Option<Value>,
    pub input: Option<Value>,
}

/// Reads an endpoint's prompt out of the request's [`PromptFields`].
pub(crate) type ReadPrompt = fn(PromptFields) -> Result<Vec<Message>, ParseError>;

/// Top-level request keys that are modelled explicitly and therefore never appear in
/// [`Exchange::params`].
const NON_PARAM_KEYS: [&str; 6] = ["model", "messages", "tools", "stream", "prompt", "input"];

/// The wire protocol of an OpenAI endpoint's calls.
fn api(operation: Operation) -> Api {
    match operation {
        Operation::Chat => Api::ChatCompletions,
        Operation::TextCompletion => Api::Completions,
        Operation::Embeddings => Api::Embeddings,
        Operation::GenerateContent | Operation::Other => Api::Other,
    }
}

/// The text of the `system` and `developer` messages, in order: chat's system
/// instructions (they stay in the prompt too).
fn system_instructions(prompt: &[Message]) -> Vec<String> {
    prompt
        .iter()
        .filter(|m| matches!(m.role.as_str(), "system" | "developer"))
        .filter_map(|m| m.content.clone())
        .collect()
}

/// Parses a request body into `ex`, the prompt read by `read_prompt` (see
/// [`super::parse_request`] for what is set).
pub(crate) fn parse(
    operation: Operation,
    read_prompt: ReadPrompt,
    body: &[u8],
    ex: &mut Exchange,
) -> Result<RequestFacts, ParseError> {
    ex.operation = operation;
    ex.request_body = Some(String::from_utf8_lossy(body).into_owned());

    let entries = parse_top_level(BodyKind::Request, body, KeepEntries { keep: |_| true })?;
    let duplicate_keys = {
        let mut seen = HashSet::with_capacity(entries.len());
        !entries.iter().all(|(k, _)| seen.insert(k.as_str()))
    };

    let mut model = None;
    let mut stream = None;
    let mut tools = None;
    let mut messages = None;
    let mut prompt = None;
    let mut input = None;
    let mut params = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match key.as_str() {
            "model" => model = Some(value),
            "stream" => stream = Some(value),
            "tools" => tools = Some(value),
            "messages" => messages = Some(value),
            "prompt" => prompt = Some(value),
            "input" => input = Some(value),
            _ => params.push((key, value)),
        }
    }
    debug_assert!(
        params
            .iter()
            .all(|(k, _)| !NON_PARAM_KEYS.contains(&k.as_str()))
    );

    let request_model = match model {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(invalid("model", "a string", &other)),
    };
    let streaming = match stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(other) => return Err(invalid("stream", "a boolean", &other)),
    };
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(invalid("tools", "an array", &other)),
    };
    let prompt = read_prompt(PromptFields {
        messages,
        prompt,
        input,
    })?;

    ex.request_model = request_model;
    ex.streaming = streaming;
    ex.tools = tools;
    ex.api = api(operation);
    ex.system = system_instructions(&prompt);
    ex.prompt = prompt;
    ex.params = if duplicate_keys {
        dedup_last_wins(params)
    } else {
        params
    };
    Ok(RequestFacts { duplicate_keys })
}

/// A legacy `prompt` or embeddings `input`: a string, or an array whose strings each
/// become one user message (token arrays carry no text and are skipped).
pub(crate) fn texts_as_user_messages(
    field: &str,
    v: Option<Value>,
) -> Result<Vec<Message>, ParseError> {
    let user = |text: String| Message {
        role: "user".to_owned(),
        content: Some(text),
        ..Message::default()
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![user(s)]),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => out.push(user(s)),
                    Value::Number(_) | Value::Array(_) => {}
                    other => {
                        return Err(invalid(
                            format!("{field}[{i}]"),
                            "a string or an array of token ids",
                            &other,
                        ));
                    }
                }
            }
            Ok(out)
        }
        Some(other) => Err(invalid(
            field,
            "a string, an array of strings, or an array of token ids",
            &other,
        )),
    }
}
