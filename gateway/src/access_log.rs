//! The access log's format: one line per request, in agentgateway's `key=value`
//! form or as JSON (the sink in `crate::sinks::access_log` writes them to stdout).
//!
//! Only routing facts, ids, sizes and token counts: never a header value, a body
//! or a key.

use std::fmt::Write as _;

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
    /// Milliseconds to the first output of the answer (`llm.timeToFirstToken`);
    /// `None` when no output came.
    pub ttft_ms: Option<f64>,
}

/// The line of `entry` in `format`; `Off` has none. Written by the access-log
/// sink's thread (`crate::sinks::access_log`), never on a proxy worker.
pub fn line(format: AccessLogFormat, entry: &Entry<'_>) -> Option<String> {
    match format {
        AccessLogFormat::Off => None,
        AccessLogFormat::Text => Some(text(entry)),
        AccessLogFormat::Json => Some(json(entry)),
    }
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
    // Last and only when set, so agentgateway's fields keep their places.
    if let Some(ms) = e.ttft_ms {
        let _ = write!(s, " ttft={ms:.0}ms");
    }
    s.push('\n');
    s
}

fn num(n: Option<i64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

/// Client-controlled text in a text line: no spaces that could forge another
/// field, and no control, line-separator or bidi-override character that could
/// forge another line or make a terminal show the line other than it is (U+202E
/// reverses what follows). Those are written escaped, `\u{202e}`.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(256));
    for c in s.chars().take(256) {
        if is_hazard(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else if c.is_whitespace() {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters a log line must not carry raw: C0 and C1 controls (and DEL), the
/// line and paragraph separators, and the invisible marks and bidi controls
/// (LRM/RLM, ALM, the embeddings and overrides U+202A-E, the isolates
/// U+2066-9, zero-width characters and the BOM).
fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// A JSON line with the [`is_hazard`] characters serde leaves raw (C1, the
/// separators, bidi controls; it escapes C0 itself) written as `\uXXXX`
/// escapes: the same JSON value, but safe to show. They can only occur inside
/// strings, so the whole text is rewritten.
fn escape_json_hazards(text: String) -> String {
    if !text.chars().any(is_hazard) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_hazard(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
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
        "ttft_ms": e.ttft_ms.map(|ms| (ms * 1000.0).round() / 1000.0),
    });
    let mut s = escape_json_hazards(v.to_string());
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
            ttft_ms: None,
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
    fn time_to_first_token_ends_the_line_only_when_set() {
        let mut e = entry();
        e.error = Some("stream_cut");
        e.ttft_ms = Some(412.4567);
        assert!(
            text(&e).ends_with(" duration=3165ms error=stream_cut ttft=412ms\n"),
            "{}",
            text(&e)
        );
        let v: serde_json::Value = serde_json::from_str(&json(&e)).unwrap();
        assert_eq!(v["ttft_ms"], 412.457);
        assert!(!text(&entry()).contains("ttft="));
        let v: serde_json::Value = serde_json::from_str(&json(&entry())).unwrap();
        assert_eq!(v["ttft_ms"], serde_json::Value::Null);
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
        assert!(line.contains("llm.request.model=x_llm.response.tokens=1\\u{a}info\\u{9}fake "));
    }

    #[test]
    fn bidi_and_control_characters_are_escaped_in_text_lines() {
        let mut e = entry();
        // "gpt" + RLO + "txt.exe": a terminal would show it reversed.
        e.request_model = Some("gpt\u{202e}txt.exe");
        e.response_model = Some("a\u{2028}b\u{85}c\u{200f}d\u{2066}e\u{7f}f\u{1b}[31m");
        e.path = "/v1/chat\u{202a}/completions";
        let line = text(&e);
        assert!(
            line.contains(" llm.request.model=gpt\\u{202e}txt.exe "),
            "{line}"
        );
        assert!(
            line.contains(
                " llm.response.model=a\\u{2028}b\\u{85}c\\u{200f}d\\u{2066}e\\u{7f}f\\u{1b}[31m "
            ),
            "{line}"
        );
        assert!(
            line.contains(" http.path=/v1/chat\\u{202a}/completions "),
            "{line}"
        );
        // Only the format's own tab and newline are left raw.
        let raw: String = line.chars().filter(|c| is_hazard(*c)).collect();
        assert_eq!(raw, "\t\n", "{line:?}");
    }

    #[test]
    fn bidi_and_c1_characters_are_escaped_in_json_lines_and_still_decode() {
        let mut e = entry();
        let model = "gpt\u{202e}txt\u{85}\u{2029}\u{2067}x\u{1}";
        e.request_model = Some(model);
        let line = json(&e);
        assert!(
            !line.trim_end_matches('\n').chars().any(is_hazard),
            "{line:?}"
        );
        assert!(
            line.contains(r"gpt\u202etxt\u0085\u2029\u2067x\u0001"),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["llm.request.model"], model);
    }

    #[test]
    fn json_line_parses() {
        let v: serde_json::Value = serde_json::from_str(&json(&entry())).unwrap();
        assert_eq!(v["trace.id"], "d65e4eeb983e2d964e71e8dc8c405f97");
        assert_eq!(v["llm.request.tokens"], 8);
        assert_eq!(v["error"], serde_json::Value::Null);
    }
}
