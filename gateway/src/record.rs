//! The finished record of one call: everything the sinks need, in one value.
//!
//! When a response ends (or a request is refused, or the client goes away), the
//! observe phase evaluates the span and hands a [`Finished`] to the
//! [`Sinks`](crate::sinks::Sinks): the exchange as it ended, the evaluated span
//! (when sampled), and the request's routing facts. Each sink reads its own view of
//! it (the access-log [`Entry`], the metric labels, the span), so the trace layer
//! knows nothing of export, metrics or logging, and none of them can see a
//! different call than the others.

use std::time::{Duration, SystemTime};

use celgate_engine::SpanRecord;
use celgate_engine::config::AccessLogFormat;
use celgate_engine::exchange::{Exchange, Operation};

use crate::access_log::Entry;
use crate::metrics::GenAiCall;
use crate::trace_context::SpanIds;

/// One call, over.
#[derive(Debug)]
pub struct Finished {
    pub exchange: Exchange,
    /// The evaluated span; `None` when the call was not sampled.
    pub span: Option<SpanRecord>,
    /// The span's error status message: set when the call failed (and was sampled),
    /// masked of backend keys and cut to the span's value length.
    pub status_message: Option<String>,
    pub ids: SpanIds,
    pub sampled: bool,
    pub start_time: SystemTime,
    pub end_time: SystemTime,
    pub elapsed: Duration,
    /// The bounded route label (`passthrough` for paths that are not LLM calls).
    pub route: String,
    pub backend: Option<String>,
    /// The request's `Host` (or authority).
    pub host: Option<String>,
    pub version: http::Version,
    /// How the generation the call used logs it.
    pub access_log: AccessLogFormat,
}

impl Finished {
    /// The access-log view: routing facts, ids, token counts; never a header value,
    /// a body or a key.
    pub fn access_entry(&self) -> Entry<'_> {
        let ex = &self.exchange;
        Entry {
            route: &self.route,
            backend: self.backend.as_deref(),
            client: ex.client.as_deref().map(|c| c.name.as_str()),
            endpoint: ex
                .backend_host
                .as_ref()
                .map(|h| format!("{h}:{}", ex.backend_port.unwrap_or_default())),
            src_addr: ex.source_address.clone(),
            method: &ex.request.method,
            host: self.host.as_deref(),
            path: &ex.request.path,
            version: version_str(self.version),
            status: self.status(),
            trace_id: self.ids.trace_id.to_string(),
            span_id: self.ids.span_id.to_string(),
            sampled: self.sampled,
            provider: (!ex.provider.is_empty()).then_some(ex.provider.as_str()),
            request_model: ex.request_model.as_deref(),
            response_model: ex.response_model.as_deref(),
            input_tokens: ex.input_tokens,
            output_tokens: ex.output_tokens,
            streaming: ex.streaming,
            duration_ms: self.elapsed.as_secs_f64() * 1e3,
            error: ex.error_type.as_deref(),
            ttft_ms: ex.time_to_first_token_ms,
        }
    }

    /// The status the client got (0: none was sent).
    pub fn status(&self) -> u16 {
        self.exchange.response.status.unwrap_or_default()
    }

    /// The authenticated client's name, or empty.
    pub fn client_name(&self) -> &str {
        self.exchange
            .client
            .as_deref()
            .map_or("", |c| c.name.as_str())
    }

    /// The attribute keys whose expressions failed.
    pub fn expression_errors(&self) -> impl Iterator<Item = &str> {
        let errors = self
            .span
            .as_ref()
            .map(|r| r.errors.as_slice())
            .unwrap_or_default();
        errors.iter().map(|(key, _)| key.as_str())
    }

    /// The GenAI metrics' view: only calls a backend accepted, of a known operation.
    pub fn genai_call(&self) -> Option<GenAiCall<'_>> {
        let ex = &self.exchange;
        if self.backend.is_none() || ex.operation == Operation::Other {
            return None;
        }
        Some(GenAiCall {
            operation: ex.operation.as_str(),
            provider: &ex.provider,
            request_model: ex.request_model.as_deref().unwrap_or_default(),
            response_model: ex.response_model.as_deref().unwrap_or_default(),
            server_address: ex.backend_host.as_deref().unwrap_or_default(),
            error_type: ex.error_type.as_deref().unwrap_or_default(),
            seconds: self.elapsed.as_secs_f64(),
            input_tokens: ex.input_tokens,
            output_tokens: ex.output_tokens,
            time_to_first_token: ex.time_to_first_token_ms.map(|ms| ms / 1000.0),
        })
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(operation: Operation, backend: Option<&str>) -> Finished {
        let mut exchange = Exchange {
            operation,
            request_model: Some("m".into()),
            error_type: Some("429".into()),
            ..Exchange::default()
        };
        exchange.response.status = Some(429);
        exchange.request.method = "POST".into();
        exchange.backend_host = backend.map(|_| "api.test".to_owned());
        exchange.backend_port = Some(443);
        Finished {
            exchange,
            span: None,
            status_message: None,
            ids: SpanIds::new(None),
            sampled: false,
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            elapsed: Duration::from_millis(1500),
            route: "/v1/chat/completions".into(),
            backend: backend.map(str::to_owned),
            host: Some("gw".into()),
            version: http::Version::HTTP_2,
            access_log: AccessLogFormat::Text,
        }
    }

    #[test]
    fn each_sink_reads_its_view_of_the_same_call() {
        let call = finished(Operation::Chat, Some("b"));
        let entry = call.access_entry();
        assert_eq!(
            (entry.status, entry.error, entry.version),
            (429, Some("429"), "HTTP/2")
        );
        assert_eq!(entry.endpoint.as_deref(), Some("api.test:443"));
        assert_eq!(entry.trace_id, call.ids.trace_id.to_string());
        let genai = call.genai_call().expect("a routed chat call");
        assert_eq!((genai.error_type, genai.seconds), ("429", 1.5));
        assert_eq!(call.expression_errors().count(), 0);
    }

    #[test]
    fn only_routed_calls_of_a_known_operation_are_genai_calls() {
        assert!(finished(Operation::Chat, None).genai_call().is_none());
        assert!(finished(Operation::Other, Some("b")).genai_call().is_none());
        assert!(
            finished(Operation::Embeddings, Some("b"))
                .genai_call()
                .is_some()
        );
    }
}
