//! celgate-upstream: a scripted upstream. It answers like the OpenAI (Chat Completions,
//! Completions, Embeddings, Responses), Anthropic (Messages) and Gemini
//! (`generateContent`) APIs, deterministically, without a model.
//!
//! It is celgate's test double, in a crate of its own so the gateway's code holds only
//! the gateway. The gateway's integration tests point a backend at it and assert on what it received
//! ([`ScriptedUpstream::requests`]); `celgate demo` uses it as a built-in backend so spans
//! can be seen without an LLM or an API key, and `celgate upstream` serves it alone (both
//! with [`ScriptedUpstream::start_unrecorded`], which only counts requests, so memory
//! stays flat under load). It serves HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on
//! one port.
//!
//! # Endpoints
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/chat/completions` | a `chat.completion`, or with `"stream": true` a `text/event-stream` of `chat.completion.chunk`s ending in `data: [DONE]` |
//! | `POST /v1/completions` | a legacy `text_completion` (streamed the same way) |
//! | `POST /v1/embeddings` | one embedding per input (a string, or an array of strings / token arrays) |
//! | `GET /v1/models` | a `list` of a few models |
//! | `POST /v1/messages` (any query, e.g. `?beta=true`) | an Anthropic `message`, or with `"stream": true` its events: `message_start`, per content block `content_block_start` / `content_block_delta` (`thinking_delta` + `signature_delta`, `text_delta` per word, `input_json_delta` fragments) / `content_block_stop`, a `ping` after the first block's start, `message_delta` (stop reason, cumulative usage), `message_stop`; each `event: NAME` + `data:` whose `type` is NAME |
//! | `POST /v1/messages/count_tokens` | `{"input_tokens": N}` |
//! | `POST /v1/responses` | a `response` (`resp_scripted{N}`), or with `"stream": true` its typed events, each with a `sequence_number` from 0: `response.created`, `response.in_progress`, per output item `response.output_item.added` … `response.output_item.done` (reasoning: `response.reasoning_summary_part.added`, `response.reasoning_summary_text.delta` per word, `…text.done`, `…part.done`; message: `response.content_part.added`, `response.output_text.delta` per word, `response.output_text.done`, `response.content_part.done`; function call: `response.function_call_arguments.delta` per fragment, `…done`), then `response.completed` (or `response.incomplete`) carrying the whole response |
//! | `GET /v1/responses/{id}` | the remembered response (the object `response.completed` carries) |
//! | `DELETE /v1/responses/{id}` | `{"id","object":"response","deleted":true}`, and it is forgotten |
//! | `GET /v1/responses/{id}/input_items` | a `list` of the request's input items (ids added), newest first unless `?order=asc` |
//! | `POST /v1beta/models/{model}:generateContent` | a Gemini `GenerateContentResponse` (`responseId: scripted-{N}`, `modelVersion` the path's model) |
//! | `POST /v1beta/models/{model}:streamGenerateContent` | the same in chunks (a word, or a function call, per chunk; the last with `finishReason` and `usageMetadata`): with `?alt=sse` SSE `data:` events ending in CRLF CRLF as Google sends them, else one JSON array written chunk by chunk |
//! | `POST /v1beta/models/{model}:countTokens` | `{"totalTokens": N, ...}` (of `contents`, or of a wrapped `generateContentRequest`) |
//! | `GET /v1beta/models`, `GET /v1beta/models/{model}` | Gemini's model list, or one model (any name) |
//! | a known path with another method | 405, in the path's protocol's error shape |
//! | anything else | 404, in the path's protocol's error shape |
//!
//! Errors come in the shape of the protocol the path belongs to: OpenAI's
//! `{"error":{"message","type","param","code"}}` (chat, completions, embeddings,
//! Responses), Anthropic's `{"type":"error","error":{"type","message"},"request_id"}`,
//! Gemini's `{"error":{"code","message","status"}}`. A body that is not a JSON object,
//! or has no string `model` (Gemini's model is the path's), gets a 400; request bodies
//! over 16 MiB get a 413. No endpoint checks a key: a request without one is answered
//! (tests assert on the key that arrived, through [`ScriptedUpstream::requests`]).
//! Unknown request fields are ignored on every endpoint.
//!
//! # What the answers contain
//!
//! Everything is derived from the request, so tests can predict it:
//!
//! - the response `model` is the request's `model`; `created` is [`CREATED`]; the
//!   response id is `chatcmpl-scripted{N}` (`cmpl-scripted{N}` for legacy completions)
//!   where `N` is the request's 1-based position in order of arrival;
//!   every response carries `x-request-id: req_scripted{N}`;
//! - chat content is `Scripted reply to: {text of the last user message}` (`Hello from
//!   the scripted upstream.` when there is none); legacy completions answer
//!   ` Scripted completion of: {prompt}`;
//! - streamed content is that text split into words (each with its leading space), one
//!   delta per word, so a stream reassembles to exactly the non-streamed content;
//! - `max_tokens` / `max_completion_tokens` smaller than the number of words truncates
//!   the reply to that many words with `finish_reason: "length"`;
//! - usage: `prompt_tokens` = whitespace-separated words in all message texts (the
//!   prompt, the inputs) with a minimum of 1; `completion_tokens` = words of the reply
//!   (for tool calls: the number of argument fragments a stream carries);
//!   `total_tokens` = their sum. A stream carries usage in a final `choices: []` chunk
//!   only when `stream_options.include_usage` is true (and then every other chunk
//!   has `"usage": null`, as OpenAI does);
//! - tool calls: when the request has a non-empty `tools` array, `tool_choice` is not
//!   `"none"` and the last message has role `user`, the reply is two parallel tool calls
//!   (to `tools[0]` and `tools[1]`, or twice `tools[0]` when there is only one),
//!   `content: null`, `finish_reason: "tool_calls"`. Arguments are a JSON object with one
//!   member per property of the tool's parameter schema (strings get the last user
//!   message, enums their first value, integers 1, numbers 1.5, booleans true). Call ids
//!   are `call_` and a hash of the call, so a stream and a non-streamed answer to the
//!   same request agree. Streamed, each call's first delta carries its id and name, and
//!   the arguments follow in fragments of a few characters, alternating between the two
//!   calls. When the last message is a `tool` result the answer is ordinary text;
//! - Anthropic answers are `msg_scripted{N}` and carry `request-id: req_scripted{N}`
//!   too; Responses output items are `msg_scripted{N}` / `rs_scripted{N}` /
//!   `fc_{hash}` with `call_id: call_{hash}`; Anthropic tool uses `toolu_{hash}`;
//! - embeddings have 8 dimensions (or `dimensions` when given, up to 4096), derived
//!   from a hash of the input; `"encoding_format": "base64"` (what the OpenAI SDKs send
//!   by default) returns them as base64 of little-endian `f32`s.
//!
//! ## Messages, Responses and Gemini
//!
//! The three newer protocols share what they say (the `turn` module), so
//! the same conversation gets the same reply from each:
//!
//! - text is `Scripted reply to: {text of the last user turn}`, a word per streamed
//!   delta (Gemini: per chunk); a turn ending in tool results (Anthropic
//!   `tool_result`, Responses `function_call_output`, Gemini `functionResponse`) is
//!   answered `Scripted reply to tool result: {their text, first 200 characters}`
//!   (a Gemini `response` holding one string member is that string, else its JSON);
//! - **tool calls only when asked**: the last turn is a user's whose last text part
//!   (agents put their context in parts before the user's words) contains
//!   `call <name>` for a tool the request offers (Anthropic `tools` of no type or
//!   `custom`; Responses `function` tools, those inside a `namespace` tool too (the
//!   call then names its `namespace`); Gemini `functionDeclarations`), and
//!   `tool_choice` / `functionCallingConfig` does not say none. The name must match
//!   exactly (the longest offered name, ending at a word boundary); each `call <name>`
//!   is one call, in order. Arguments are the JSON object that follows the name in the
//!   text when there is one, else synthesized from the tool's schema as chat does
//!   (Gemini's upper-case types included). Agents always send their tools, so any
//!   other turn is answered with text and the agent's loop ends;
//! - thinking when asked (Anthropic `thinking.type` `enabled` or `adaptive`; a
//!   Responses `reasoning` object; Gemini `thinkingConfig.includeThoughts`):
//!   `Scripted thinking about: {last user text}`, as a `thinking` block with a
//!   signature, a `reasoning` item (its summary only when `reasoning.summary` is set;
//!   `encrypted_content` when `include` asks for `reasoning.encrypted_content`), or a
//!   `thought: true` part;
//! - `max_tokens` / `max_output_tokens` / `maxOutputTokens` smaller than the words of
//!   the text cut it there: `stop_reason: "max_tokens"`, `status: "incomplete"` with
//!   `incomplete_details.reason: "max_output_tokens"` (the stream ends in
//!   `response.incomplete`), `finishReason: "MAX_TOKENS"`;
//! - usage from word counts: input = words of the system prompt (`system`,
//!   `instructions`, `systemInstruction`) and of every message's text and tool results
//!   (at least 1); output = words of the thinking plus words of the text (for tool
//!   calls: their argument fragments, as chat). Anthropic reports the words of blocks
//!   with `cache_control` (system or message blocks) as `cache_read_input_tokens` and
//!   leaves them out of `input_tokens`, as Anthropic counts them apart
//!   (`cache_creation_input_tokens` is 0). Responses: `input_tokens` includes
//!   `input_tokens_details.cached_tokens`, which is half the input (rounded down) when
//!   `prompt_cache_key` is set, else 0; `output_tokens_details.reasoning_tokens` are
//!   the thinking's words. Gemini: `thoughtsTokenCount` (only when thoughts are asked)
//!   is apart from `candidatesTokenCount`, `totalTokenCount` is all three;
//!   `cachedContentTokenCount` (half the prompt, part of `promptTokenCount`) only when
//!   `cachedContent` is set;
//! - Gemini asked for JSON (`responseMimeType: application/json` with a
//!   `responseJsonSchema` or `responseSchema`, as Gemini CLI's model router asks)
//!   answers an object synthesized from that schema (strings get the reply text);
//! - Responses answers are remembered (the newest 1024) unless `"store": false`, and
//!   echo the request's parameters (`instructions`, `tools`, `reasoning`, ...) as
//!   OpenAI does.
//!
//! # Fault scripts
//!
//! The request's `model` selects a fault (on every `POST` endpoint; Gemini's model is
//! the one in the path). Errors are written in the endpoint's protocol's shape, and a
//! "streamed answer" is that protocol's stream (a Gemini `:generateContent` forced to
//! stream answers SSE):
//!
//! | model | behaviour |
//! |---|---|
//! | `error-500` | 500, `{"error":{"message":..,"type":"server_error","param":null,"code":null}}` (Anthropic `api_error`, Gemini `INTERNAL`) |
//! | `error-429` | 429, `{"error":{"message":..,"type":"requests","param":null,"code":"rate_limit_exceeded"}}` (Anthropic `rate_limit_error`, Gemini `RESOURCE_EXHAUSTED`) |
//! | `slow-<ms>` (e.g. `slow-3000`) | waits that long before the response headers, then answers normally |
//! | `hang` | never answers; the connection stays open until the upstream is dropped |
//! | `cut-after-<n>` (e.g. `cut-after-3`) | a streamed answer (whatever `stream` says) that sends exactly `n` data events, then aborts the connection without `[DONE]` (nor `message_stop`, `response.completed`, Gemini's last chunk or its array's `]`; HTTP/1.1: no terminating chunk; h2: `RST_STREAM`) |
//! | `drip-<ms>` (e.g. `drip-200`) | a streamed answer (whatever `stream` says) that waits that long before each event |
//! | `stall-<ms>` (e.g. `stall-30000`) | a streamed answer (whatever `stream` says) that goes silent for that long after its second event, then finishes normally |
//! | `reset-after-<n>` (e.g. `reset-after-3`) | a streamed answer (whatever `stream` says) that sends `n` data events, then resets the TCP connection (`SO_LINGER` 0 and close: the peer gets an RST, not a FIN) |
//! | `malformed-sse` | a streamed answer (whatever `stream` says) whose content events are all there, wrapped in what a sloppy server sends: `:` comments, a line without a colon, an `event:` without data, unknown fields, `id:`/`retry:`, CRLF line endings on some events, one `data:` that is not JSON, no `[DONE]`; and cut into frames of 1 to 61 bytes (splitting lines, `\r\n` pairs and UTF-8 characters) sent 1 ms apart |
//! | `sse-error` | a streamed answer (whatever `stream` says) that sends its first two events, then the protocol's error event, and ends the body cleanly (no `[DONE]`): `event: error` with `data: {"error":{...}}` (chat, completions), `{"type":"error","code","message","param","sequence_number"}` (Responses), `{"type":"error","error":{"type":"api_error",...}}` (Anthropic), or a `data: {"error":{"code":500,...,"status":"INTERNAL"}}` (Gemini SSE) |
//! | `invalid-json` | 200 `application/json` whose body is the first half of the normal answer (well framed: `content-length` matches, but it is not JSON) |
//! | `gzip` | the normal answer (plain or streamed, as `stream` says), gzip-compressed with `content-encoding: gzip`; a stream is flushed after every event so each arrives whole |
//! | `big-<MB>` (e.g. `big-10`, 1 to 64) | a chat answer whose content is that many MiB of ASCII text (as `stream` says: one JSON body, or one 1 KiB delta per event) |
//! | `done-pause-<ms>` (e.g. `done-pause-500`) | a streamed answer (whatever `stream` says) that pauses that long after its final event (`data: [DONE]`, `message_stop`, `response.completed`, Gemini's last chunk) before ending the body, as a real network often delivers the end of the body a few ms after the last event |
//! | `flood-<MB>` (e.g. `flood-200`, 1 to 1024) | a streamed chat answer (whatever `stream` says) of that many MiB of content, one identical 1 KiB delta per event, then `[DONE]`; cheap to send (the events share one buffer) |
//! | `choices-<n>` (e.g. `choices-300000`, 1 to 1000000) | a chat answer (one JSON body, whatever `stream` says) with `n` choices of a short text each |
//! | `echo-key-401` | 401 `invalid_api_key` (Anthropic `authentication_error`, Gemini `UNAUTHENTICATED`) whose message quotes the key the request carried, as a careless backend does: `Authorization: Bearer <key>` (OpenAI), `x-api-key` (Anthropic, else its Bearer), `x-goog-api-key` or `?key=` (Gemini) |
//! | `echo-key-header` | the normal answer plus two headers echoing that key: `x-echoed-authorization: Bearer <key>` and one named `x-key-<key>` |
//! | `echo-key-text` | a plain chat answer whose content is `Scripted reply to: my key is <key>` |
//! | `echo-key-stream` | that content streamed (whatever `stream` says), the event holding the key cut into two frames in the middle of the key, 20 ms apart |
//! | `echo-key-sse-error` | a stream (whatever `stream` says) of two events, then an `event: error` whose message quotes the key; ends cleanly |
//! | `echo-key-gzip` | the `echo-key-text` answer, gzip-compressed with `content-encoding: gzip` |
//!
//! The two error answers carry `x-should-retry: false` (a header the official OpenAI
//! and Anthropic SDKs honour) so a client SDK does not silently retry them. The
//! streaming and `echo-key-*` scripts do not apply to embeddings and the two
//! `count_tokens` endpoints, which never stream (`echo-key-*` not to legacy
//! completions either); `big-*`, `flood-*` and `choices-*` apply to chat only. Any other model name (including a malformed
//! script such as `slow-abc` or `big-1000`) is answered normally.
//!
//! Every answer is recorded as sent ([`ScriptedUpstream::responses`]: status, headers,
//! the body bytes that left, and how the body ended), and
//! [`ScriptedUpstream::active_responses`] counts the answers not finished yet (a client
//! that holds on to a connection it gave up on shows up there).
//!
//! # Modules
//!
//! [`ScriptedUpstream`] (`server`) owns the listener and the connections; `route` takes
//! a request to its endpoint; `chat`, `completions`, `embeddings`, `messages`,
//! `responses`, `gemini` and `models` answer one protocol's endpoints each, the
//! conversational ones saying what `turn` decides; `store` remembers Responses
//! answers; `dialect` writes each protocol's errors; `faults` turns the model name into a script and the script into
//! a `pace` (streamed or not, delays, cuts, a `shape` applied
//! to the bytes) or an answer of its own; `body` is the response body that
//! carries out the pace; `wire` writes JSON and streamed answers (and OpenAI's error
//! body);
//! `request` reads what the answers depend on; `record` keeps what was received and
//! sent.

mod body;
mod chat;
mod completions;
mod dialect;
mod embeddings;
mod faults;
mod gemini;
mod messages;
mod models;
mod pace;
mod record;
mod request;
mod responses;
mod route;
mod server;
mod shape;
mod store;
mod turn;
mod wire;

pub use embeddings::EMBEDDING_DIMENSIONS;
pub use record::{RecordedRequest, RecordedResponse, ResponseEnd};
pub use server::ScriptedUpstream;

/// The `created` timestamp of every response (2025-06-15T15:06:40Z): fixed so answers
/// are reproducible.
pub const CREATED: u64 = 1_750_000_000;
