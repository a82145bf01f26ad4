//! The fault scripts a request's model name selects (the table in the crate doc):
//! [`Script::for_model`] reads the name, and [`prepare`] settles what the script does
//! to the answer: wait first, set the [`Pace`] of the endpoint's normal answer, or
//! answer in its own way (an error, `hang`, the `echo-key-*`, `flood-*` and
//! `choices-*` answers). Any other model, or a malformed script, is answered normally.

mod echo;
mod large;

use std::time::Duration;

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::body::{End, ScriptedBody};
use crate::dialect::{Dialect, Problem};
use crate::pace::Pace;
use crate::request::Endpoint;
use crate::route::State;
use crate::shape::Shape;
use crate::wire::Ids;

/// Pause between the frames of a `malformed-sse` answer, so they reach the client as
/// separate reads.
const MALFORMED_FRAME_PAUSE: Duration = Duration::from_millis(1);

/// Largest `big-<MB>` answer.
const MAX_BIG_MB: usize = 64;

/// Largest `flood-<MB>` answer.
const MAX_FLOOD_MB: usize = 1024;

/// Most choices a `choices-<n>` answer has.
const MAX_CHOICES: usize = 1_000_000;

/// Events a `stall-*` stream sends before going silent.
const STALL_AFTER_EVENTS: usize = 2;

/// A fault script, selected by the request's model (see the crate doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Script {
    Normal,
    Error(StatusCode),
    Slow(Duration),
    Hang,
    CutAfter(usize),
    Drip(Duration),
    Stall(Duration),
    ResetAfter(usize),
    MalformedSse,
    SseError,
    InvalidJson,
    Gzip,
    /// MiB of content.
    Big(usize),
    /// Pause after `[DONE]` before the body ends.
    DonePause(Duration),
    /// MiB of streamed content in identical events.
    Flood(usize),
    /// Choices of one JSON answer.
    Choices(usize),
    /// Echo the received key (chat only).
    EchoKey(Echo),
}

/// Where an `echo-key-*` script puts the key it received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Echo {
    Unauthorized,
    Header,
    Text,
    Stream,
    StreamError,
    Gzip,
}

impl Script {
    /// The script `model` names; [`Script::Normal`] for any other name.
    pub(crate) fn for_model(model: &str) -> Script {
        let millis = |rest: &str| rest.parse::<u64>().ok().map(Duration::from_millis);
        match model {
            "error-500" => Script::Error(StatusCode::INTERNAL_SERVER_ERROR),
            "error-429" => Script::Error(StatusCode::TOO_MANY_REQUESTS),
            "hang" => Script::Hang,
            "malformed-sse" => Script::MalformedSse,
            "sse-error" => Script::SseError,
            "invalid-json" => Script::InvalidJson,
            "gzip" => Script::Gzip,
            "echo-key-401" => Script::EchoKey(Echo::Unauthorized),
            "echo-key-header" => Script::EchoKey(Echo::Header),
            "echo-key-text" => Script::EchoKey(Echo::Text),
            "echo-key-stream" => Script::EchoKey(Echo::Stream),
            "echo-key-sse-error" => Script::EchoKey(Echo::StreamError),
            "echo-key-gzip" => Script::EchoKey(Echo::Gzip),
            _ => {
                let count = |rest: &str| rest.parse::<usize>().ok();
                if let Some(delay) = model.strip_prefix("slow-").and_then(millis) {
                    Script::Slow(delay)
                } else if let Some(delay) = model.strip_prefix("drip-").and_then(millis) {
                    Script::Drip(delay)
                } else if let Some(pause) = model.strip_prefix("stall-").and_then(millis) {
                    Script::Stall(pause)
                } else if let Some(n) = model.strip_prefix("cut-after-").and_then(count) {
                    Script::CutAfter(n)
                } else if let Some(n) = model.strip_prefix("reset-after-").and_then(count) {
                    Script::ResetAfter(n)
                } else if let Some(pause) = model.strip_prefix("done-pause-").and_then(millis) {
                    Script::DonePause(pause)
                } else if let Some(mib) = model
                    .strip_prefix("flood-")
                    .and_then(count)
                    .filter(|mib| (1..=MAX_FLOOD_MB).contains(mib))
                {
                    Script::Flood(mib)
                } else if let Some(n) = model
                    .strip_prefix("choices-")
                    .and_then(count)
                    .filter(|n| (1..=MAX_CHOICES).contains(n))
                {
                    Script::Choices(n)
                } else if let Some(mib) = model
                    .strip_prefix("big-")
                    .and_then(count)
                    .filter(|mib| (1..=MAX_BIG_MB).contains(mib))
                {
                    Script::Big(mib)
                } else {
                    Script::Normal
                }
            }
        }
    }
}

/// What a script made of a request.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// Answer normally, delivered at this pace.
    Pace(Pace),
    /// The script's own answer (boxed: the normal case carries only a pace).
    Answer(Box<Response<ScriptedBody>>),
}

/// Carries out the part of `script` that comes before the answer (a `slow-*` wait, a
/// `hang` until the upstream shuts down) and says how the request is answered.
pub(crate) async fn prepare(
    script: Script,
    endpoint: Endpoint,
    request: &Map<String, Value>,
    parts: &Parts,
    ids: &Ids<'_>,
    state: State<'_>,
) -> Prepared {
    let chat = endpoint == Endpoint::Chat;
    let dialect = endpoint.dialect();
    match script {
        Script::Error(status) => {
            Prepared::Answer(Box::new(scripted_error(status, ids.seq, dialect)))
        }
        Script::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Prepared::Pace(Pace::default())
        }
        Script::Hang => Prepared::Answer(Box::new(hang(state.shutdown, ids.seq, dialect).await)),
        Script::Flood(mib) if chat => Prepared::Answer(Box::new(large::flood(ids, mib))),
        Script::Choices(n) if chat => Prepared::Answer(Box::new(large::many_choices(ids, n))),
        Script::EchoKey(kind) if endpoint.converses() => {
            let key = echo::received_key(parts, dialect);
            let answer = echo::echo_key(kind, &key, endpoint, request, ids, state.store);
            Prepared::Answer(Box::new(answer))
        }
        other => Prepared::Pace(pace(other, endpoint.streams(), dialect)),
    }
}

/// The pace of a normal answer under `script` (`streams`: the endpoint can stream;
/// `dialect`: how its error events look).
fn pace(script: Script, streams: bool, dialect: Dialect) -> Pace {
    let mut pace = Pace::default();
    match script {
        Script::CutAfter(events) if streams => {
            pace.force_stream = true;
            pace.cut_after = Some(events);
            pace.end = End::Fail;
        }
        Script::Drip(delay) if streams => {
            pace.force_stream = true;
            pace.delay = delay;
        }
        Script::Stall(pause) if streams => {
            pace.force_stream = true;
            pace.stall = Some((STALL_AFTER_EVENTS, pause));
        }
        Script::ResetAfter(events) if streams => {
            pace.force_stream = true;
            pace.cut_after = Some(events);
            pace.end = End::Reset;
        }
        Script::MalformedSse if streams => {
            pace.force_stream = true;
            pace.delay = MALFORMED_FRAME_PAUSE;
            pace.shape = Shape::MalformedSse;
        }
        Script::SseError if streams => {
            pace.force_stream = true;
            pace.shape = Shape::ErrorAfter(2, dialect);
        }
        Script::InvalidJson => {
            pace.force_plain = true;
            pace.shape = Shape::HalfBody;
        }
        Script::Gzip => pace.shape = Shape::Gzip,
        Script::Big(mib) => pace.big = Some(mib),
        Script::DonePause(pause) if streams => {
            pace.force_stream = true;
            pace.linger = Some(pause);
        }
        // Answered in `prepare`, or not applying to this endpoint.
        Script::Normal
        | Script::Error(_)
        | Script::Slow(_)
        | Script::Hang
        | Script::CutAfter(_)
        | Script::Drip(_)
        | Script::Stall(_)
        | Script::ResetAfter(_)
        | Script::MalformedSse
        | Script::SseError
        | Script::DonePause(_)
        | Script::Flood(_)
        | Script::Choices(_)
        | Script::EchoKey(_) => {}
    }
    pace
}

/// `hang`: no answer until the upstream is dropped, then a 503 (which the closing
/// connection usually swallows).
async fn hang(
    shutdown: &watch::Sender<bool>,
    seq: usize,
    dialect: Dialect,
) -> Response<ScriptedBody> {
    let mut shutdown = shutdown.subscribe();
    // Err means the sender is gone, i.e. the upstream is shutting down too.
    let _closed = shutdown.wait_for(|down| *down).await;
    let message = "The scripted upstream is shutting down.";
    dialect.error(
        StatusCode::SERVICE_UNAVAILABLE,
        seq,
        Problem::Server,
        message,
    )
}

/// The answer of the `error-*` scripts, in the endpoint's dialect.
fn scripted_error(status: StatusCode, seq: usize, dialect: Dialect) -> Response<ScriptedBody> {
    let mut response = if status == StatusCode::TOO_MANY_REQUESTS {
        let message = "Rate limit reached for requests (scripted error-429).";
        dialect.error(status, seq, Problem::RateLimited, message)
    } else {
        let message = "The server had an error while processing your request (scripted error-500).";
        dialect.error(status, seq, Problem::Server, message)
    };
    response
        .headers_mut()
        .insert("x-should-retry", HeaderValue::from_static("false"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_parsed_from_the_model() {
        assert_eq!(Script::for_model("gpt-4o"), Script::Normal);
        assert_eq!(
            Script::for_model("slow-3000"),
            Script::Slow(Duration::from_secs(3))
        );
        assert_eq!(Script::for_model("slow-abc"), Script::Normal);
        assert_eq!(Script::for_model("cut-after-3"), Script::CutAfter(3));
        assert_eq!(
            Script::for_model("drip-200"),
            Script::Drip(Duration::from_millis(200))
        );
        assert_eq!(Script::for_model("hang"), Script::Hang);
        assert_eq!(
            Script::for_model("stall-30000"),
            Script::Stall(Duration::from_secs(30))
        );
        assert_eq!(Script::for_model("reset-after-2"), Script::ResetAfter(2));
        assert_eq!(Script::for_model("malformed-sse"), Script::MalformedSse);
        assert_eq!(Script::for_model("sse-error"), Script::SseError);
        assert_eq!(Script::for_model("invalid-json"), Script::InvalidJson);
        assert_eq!(Script::for_model("gzip"), Script::Gzip);
        assert_eq!(
            Script::for_model("echo-key-stream"),
            Script::EchoKey(Echo::Stream)
        );
        assert_eq!(Script::for_model("big-10"), Script::Big(10));
        assert_eq!(Script::for_model("big-0"), Script::Normal);
        assert_eq!(Script::for_model("big-1000"), Script::Normal);
        assert_eq!(
            Script::for_model("done-pause-500"),
            Script::DonePause(Duration::from_millis(500))
        );
        assert_eq!(Script::for_model("flood-200"), Script::Flood(200));
        assert_eq!(Script::for_model("flood-2000"), Script::Normal);
        assert_eq!(
            Script::for_model("choices-300000"),
            Script::Choices(300_000)
        );
        assert_eq!(Script::for_model("choices-0"), Script::Normal);
        assert_eq!(
            Script::for_model("error-429"),
            Script::Error(StatusCode::TOO_MANY_REQUESTS)
        );
    }
}
