//! From a request to its answer: reads the body (16 MiB at most) and records the
//! request, answers what needs no JSON body (the model lists, a remembered Responses
//! answer, an unknown path, a known path with another method), checks the body every
//! endpoint needs (a JSON object with a string `model`, or Gemini's model in the
//! path), lets the model's fault script ([`crate::faults`]) wait, pace or replace the
//! answer, and hands the request to its endpoint. Every error is written in the
//! dialect of the protocol the path belongs to ([`crate::dialect`]).

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::body::ScriptedBody;
use crate::dialect::{Dialect, Problem};
use crate::faults::{Prepared, Script, prepare};
use crate::gemini::Framing;
use crate::record::{Journal, RecordedRequest, header_list};
use crate::request::Endpoint;
use crate::store::ResponseStore;
use crate::wire::{Ids, json_response};
use crate::{chat, completions, embeddings, gemini, messages, models, responses};

/// Largest request body read; a larger one gets a 413.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Gemini's path prefix for models.
const GEMINI_MODELS: &str = "/v1beta/models";

/// What the upstream keeps between requests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct State<'a> {
    pub(crate) journal: &'a Journal,
    pub(crate) shutdown: &'a watch::Sender<bool>,
    pub(crate) store: &'a ResponseStore,
}

/// Records the request, then answers it; returns its position too.
pub(crate) async fn answer(
    state: State<'_>,
    request: Request<Incoming>,
) -> (usize, Response<ScriptedBody>) {
    let (parts, body) = request.into_parts();
    let dialect = dialect_of(parts.uri.path());
    let (seq, body) = match read_and_record(state.journal, &parts, body, dialect).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let (endpoint, path_model) = match endpoint(&parts, seq, state.store) {
        Ok(endpoint) => endpoint,
        Err(answer) => return (seq, *answer),
    };
    let dialect = endpoint.dialect();
    let request = match json_object(&body, seq, dialect) {
        Ok(request) => request,
        Err(answer) => return (seq, *answer),
    };
    let Some(model) = path_model
        .as_deref()
        .or_else(|| request.get("model").and_then(Value::as_str))
    else {
        let message = match dialect {
            Dialect::Anthropic => "model: Field required",
            _ => "You must provide a model parameter.",
        };
        let status = StatusCode::BAD_REQUEST;
        return (
            seq,
            dialect.error(status, seq, Problem::InvalidRequest, message),
        );
    };
    let ids = Ids { seq, model };
    let script = Script::for_model(model);
    let prepared = prepare(script, endpoint, &request, &parts, &ids, state).await;
    let pace = match prepared {
        Prepared::Pace(pace) => pace,
        Prepared::Answer(answer) => return (seq, *answer),
    };
    let response = respond(endpoint, &request, &ids, &pace, state.store);
    (seq, pace.shape.apply(response))
}

/// The endpoint's normal answer, at `pace`.
pub(crate) fn respond(
    endpoint: Endpoint,
    request: &Map<String, Value>,
    ids: &Ids<'_>,
    pace: &crate::pace::Pace,
    store: &ResponseStore,
) -> Response<ScriptedBody> {
    match endpoint {
        Endpoint::Chat => chat::chat(request, ids, pace),
        Endpoint::Completions => completions::completions(request, ids, pace),
        Endpoint::Embeddings => embeddings::embeddings(request, ids),
        Endpoint::Messages => messages::messages(request, ids, pace),
        Endpoint::MessagesCountTokens => messages::count_tokens(request, ids.seq),
        Endpoint::Responses => responses::responses(request, ids, pace, store),
        Endpoint::GeminiGenerate => gemini::generate(request, ids, pace, Framing::Whole),
        Endpoint::GeminiStream { sse } => {
            let framing = if sse { Framing::Sse } else { Framing::Array };
            gemini::generate(request, ids, pace, framing)
        }
        Endpoint::GeminiCountTokens => gemini::count_tokens(request, ids.seq),
    }
}

/// The dialect of the protocol a path belongs to.
fn dialect_of(path: &str) -> Dialect {
    if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        Dialect::Anthropic
    } else if path == "/v1/responses" || path.starts_with("/v1/responses/") {
        Dialect::Responses
    } else if path.starts_with("/v1beta/") {
        Dialect::Gemini
    } else {
        Dialect::OpenAi
    }
}

/// Reads the whole body and records the request; a body that cannot be read (or is
/// too large) is recorded empty and answered with an error.
async fn read_and_record(
    journal: &Journal,
    parts: &Parts,
    body: Incoming,
    dialect: Dialect,
) -> Result<(usize, Bytes), (usize, Response<ScriptedBody>)> {
    let (body, body_error) = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => (collected.to_bytes(), None),
        Err(error) => (Bytes::new(), Some(error)),
    };
    let seq = journal.record(|| RecordedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        version: format!("{:?}", parts.version),
        headers: header_list(&parts.headers),
        body: body.clone(),
    });
    let Some(error) = body_error else {
        return Ok((seq, body));
    };
    let answer = if error.downcast_ref::<LengthLimitError>().is_some() {
        dialect.error(
            StatusCode::PAYLOAD_TOO_LARGE,
            seq,
            Problem::InvalidRequest,
            "Request body too large for the scripted upstream (16 MiB max).",
        )
    } else {
        dialect.error(
            StatusCode::BAD_REQUEST,
            seq,
            Problem::InvalidRequest,
            &format!("Could not read the request body: {error}"),
        )
    };
    Err((seq, answer))
}

/// The endpoint a `POST` is for (and the model its path names), or the answer to a
/// request that is not for one (the `GET`s and `DELETE`s included: they need no body).
fn endpoint(
    parts: &Parts,
    seq: usize,
    store: &ResponseStore,
) -> Result<(Endpoint, Option<String>), Box<Response<ScriptedBody>>> {
    let path = parts.uri.path();
    let method = &parts.method;
    if method == Method::POST
        && let Some(found) = post_endpoint(path, parts.uri.query())
    {
        return Ok(found);
    }
    if let Some(answer) = fetch(method, path, parts.uri.query(), seq, store) {
        return Err(Box::new(answer));
    }
    let dialect = dialect_of(path);
    let (status, message) = if known_path(path) {
        let message = format!("Method {method} is not allowed on {path}.");
        (StatusCode::METHOD_NOT_ALLOWED, message)
    } else {
        (
            StatusCode::NOT_FOUND,
            format!("Invalid URL ({method} {path})"),
        )
    };
    let mut answer = dialect.error(status, seq, Problem::InvalidRequest, &message);
    if dialect == Dialect::OpenAi {
        // OpenAI names these cases in `code`.
        let code = if status == StatusCode::NOT_FOUND {
            "unknown_url"
        } else {
            "method_not_allowed"
        };
        answer =
            crate::wire::error_response(status, seq, &message, "invalid_request_error", Some(code));
    }
    Err(Box::new(answer))
}

/// The endpoint of a `POST` to `path`, and the model a Gemini path names.
fn post_endpoint(path: &str, query: Option<&str>) -> Option<(Endpoint, Option<String>)> {
    let endpoint = match path {
        "/v1/chat/completions" => Endpoint::Chat,
        "/v1/completions" => Endpoint::Completions,
        "/v1/embeddings" => Endpoint::Embeddings,
        "/v1/messages" => Endpoint::Messages,
        "/v1/messages/count_tokens" => Endpoint::MessagesCountTokens,
        "/v1/responses" => Endpoint::Responses,
        _ => {
            let rest = path.strip_prefix(GEMINI_MODELS)?.strip_prefix('/')?;
            let (model, method) = rest.rsplit_once(':')?;
            let endpoint = match method {
                "generateContent" => Endpoint::GeminiGenerate,
                "streamGenerateContent" => Endpoint::GeminiStream {
                    sse: query_has(query, "alt", "sse"),
                },
                "countTokens" => Endpoint::GeminiCountTokens,
                _ => return None,
            };
            return (!model.is_empty()).then(|| (endpoint, Some(model.to_owned())));
        }
    };
    Some((endpoint, None))
}

/// Whether the query has `name=value`.
pub(crate) fn query_has(query: Option<&str>, name: &str, value: &str) -> bool {
    query_value(query, name) == Some(value)
}

/// The first value of `name` in the query (not percent-decoded).
pub(crate) fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The answer of a request that reads (or deletes) something: the model lists and the
/// remembered Responses answers; `None` for any other request.
fn fetch(
    method: &Method,
    path: &str,
    query: Option<&str>,
    seq: usize,
    store: &ResponseStore,
) -> Option<Response<ScriptedBody>> {
    let ok = |body: &Value| json_response(StatusCode::OK, seq, body);
    if let Some(rest) = path
        .strip_prefix("/v1/responses/")
        .filter(|r| !r.is_empty())
    {
        return match (method, rest.strip_suffix("/input_items")) {
            (&Method::GET, Some(id)) => Some(responses::list_input_items(store, id, query, seq)),
            (&Method::GET, None) if !rest.contains('/') => {
                Some(responses::retrieve(store, rest, seq))
            }
            (&Method::DELETE, None) if !rest.contains('/') => {
                Some(responses::delete(store, rest, seq))
            }
            _ => None,
        };
    }
    if method != Method::GET {
        return None;
    }
    match path {
        "/v1/models" => Some(ok(&models::models())),
        GEMINI_MODELS => Some(ok(&models::gemini_models())),
        _ => {
            let model = path.strip_prefix(GEMINI_MODELS)?.strip_prefix('/')?;
            (!model.is_empty() && !model.contains(':')).then(|| ok(&models::gemini_model(model)))
        }
    }
}

/// Whether `path` is an endpoint's (so another method gets a 405, not a 404).
fn known_path(path: &str) -> bool {
    post_endpoint(path, None).is_some()
        || matches!(path, "/v1/models" | GEMINI_MODELS)
        || path.starts_with("/v1/responses/")
        || (path.starts_with("/v1beta/models/") && !path.contains(':'))
}

/// The body as a JSON object, or the 400 for a body that is not one.
fn json_object(
    body: &[u8],
    seq: usize,
    dialect: Dialect,
) -> Result<Map<String, Value>, Box<Response<ScriptedBody>>> {
    let message = match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => return Ok(object),
        Ok(_) => "The request body must be a JSON object.".to_owned(),
        Err(error) => {
            let api = match dialect {
                Dialect::OpenAi | Dialect::Responses => "The OpenAI API",
                Dialect::Anthropic => "The Anthropic API",
                Dialect::Gemini => "The Gemini API",
            };
            format!(
                "We could not parse the JSON body of your request. ({error}) \
                 {api} expects a JSON payload."
            )
        }
    };
    let answer = dialect.error(
        StatusCode::BAD_REQUEST,
        seq,
        Problem::InvalidRequest,
        &message,
    );
    Err(Box::new(answer))
}
