//! OTLP protobuf, written straight from the engine's span record.
//!
//! A span is encoded once, on the request's thread, into the bytes of one
//! `opentelemetry.proto.trace.v1.Span` message: no SDK `SpanData`, no protobuf
//! structs of owned strings, no clone per batch. The export thread then only
//! concatenates: an `ExportTraceServiceRequest` is one `ResourceSpans` whose
//! resource and scope are encoded once per configuration ([`BatchFrame`]),
//! followed by the spans' bytes, each behind its field tag and length. The field
//! numbers are those of `opentelemetry/proto/trace/v1/trace.proto` and
//! `common/v1/common.proto`; the tests decode what this writes with the
//! `opentelemetry-proto` types.

use std::time::{SystemTime, UNIX_EPOCH};

use celgate_engine::attributes::cut_str;
use celgate_engine::{AttrValue, SpanKind, SpanRecord, SpanStatus};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::trace_context::SpanIds;

/// Most bytes one encoded span may take: a span larger than this has its
/// longest strings cut until it fits (see [`encode_span`]), so that one span can
/// never make a collector refuse the batch it travels in.
pub const MAX_SPAN_BYTES: usize = 2 * 1024 * 1024;

/// The span flags' "has is-remote" bit (`SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`).
const HAS_IS_REMOTE: u32 = 0x100;
/// The span flags' "parent is remote" bit (`SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`).
const IS_REMOTE: u32 = 0x200;
/// W3C trace flags: sampled.
const SAMPLED: u32 = 0x01;

/// What the span sink hands to the exporter: the finished span, its ids and times.
pub struct SpanParts<'a> {
    pub record: &'a SpanRecord,
    pub ids: &'a SpanIds,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The error status message (the call failed); `None` keeps the record's status.
    pub error: Option<&'a str>,
}

/// One span as the bytes of a `Span` message (without its own tag and length).
/// A span over [`MAX_SPAN_BYTES`] is cut to fit.
pub fn encode_span(parts: &SpanParts<'_>) -> Vec<u8> {
    // Written into this thread's reused buffer, then copied out at its exact size:
    // one allocation, and no pass over the attributes just to size it.
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let encoded = BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            let out = encode_whole(parts, &mut buffer);
            // An outsized span's buffer is not kept for the next one.
            if buffer.capacity() > KEPT_BUFFER_BYTES {
                *buffer = Vec::new();
            }
            out
        }
        // Unreachable (nothing here encodes a span while encoding one); correct anyway.
        Err(_) => encode_whole(parts, &mut Vec::new()),
    });
    encoded.unwrap_or_else(|| fit(parts))
}

/// The span uncut, written into `buffer` and copied out, if it fits [`MAX_SPAN_BYTES`].
fn encode_whole(parts: &SpanParts<'_>, buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    buffer.clear();
    write_span(parts, usize::MAX, buffer);
    (buffer.len() <= MAX_SPAN_BYTES).then(|| buffer.to_vec())
}

/// Largest encoding buffer a thread keeps between spans.
const KEPT_BUFFER_BYTES: usize = 256 << 10;

/// Re-encodes an oversized span with every string cut to an equal share of the
/// budget, keeping the longest prefix of its attributes that then fits (keys and
/// numbers are not cut; the plan caps attributes at `limits.maxAttributes`, so
/// only a very wide span loses any, and those are counted as dropped).
fn fit(parts: &SpanParts<'_>) -> Vec<u8> {
    let r = parts.record;
    let share = (MAX_SPAN_BYTES / 2 / (string_count(r) + 2)).max(16);
    let bare = SpanRecord {
        attributes: Vec::new(),
        errors: Vec::new(),
        name: r.name.clone(),
        ..*r
    };
    let fixed = span_len(
        &SpanParts {
            record: &bare,
            ..*parts
        },
        share,
    );
    // The dropped-attributes count takes at most 11 bytes.
    let mut room = MAX_SPAN_BYTES.saturating_sub(fixed + 11);
    let kept = r
        .attributes
        .iter()
        .take_while(|(k, v)| {
            let cost = bytes_field_len(9, key_value_len(k, v, share));
            let fits = cost <= room;
            room = room.saturating_sub(cost);
            fits
        })
        .count();
    let trimmed = SpanRecord {
        attributes: r.attributes[..kept].to_vec(),
        dropped_attributes: r.dropped_attributes + r.attributes.len() - kept,
        ..bare
    };
    let cut = SpanParts {
        record: &trimmed,
        ..*parts
    };
    let mut out = Vec::with_capacity(span_len(&cut, share));
    write_span(&cut, share, &mut out);
    out
}

fn string_count(record: &SpanRecord) -> usize {
    record
        .attributes
        .iter()
        .map(|(_, v)| match v {
            AttrValue::StringArray(a) => a.len(),
            _ => 1,
        })
        .sum()
}

/// `s` cut to at most `max` bytes at a character boundary.
fn capped(s: &str, max: usize) -> &str {
    if s.len() > max { cut_str(s, max) } else { s }
}

fn span_len(p: &SpanParts<'_>, max: usize) -> usize {
    let r = p.record;
    let mut n = bytes_field_len(1, 16) + bytes_field_len(2, 8);
    if p.ids.parent.is_some() {
        n += bytes_field_len(4, 8);
    }
    n += key_len(16) + 4;
    n += bytes_field_len(5, capped(&r.name, max).len());
    n += key_len(6) + 1;
    n += 2 * (key_len(7) + 8);
    for (k, v) in &r.attributes {
        n += bytes_field_len(9, key_value_len(k, v, max));
    }
    if r.dropped_attributes > 0 {
        n += key_len(10) + encoded_len_varint(r.dropped_attributes as u64);
    }
    n + bytes_field_len(15, status_len(p, max))
}

fn write_span(p: &SpanParts<'_>, max: usize, out: &mut Vec<u8>) {
    let r = p.record;
    write_bytes(1, &p.ids.trace_id.to_bytes(), out);
    write_bytes(2, &p.ids.span_id.to_bytes(), out);
    if let Some(parent) = &p.ids.parent {
        write_bytes(4, &parent.span_id.to_bytes(), out);
    }
    let remote = if p.ids.parent.is_some() { IS_REMOTE } else { 0 };
    encode_key(16, WireType::ThirtyTwoBit, out);
    out.extend_from_slice(&(SAMPLED | HAS_IS_REMOTE | remote).to_le_bytes());
    write_bytes(5, capped(&r.name, max).as_bytes(), out);
    encode_key(6, WireType::Varint, out);
    encode_varint(kind_code(r.kind), out);
    encode_key(7, WireType::SixtyFourBit, out);
    out.extend_from_slice(&nanos(p.start).to_le_bytes());
    encode_key(8, WireType::SixtyFourBit, out);
    out.extend_from_slice(&nanos(p.end).to_le_bytes());
    for (k, v) in &r.attributes {
        write_key_value(9, k, v, max, out);
    }
    if r.dropped_attributes > 0 {
        encode_key(10, WireType::Varint, out);
        encode_varint(r.dropped_attributes as u64, out);
    }
    write_len(15, status_len(p, max), out);
    let (code, message) = status(p);
    if !message.is_empty() {
        write_bytes(2, capped(message, max).as_bytes(), out);
    }
    if code != 0 {
        encode_key(3, WireType::Varint, out);
        encode_varint(code, out);
    }
}

/// `SpanKind` as the proto enum (`SPAN_KIND_INTERNAL` = 1 ... `CONSUMER` = 5).
fn kind_code(kind: SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// The status code (`STATUS_CODE_UNSET` 0, `OK` 1, `ERROR` 2) and message: a
/// failed call's message wins over the `span.status` expression.
fn status<'a>(p: &SpanParts<'a>) -> (u64, &'a str) {
    match (p.error, p.record.status) {
        (Some(message), _) => (2, message),
        (None, SpanStatus::Ok) => (1, ""),
        (None, SpanStatus::Error) => (2, "marked failed by the span.status expression"),
        (None, SpanStatus::Unset) => (0, ""),
    }
}

fn status_len(p: &SpanParts<'_>, max: usize) -> usize {
    let (code, message) = status(p);
    let mut n = 0;
    if !message.is_empty() {
        n += bytes_field_len(2, capped(message, max).len());
    }
    if code != 0 {
        n += key_len(3) + encoded_len_varint(code);
    }
    n
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The framing a batch shares: the request's `ResourceSpans` up to its spans.
/// Encoded once per configuration on the export thread.
pub struct BatchFrame {
    /// `resource` (field 1 of `ResourceSpans`), tag and length included.
    resource: Vec<u8>,
    /// `scope` (field 1 of `ScopeSpans`), tag and length included.
    scope: Vec<u8>,
}

impl BatchFrame {
    /// The frame for `resource` attributes and celgate's instrumentation scope.
    pub fn new(resource: &[(String, AttrValue)]) -> BatchFrame {
        let mut body = Vec::new();
        for (k, v) in resource {
            write_key_value(1, k, v, usize::MAX, &mut body);
        }
        let mut res = Vec::new();
        write_bytes(1, &body, &mut res);
        let mut scope_body = Vec::new();
        write_bytes(1, b"celgate", &mut scope_body);
        write_bytes(2, env!("CARGO_PKG_VERSION").as_bytes(), &mut scope_body);
        let mut scope = Vec::new();
        write_bytes(1, &scope_body, &mut scope);
        BatchFrame {
            resource: res,
            scope,
        }
    }

    /// Bytes a request carries besides its spans (plus a few for the lengths).
    pub fn overhead(&self) -> usize {
        self.resource.len() + self.scope.len() + 3 * 6
    }

    /// The bytes a span adds to a request: its tag, length and body.
    pub fn span_cost(span: &[u8]) -> usize {
        bytes_field_len(2, span.len())
    }

    /// An `ExportTraceServiceRequest` carrying `spans`, written into `out`
    /// after `room` zero bytes left for the transport's framing.
    pub fn encode<'s>(
        &self,
        spans: impl Iterator<Item = &'s [u8]> + Clone,
        room: usize,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.resize(room, 0);
        let spans_len: usize = spans.clone().map(Self::span_cost).sum();
        let scope_spans_len = self.scope.len() + spans_len;
        let resource_spans_len = self.resource.len() + bytes_field_len(2, scope_spans_len);
        out.reserve(bytes_field_len(1, resource_spans_len));
        write_len(1, resource_spans_len, out);
        out.extend_from_slice(&self.resource);
        write_len(2, scope_spans_len, out);
        out.extend_from_slice(&self.scope);
        for span in spans {
            write_bytes(2, span, out);
        }
    }
}

fn bytes_field_len(field: u32, len: usize) -> usize {
    key_len(field) + encoded_len_varint(len as u64) + len
}

fn write_len(field: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn write_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    write_len(field, bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// A `KeyValue { key = 1, value = 2 (AnyValue) }`'s body length.
fn key_value_len(key: &str, value: &AttrValue, max: usize) -> usize {
    kv_len(key, any_value_len(value, max))
}

fn kv_len(key: &str, any_len: usize) -> usize {
    bytes_field_len(1, key.len()) + bytes_field_len(2, any_len)
}

/// An attribute as field `field` of its message (9 of a span, 1 of a resource),
/// each of its lengths computed once.
fn write_key_value(field: u32, key: &str, value: &AttrValue, max: usize, out: &mut Vec<u8>) {
    let (array, any_len) = value_lens(value, max);
    write_len(field, kv_len(key, any_len), out);
    write_bytes(1, key.as_bytes(), out);
    write_len(2, any_len, out);
    match array {
        Some(n) => write_array(value, n, max, out),
        None => write_scalar(scalar(value), max, out),
    }
}

/// One element of an array, as the `AnyValue` it becomes.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

fn scalar_len(s: Scalar<'_>, max: usize) -> usize {
    match s {
        Scalar::Str(s) => bytes_field_len(1, capped(s, max).len()),
        Scalar::Bool(_) => key_len(2) + 1,
        Scalar::Int(i) => key_len(3) + encoded_len_varint(i as u64),
        Scalar::Double(_) => key_len(4) + 8,
    }
}

fn write_scalar(s: Scalar<'_>, max: usize, out: &mut Vec<u8>) {
    match s {
        Scalar::Str(s) => write_bytes(1, capped(s, max).as_bytes(), out),
        Scalar::Bool(b) => {
            encode_key(2, WireType::Varint, out);
            encode_varint(u64::from(b), out);
        }
        Scalar::Int(i) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(i as u64, out);
        }
        Scalar::Double(d) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&d.to_le_bytes());
        }
    }
}

/// Calls `f` with each element of an array value; `false` for a scalar.
fn each_element<'v>(value: &'v AttrValue, mut f: impl FnMut(Scalar<'v>)) -> bool {
    match value {
        AttrValue::StringArray(a) => a.iter().for_each(|s| f(Scalar::Str(s))),
        AttrValue::IntArray(a) => a.iter().for_each(|i| f(Scalar::Int(*i))),
        AttrValue::DoubleArray(a) => a.iter().for_each(|d| f(Scalar::Double(*d))),
        AttrValue::BoolArray(a) => a.iter().for_each(|b| f(Scalar::Bool(*b))),
        _ => return false,
    }
    true
}

fn scalar(value: &AttrValue) -> Scalar<'_> {
    match value {
        AttrValue::String(s) => Scalar::Str(s),
        AttrValue::Int(i) => Scalar::Int(*i),
        AttrValue::Double(d) => Scalar::Double(*d),
        AttrValue::Bool(b) => Scalar::Bool(*b),
        // Arrays never reach here (see `elements`).
        _ => Scalar::Bool(false),
    }
}

/// Each string of an array gets an equal share of `max`.
fn element_max(value: &AttrValue, max: usize) -> usize {
    match value {
        AttrValue::StringArray(a) if max != usize::MAX => (max / a.len().max(1)).max(16),
        _ => max,
    }
}

fn array_len(value: &AttrValue, max: usize) -> Option<usize> {
    let each = element_max(value, max);
    let mut n = 0;
    each_element(value, |s| n += bytes_field_len(1, scalar_len(s, each))).then_some(n)
}

fn any_value_len(value: &AttrValue, max: usize) -> usize {
    value_lens(value, max).1
}

/// An `AnyValue`'s array body length (`None` for a scalar) and its own length.
fn value_lens(value: &AttrValue, max: usize) -> (Option<usize>, usize) {
    let array = array_len(value, max);
    let len = match array {
        Some(n) => bytes_field_len(5, n),
        None => scalar_len(scalar(value), max),
    };
    (array, len)
}

/// An array value (`ArrayValue`, field 5 of `AnyValue`) whose body is `n` bytes.
fn write_array(value: &AttrValue, n: usize, max: usize, out: &mut Vec<u8>) {
    let each = element_max(value, max);
    write_len(5, n, out);
    each_element(value, |s| {
        write_len(1, scalar_len(s, each), out);
        write_scalar(s, each, out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_context::Parent;
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;
    use std::time::Duration;

    fn record(attributes: Vec<(String, AttrValue)>) -> SpanRecord {
        SpanRecord {
            name: "chat gpt-4o".into(),
            kind: SpanKind::Client,
            status: SpanStatus::Unset,
            attributes,
            errors: Vec::new(),
            dropped_attributes: 0,
        }
    }

    fn ids(parent: bool) -> SpanIds {
        SpanIds {
            trace_id: TraceId::from_bytes([1; 16]),
            span_id: SpanId::from_bytes([2; 8]),
            parent: parent.then(|| Parent {
                trace_id: TraceId::from_bytes([1; 16]),
                span_id: SpanId::from_bytes([3; 8]),
                sampled: true,
            }),
        }
    }

    fn decode(frame: &BatchFrame, spans: &[Vec<u8>]) -> ExportTraceServiceRequest {
        let mut out = Vec::new();
        frame.encode(spans.iter().map(Vec::as_slice), 0, &mut out);
        ExportTraceServiceRequest::decode(out.as_slice()).expect("a valid request")
    }

    #[test]
    fn a_span_decodes_with_every_field_and_value_type() {
        let r = record(vec![
            ("s".into(), AttrValue::String("välue".into())),
            ("empty".into(), AttrValue::String(String::new())),
            ("i".into(), AttrValue::Int(-7)),
            ("zero".into(), AttrValue::Int(0)),
            ("d".into(), AttrValue::Double(0.5)),
            ("b".into(), AttrValue::Bool(false)),
            (
                "sa".into(),
                AttrValue::StringArray(vec!["a".into(), "".into()]),
            ),
            ("ia".into(), AttrValue::IntArray(vec![1, -2])),
            ("da".into(), AttrValue::DoubleArray(vec![1.5])),
            ("ba".into(), AttrValue::BoolArray(vec![true, false])),
        ]);
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let parts = SpanParts {
            record: &r,
            ids: &ids(true),
            start,
            end: start + Duration::from_millis(3),
            error: Some("backend_timeout: no answer"),
        };
        let frame = BatchFrame::new(&[("service.name".into(), AttrValue::String("gw".into()))]);
        let req = decode(&frame, &[encode_span(&parts)]);
        let rs = &req.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        assert_eq!(res.attributes[0].key, "service.name");
        let scope = rs.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("celgate", env!("CARGO_PKG_VERSION"))
        );
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(s.trace_id, vec![1; 16]);
        assert_eq!(s.span_id, vec![2; 8]);
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.flags, 0x301, "sampled, has-is-remote, remote parent");
        assert_eq!(s.name, "chat gpt-4o");
        assert_eq!(s.kind, 3, "client");
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 3_000_000);
        let status = s.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "backend_timeout: no answer")
        );
        let value = |k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        assert_eq!(value("s"), Value::StringValue("välue".into()));
        assert_eq!(value("empty"), Value::StringValue(String::new()));
        assert_eq!(value("i"), Value::IntValue(-7));
        assert_eq!(value("zero"), Value::IntValue(0));
        assert_eq!(value("d"), Value::DoubleValue(0.5));
        assert_eq!(value("b"), Value::BoolValue(false));
        let array = |k: &str| match value(k) {
            Value::ArrayValue(a) => a
                .values
                .into_iter()
                .filter_map(|v| v.value)
                .collect::<Vec<_>>(),
            other => panic!("{k} is {other:?}"),
        };
        assert_eq!(
            array("sa"),
            vec![
                Value::StringValue("a".into()),
                Value::StringValue(String::new())
            ]
        );
        assert_eq!(array("ia"), vec![Value::IntValue(1), Value::IntValue(-2)]);
        assert_eq!(array("da"), vec![Value::DoubleValue(1.5)]);
        assert_eq!(
            array("ba"),
            vec![Value::BoolValue(true), Value::BoolValue(false)]
        );
        assert_eq!(s.attributes.len(), 10, "in expression order, nothing added");
    }

    #[test]
    fn a_root_span_has_no_parent_and_the_expression_status() {
        let mut r = record(Vec::new());
        r.status = SpanStatus::Ok;
        r.kind = SpanKind::Server;
        r.dropped_attributes = 4;
        let now = SystemTime::now();
        let parts = SpanParts {
            record: &r,
            ids: &ids(false),
            start: now,
            end: now,
            error: None,
        };
        let req = decode(&BatchFrame::new(&[]), &[encode_span(&parts)]);
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.flags, 0x101);
        assert_eq!(s.kind, 2);
        assert_eq!(s.dropped_attributes_count, 4);
        assert_eq!(s.status.as_ref().map(|st| st.code), Some(1));
    }

    #[test]
    fn spans_keep_their_order_and_the_lengths_add_up() {
        let now = SystemTime::now();
        let spans: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                let r = record(vec![
                    ("n".into(), AttrValue::Int(i)),
                    ("x".into(), AttrValue::String("y".repeat(i as usize * 40))),
                ]);
                encode_span(&SpanParts {
                    record: &r,
                    ids: &ids(false),
                    start: now,
                    end: now,
                    error: None,
                })
            })
            .collect();
        let frame = BatchFrame::new(&[("k".into(), AttrValue::Int(1))]);
        let mut out = Vec::new();
        frame.encode(spans.iter().map(Vec::as_slice), 5, &mut out);
        assert_eq!(&out[..5], &[0; 5], "room left for the transport");
        let cost: usize = spans.iter().map(|s| BatchFrame::span_cost(s)).sum();
        assert!(
            out.len() - 5 <= cost + frame.overhead(),
            "overhead bounds the framing"
        );
        let req = ExportTraceServiceRequest::decode(&out[5..]).unwrap();
        let got: Vec<i64> = req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(
                |s| match s.attributes[0].value.as_ref().and_then(|v| v.value.clone()) {
                    Some(Value::IntValue(i)) => i,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_span_over_the_cap_is_cut_to_fit_and_keeps_its_attributes() {
        let r = record(
            (0..8)
                .map(|i| (format!("a{i}"), AttrValue::String("x".repeat(1024 * 1024))))
                .chain([(
                    "arr".into(),
                    AttrValue::StringArray(vec!["z".repeat(600_000); 3]),
                )])
                .collect(),
        );
        let now = SystemTime::now();
        let error = "e".repeat(2 * 1024 * 1024);
        let parts = SpanParts {
            record: &r,
            ids: &ids(false),
            start: now,
            end: now,
            error: Some(&error),
        };
        let bytes = encode_span(&parts);
        assert!(bytes.len() <= MAX_SPAN_BYTES, "{} bytes", bytes.len());
        let req = decode(&BatchFrame::new(&[]), &[bytes]);
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.attributes.len(), 9, "values are cut, attributes kept");
        assert!(s.status.as_ref().unwrap().message.len() < error.len());
    }

    #[test]
    fn a_span_with_too_many_attributes_to_fit_drops_the_last_ones_and_counts_them() {
        // Keys are never cut: 200k attributes of 16-byte keys cannot fit in 2 MiB
        // whatever the values.
        let r = record(
            (0..200_000)
                .map(|i| (format!("key-{i:012}"), AttrValue::Int(i)))
                .collect(),
        );
        let now = SystemTime::now();
        let parts = SpanParts {
            record: &r,
            ids: &ids(false),
            start: now,
            end: now,
            error: None,
        };
        let bytes = encode_span(&parts);
        assert!(bytes.len() <= MAX_SPAN_BYTES);
        let req = decode(&BatchFrame::new(&[]), &[bytes]);
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert!(s.attributes.len() < 200_000);
        assert_eq!(
            s.attributes.len() + s.dropped_attributes_count as usize,
            200_000
        );
        assert_eq!(
            s.attributes[0].key, "key-000000000000",
            "the first ones are kept"
        );
    }
}
