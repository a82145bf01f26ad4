//! One LLM exchange (request + response) as plain data.
//!
//! The gateway parses what crossed the wire into an [`Exchange`]; the engine reads it
//! lazily, variable by variable, through [`crate::context`]. Nothing here knows about HTTP
//! libraries or JSON parsers beyond `serde_json::Value` for the parts that are passed
//! through "as sent" (tool definitions, sampling parameters).

use serde_json::Value as Json;
use std::sync::Arc;

/// What kind of call this was (`llm.operation`), in the OTel GenAI
/// `gen_ai.operation.name` vocabulary: Anthropic Messages and OpenAI Responses are
/// `chat`, as the conventions say; the wire protocol is [`Api`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Operation {
    /// `/v1/chat/completions`
    #[default]
    Chat,
    /// `/v1/completions` (legacy text completions)
    TextCompletion,
    /// `/v1/embeddings`
    Embeddings,
    /// Gemini's `models/{model}:generateContent` and `:streamGenerateContent`.
    GenerateContent,
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
            Operation::GenerateContent => "generate_content",
            Operation::Other => "other",
        }
    }
}

/// The wire protocol a call spoke (`llm.api`): what a preset needs to render a call
/// the way that API's own instrumentation does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Api {
    /// OpenAI Chat Completions, `/v1/chat/completions`.
    #[default]
    ChatCompletions,
    /// OpenAI legacy Completions, `/v1/completions`.
    Completions,
    /// OpenAI Embeddings, `/v1/embeddings`.
    Embeddings,
    /// OpenAI Responses, `/v1/responses`.
    Responses,
    /// Anthropic Messages, `/v1/messages`.
    Messages,
    /// Gemini `generateContent` / `streamGenerateContent`.
    GenerateContent,
    /// A call no protocol reads.
    Other,
}

impl Api {
    /// The `llm.api` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::Responses => "responses",
            Api::Messages => "messages",
            Api::GenerateContent => "generate_content",
            Api::Other => "other",
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
    /// The finish (stop) reason as the provider spells it (`stop`, `end_turn`,
    /// `STOP`, `tool_use`, ...).
    pub finish_reason: Option<String>,
    /// Reasoning the model showed: Anthropic `thinking` text, a Responses
    /// `reasoning` item's summary, Gemini thought parts; joined with `\n`.
    pub reasoning: Option<String>,
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
    /// The wire protocol of the call.
    pub api: Api,
    /// Provider name of the backend that served the request (`openai`, `gemini`, ...).
    pub provider: String,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    /// The request asked for SSE streaming.
    pub streaming: bool,
    /// System instructions, text parts in order: Anthropic `system`, Responses
    /// `instructions`, Gemini `systemInstruction`, and the text of chat `system` /
    /// `developer` messages. They are also the first messages of `prompt` (role
    /// `system`), as agentgateway renders them.
    pub system: Vec<String>,
    /// Every message of the conversation in the chat vocabulary: roles `system`,
    /// `user`, `assistant`, `tool` (Gemini's `model` is `assistant`; a tool result
    /// block or item is a `tool` message with its `tool_call_id`; tool use blocks and
    /// function call items are the `tool_calls` of an `assistant` message).
    pub prompt: Vec<Message>,
    pub choices: Vec<Choice>,
    /// Tool definitions sent in the request, as sent.
    pub tools: Vec<Json>,
    /// Sampling and generation parameters as sent (temperature, max_tokens, ...), in
    /// request order. Never contains `messages`, `tools`, `model` or `stream`.
    pub params: Vec<(String, Json)>,
    /// Every input token, cached ones included (the OTel GenAI rule): for Anthropic,
    /// `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`.
    pub input_tokens: Option<i64>,
    /// Every output token, reasoning included (Gemini: candidates + thoughts).
    pub output_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub token_details: TokenDetails,
    /// The raw request body (for `input.value`-style attributes).
    pub request_body: Option<String>,
    /// The agent session the call belongs to, as the client said: Claude Code's
    /// `metadata.user_id` (a JSON string holding `session_id`), a `session-id`,
    /// `x-session-id` or `thread-id` header.
    pub session_id: Option<String>,
    /// Who the client says the end user is (`metadata.user_id` when it is not a
    /// JSON document, a `user` field, an `x-user-id` header).
    pub user_id: Option<String>,
    /// Milliseconds from request arrival to the first content byte of the answer
    /// (the first streamed event that carries output; for a JSON answer, the body).
    pub time_to_first_token_ms: Option<f64>,
    /// Wall time the request arrived (the span's start).
    pub start_time: Option<std::time::SystemTime>,
    /// The request came with a valid `traceparent`: the span is a child of the
    /// client's, not the root of its trace.
    pub has_parent: bool,
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
