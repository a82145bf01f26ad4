//! The Gemini protocol: paths, requests, whole answers (objects and arrays) and SSE
//! streams, realistic and hostile.

use super::*;
use crate::protocol::limits::{MAX_LABEL_BYTES, MAX_TEXT_BYTES, MAX_TRACKED};
use crate::protocol::{PROTOCOLS, SseAccumulator, StreamSummary, for_operation, for_request};
use crate::test_rng::Rng;
use celgate_engine::exchange::{Api, Choice, Message, TokenDetails, ToolCall};

const FLASH_PATH: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const STREAM_PATH: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";

fn request_at(path: &str, body: &str) -> Exchange {
    let mut ex = Exchange::default();
    ex.request.path = path.to_owned();
    GENERATE
        .parse_request(body.as_bytes(), &mut ex)
        .expect("request parses");
    ex
}

fn request(body: &str) -> Exchange {
    request_at(FLASH_PATH, body)
}

fn request_err(body: &str) -> String {
    let mut ex = Exchange::default();
    let err = GENERATE
        .parse_request(body.as_bytes(), &mut ex)
        .expect_err("request is refused")
        .to_string();
    assert_eq!(ex.request_body.as_deref(), Some(body), "kept for the trace");
    err
}

fn response(body: &str) -> Exchange {
    let mut ex = Exchange::default();
    GENERATE
        .parse_response(body.as_bytes(), &mut ex)
        .expect("response parses");
    ex
}

fn run_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Exchange, StreamSummary) {
    let mut acc = SseAccumulator::for_protocol(&GENERATE);
    for chunk in chunks {
        acc.feed(chunk);
    }
    let mut ex = Exchange::default();
    let summary = acc.finish(&mut ex);
    (ex, summary)
}

/// Feeds `stream` whole, a byte at a time and in random chunkings: all the same.
fn run_stream(stream: &str) -> (Exchange, StreamSummary) {
    let bytes = stream.as_bytes();
    let whole = run_chunks([bytes]);
    assert_eq!(run_chunks(bytes.chunks(1)), whole, "byte at a time");
    let mut rng = Rng(0x6E41_1A57_0000_0013);
    for _ in 0..50 {
        let mut chunks = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (head, tail) = rest.split_at(rng.below(24).min(rest.len()));
            chunks.push(head);
            rest = tail;
        }
        assert_eq!(run_chunks(chunks), whole, "random chunking");
    }
    whole
}

/// Chunks as Gemini's SSE framing sends them (`\r\n` line ends).
fn sse(chunks: &[&str]) -> String {
    chunks
        .iter()
        .map(|c| format!("data: {c}\r\n\r\n"))
        .collect()
}

/// A JSON document on one line, as one SSE `data:` line must be.
fn compact(json: &str) -> String {
    serde_json::from_str::<Value>(json).unwrap().to_string()
}

/// Chunks as `:streamGenerateContent` without `alt=sse` answers them.
fn json_array(chunks: &[&str]) -> String {
    format!("[{}]", chunks.join(",\r\n"))
}

/// The response side of an exchange, what every reading of an answer must agree on.
type ResponseSide = (
    Vec<Choice>,
    Option<String>,
    Option<String>,
    (Option<i64>, Option<i64>, Option<i64>),
    TokenDetails,
    bool,
);

fn response_side(ex: &Exchange) -> ResponseSide {
    (
        ex.choices.clone(),
        ex.response_id.clone(),
        ex.response_model.clone(),
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        ex.token_details,
        ex.response_truncated,
    )
}

fn msg(role: &str, content: Option<&str>) -> Message {
    Message {
        role: role.to_owned(),
        content: content.map(str::to_owned),
        ..Message::default()
    }
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments: arguments.to_owned(),
    }
}

fn choice(index: u32, content: Option<&str>, finish_reason: Option<&str>) -> Choice {
    Choice {
        index,
        role: "assistant".to_owned(),
        content: content.map(str::to_owned),
        finish_reason: finish_reason.map(str::to_owned),
        ..Choice::default()
    }
}

// ---------------------------------------------------------------------------------
// Paths and the protocol's wiring.

#[test]
fn generate_content_paths_name_the_model_and_the_method() {
    let cases = [
        (FLASH_PATH, Some(("gemini-2.5-flash", false))),
        (STREAM_PATH, Some(("gemini-2.5-flash", true))),
        (
            "/v1/models/gemini-2.0-flash-001:generateContent",
            Some(("gemini-2.0-flash-001", false)),
        ),
        (
            "/v1/models/gemini-2.5-pro:streamGenerateContent",
            Some(("gemini-2.5-pro", true)),
        ),
        (ROUTE, Some(("{model}", false))),
        ("/v1beta/models/:generateContent", None),
        ("/v1beta/models/a/b:generateContent", None),
        ("/v1beta/models/gemini-2.5-flash:countTokens", None),
        ("/v1beta/models/gemini-2.5-flash:embedContent", None),
        ("/v1beta/models/gemini-2.5-flash", None),
        ("/v1beta/models", None),
        ("/v1beta/tunedModels/x:generateContent", None),
        ("/v2/models/gemini-2.5-flash:generateContent", None),
        ("/v1beta/models/gemini-2.5-flash:generateContent/", None),
    ];
    for (path, want) in cases {
        assert_eq!(split_path(path), want, "{path}");
        assert_eq!(model_of_path(path), want.map(|(m, _)| m), "{path}");
        assert_eq!(
            GENERATE.recognises(&Method::POST, path),
            want.is_some(),
            "{path}"
        );
    }
    assert!(!GENERATE.recognises(&Method::GET, FLASH_PATH));
}

#[test]
fn the_protocol_is_registered_with_its_operation_key_header_and_end_rule() {
    for path in [FLASH_PATH, STREAM_PATH] {
        let found = for_request(&Method::POST, path).expect("recognised");
        assert_eq!(found.route(), ROUTE);
        assert_eq!(found.operation(), Operation::GenerateContent);
    }
    assert_eq!(
        for_operation(Operation::GenerateContent).map(|p| p.route()),
        Some(ROUTE)
    );
    assert_eq!(
        PROTOCOLS.iter().filter(|p| p.route() == ROUTE).count(),
        1,
        "registered once"
    );
    assert_eq!(
        GENERATE.backend_auth(),
        BackendAuth::Header("x-goog-api-key")
    );
    let (name, value) = GENERATE.backend_auth().header("AIza-key").unwrap();
    assert_eq!(name.as_str(), "x-goog-api-key");
    assert!(value.is_sensitive());
    assert_eq!(GENERATE.final_event(), FinalEvent::Accumulator);
}

#[test]
fn errors_celgate_answers_have_google_s_shape_and_status_names() {
    let body = GENERATE.error_body(
        StatusCode::FORBIDDEN,
        "model `gemini-2.5-pro` is not allowed for this key",
        "permission_error",
        Some("model_not_allowed"),
    );
    assert_eq!(
        body,
        json!({"error": {
            "code": 403,
            "message": "model `gemini-2.5-pro` is not allowed for this key",
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "MODEL_NOT_ALLOWED",
                "domain": "celgate",
            }],
        }})
    );
    let status_of = |code: u16| {
        let body = GENERATE.error_body(
            StatusCode::from_u16(code).unwrap(),
            "m",
            "upstream_error",
            None,
        );
        assert_eq!(body["error"]["code"], code);
        assert!(body["error"].get("details").is_none());
        body["error"]["status"].as_str().unwrap().to_owned()
    };
    for (code, name) in [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (413, "INVALID_ARGUMENT"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (502, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
    ] {
        assert_eq!(status_of(code), name, "{code}");
    }
}

// ---------------------------------------------------------------------------------
// Requests.

/// A Gemini CLI turn after one tool round trip: a system instruction of two parts,
/// a thought and a function call from the model, the function's response, an image,
/// declarations in both schema spellings beside a built-in tool, and every kind of
/// field that is or is not a parameter.
const AGENT_REQUEST: &str = r#"{
  "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
  "contents": [
    {"role": "user", "parts": [
      {"text": "This is the Gemini CLI. We are setting up the context for our chat."},
      {"text": "What is the weather in Lisbon?"}
    ]},
    {"role": "model", "parts": [
      {"text": "The user wants the weather; call the tool.", "thought": true},
      {"functionCall": {"name": "get_weather", "args": {"unit": "celsius", "city": "Lisbon"}},
       "thoughtSignature": "CiQBVKhc7oTg0A=="}
    ]},
    {"role": "user", "parts": [
      {"functionResponse": {"name": "get_weather", "response": {"output": "18°C, sunny"}}}
    ]},
    {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]}
  ],
  "systemInstruction": {"role": "user", "parts": [
    {"text": "You are an interactive CLI agent."},
    {"text": "Be concise."}
  ]},
  "tools": [
    {"functionDeclarations": [
      {"name": "get_weather", "description": "Current weather",
       "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
      {"name": "read_file", "parameters": {"type": "OBJECT", "properties": {"path": {"type": "STRING"}}}}
    ]},
    {"googleSearch": {}}
  ],
  "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
  "generationConfig": {
    "temperature": 0,
    "topP": 1,
    "thinkingConfig": {"includeThoughts": true, "thinkingBudget": -1},
    "maxOutputTokens": 8192,
    "stopSequences": ["END"]
  },
  "cachedContent": "cachedContents/abc123",
  "labels": {"team": "cli"}
}"#;

#[test]
fn an_agent_turn_reads_in_the_chat_vocabulary() {
    let ex = request_at(STREAM_PATH, AGENT_REQUEST);
    assert_eq!(ex.operation, Operation::GenerateContent);
    assert_eq!(ex.api, Api::GenerateContent);
    assert_eq!(ex.request_model.as_deref(), Some("gemini-2.5-flash"));
    assert!(ex.streaming);
    assert_eq!(
        ex.system,
        ["You are an interactive CLI agent.", "Be concise."]
    );
    let tool_result = Message {
        role: "tool".to_owned(),
        content: Some(r#"{"output":"18°C, sunny"}"#.to_owned()),
        name: Some("get_weather".to_owned()),
        tool_call_id: Some("get_weather".to_owned()),
        ..Message::default()
    };
    assert_eq!(
        ex.prompt,
        vec![
            msg(
                "system",
                Some("You are an interactive CLI agent.\nBe concise.")
            ),
            msg(
                "user",
                Some(
                    "This is the Gemini CLI. We are setting up the context for our chat.\n\
                     What is the weather in Lisbon?"
                )
            ),
            Message {
                tool_calls: vec![call(
                    "",
                    "get_weather",
                    r#"{"city":"Lisbon","unit":"celsius"}"#
                )],
                ..msg("assistant", None)
            },
            tool_result,
            msg("user", None),
        ]
    );
    let tools: Vec<&str> = ex
        .tools
        .iter()
        .map(|t| t["name"].as_str().unwrap_or("(built-in)"))
        .collect();
    assert_eq!(tools, ["get_weather", "read_file", "(built-in)"]);
    assert_eq!(ex.tools[2], json!({"googleSearch": {}}));
    assert_eq!(
        ex.tools[0]["parametersJsonSchema"]["required"],
        json!(["city"])
    );
    let params: Vec<&str> = ex.params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        params,
        [
            "temperature",
            "topP",
            "thinkingConfig",
            "maxOutputTokens",
            "stopSequences",
            "toolConfig",
            "safetySettings"
        ],
        "generationConfig in request order, then the two configs as sent"
    );
    assert_eq!(
        ex.params[2].1,
        json!({"includeThoughts": true, "thinkingBudget": -1})
    );
    assert_eq!(ex.request_body.as_deref(), Some(AGENT_REQUEST));
}

#[test]
fn snake_case_fields_read_like_camel_case_ones() {
    let ex = request_at(
        "/v1/models/gemini-2.0-flash:generateContent",
        r#"{
          "system_instruction": {"parts": [{"text": "Answer in French."}]},
          "contents": [
            {"role": "model", "parts": [{"function_call": {"id": "call-1", "name": "f", "args": {}}}]},
            {"role": "user", "parts": [
              {"function_response": {"id": "call-1", "name": "f", "response": {"ok": true}}},
              {"text": "And now?"}
            ]}
          ],
          "tools": [{"function_declarations": [{"name": "f"}], "code_execution": {}}],
          "generation_config": {"top_k": 40, "candidate_count": 1},
          "tool_config": {"function_calling_config": {"mode": "ANY"}},
          "safety_settings": []
        }"#,
    );
    assert!(!ex.streaming);
    assert_eq!(ex.request_model.as_deref(), Some("gemini-2.0-flash"));
    assert_eq!(ex.system, ["Answer in French."]);
    assert_eq!(
        ex.prompt,
        vec![
            msg("system", Some("Answer in French.")),
            Message {
                tool_calls: vec![call("call-1", "f", "{}")],
                ..msg("assistant", None)
            },
            Message {
                name: Some("f".to_owned()),
                tool_call_id: Some("call-1".to_owned()),
                ..msg("tool", Some(r#"{"ok":true}"#))
            },
            msg("user", Some("And now?")),
        ],
        "a tool result comes before the text of its turn"
    );
    assert_eq!(
        ex.tools,
        [json!({"name": "f"}), json!({"code_execution": {}})]
    );
    let params: Vec<&str> = ex.params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        params,
        ["top_k", "candidate_count", "tool_config", "safety_settings"]
    );
}

#[test]
fn the_model_in_the_path_is_percent_decoded_and_the_body_cannot_override_it() {
    let ex = request_at(
        "/v1beta/models/gemini%2D2.5%2Dflash:generateContent",
        r#"{"model": "other", "contents": []}"#,
    );
    assert_eq!(ex.request_model.as_deref(), Some("gemini-2.5-flash"));
    assert!(ex.params.is_empty(), "`model` is no parameter");
    let ex = request_at("/somewhere/else", r#"{"contents": []}"#);
    assert_eq!(ex.request_model, None);
    assert!(!ex.streaming);
}

#[test]
fn requests_are_refused_only_when_unusable() {
    for (body, want) in [
        ("[]", "request body must be a JSON object, not an array"),
        ("{", "request body is not valid JSON"),
        (
            r#"{"contents": "hi"}"#,
            "`contents` must be an array of contents, not a string",
        ),
        (
            r#"{"contents": [1]}"#,
            "`contents[0]` must be an object, not a number",
        ),
        (
            r#"{"contents": [{"parts": []}, {"role": 7, "parts": []}]}"#,
            "`contents[1].role` must be a string, not a number",
        ),
        (
            r#"{"contents": [{"role": "user", "parts": {"text": "hi"}}]}"#,
            "`contents[0].parts` must be an array of parts, not an object",
        ),
        (
            r#"{"tools": {"functionDeclarations": []}}"#,
            "`tools` must be an array of tools, not an object",
        ),
    ] {
        let err = request_err(body);
        assert!(err.starts_with(want), "{body}: {err}");
    }

    // Everything else is read leniently: wrong-typed parts and fields carry nothing.
    let ex = request(
        r#"{
          "systemInstruction": "Be brief.",
          "contents": [
            {"parts": ["loose", {"text": 5}, {"text": "kept"}, {"functionCall": "x"},
                       {"fileData": {"fileUri": "gs://b/o"}}, {"executableCode": {"code": "1"}}]},
            {"role": "", "parts": null},
            {"role": "function", "parts": [{"functionResponse": {"response": null}}]}
          ],
          "tools": [{"functionDeclarations": "x"}, 3],
          "generationConfig": [1],
          "toolConfig": null
        }"#,
    );
    assert_eq!(ex.system, ["Be brief."]);
    assert_eq!(
        ex.prompt,
        vec![
            msg("system", Some("Be brief.")),
            msg("user", Some("kept")),
            msg("user", None),
            msg("tool", None),
        ]
    );
    assert_eq!(ex.tools, [json!({"functionDeclarations": "x"}), json!(3)]);
    assert!(ex.params.is_empty());
}

#[test]
fn duplicate_keys_mean_their_last_value_and_are_reported() {
    let mut ex = Exchange::default();
    let facts = GENERATE
        .parse_request(
            br#"{"generationConfig": {"temperature": 1, "topK": 3, "temperature": 0.5},
                 "contents": [{"parts": [{"text": "first"}]}],
                 "contents": [{"parts": [{"text": "second"}]}],
                 "generationConfig": {"topK": 4, "topP": 0.9, "topK": 5}}"#,
            &mut ex,
        )
        .unwrap();
    assert!(facts.duplicate_keys);
    assert_eq!(ex.prompt, vec![msg("user", Some("second"))]);
    assert_eq!(
        ex.params,
        vec![("topK".into(), json!(5)), ("topP".into(), json!(0.9))]
    );
    let facts = GENERATE
        .parse_request(br#"{"contents": []}"#, &mut Exchange::default())
        .unwrap();
    assert!(!facts.duplicate_keys);
}

// ---------------------------------------------------------------------------------
// Whole answers.

/// A thinking model's answer with a function call, as `generateContent` returns it.
const TOOL_ANSWER: &str = r#"{
  "candidates": [{
    "content": {"role": "model", "parts": [
      {"text": "**Checking the weather**\n\nI should call get_weather.", "thought": true},
      {"text": "Let me look that up."},
      {"functionCall": {"name": "get_weather", "args": {"city": "Lisbon"}},
       "thoughtSignature": "CiQBVKhc7oTg0A=="},
      {"functionCall": {"id": "fc-2", "name": "get_time", "args": {"tz": "Europe/Lisbon"}}}
    ]},
    "finishReason": "STOP",
    "index": 0
  }],
  "usageMetadata": {
    "promptTokenCount": 120,
    "candidatesTokenCount": 35,
    "cachedContentTokenCount": 64,
    "thoughtsTokenCount": 48,
    "toolUsePromptTokenCount": 0,
    "totalTokenCount": 203,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120}]
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "mK1aaOi7Lq-AqsMPtY2KmAM"
}"#;

fn tool_answer_choice() -> Choice {
    Choice {
        tool_calls: vec![
            call("", "get_weather", r#"{"city":"Lisbon"}"#),
            call("fc-2", "get_time", r#"{"tz":"Europe/Lisbon"}"#),
        ],
        reasoning: Some("**Checking the weather**\n\nI should call get_weather.".to_owned()),
        ..choice(0, Some("Let me look that up."), Some("STOP"))
    }
}

#[test]
fn a_whole_answer_reads_into_choices_reasoning_and_tokens() {
    let ex = response(TOOL_ANSWER);
    assert_eq!(ex.choices, vec![tool_answer_choice()]);
    assert_eq!(ex.response_model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(ex.response_id.as_deref(), Some("mK1aaOi7Lq-AqsMPtY2KmAM"));
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(120), Some(35 + 48), Some(203)),
        "input is the prompt, output the candidates plus the thoughts"
    );
    assert_eq!(
        ex.token_details,
        TokenDetails {
            cache_read: Some(64),
            reasoning: Some(48),
            ..TokenDetails::default()
        }
    );
    assert_eq!(ex.response_body.as_deref(), Some(TOOL_ANSWER));
    assert!(!ex.response_truncated);

    let mut owned = Exchange::default();
    GENERATE
        .parse_response_owned(TOOL_ANSWER.as_bytes().to_vec(), &mut owned)
        .unwrap();
    assert_eq!(owned, ex);
}

#[test]
fn candidates_are_choices_by_index_and_counts_fill_in() {
    let ex = response(
        r#"{"candidates": [
              {"content": {"parts": [{"text": "Two"}]}, "finishReason": "MAX_TOKENS", "index": 1},
              {"content": {"parts": [{"text": "One, "}, {"text": "first"}]}, "finishReason": "STOP"}
            ],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6}}"#,
    );
    assert_eq!(
        ex.choices,
        vec![
            choice(0, Some("One, first"), Some("STOP")),
            choice(1, Some("Two"), Some("MAX_TOKENS")),
        ],
        "an absent index is 0 (Google's JSON omits zeros); text parts join as the SDK's `.text`"
    );
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(4), Some(6), Some(10))
    );
}

#[test]
fn error_and_blocked_answers_yield_no_choice() {
    let ex = response(
        r#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}"#,
    );
    assert!(ex.choices.is_empty());
    assert!(ex.response_body.is_some());
    let ex = response(
        r#"{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}, "modelVersion": "gemini-2.5-flash"}"#,
    );
    assert!(ex.choices.is_empty());
    assert_eq!((ex.input_tokens, ex.output_tokens), (Some(7), None));
    for (body, want) in [
        ("not json", "response body is not valid JSON"),
        ("42", "response body must be a JSON object, not a number"),
        ("\"x\"", "response body must be a JSON object, not a string"),
    ] {
        let err = GENERATE
            .parse_response(body.as_bytes(), &mut Exchange::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "{body}: {err}");
    }
}

#[test]
fn wrong_types_in_an_answer_cost_fields_not_the_answer() {
    let ex = response(
        r#"{
          "candidates": [
            {"content": {"parts": [{"text": 5}, {"text": "ok", "thought": "yes"}, {"functionCall": {"name": 3, "args": null}}, 7]},
             "finishReason": 1, "index": "2"},
            "junk",
            {"content": "x", "index": -1},
            {"content": {"parts": {"text": "not a list"}}, "index": 3, "finishReason": ""}
          ],
          "usageMetadata": {"promptTokenCount": -5, "candidatesTokenCount": 2.0, "thoughtsTokenCount": "9", "totalTokenCount": 1.5},
          "modelVersion": ["x"],
          "responseId": 12,
          "promptFeedback": 3
        }"#,
    );
    assert_eq!(
        ex.choices,
        vec![
            Choice {
                tool_calls: vec![call("", "", "")],
                ..choice(0, Some("ok"), None)
            },
            choice(3, None, None),
        ],
        "a mistyped index is 0, `thought` counts only as `true`, an empty finish reason is none"
    );
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (None, Some(2), None)
    );
    assert_eq!((ex.response_model, ex.response_id), (None, None));
}

#[test]
fn caps_bound_what_a_hostile_answer_leaves_in_the_span() {
    let candidates: Vec<String> = (0..=MAX_TRACKED)
        .map(|i| format!(r#"{{"index": {i}, "finishReason": "STOP"}}"#))
        .collect();
    let ex = response(&format!(r#"{{"candidates": [{}]}}"#, candidates.join(",")));
    assert_eq!(ex.choices.len(), MAX_TRACKED);
    assert!(ex.response_truncated);

    let calls = vec![r#"{"functionCall": {"name": "f"}}"#; MAX_TRACKED + 1].join(",");
    let ex = response(&format!(
        r#"{{"candidates": [{{"content": {{"parts": [{calls}]}}}}]}}"#
    ));
    assert_eq!(ex.choices[0].tool_calls.len(), MAX_TRACKED);
    assert!(ex.response_truncated);

    let long = "x".repeat(MAX_TEXT_BYTES / 2 + 1);
    let label = "m".repeat(MAX_LABEL_BYTES + 10);
    let chunk = format!(
        r#"{{"candidates": [{{"content": {{"parts": [{{"text": "{long}"}}]}}}}], "modelVersion": "{label}"}}"#
    );
    let ex = response(&json_array(&[&chunk, &chunk]));
    let content = ex.choices[0].content.as_deref().unwrap();
    assert_eq!(content.len(), MAX_TEXT_BYTES);
    assert_eq!(
        ex.response_model.as_deref().map(str::len),
        Some(MAX_LABEL_BYTES)
    );
    assert!(ex.response_truncated);
}

// ---------------------------------------------------------------------------------
// Streams (and the JSON-array stream).

/// A thinking model streaming its answer: thought summary, text in two pieces, the
/// finish reason and the final usage on the last chunk.
const TEXT_CHUNKS: [&str; 4] = [
    r#"{"candidates": [{"content": {"parts": [{"text": "**Recalling capitals**\n\nPortugal's capital","thought": true}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash","responseId": "5q1aaLjXBZ2fqsMP4-7x2Qc"}"#,
    r#"{"candidates": [{"content": {"parts": [{"text": " is Lisbon.","thought": true}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash","responseId": "5q1aaLjXBZ2fqsMP4-7x2Qc"}"#,
    r#"{"candidates": [{"content": {"parts": [{"text": "The capital of Portugal"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 4,"totalTokenCount": 41,"thoughtsTokenCount": 28},"modelVersion": "gemini-2.5-flash","responseId": "5q1aaLjXBZ2fqsMP4-7x2Qc"}"#,
    r#"{"candidates": [{"content": {"parts": [{"text": " is Lisbon."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 7,"totalTokenCount": 44,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 9}],"thoughtsTokenCount": 28},"modelVersion": "gemini-2.5-flash","responseId": "5q1aaLjXBZ2fqsMP4-7x2Qc"}"#,
];

/// A function call, streamed: Gemini sends each call whole, in one chunk.
const TOOL_CHUNKS: [&str; 2] = [
    r#"{"candidates": [{"content": {"parts": [{"text": "Let me check."}],"role": "model"},"index": 0}],"modelVersion": "gemini-2.5-flash","responseId": "tool-1"}"#,
    r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"city": "Lisbon"}},"thoughtSignature": "CiQB"},{"functionCall": {"id": "fc-2","name": "get_time","args": {}}}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 50,"candidatesTokenCount": 12,"totalTokenCount": 62},"modelVersion": "gemini-2.5-flash","responseId": "tool-1"}"#,
];

#[test]
fn a_text_stream_accumulates_thoughts_text_and_final_usage() {
    let (ex, summary) = run_stream(&sse(&TEXT_CHUNKS));
    assert_eq!(
        summary,
        StreamSummary {
            saw_final: true,
            events: 4,
            malformed_events: 0,
            error: None,
            truncated: false,
        }
    );
    assert_eq!(
        ex.choices,
        vec![Choice {
            reasoning: Some("**Recalling capitals**\n\nPortugal's capital is Lisbon.".to_owned()),
            ..choice(0, Some("The capital of Portugal is Lisbon."), Some("STOP"))
        }]
    );
    assert_eq!(ex.response_id.as_deref(), Some("5q1aaLjXBZ2fqsMP4-7x2Qc"));
    assert_eq!(ex.response_model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(9), Some(35), Some(44))
    );
    assert_eq!(ex.token_details.reasoning, Some(28));
    let body: Value = serde_json::from_str(ex.response_body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "**Recalling capitals**\n\nPortugal's capital is Lisbon.", "thought": true},
                    {"text": "The capital of Portugal is Lisbon."}
                ]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 7, "thoughtsTokenCount": 28, "totalTokenCount": 44},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "5q1aaLjXBZ2fqsMP4-7x2Qc"
        })
    );
}

#[test]
fn a_stream_an_array_and_the_rendered_body_describe_the_answer_alike() {
    let tool_answer = compact(TOOL_ANSWER);
    for chunks in [
        &TEXT_CHUNKS[..],
        &TOOL_CHUNKS[..],
        &[tool_answer.as_str()][..],
    ] {
        let (streamed, _) = run_stream(&sse(chunks));
        let array = response(&json_array(chunks));
        assert_eq!(response_side(&array), response_side(&streamed));
        let rendered = response(streamed.response_body.as_deref().unwrap());
        assert_eq!(response_side(&rendered), response_side(&streamed));
    }
    let (streamed, _) = run_stream(&sse(&TOOL_CHUNKS));
    assert_eq!(
        streamed.choices[0].tool_calls,
        [
            call("", "get_weather", r#"{"city":"Lisbon"}"#),
            call("fc-2", "get_time", "{}")
        ]
    );
    let (streamed, summary) = run_stream(&sse(&[&tool_answer]));
    assert!(summary.saw_final);
    assert_eq!(
        response_side(&streamed),
        response_side(&response(TOOL_ANSWER)),
        "a whole answer is a stream of one chunk"
    );
}

#[test]
fn the_stream_is_complete_only_once_every_candidate_finished() {
    let (_, cut) = run_stream(&sse(&TEXT_CHUNKS[..3]));
    assert!(!cut.saw_final, "no finishReason yet: the stream was cut");
    let two = [
        r#"{"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0}, {"content": {"parts": [{"text": "b"}]}, "index": 1}]}"#,
        r#"{"candidates": [{"finishReason": "STOP", "index": 0}]}"#,
    ];
    let (_, half) = run_stream(&sse(&two));
    assert!(!half.saw_final, "candidate 1 never finished");
    let (ex, blocked) = run_stream(&sse(&[
        r#"{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}"#,
    ]));
    assert!(blocked.saw_final, "a blocked prompt is a complete answer");
    assert!(ex.choices.is_empty());
    let (_, empty) = run_stream("");
    assert!(!empty.saw_final);
}

#[test]
fn hostile_streams_give_less_information_never_an_error() {
    let stream = concat!(
        ": keep-alive\r\n\r\n",
        "data: not json\r\n\r\n",
        "data: [1, 2]\r\n\r\n",
        "data: 7\r\n\r\n",
        // Candidate 1 before candidate 0, and wrong types beside good fields.
        "data: {\"candidates\": [{\"index\": 1, \"content\": {\"parts\": [{\"text\": \"second\"}]}}], \"responseId\": 5}\r\n\r\n",
        "data: {\"candidates\": {\"index\": 0}, \"usageMetadata\": \"lots\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"first\"}]}, \"finishReason\": \"STOP\"}], \"responseId\": \"r-1\"}\r\n\r\n",
        "data: {\"candidates\": [{\"index\": 1, \"finishReason\": \"STOP\"}], \"usageMetadata\": {\"promptTokenCount\": 3, \"candidatesTokenCount\": 2}}\r\n\r\n",
        // After the final chunk: still read, the last finish reason wins.
        "data: {\"candidates\": [{\"index\": 1, \"content\": {\"parts\": [{\"text\": \"!\"}]}, \"finishReason\": \"MAX_TOKENS\"}]}\r\n\r\n",
        // Unterminated last event.
        "data: {\"candidates\": [{\"index\": 0, \"content\": {\"parts\": [{\"text\": \" end\"}]}}]}",
    );
    let (ex, summary) = run_stream(stream);
    assert_eq!(summary.malformed_events, 3);
    assert!(summary.saw_final);
    assert_eq!(summary.error, None);
    assert_eq!(
        ex.choices,
        vec![
            choice(0, Some("first end"), Some("STOP")),
            choice(1, Some("second!"), Some("MAX_TOKENS")),
        ]
    );
    assert_eq!(ex.response_id.as_deref(), Some("r-1"));
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(3), Some(2), Some(5))
    );
}

#[test]
fn an_error_chunk_is_the_stream_s_error() {
    let error = r#"{"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}"#;
    let (ex, summary) = run_stream(&sse(&[TEXT_CHUNKS[0], error]));
    assert_eq!(
        summary.error.as_deref(),
        Some("The model is overloaded. Please try again later.")
    );
    assert!(!summary.saw_final);
    assert_eq!(ex.choices.len(), 1, "what came before the error is kept");

    let (ex, summary) = run_stream(&sse(&[error]));
    assert!(ex.choices.is_empty());
    assert_eq!(ex.response_body.as_deref(), Some(error));
    assert!(summary.error.is_some());

    let (_, summary) = run_stream("event: error\ndata: upstream closed\n\n");
    assert_eq!(summary.error.as_deref(), Some("upstream closed"));

    let array = response(&json_array(&[TEXT_CHUNKS[0], error]));
    assert_eq!(
        array.choices[0].reasoning.as_deref(),
        Some("**Recalling capitals**\n\nPortugal's capital"),
        "an error element of an array stream yields nothing itself"
    );
}

#[test]
fn a_stream_past_the_caps_is_truncated_in_the_span_only() {
    let piece = "y".repeat(64 * 1024);
    let chunk =
        format!(r#"{{"candidates": [{{"content": {{"parts": [{{"text": "{piece}"}}]}}}}]}}"#);
    let stream = sse(&vec![chunk.as_str(); MAX_TEXT_BYTES / piece.len() + 2]);
    let (ex, summary) = run_chunks([stream.as_bytes()]);
    assert!(summary.truncated);
    assert!(ex.response_truncated);
    assert_eq!(
        ex.choices[0].content.as_deref().map(str::len),
        Some(MAX_TEXT_BYTES)
    );

    let many: Vec<String> = (0..=MAX_TRACKED)
        .map(|i| format!(r#"{{"candidates": [{{"index": {i}}}]}}"#))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (ex, summary) = run_chunks([sse(&many).as_bytes()]);
    assert_eq!(ex.choices.len(), MAX_TRACKED);
    assert!(summary.truncated);
}

#[test]
fn without_body_a_stream_leaves_response_body_unset() {
    let mut acc = SseAccumulator::for_protocol(&GENERATE).without_body();
    acc.feed(sse(&TEXT_CHUNKS).as_bytes());
    let mut ex = Exchange::default();
    acc.finish(&mut ex);
    assert_eq!(ex.response_body, None);
    assert_eq!(ex.choices.len(), 1);
}

#[test]
fn an_accumulator_that_never_says_final_leaves_the_stream_unfinished() {
    // The trait's default: OpenAI's reader, asked to end by the accumulator's word,
    // never gives it, even after `[DONE]`.
    let mut acc = crate::protocol::openai::stream_accumulator(Operation::Chat)
        .with_final_event(FinalEvent::Accumulator);
    acc.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    let summary = acc.finish(&mut Exchange::default());
    assert!(!summary.saw_final);
    assert_eq!(
        summary.malformed_events, 1,
        "`[DONE]` is no JSON chunk then"
    );
}

/// The stream's JSON-object events (not `event: error` ones) as one JSON array.
fn events_as_array(stream: &[u8]) -> Vec<u8> {
    use crate::protocol::sse::{EventSink, SseEvent, SseFramer};
    #[derive(Default)]
    struct Objects(Vec<Vec<u8>>);
    impl EventSink for Objects {
        fn event(&mut self, e: SseEvent<'_>) {
            let data = e.data.trim_ascii();
            if e.name != b"error"
                && data.first() == Some(&b'{')
                && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
            {
                self.0.push(data.to_vec());
            }
        }
        fn oversized(&mut self) {}
    }
    let (mut framer, mut objects) = (SseFramer::default(), Objects::default());
    framer.feed(stream, &mut objects);
    framer.finish(&mut objects);
    let mut array = b"[".to_vec();
    array.extend_from_slice(&objects.0.join(&b","[..]));
    array.push(b']');
    array
}

#[test]
fn mutated_streams_keep_the_fuzz_target_s_invariants() {
    // What `fuzz/fuzz_targets/gemini_stream.rs` checks, on seeded mutations of the
    // streams above: chunking changes nothing, the events as an array read alike,
    // and the rendering reads back.
    let tool_answer = compact(TOOL_ANSWER);
    let seeds = [sse(&TEXT_CHUNKS), sse(&TOOL_CHUNKS), sse(&[&tool_answer])];
    let mut rng = Rng(0x6E41_1A57_F022_0013);
    for round in 0..400 {
        let mut stream = seeds[round % seeds.len()].clone().into_bytes();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(stream.len());
            match rng.below(4) {
                0 => stream[at] = b"{}[]\":,0a \n"[rng.below(11)],
                1 => drop(stream.drain(at..(at + 1 + rng.below(16)).min(stream.len()))),
                2 => {
                    let piece = stream[at..(at + rng.below(64)).min(stream.len())].to_vec();
                    stream.splice(at..at, piece);
                }
                _ => stream.truncate(at),
            }
            if stream.is_empty() {
                break;
            }
        }
        let whole = run_chunks([stream.as_slice()]);
        assert_eq!(run_chunks(stream.chunks(1)), whole, "byte at a time");
        let (ex, _) = &whole;
        let array = events_as_array(&stream);
        let mut parsed = Exchange::default();
        if GENERATE.parse_response(&array, &mut parsed).is_ok() {
            assert_eq!(response_side(&parsed), response_side(ex), "as an array");
        }
        if !ex.choices.is_empty() && !ex.response_truncated {
            let rendered = response(ex.response_body.as_deref().unwrap());
            assert_eq!(response_side(&rendered), response_side(ex), "rendered");
        }
    }
}
