//! What every request needs: the current config generation, the sinks (exporter,
//! metrics, access log) and the pooled upstream clients.
//!
//! A request loads the current [`Generation`] once, on arrival, and keeps that
//! `Arc` until its span is exported: a config swapped mid-stream never mixes two
//! configs in one span.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use celgate_engine::{ConfigFile, TracingPlan};
use http_body_util::combinators::UnsyncBoxBody;

use crate::export::Exporter;
use crate::metrics::otlp::Instruments;
use crate::metrics::push::MetricsPush;
use crate::settings::Settings;
use crate::sinks::Sinks;
use crate::upstream::Clients;

/// Errors of bodies we pass along.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request bodies sent upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body that is all there already (a read request, an error answer).
pub fn whole_body(bytes: Bytes) -> UnsyncBoxBody<Bytes, BoxError> {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes)
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// One loaded config, compiled and resolved.
#[derive(Debug)]
pub struct Generation {
    /// 1 for the config loaded at start, +1 per successful reload.
    pub number: u64,
    pub plan: TracingPlan,
    /// What of a request the plan reads.
    pub needs: Needs,
    pub settings: Settings,
    /// The file as parsed, for `/config` (secrets are references, not values).
    pub source: ConfigFile,
    /// Hash of the config file's bytes (what a reload compares).
    pub source_hash: u64,
    pub loaded_at: SystemTime,
}

/// Which parts of an exchange the generation's expressions (fields and sampling)
/// read: computed by the engine from the variables its compiled expressions read.
pub use celgate_engine::Needs;

/// Request counters; the admin endpoint renders them.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub unsampled: AtomicU64,
}

/// The last failed reload, for `/config`.
#[derive(Clone, Debug)]
pub struct ReloadFailure {
    pub at: SystemTime,
    pub message: String,
}

/// State shared by all connections.
pub struct Shared {
    current: ArcSwap<Generation>,
    generation_number: Arc<AtomicU64>,
    /// Export, metrics and the access log: where finished calls go.
    pub sinks: Sinks,
    pub clients: Clients<UpstreamBody>,
    pub stats: ProxyStats,
    pub last_reload_error: Mutex<Option<ReloadFailure>>,
    /// Set on SIGTERM: `/readyz` turns 503 so load balancers stop sending.
    pub draining: std::sync::atomic::AtomicBool,
    /// Ends the bodies still open when the shutdown drain is over.
    pub cutoff: crate::cutoff::Cutoff,
}

impl Shared {
    /// The state of a gateway serving `first`, exporting spans through `exporter`
    /// and, if given, pushing metrics through `push`.
    pub fn new(
        first: Generation,
        exporter: Exporter,
        push: Option<(MetricsPush, Instruments)>,
    ) -> Arc<Shared> {
        let generation_number = Arc::new(AtomicU64::new(first.number));
        let number = Arc::clone(&generation_number);
        let sinks = Sinks::new(
            exporter,
            push,
            Arc::new(move || number.load(Ordering::Relaxed)),
        );
        Arc::new(Shared {
            current: ArcSwap::from_pointee(first),
            generation_number,
            sinks,
            clients: Clients::new(),
            stats: ProxyStats::default(),
            last_reload_error: Mutex::new(None),
            draining: std::sync::atomic::AtomicBool::new(false),
            cutoff: crate::cutoff::Cutoff::default(),
        })
    }

    /// The generation new requests use.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Makes `next` the generation for requests that arrive from now on.
    pub fn swap(&self, next: Generation) {
        self.generation_number.store(next.number, Ordering::Relaxed);
        self.current.store(Arc::new(next));
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use celgate_engine::{LoadOptions, load};

    #[test]
    fn needs_follow_what_expressions_read() {
        let yaml = "config:\n  tracing:\n    fields:\n      add:\n        a: size(llm.prompt)\n        b: llm.params.temperature\n";
        let plan = load(yaml, &LoadOptions::default()).unwrap().plan;
        let needs = Needs::of(&plan);
        assert!(needs.prompt && needs.params && !needs.tools && !needs.request_body);
        assert!(!needs.request_headers && !needs.response_headers && !needs.response_body);
        let phoenix = load(
            "config:\n  tracing:\n    preset: phoenix\n",
            &LoadOptions::default(),
        )
        .unwrap()
        .plan;
        assert!(Needs::of(&phoenix).response_body);
        let mut ex = celgate_engine::Exchange {
            request_body: Some("{}".into()),
            tools: vec![serde_json::json!({})],
            ..Default::default()
        };
        needs.trim(&mut ex);
        assert!(ex.request_body.is_none() && ex.tools.is_empty());
        let phoenix = load(
            "config:\n  tracing:\n    preset: phoenix\n",
            &LoadOptions::default(),
        )
        .unwrap()
        .plan;
        let n = Needs::of(&phoenix);
        assert!(n.prompt && n.tools && n.params && n.request_body && n.request_headers);
    }
}
