//! An HTTP client for tests and what it returns: hyper's pooled client over HTTP/1.1
//! or h2c, [`send`] (a whole response, [`Reply`]) and [`stream`] (every body frame
//! with its arrival time and the error that ended it, [`StreamReply`]).
//!
//! Depends on no celgate crate, so the scripted upstream's own tests include it too
//! (`#[path = "../../tests/support/client.rs"] mod client;`).
#![allow(dead_code)]

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response read to its end: status, headers, body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A streamed response: every body frame with the instant it arrived, and the error
/// that ended the body early, if any (a cut stream).
#[derive(Clone, Debug)]
pub struct StreamReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub frames: Vec<(Instant, Bytes)>,
    pub error: Option<String>,
}

impl StreamReply {
    /// All frames concatenated.
    pub fn body(&self) -> Bytes {
        let mut body = Vec::new();
        for (_, frame) in &self.frames {
            body.extend_from_slice(frame);
        }
        Bytes::from(body)
    }

    /// The `data:` payloads of the SSE body, in order (`[DONE]` included).
    pub fn events(&self) -> Vec<String> {
        sse_data(&self.body())
    }

    /// The JSON payloads of the SSE body (every `data:` but `[DONE]`); panics on one
    /// that is not JSON.
    pub fn chunks(&self) -> Vec<serde_json::Value> {
        self.events()
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
            .collect()
    }

    /// The whole body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        let body = self.body();
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&body))
        })
    }
}

/// The `data:` payloads of an SSE body, in order (multi-line data joined with `\n`).
pub fn sse_data(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// An HTTP/1.1 client (hyper's pooled legacy client).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (HTTP/2 prior knowledge) client.
pub fn client_h2() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn build_request(
    method: Method,
    url: &str,
    body: Bytes,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut request = Request::builder().method(method).uri(url);
    let has_content_type = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    if !body.is_empty() && !has_content_type {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(body)).expect("a valid request")
}

/// Sends a request (`content-type: application/json` when there is a body and
/// `headers` has no content type) and reads the whole response; panics on a connection error or a
/// body error (use [`stream`] to observe those).
pub async fn send(
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Reply {
    let response = client()
        .request(build_request(method, url, body.into(), headers))
        .await
        .unwrap_or_else(|e| panic!("request to {url} failed: {e:?}"));
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("body of {url} failed: {e:?}"))
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `POST url` with a JSON body (`content-type: application/json`) and extra `headers`.
pub async fn post_json(url: &str, body: &serde_json::Value, headers: &[(&str, &str)]) -> Reply {
    send(Method::POST, url, body.to_string(), headers).await
}

/// `GET url`.
pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, Bytes::new(), &[]).await
}

/// Sends a request and records every body frame as it arrives; a body error ends the
/// recording and is returned in [`StreamReply::error`]. Panics when the request itself
/// fails (no response head).
pub async fn stream(
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> StreamReply {
    stream_with(&client(), method, url, body, headers).await
}

/// [`stream`] through `client` (e.g. [`client_h2`]).
pub async fn stream_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> StreamReply {
    let response = client
        .request(build_request(method, url, body.into(), headers))
        .await
        .unwrap_or_else(|e| panic!("request to {url} failed: {e:?}"));
    let (parts, mut body) = response.into_parts();
    let mut frames = Vec::new();
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    frames.push((Instant::now(), data));
                }
            }
            Err(e) => {
                error = Some(format!("{e:?}"));
                break;
            }
        }
    }
    StreamReply {
        status: parts.status,
        headers: parts.headers,
        frames,
        error,
    }
}

/// `POST url` with a JSON body, recording the response body frame by frame.
pub async fn post_stream(url: &str, body: &serde_json::Value) -> StreamReply {
    stream(Method::POST, url, body.to_string(), &[]).await
}
