//! The CEL context: the variables expressions can read, by name and type.
//!
//! [`VARIABLES`] is the one table of them (names, aliases, types, the docs that
//! `schema/cel-context.md` is generated from); [`lookup`] turns a name into a
//! [`Var`]. What each variable holds for an exchange is decided in one place,
//! [`read`] (privacy rules included), and [`ExchangeResolver`] serves those
//! values to the CEL interpreter. Absent optional values are `null` (which adds
//! no attribute) rather than errors.

mod read;
mod resolver;

use crate::pricing::Cost;

pub(crate) use read::{read, read_field};
pub use resolver::ExchangeResolver;

/// What replaces hidden request or response bodies (OpenInference's convention).
pub const REDACTED: &str = "__REDACTED__";

/// The top-level variables.
pub const ROOTS: &[&str] = &["llm", "request", "response", "source", "backend", "client"];

/// One variable of the context, for validation, suggestions and documentation.
#[derive(Clone, Copy, Debug)]
pub struct VarSpec {
    /// Canonical name, e.g. `llm.requestModel`.
    pub name: &'static str,
    /// The other accepted spelling, e.g. `llm.request_model`.
    pub alias: Option<&'static str>,
    pub cel_type: &'static str,
    pub doc: &'static str,
    var: Var,
}

/// A variable of the context, as compiled expressions refer to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Var {
    Provider,
    Operation,
    Api,
    RequestModel,
    ResponseModel,
    ResponseId,
    Streaming,
    System,
    Prompt,
    Completion,
    Reasoning,
    Choices,
    ToolCalls,
    Tools,
    InputTokens,
    OutputTokens,
    TotalTokens,
    CacheReadTokens,
    CacheWriteTokens,
    InputAudioTokens,
    ReasoningTokens,
    OutputAudioTokens,
    Params,
    FinishReasons,
    RequestBody,
    ResponseBody,
    ResponseTruncated,
    SessionId,
    UserId,
    TimeToFirstToken,
    Cost,
    FirstTokenTime,
    ReqMethod,
    ReqPath,
    ReqHeaders,
    ReqStartTime,
    ReqHasParent,
    RespStatus,
    RespDuration,
    RespHeaders,
    RespError,
    SourceAddress,
    BackendName,
    BackendAddress,
    BackendPort,
    ClientName,
    ClientTeam,
    ClientMetadata,
    // Whole roots, for `llm["x"]`-style access and `has(llm.x)`.
    Llm,
    Request,
    Response,
    Source,
    Backend,
    Client,
}

/// How many [`Var`]s there are.
pub(crate) const SLOTS: usize = Var::Client as usize + 1;

macro_rules! var {
    ($name:literal, $alias:expr, $ty:literal, $var:ident, $doc:literal) => {
        VarSpec {
            name: $name,
            alias: $alias,
            cel_type: $ty,
            doc: $doc,
            var: Var::$var,
        }
    };
}

/// Every variable an expression may read.
pub const VARIABLES: &[VarSpec] = &[
    var!(
        "llm.provider",
        None,
        "string",
        Provider,
        "Provider of the backend that served the request (`openai`, `gemini`, ...)."
    ),
    var!(
        "llm.operation",
        None,
        "string",
        Operation,
        "`chat` (Chat Completions, Anthropic Messages, OpenAI Responses), `text_completion`, `embeddings`, `generate_content` (Gemini) or `other`: the OTel `gen_ai.operation.name`."
    ),
    var!(
        "llm.api",
        None,
        "string",
        Api,
        "The wire protocol: `chat_completions`, `completions`, `embeddings`, `responses` (OpenAI), `messages` (Anthropic), `generate_content` (Gemini) or `other`."
    ),
    var!(
        "llm.requestModel",
        Some("llm.request_model"),
        "string",
        RequestModel,
        "Model the client asked for."
    ),
    var!(
        "llm.responseModel",
        Some("llm.response_model"),
        "string | null",
        ResponseModel,
        "Model the upstream reported."
    ),
    var!(
        "llm.responseId",
        Some("llm.response_id"),
        "string | null",
        ResponseId,
        "Response id the upstream reported (`chatcmpl-...`)."
    ),
    var!(
        "llm.streaming",
        None,
        "bool",
        Streaming,
        "The request asked for SSE streaming."
    ),
    var!(
        "llm.systemInstructions",
        Some("llm.system_instructions"),
        "list of string",
        System,
        "System instructions, text parts in order: Anthropic `system`, Responses `instructions`, Gemini `systemInstruction`, chat `system`/`developer` messages. They also open `llm.prompt` as `system` messages. Empty when inputs are hidden."
    ),
    var!(
        "llm.prompt",
        None,
        "list of map",
        Prompt,
        "Request messages in the chat vocabulary, system instructions first: `{role, content, name, tool_calls, tool_call_id}`; roles `system`, `user`, `assistant`, `tool` (Gemini `model` is `assistant`; Anthropic `tool_result` blocks, Responses `function_call_output` items and Gemini `functionResponse` parts are `tool` messages); text parts joined; `tool_calls` entries are `{id, name, arguments}`. Empty when inputs are hidden."
    ),
    var!(
        "llm.completion",
        None,
        "list of string",
        Completion,
        "One string per choice, streamed deltas joined. Empty when outputs are hidden."
    ),
    var!(
        "llm.reasoning",
        None,
        "list of string",
        Reasoning,
        "One string per choice: the reasoning the model showed (Anthropic `thinking`, Responses reasoning summaries, Gemini thought parts), `\"\"` when none. Empty when outputs are hidden."
    ),
    var!(
        "llm.choices",
        None,
        "list of map",
        Choices,
        "Response choices: `{index, role, content, tool_calls, finish_reason}`. Empty when outputs are hidden."
    ),
    var!(
        "llm.toolCalls",
        Some("llm.tool_calls"),
        "list of map",
        ToolCalls,
        "Tool calls in the response, all choices: `{id, name, arguments}` (streamed ones accumulated by index). Empty when outputs are hidden."
    ),
    var!(
        "llm.tools",
        None,
        "list of map",
        Tools,
        "Tool definitions sent in the request, as sent."
    ),
    var!(
        "llm.inputTokens",
        Some("llm.input_tokens"),
        "int | null",
        InputTokens,
        "Every input token, cached ones included (the OTel GenAI rule): OpenAI `prompt_tokens`/`input_tokens` and Gemini `promptTokenCount` as reported; Anthropic `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`."
    ),
    var!(
        "llm.outputTokens",
        Some("llm.output_tokens"),
        "int | null",
        OutputTokens,
        "Every output token, reasoning included: OpenAI `completion_tokens`/`output_tokens` and Anthropic `output_tokens` as reported; Gemini `candidatesTokenCount + thoughtsTokenCount`."
    ),
    var!(
        "llm.totalTokens",
        Some("llm.total_tokens"),
        "int | null",
        TotalTokens,
        "Total tokens as reported by the upstream; where it reports none (Anthropic), input plus output."
    ),
    var!(
        "llm.cacheReadTokens",
        Some("llm.cache_read_tokens"),
        "int | null",
        CacheReadTokens,
        "Input tokens read from the provider's prompt cache, a part of `llm.inputTokens` (`cached_tokens`, Anthropic `cache_read_input_tokens`, Gemini `cachedContentTokenCount`)."
    ),
    var!(
        "llm.cacheWriteTokens",
        Some("llm.cache_write_tokens"),
        "int | null",
        CacheWriteTokens,
        "Input tokens written to the prompt cache, a part of `llm.inputTokens` (`cache_write_tokens`, Anthropic `cache_creation_input_tokens`)."
    ),
    var!(
        "llm.inputAudioTokens",
        Some("llm.input_audio_tokens"),
        "int | null",
        InputAudioTokens,
        "Audio prompt tokens (`prompt_tokens_details.audio_tokens`)."
    ),
    var!(
        "llm.reasoningTokens",
        Some("llm.reasoning_tokens"),
        "int | null",
        ReasoningTokens,
        "Output tokens spent on reasoning, a part of `llm.outputTokens` (`reasoning_tokens`, Gemini `thoughtsTokenCount`)."
    ),
    var!(
        "llm.outputAudioTokens",
        Some("llm.output_audio_tokens"),
        "int | null",
        OutputAudioTokens,
        "Audio completion tokens (`completion_tokens_details.audio_tokens`)."
    ),
    var!(
        "llm.params",
        None,
        "map",
        Params,
        "Generation parameters as sent: temperature, max_tokens, top_p, frequency_penalty, presence_penalty, seed, stop, n, ..."
    ),
    var!(
        "llm.finishReasons",
        Some("llm.finish_reasons"),
        "list of string",
        FinishReasons,
        "Finish reason per choice."
    ),
    var!(
        "llm.requestBody",
        Some("llm.request_body"),
        "string | null",
        RequestBody,
        "The raw request body. `__REDACTED__` when inputs are hidden."
    ),
    var!(
        "llm.responseBody",
        Some("llm.response_body"),
        "string | null",
        ResponseBody,
        "The raw response body (for streams: the accumulated response as one JSON document). `__REDACTED__` when outputs are hidden."
    ),
    var!(
        "llm.responseTruncated",
        Some("llm.response_truncated"),
        "bool",
        ResponseTruncated,
        "Part of the response was left out of the span: the gateway keeps at most 8 MiB of streamed text, 1024 choices and tool calls, 256 bytes per id, name or finish reason, and 32 MiB of a JSON body. The client got every byte."
    ),
    var!(
        "llm.sessionId",
        Some("llm.session_id"),
        "string | null",
        SessionId,
        "The agent session the call belongs to, as the client says: Claude Code's `metadata.user_id` (JSON holding `session_id`), else a `session-id`, `x-session-id` or `thread-id` request header (Codex, OpenAI Agents SDK)."
    ),
    var!(
        "llm.userId",
        Some("llm.user_id"),
        "string | null",
        UserId,
        "The end user the client names: Anthropic `metadata.user_id` (or the `account_uuid`/`user_id` inside it when it is JSON), OpenAI `user`/`safety_identifier`, else an `x-user-id` header."
    ),
    var!(
        "llm.timeToFirstToken",
        Some("llm.time_to_first_token"),
        "double | null",
        TimeToFirstToken,
        "Milliseconds from request arrival to the first output of the answer: the first streamed event carrying text, reasoning or a tool call; for a JSON answer, its body. Null when no output came, and for an error answer (4xx, 5xx)."
    ),
    var!(
        "llm.cost",
        None,
        "map",
        Cost,
        "What the call cost in USD, by the config's `pricing` (the first entry matching `llm.responseModel`, else `llm.requestModel`): `{input, uncachedInput, cacheRead, cacheWrite, output, nonReasoningOutput, reasoning, total}`, doubles. `input` is every input token (`uncachedInput` at the input rate, plus `cacheRead` and `cacheWrite` at theirs), `output` every output token (`nonReasoningOutput` plus `reasoning`), `total` both. A part whose tokens were not reported is null; every part is null when no entry prices the model."
    ),
    var!(
        "llm.firstTokenTime",
        Some("llm.first_token_time"),
        "string | null",
        FirstTokenTime,
        "When the first output came: `request.startTime` plus `llm.timeToFirstToken`, RFC 3339 in UTC with microseconds (`2026-12-01T12:00:00.180000Z`). Null when no output came."
    ),
    var!("request.method", None, "string", ReqMethod, "HTTP method."),
    var!(
        "request.path",
        None,
        "string",
        ReqPath,
        "Request path as the client sent it."
    ),
    var!(
        "request.headers",
        None,
        "map of string",
        ReqHeaders,
        "Request headers, lower-case names; authorization, api keys and cookies excluded."
    ),
    var!(
        "request.startTime",
        None,
        "string | null",
        ReqStartTime,
        "When the request arrived (the span's start), RFC 3339 in UTC with microseconds (`2026-12-01T12:00:00.000000Z`)."
    ),
    var!(
        "request.hasParent",
        None,
        "bool",
        ReqHasParent,
        "The request carried a valid W3C `traceparent`: celgate's span is a child of the client's, not the root of its trace (Langfuse takes a trace's input and output from its root)."
    ),
    var!(
        "response.status",
        None,
        "int | null",
        RespStatus,
        "HTTP status returned to the client."
    ),
    var!(
        "response.duration",
        None,
        "double | null",
        RespDuration,
        "Milliseconds from request arrival to the end of the response body."
    ),
    var!(
        "response.headers",
        None,
        "map of string",
        RespHeaders,
        "Response headers, lower-case names; secrets excluded."
    ),
    var!(
        "response.error",
        None,
        "string | null",
        RespError,
        "Why the call failed, in OTel `error.type` form (`500`, `timeout`, `stream_cut`, ...); null on success."
    ),
    var!(
        "source.address",
        None,
        "string | null",
        SourceAddress,
        "Client address `ip:port`."
    ),
    var!(
        "backend.name",
        None,
        "string | null",
        BackendName,
        "Name of the backend that served the request."
    ),
    var!(
        "backend.address",
        None,
        "string | null",
        BackendAddress,
        "Host of the backend's base URL (`server.address`)."
    ),
    var!(
        "backend.port",
        None,
        "int | null",
        BackendPort,
        "Port of the backend's base URL (`server.port`)."
    ),
    var!(
        "client.name",
        None,
        "string | null",
        ClientName,
        "Name of the client the request authenticated as (`auth.clientKeys`); null when client keys are off."
    ),
    var!(
        "client.team",
        None,
        "string | null",
        ClientTeam,
        "The authenticated client's `team` from the keys file; null when it has none."
    ),
    var!(
        "client.metadata",
        None,
        "map of string",
        ClientMetadata,
        "The authenticated client's `metadata` from the keys file (e.g. a tenant id); empty when it has none."
    ),
];

pub(crate) const ROOT_VARS: &[(&str, Var)] = &[
    ("llm", Var::Llm),
    ("request", Var::Request),
    ("response", Var::Response),
    ("source", Var::Source),
    ("backend", Var::Backend),
    ("client", Var::Client),
];

/// The variable `name` names (canonical spelling, alias or root), if any.
///
/// A `match` rather than a scan of [`VARIABLES`]: the interpreter asks for every
/// qualified name it meets, per evaluation. `lookup_matches_the_table` checks it
/// against the table.
pub(crate) fn lookup(name: &str) -> Option<Var> {
    Some(match name {
        "llm" => Var::Llm,
        "request" => Var::Request,
        "response" => Var::Response,
        "source" => Var::Source,
        "backend" => Var::Backend,
        "client" => Var::Client,
        "llm.provider" => Var::Provider,
        "llm.operation" => Var::Operation,
        "llm.api" => Var::Api,
        "llm.requestModel" | "llm.request_model" => Var::RequestModel,
        "llm.responseModel" | "llm.response_model" => Var::ResponseModel,
        "llm.responseId" | "llm.response_id" => Var::ResponseId,
        "llm.streaming" => Var::Streaming,
        "llm.systemInstructions" | "llm.system_instructions" => Var::System,
        "llm.prompt" => Var::Prompt,
        "llm.reasoning" => Var::Reasoning,
        "llm.completion" => Var::Completion,
        "llm.choices" => Var::Choices,
        "llm.toolCalls" | "llm.tool_calls" => Var::ToolCalls,
        "llm.tools" => Var::Tools,
        "llm.inputTokens" | "llm.input_tokens" => Var::InputTokens,
        "llm.outputTokens" | "llm.output_tokens" => Var::OutputTokens,
        "llm.totalTokens" | "llm.total_tokens" => Var::TotalTokens,
        "llm.cacheReadTokens" | "llm.cache_read_tokens" => Var::CacheReadTokens,
        "llm.cacheWriteTokens" | "llm.cache_write_tokens" => Var::CacheWriteTokens,
        "llm.inputAudioTokens" | "llm.input_audio_tokens" => Var::InputAudioTokens,
        "llm.reasoningTokens" | "llm.reasoning_tokens" => Var::ReasoningTokens,
        "llm.outputAudioTokens" | "llm.output_audio_tokens" => Var::OutputAudioTokens,
        "llm.params" => Var::Params,
        "llm.finishReasons" | "llm.finish_reasons" => Var::FinishReasons,
        "llm.requestBody" | "llm.request_body" => Var::RequestBody,
        "llm.responseBody" | "llm.response_body" => Var::ResponseBody,
        "llm.responseTruncated" | "llm.response_truncated" => Var::ResponseTruncated,
        "llm.sessionId" | "llm.session_id" => Var::SessionId,
        "llm.userId" | "llm.user_id" => Var::UserId,
        "llm.timeToFirstToken" | "llm.time_to_first_token" => Var::TimeToFirstToken,
        "llm.cost" => Var::Cost,
        "llm.firstTokenTime" | "llm.first_token_time" => Var::FirstTokenTime,
        "request.method" => Var::ReqMethod,
        "request.path" => Var::ReqPath,
        "request.headers" => Var::ReqHeaders,
        "request.startTime" => Var::ReqStartTime,
        "request.hasParent" => Var::ReqHasParent,
        "response.status" => Var::RespStatus,
        "response.duration" => Var::RespDuration,
        "response.headers" => Var::RespHeaders,
        "response.error" => Var::RespError,
        "source.address" => Var::SourceAddress,
        "backend.name" => Var::BackendName,
        "backend.address" => Var::BackendAddress,
        "backend.port" => Var::BackendPort,
        "client.name" => Var::ClientName,
        "client.team" => Var::ClientTeam,
        "client.metadata" => Var::ClientMetadata,
        _ => return None,
    })
}

/// The table-driven lookup [`lookup`] replaces, kept to test it against.
#[cfg(test)]
fn lookup_by_scan(name: &str) -> Option<Var> {
    if let Some((_, v)) = ROOT_VARS.iter().find(|(n, _)| *n == name) {
        return Some(*v);
    }
    VARIABLES
        .iter()
        .find(|s| s.name == name || s.alias == Some(name))
        .map(|s| s.var)
}

/// Whether `root.field` names a variable (either spelling).
pub fn is_known(root: &str, field: &str) -> bool {
    VARIABLES.iter().any(|s| {
        let matches = |n: &str| n.split_once('.') == Some((root, field));
        matches(s.name) || s.alias.is_some_and(matches)
    })
}

/// Every accepted spelling of a field under `root`, for suggestions.
pub fn fields_of(root: &str) -> impl Iterator<Item = &'static str> + '_ {
    VARIABLES
        .iter()
        .flat_map(|s| std::iter::once(s.name).chain(s.alias))
        .filter_map(move |n| {
            n.split_once('.')
                .filter(|(r, _)| *r == root)
                .map(|(_, f)| f)
        })
}

/// A set of [`Var`]s: what a compiled expression (or a whole plan) reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VarSet(u64);

const _: () = assert!(SLOTS <= 64, "a VarSet holds every Var in one word");

impl VarSet {
    pub(crate) fn insert(&mut self, var: Var) {
        self.0 |= 1 << var as u32;
    }

    pub(crate) fn extend(&mut self, other: VarSet) {
        self.0 |= other.0;
    }

    pub(crate) fn contains(&self, var: Var) -> bool {
        self.0 & (1 << var as u32) != 0
    }

    /// Whether `var` is read, directly or through its root (`llm["prompt"]`
    /// reads `llm.prompt`).
    pub(crate) fn reads(&self, var: Var) -> bool {
        self.contains(var) || self.contains(var.root())
    }
}

impl Var {
    /// The root this variable is a field of (a root is its own).
    pub(crate) fn root(self) -> Var {
        let spec = VARIABLES.iter().find(|s| s.var == self);
        let root = spec.and_then(|s| s.name.split_once('.')).map(|(r, _)| r);
        ROOT_VARS
            .iter()
            .find(|(name, _)| Some(*name) == root)
            .map_or(self, |(_, v)| *v)
    }
}

/// What an exchange shows: privacy switches applied at the source, so no expression
/// of any preset or user config can read hidden text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Visibility {
    pub hide_inputs: bool,
    pub hide_outputs: bool,
}

/// How one evaluation reads its exchange: what the privacy switches leave of
/// it, and the call's cost (the plan prices it once, from its `pricing`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct View {
    pub(crate) vis: Visibility,
    pub(crate) cost: Cost,
}

impl View {
    pub(crate) fn new(vis: Visibility, cost: Cost) -> View {
        View { vis, cost }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_matches_the_table() {
        let mut names: Vec<String> = ROOT_VARS.iter().map(|(n, _)| n.to_string()).collect();
        for spec in VARIABLES {
            names.push(spec.name.to_owned());
            names.extend(spec.alias.map(str::to_owned));
            // Near misses must miss in both.
            names.push(format!("{}.x", spec.name));
            names.push(spec.name.to_uppercase());
            names.push(spec.name.trim_end_matches(|c| c != '.').to_owned());
        }
        names.extend(
            ["", "llm.", ".llm", "m", "m.role", "llm.params.temperature"].map(String::from),
        );
        for name in &names {
            assert_eq!(lookup(name), lookup_by_scan(name), "{name}");
        }
        // Every variable is reachable, and knows its root.
        for spec in VARIABLES {
            assert_eq!(lookup(spec.name), Some(spec.var), "{}", spec.name);
            let root = spec.name.split('.').next().unwrap_or_default();
            assert_eq!(Some(spec.var.root()), lookup(root), "{}", spec.name);
        }
    }
}
