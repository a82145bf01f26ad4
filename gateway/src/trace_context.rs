//! W3C Trace Context: the `traceparent` a client sends us and the one we send upstream.
//!
//! A malformed `traceparent` is ignored (the span becomes a new root), as the W3C
//! spec asks; it never fails a request.

use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

/// The parent named by an incoming `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// Parses a `traceparent` header value (`00-<32 hex>-<16 hex>-<2 hex>`).
///
/// Version `ff` and all-zero ids are invalid; future versions are accepted when the
/// first four fields have the version-00 shape, as the spec requires.
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    let s = std::str::from_utf8(value).ok()?.trim();
    let mut parts = s.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let is_lower_hex = |t: &str| t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ![version, trace, span, flags]
        .iter()
        .all(|t| is_lower_hex(t))
    {
        return None;
    }
    let version = u8::from_str_radix(version, 16).ok()?;
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Ids for the span of one request: its own span id, and the trace it belongs to
/// (the parent's, or a fresh one).
#[derive(Clone, Copy, Debug)]
pub struct SpanIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<Parent>,
}

impl SpanIds {
    /// New ids, as a child of `parent` when there is one.
    pub fn new(parent: Option<Parent>) -> SpanIds {
        let ids = RandomIdGenerator::default();
        SpanIds {
            trace_id: parent.map_or_else(|| ids.new_trace_id(), |p| p.trace_id),
            span_id: ids.new_span_id(),
            parent,
        }
    }

    /// The `traceparent` to send upstream: this span as the parent.
    pub fn traceparent(&self, sampled: bool) -> String {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            flags.to_u8()
        )
    }
}

/// The OTel `TraceIdRatioBased` decision: deterministic per trace id, so every
/// service using the same ratio agrees on a trace.
pub fn ratio_sampled(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    let x = u64::from_be_bytes(low) >> 1;
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    x < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_rejects_invalid() {
        let p = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid traceparent");
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled);
        let unsampled =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(unsampled.map(|p| p.sampled), Some(false));
        // A future version may carry more fields.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_some()
        );
        for bad in [
            &b""[..],
            b"garbage",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"\xff\xfe",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn child_keeps_the_trace_and_formats_a_traceparent() {
        let parent = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let ids = SpanIds::new(parent);
        assert_eq!(ids.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ids.span_id, SpanId::INVALID);
        let tp = ids.traceparent(true);
        let back = parse_traceparent(tp.as_bytes()).expect("our own traceparent parses");
        assert_eq!(
            (back.trace_id, back.span_id, back.sampled),
            (ids.trace_id, ids.span_id, true)
        );
        assert!(ids.traceparent(false).ends_with("-00"));
    }

    #[test]
    fn ratio_sampling_is_deterministic_and_roughly_right() {
        let id_gen = RandomIdGenerator::default();
        let ids: Vec<TraceId> = (0..10_000).map(|_| id_gen.new_trace_id()).collect();
        let hits = ids.iter().filter(|t| ratio_sampled(**t, 0.25)).count();
        assert!(
            (2_000..3_000).contains(&hits),
            "{hits} of 10000 at ratio 0.25"
        );
        assert!(ids.iter().all(|t| ratio_sampled(*t, 1.0)));
        assert!(!ids.iter().any(|t| ratio_sampled(*t, 0.0)));
        assert_eq!(
            ids.iter()
                .map(|t| ratio_sampled(*t, 0.5))
                .collect::<Vec<_>>(),
            ids.iter()
                .map(|t| ratio_sampled(*t, 0.5))
                .collect::<Vec<_>>()
        );
    }
}
