//! `otlpEndpoint: stdout`: one readable block per span, for the demo and for
//! debugging a config. The export thread prints, never a request: a terminal or
//! pipe that is slow to read only slows export. The spans arrive encoded like
//! any other (see `otlp`), so this decodes them with the `opentelemetry-proto`
//! types; an undecodable span (which would be a celgate bug) is reported, not
//! printed.

use std::io::Write;

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
use prost::Message;

/// Prints each span's header line and attributes.
pub fn print_spans<'s>(spans: impl Iterator<Item = &'s [u8]>) {
    let mut out = std::io::stdout().lock();
    for bytes in spans {
        let _ = match Span::decode(bytes) {
            Ok(s) => print_span(&mut out, &s),
            Err(e) => writeln!(out, "── span not decodable ({e}): a celgate bug"),
        };
    }
    let _ = out.flush();
}

fn print_span(out: &mut impl Write, s: &Span) -> std::io::Result<()> {
    let ms = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6;
    let kind = span::SpanKind::try_from(s.kind).map_or("?", |k| k.as_str_name());
    let status = match &s.status {
        Some(st) if st.code == status::StatusCode::Error as i32 => {
            format!("Error({:?})", st.message)
        }
        Some(st) if st.code == status::StatusCode::Ok as i32 => "Ok".to_owned(),
        _ => "Unset".to_owned(),
    };
    writeln!(
        out,
        "── span {:?} {ms:.1}ms kind={} status={status} trace={} span={}",
        s.name,
        kind.trim_start_matches("SPAN_KIND_").to_ascii_lowercase(),
        hex(&s.trace_id),
        hex(&s.span_id)
    )?;
    for kv in &s.attributes {
        writeln!(out, "   {} = {}", kv.key, display(kv.value.as_ref()))?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value as the demo shows it: strings quoted and cut at 200 characters.
fn display(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => {
            let shown: String = s.chars().take(200).collect();
            if shown.len() < s.len() {
                format!("{shown:?}… ({} bytes)", s.len())
            } else {
                format!("{shown:?}")
            }
        }
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| display(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(other) => format!("{other:?}"),
        None => "(none)".to_owned(),
    }
}
