//! What the upstream answered, as the client saw it (plain or streamed, reassembled
//! the way an OpenAI SDK does): the reference spans are checked against.
#![allow(dead_code)]

use serde_json::Value;

/// The `data:` payloads of a stream parsed as JSON (`[DONE]` left out).
pub fn stream_chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("bad SSE event {e}: {err}")))
        .collect()
}

/// What the upstream answered, as the client saw it: the reference the span is checked
/// against.
#[derive(Debug, Default)]
pub struct Answer {
    pub id: Option<String>,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: Option<i64>,
    pub total_tokens: i64,
    pub content: Option<String>,
    pub finish_reason: Option<String>,
    /// (id, name, arguments)
    pub tool_calls: Vec<(String, String, String)>,
    /// The body the client received (non-streamed answers).
    pub body: Option<String>,
}

fn usage_into(answer: &mut Answer, usage: &Value) {
    answer.prompt_tokens = usage["prompt_tokens"].as_i64().expect("prompt_tokens");
    answer.completion_tokens = usage["completion_tokens"].as_i64();
    answer.total_tokens = usage["total_tokens"].as_i64().expect("total_tokens");
}

pub fn answer_from_json(text: &str) -> Answer {
    let v: Value = serde_json::from_str(text).expect("a JSON answer");
    let mut answer = Answer {
        id: v["id"].as_str().map(str::to_owned),
        model: v["model"].as_str().expect("model").to_owned(),
        body: Some(text.to_owned()),
        ..Answer::default()
    };
    usage_into(&mut answer, &v["usage"]);
    let choice = &v["choices"][0];
    answer.finish_reason = choice["finish_reason"].as_str().map(str::to_owned);
    answer.content = choice["message"]["content"]
        .as_str()
        .or(choice["text"].as_str())
        .map(str::to_owned);
    for call in choice["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
    {
        answer.tool_calls.push((
            call["id"].as_str().unwrap_or_default().to_owned(),
            call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            call["function"]["arguments"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    answer
}

/// Reassembles a streamed chat answer the way an OpenAI SDK does.
pub fn answer_from_stream(events: &[String]) -> Answer {
    let mut answer = Answer::default();
    let mut content: Option<String> = None;
    for chunk in stream_chunks(events) {
        answer.id = chunk["id"].as_str().map(str::to_owned);
        answer.model = chunk["model"].as_str().unwrap_or_default().to_owned();
        if chunk["usage"].is_object() {
            usage_into(&mut answer, &chunk["usage"]);
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(reason) = choice["finish_reason"].as_str() {
            answer.finish_reason = Some(reason.to_owned());
        }
        if let Some(text) = choice["delta"]["content"].as_str() {
            content.get_or_insert_default().push_str(text);
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().expect("tool call index") as usize;
            if answer.tool_calls.len() <= index {
                answer.tool_calls.resize(index + 1, Default::default());
            }
            let slot = &mut answer.tool_calls[index];
            if let Some(id) = call["id"].as_str() {
                slot.0 = id.to_owned();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                slot.1 = name.to_owned();
            }
            if let Some(fragment) = call["function"]["arguments"].as_str() {
                slot.2.push_str(fragment);
            }
        }
    }
    answer.content = content.filter(|c| !c.is_empty());
    answer
}
