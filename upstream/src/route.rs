//! From a request to its answer: reads the body (16 MiB at most) and records the
//! request, answers what needs no JSON body (`GET /v1/models`, an unknown path, a
//! known path with another method), checks the body every endpoint needs (a JSON
//! object with a string `model`), lets the model's fault script ([`crate::faults`])
//! wait, pace or replace the answer, and hands the request to its endpoint.

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::body::ScriptedBody;
use crate::faults::{Prepared, Script, prepare};
use crate::record::{Journal, RecordedRequest, header_list};
use crate::request::Endpoint;
use crate::wire::{Ids, error_response, invalid_request, json_response};
use crate::{chat, completions, embeddings, models};

/// Largest request body read; a larger one gets a 413.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Records the request, then answers it; returns its position too.
pub(crate) async fn answer(
    journal: &Journal,
    shutdown: &watch::Sender<bool>,
    request: Request<Incoming>,
) -> (usize, Response<ScriptedBody>) {
    let (parts, body) = request.into_parts();
    let (seq, body) = match read_and_record(journal, &parts, body).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let endpoint = match endpoint(&parts, seq) {
        Ok(endpoint) => endpoint,
        Err(answer) => return (seq, *answer),
    };
    let request = match json_object(&body, seq) {
        Ok(request) => request,
        Err(answer) => return (seq, *answer),
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        let message = "You must provide a model parameter.";
        return (seq, invalid_request(StatusCode::BAD_REQUEST, seq, message));
    };
    let ids = Ids { seq, model };
    let script = Script::for_model(model);
    let pace = match prepare(script, endpoint, &request, &parts.headers, &ids, shutdown).await {
        Prepared::Pace(pace) => pace,
        Prepared::Answer(answer) => return (seq, *answer),
    };
    let response = match endpoint {
        Endpoint::Chat => chat::chat(&request, &ids, &pace),
        Endpoint::Completions => completions::completions(&request, &ids, &pace),
        Endpoint::Embeddings => embeddings::embeddings(&request, &ids),
    };
    (seq, pace.shape.apply(response))
}

/// Reads the whole body and records the request; a body that cannot be read (or is
/// too large) is recorded empty and answered with an error.
async fn read_and_record(
    journal: &Journal,
    parts: &Parts,
    body: Incoming,
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
        invalid_request(
            StatusCode::PAYLOAD_TOO_LARGE,
            seq,
            "Request body too large for the scripted upstream (16 MiB max).",
        )
    } else {
        invalid_request(
            StatusCode::BAD_REQUEST,
            seq,
            &format!("Could not read the request body: {error}"),
        )
    };
    Err((seq, answer))
}

/// The endpoint a request is for, or the answer to a request that is not for one
/// (`GET /v1/models` included: it needs no body).
fn endpoint(parts: &Parts, seq: usize) -> Result<Endpoint, Box<Response<ScriptedBody>>> {
    let answer = match (parts.uri.path(), &parts.method) {
        ("/v1/chat/completions", &Method::POST) => return Ok(Endpoint::Chat),
        ("/v1/completions", &Method::POST) => return Ok(Endpoint::Completions),
        ("/v1/embeddings", &Method::POST) => return Ok(Endpoint::Embeddings),
        ("/v1/models", &Method::GET) => json_response(StatusCode::OK, seq, &models::models()),
        ("/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/models", _) => {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                seq,
                &format!(
                    "Method {} is not allowed on {}.",
                    parts.method,
                    parts.uri.path()
                ),
                "invalid_request_error",
                Some("method_not_allowed"),
            )
        }
        (path, method) => error_response(
            StatusCode::NOT_FOUND,
            seq,
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            Some("unknown_url"),
        ),
    };
    Err(Box::new(answer))
}

/// The body as a JSON object, or the 400 for a body that is not one.
fn json_object(body: &[u8], seq: usize) -> Result<Map<String, Value>, Box<Response<ScriptedBody>>> {
    let answer = match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => return Ok(object),
        Ok(_) => invalid_request(
            StatusCode::BAD_REQUEST,
            seq,
            "The request body must be a JSON object.",
        ),
        Err(error) => invalid_request(
            StatusCode::BAD_REQUEST,
            seq,
            &format!(
                "We could not parse the JSON body of your request. ({error}) \
                 The OpenAI API expects a JSON payload."
            ),
        ),
    };
    Err(Box::new(answer))
}
