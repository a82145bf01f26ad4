//! One LLM exchange (request + response) as plain data.
//!
//! The gateway parses what crossed the wire into an [`Exchange`]; the engine reads it
//! lazily, variable by variable, through [`crate::context`]. Nothing here knows about HTTP
//! libraries or JSON parsers beyond `serde_json::Value` for the parts that are passed
//! through "as sent" (tool definitions, sampling parameters).

use serde_json::Value as Json;
use std::sync::Arc;

/// What kind of OpenAI-compatible call this was (`llm.operation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Operation {
    /// `/v1/chat/completions`
    #[default]
    Chat,
    /// `/v1/completions` (legacy text completions)
    TextCompletion,
    /// `/v1/embeddings`
    Embeddings,
    /// Anything else that was proxied.
    Other,
}

impl Operation {
    /// The OTel GenAI `gen_ai.operation.name` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
            Operation::Embeddings => "embeddings",
            Operation::Other => "other",
        }
    }
}

/// One tool call, in a request's assistant message or in a response choice.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments exactly as the model produced them (a JSON document as text;
    /// streamed fragments joined).
    pub arguments: String,
}

/// One message of the request's `messages` (or the prompt of a legacy completion).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    pub role: String,
    /// Text content; multi-part content has its text parts joined with `\n`.
    /// `None` when the message had no text (an assistant message with only tool calls).
    pub content: Option<String>,
    /// The optional participant `name`.
    pub name: Option<String>,
    /// Tool calls an assistant message carried.
    pub tool_calls: Vec<ToolCall>,
    /// For `role: tool` messages: the call this result answers.
    pub tool_call_id: Option<String>,
}

/// One choice of the response, as received or as accumulated from a stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choice {
    pub index: u32,
    /// Usually `assistant`.
    pub role: String,
    /// The text; streamed deltas joined. `None` when the choice carried no text.
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
}

/// Breakdowns of the token counts, where the upstream reports them (OpenAI's
/// `prompt_tokens_details` / `completion_tokens_details`, the Responses API's
/// `input_tokens_details` / `output_tokens_details`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenDetails {
    /// Prompt tokens served from the provider's prompt cache (`cached_tokens`).
    pub cache_read: Option<i64>,
    /// Prompt tokens written to the prompt cache (`cache_write_tokens`).
    pub cache_write: Option<i64>,
    /// Audio prompt tokens (`audio_tokens`).
    pub input_audio: Option<i64>,
    /// Completion tokens spent on reasoning (`reasoning_tokens`).
    pub reasoning: Option<i64>,
    /// Audio completion tokens (`audio_tokens`).
    pub output_audio: Option<i64>,
}

/// The HTTP request as the client sent it. Header names are lower-case; the gateway
/// leaves out secrets (authorization, api keys, cookies) before they get here.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// The HTTP response as the client received it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpResponse {
    pub status: Option<u16>,
    /// Wall time from request arrival to the end of the response body.
    pub duration_ms: Option<f64>,
    pub headers: Vec<(String, String)>,
}

/// The client a request authenticated as, from the gateway's client keys file
/// (`client.*`). Shared by every request of that client: the gateway hands out
/// the same `Arc` each time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    pub team: Option<String>,
    /// The entry's `metadata`, in key order, keys unique.
    pub metadata: Vec<(String, String)>,
}

/// Everything the engine may read about one proxied LLM call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exchange {
    pub operation: Operation,
    /// Provider name of the backend that served the request (`openai`, `gemini`, ...).
    pub provider: String,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    /// The request asked for SSE streaming.
    pub streaming: bool,
    pub prompt: Vec<Message>,
    pub choices: Vec<Choice>,
    /// Tool definitions sent in the request, as sent.
    pub tools: Vec<Json>,
    /// Sampling and generation parameters as sent (temperature, max_tokens, ...), in
    /// request order. Never contains `messages`, `tools`, `model` or `stream`.
    pub params: Vec<(String, Json)>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub token_details: TokenDetails,
    /// The raw request body (for `input.value`-style attributes).
    pub request_body: Option<String>,
    /// The raw response body; for streams, the accumulated response rendered as the
    /// equivalent non-streaming JSON.
    pub response_body: Option<String>,
    /// Part of the response was left out of this exchange (the gateway's caps on what
    /// it keeps for a span: text, choices, body size); the client got all of it.
    pub response_truncated: bool,
    /// Why the call failed, in OTel `error.type` form (`timeout`, `500`, ...).
    pub error_type: Option<String>,
    pub request: HttpRequest,
    pub response: HttpResponse,
    /// Client address `ip:port`.
    pub source_address: Option<String>,
    pub backend_name: Option<String>,
    /// Host of the backend's base URL (`server.address`).
    pub backend_host: Option<String>,
    pub backend_port: Option<u16>,
    /// The authenticated client; `None` when client keys are off (or the request
    /// was refused for lack of one).
    pub client: Option<Arc<Client>>,
}
