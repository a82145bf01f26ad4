//! celgate-upstream: a scripted OpenAI-compatible upstream. It answers like the OpenAI
//! API, deterministically, without a model.
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
//! | a known path with another method | 405, OpenAI-style error body |
//! | anything else | 404, OpenAI-style error body |
//!
//! A body that is not a JSON object, or has no string `model`, gets a 400 with an
//! OpenAI-style error body (`{"error":{"message","type":"invalid_request_error",...}}`).
//! Request bodies over 16 MiB get a 413.
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
//! - embeddings have 8 dimensions (or `dimensions` when given, up to 4096), derived
//!   from a hash of the input; `"encoding_format": "base64"` (what the OpenAI SDKs send
//!   by default) returns them as base64 of little-endian `f32`s.
//!
//! # Fault scripts
//!
//! The request's `model` selects a fault (on the three `POST` endpoints):
//!
//! | model | behaviour |
//! |---|---|
//! | `error-500` | 500, `{"error":{"message":..,"type":"server_error","param":null,"code":null}}` |
//! | `error-429` | 429, `{"error":{"message":..,"type":"requests","param":null,"code":"rate_limit_exceeded"}}` |
//! | `slow-<ms>` (e.g. `slow-3000`) | waits that long before the response headers, then answers normally |
//! | `hang` | never answers; the connection stays open until the upstream is dropped |
//! | `cut-after-<n>` (e.g. `cut-after-3`) | a streamed answer (whatever `stream` says) that sends exactly `n` data events, then aborts the connection without `[DONE]` (HTTP/1.1: no terminating chunk; h2: `RST_STREAM`) |
//! | `drip-<ms>` (e.g. `drip-200`) | a streamed answer (whatever `stream` says) that waits that long before each event |
//! | `stall-<ms>` (e.g. `stall-30000`) | a streamed answer (whatever `stream` says) that goes silent for that long after its second event, then finishes normally |
//! | `reset-after-<n>` (e.g. `reset-after-3`) | a streamed answer (whatever `stream` says) that sends `n` data events, then resets the TCP connection (`SO_LINGER` 0 and close: the peer gets an RST, not a FIN) |
//! | `malformed-sse` | a streamed answer (whatever `stream` says) whose content events are all there, wrapped in what a sloppy server sends: `:` comments, a line without a colon, an `event:` without data, unknown fields, `id:`/`retry:`, CRLF line endings on some events, one `data:` that is not JSON, no `[DONE]`; and cut into frames of 1 to 61 bytes (splitting lines, `\r\n` pairs and UTF-8 characters) sent 1 ms apart |
//! | `sse-error` | a streamed answer (whatever `stream` says) that sends its first two events, then an `event: error` with `data: {"error":{...}}`, and ends the body cleanly (no `[DONE]`) |
//! | `invalid-json` | 200 `application/json` whose body is the first half of the normal answer (well framed: `content-length` matches, but it is not JSON) |
//! | `gzip` | the normal answer (plain or streamed, as `stream` says), gzip-compressed with `content-encoding: gzip`; a stream is flushed after every event so each arrives whole |
//! | `big-<MB>` (e.g. `big-10`, 1 to 64) | a chat answer whose content is that many MiB of ASCII text (as `stream` says: one JSON body, or one 1 KiB delta per event) |
//! | `done-pause-<ms>` (e.g. `done-pause-500`) | a streamed answer (whatever `stream` says) that pauses that long after `data: [DONE]` before ending the body, as a real network often delivers the end of the body a few ms after the last event |
//! | `flood-<MB>` (e.g. `flood-200`, 1 to 1024) | a streamed chat answer (whatever `stream` says) of that many MiB of content, one identical 1 KiB delta per event, then `[DONE]`; cheap to send (the events share one buffer) |
//! | `choices-<n>` (e.g. `choices-300000`, 1 to 1000000) | a chat answer (one JSON body, whatever `stream` says) with `n` choices of a short text each |
//! | `echo-key-401` | 401 `invalid_api_key` whose message quotes the key the request carried (`Authorization: Bearer <key>`), as a careless backend does |
//! | `echo-key-header` | the normal answer plus two headers echoing that key: `x-echoed-authorization: Bearer <key>` and one named `x-key-<key>` |
//! | `echo-key-text` | a plain chat answer whose content is `Scripted reply to: my key is <key>` |
//! | `echo-key-stream` | that content streamed (whatever `stream` says), the event holding the key cut into two frames in the middle of the key, 20 ms apart |
//! | `echo-key-sse-error` | a stream (whatever `stream` says) of two events, then an `event: error` whose message quotes the key; ends cleanly |
//! | `echo-key-gzip` | the `echo-key-text` answer, gzip-compressed with `content-encoding: gzip` |
//!
//! The two error answers carry `x-should-retry: false` (a real OpenAI header the
//! official SDKs honour) so a client SDK does not silently retry them. The streaming
//! scripts do not apply to embeddings, which are never streamed; `big-*`, `flood-*`
//! and `choices-*` apply to chat only. Any other model name (including a malformed
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
//! a request to its endpoint; `chat`, `completions`, `embeddings` and `models` answer
//! one endpoint each; `faults` turns the model name into a script and the script into
//! a `pace` (streamed or not, delays, cuts, a `shape` applied
//! to the bytes) or an answer of its own; `body` is the response body that
//! carries out the pace; `wire` writes OpenAI-shaped JSON, SSE and error answers;
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
