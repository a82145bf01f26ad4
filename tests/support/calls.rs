//! Client calls to the gateway with a deadline: each fails the test after
//! [`CALL_TIMEOUT`] instead of hanging it, plus the multi-threaded runtime the sync
//! tests run them on.
#![allow(dead_code)]

use std::time::Duration;

use http::Method;
use serde_json::Value;

use super::client::{Reply, StreamReply, post_json, stream};

/// How long any one client call may take before the test fails instead of hanging.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the test runtime")
}

/// `POST {base}{path}` with a JSON body; fails the test after [`CALL_TIMEOUT`].
pub async fn post(base: &str, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let url = format!("{base}{path}");
    tokio::time::timeout(CALL_TIMEOUT, post_json(&url, body, headers))
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within {CALL_TIMEOUT:?}"))
}

/// `POST {base}{path}` with raw bytes, recording the body frame by frame.
pub async fn post_raw_stream(
    base: &str,
    path: &str,
    body: impl Into<bytes::Bytes>,
    headers: &[(&str, &str)],
) -> StreamReply {
    let url = format!("{base}{path}");
    tokio::time::timeout(CALL_TIMEOUT, stream(Method::POST, &url, body, headers))
        .await
        .unwrap_or_else(|_| panic!("no complete answer from {url} within {CALL_TIMEOUT:?}"))
}

pub async fn post_stream(
    base: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> StreamReply {
    post_raw_stream(base, path, body.to_string(), headers).await
}
