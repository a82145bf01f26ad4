//! One line per request on stdout, in agentgateway's `key=value` form or as JSON.
//!
//! Only routing facts, ids, sizes and token counts: never a header value, a body
//! or a key.

use std::fmt::Write as _;
use std::io::Write as _;

use celgate_engine::config::AccessLogFormat;

/// What one line says.
#[derive(Debug, Default)]
pub struct Entry<'a> {
    pub route: &'a str,
    pub backend: Option<&'a str>,
    /// The authenticated client's name (client keys on), never its key.
    pub client: Option<&'a str>,
    pub endpoint: Option<String>,
    pub src_addr: Option<String>,
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub version: &'a str,
    pub status: u16,
    pub trace_id: String,
    pub span_id: String,
    pub sampled: bool,
    pub provider: Option<&'a str>,
    pub request_model: Option<&'a str>,
    pub response_model: Option<&'a str>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub streaming: bool,
    pub duration_ms: f64,
    pub error: Option<&'a str>,
}

/// Writes `entry` in `format`; `Off` writes nothing.
pub fn write(format: AccessLogFormat, entry: &Entry<'_>) {
    let line = match format {
        AccessLogFormat::Off => return,
        AccessLogFormat::Text => text(entry),
        AccessLogFormat::Json => json(entry),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
}

fn text(e: &Entry<'_>) -> String {
    let mut s = String::with_capacity(384);
    let _ = write!(s, "info\trequest route={}", e.route);
    let opt = |s: &mut String, k: &str, v: Option<&str>| {
        let _ = write!(s, " {k}={}", v.unwrap_or(""));
    };
    opt(&mut s, "backend", e.backend);
    opt(&mut s, "endpoint", e.endpoint.as_deref());
    opt(&mut s, "src.addr", e.src_addr.as_deref());
    if let Some(client) = e.client {
        // Only with client keys on, so lines without them read as before.
        let _ = write!(s, " client={client}");
    }
    let _ = write!(s, " http.method={}", e.method);
    opt(&mut s, "http.host", e.host.map(sanitize).as_deref());
    let _ = write!(
        s,
        " http.path={} http.version={} http.status={} trace.id={} span.id={} trace.sampled={}",
        sanitize(e.path),
        e.version,
        e.status,
        e.trace_id,
        e.span_id,
        e.sampled
    );
    opt(&mut s, "llm.provider", e.provider);
    opt(
        &mut s,
        "llm.request.model",
        e.request_model.map(sanitize).as_deref(),
    );
    let _ = write!(s, " llm.request.tokens={}", num(e.input_tokens));
    opt(
        &mut s,
        "llm.response.model",
        e.response_model.map(sanitize).as_deref(),
    );
    let _ = write!(
        s,
        " llm.response.tokens={} llm.streaming={} duration={:.0}ms",
        num(e.output_tokens),
        e.streaming,
        e.duration_ms
    );
    if let Some(err) = e.error {
        let _ = write!(s, " error={}", sanitize(err));
    }
    s.push('\n');
    s
}

fn num(n: Option<i64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

/// Client-controlled text in a text line: no spaces or control characters that
/// could forge another field or line.
fn sanitize(s: &str) -> String {
    s.chars()
        .take(256)
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn json(e: &Entry<'_>) -> String {
    let v = serde_json::json!({
        "level": "info",
        "msg": "request",
        "route": e.route,
        "backend": e.backend,
        "endpoint": e.endpoint,
        "src.addr": e.src_addr,
        "client": e.client,
        "http.method": e.method,
        "http.host": e.host,
        "http.path": e.path,
        "http.version": e.version,
        "http.status": e.status,
        "trace.id": e.trace_id,
        "span.id": e.span_id,
        "trace.sampled": e.sampled,
        "llm.provider": e.provider,
        "llm.request.model": e.request_model,
        "llm.request.tokens": e.input_tokens,
        "llm.response.model": e.response_model,
        "llm.response.tokens": e.output_tokens,
        "llm.streaming": e.streaming,
        "duration_ms": (e.duration_ms * 1000.0).round() / 1000.0,
        "error": e.error,
    });
    let mut s = v.to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            route: "/v1/chat/completions",
            backend: Some("openai"),
            client: None,
            endpoint: Some("api.openai.com:443".into()),
            src_addr: Some("127.0.0.1:5000".into()),
            method: "POST",
            host: Some("localhost"),
            path: "/v1/chat/completions",
            version: "HTTP/1.1",
            status: 200,
            trace_id: "d65e4eeb983e2d964e71e8dc8c405f97".into(),
            span_id: "b836e1b1d51b3e74".into(),
            sampled: true,
            provider: Some("openai"),
            request_model: Some("gpt-4o"),
            response_model: Some("gpt-4o-2024-08-06"),
            input_tokens: Some(8),
            output_tokens: Some(313),
            streaming: false,
            duration_ms: 3165.2,
            error: None,
        }
    }

    #[test]
    fn text_line_has_agentgateway_fields() {
        let line = text(&entry());
        assert_eq!(
            line,
            "info\trequest route=/v1/chat/completions backend=openai endpoint=api.openai.com:443 src.addr=127.0.0.1:5000 http.method=POST http.host=localhost http.path=/v1/chat/completions http.version=HTTP/1.1 http.status=200 trace.id=d65e4eeb983e2d964e71e8dc8c405f97 span.id=b836e1b1d51b3e74 trace.sampled=true llm.provider=openai llm.request.model=gpt-4o llm.request.tokens=8 llm.response.model=gpt-4o-2024-08-06 llm.response.tokens=313 llm.streaming=false duration=3165ms\n"
        );
    }

    #[test]
    fn the_client_name_is_logged_when_there_is_one() {
        let mut e = entry();
        e.client = Some("ci-bot");
        assert!(
            text(&e).contains(" src.addr=127.0.0.1:5000 client=ci-bot http.method=POST "),
            "{}",
            text(&e)
        );
        let v: serde_json::Value = serde_json::from_str(&json(&e)).unwrap();
        assert_eq!(v["client"], "ci-bot");
        let v: serde_json::Value = serde_json::from_str(&json(&entry())).unwrap();
        assert_eq!(v["client"], serde_json::Value::Null);
    }

    #[test]
    fn client_text_cannot_forge_fields() {
        let mut e = entry();
        e.request_model = Some("x llm.response.tokens=1\ninfo\tfake");
        let line = text(&e);
        assert_eq!(line.lines().count(), 1);
        assert!(line.contains("llm.request.model=x_llm.response.tokens=1_info_fake "));
    }

    #[test]
    fn json_line_parses() {
        let v: serde_json::Value = serde_json::from_str(&json(&entry())).unwrap();
        assert_eq!(v["trace.id"], "d65e4eeb983e2d964e71e8dc8c405f97");
        assert_eq!(v["llm.request.tokens"], 8);
        assert_eq!(v["error"], serde_json::Value::Null);
    }
}
