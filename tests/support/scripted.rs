//! Talking to a [`ScriptedUpstream`] directly, from async tests: the upstream's own
//! tests (`upstream/tests/answers.rs`) and the tests of the gateway's parsers on its
//! answers. Requests carry `Authorization: Bearer sk-test`, the key the `echo-key-*`
//! scripts echo.
//!
//! Include it next to `client.rs` as `mod scripted;` (it uses `super::client`).
#![allow(dead_code)]

use bytes::Bytes;
use celgate_upstream::ScriptedUpstream;
use http::Method;
use serde_json::Value;

use super::client::{StreamReply, client, client_h2, stream_with};

/// The key every request here carries.
pub const TEST_KEY: &str = "sk-test";

/// A recording upstream on `127.0.0.1` and a free port, on the test's runtime.
pub async fn start() -> ScriptedUpstream {
    ScriptedUpstream::start(([127, 0, 0, 1], 0).into())
        .await
        .expect("start the scripted upstream")
}

/// Sends `body` to `path` of `up` (over h2c when `http2`), always as
/// `application/json`, and records the answer frame by frame.
pub async fn send(
    up: &ScriptedUpstream,
    method: Method,
    path: &str,
    body: impl Into<Bytes>,
    http2: bool,
) -> StreamReply {
    let client = if http2 { client_h2() } else { client() };
    let url = format!("http://{}{path}", up.addr());
    let authorization = format!("Bearer {TEST_KEY}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", authorization.as_str()),
    ];
    stream_with(&client, method, &url, body, &headers).await
}

/// `POST path` with a JSON body over HTTP/1.1.
pub async fn post(up: &ScriptedUpstream, path: &str, body: &Value) -> StreamReply {
    send(up, Method::POST, path, body.to_string(), false).await
}
