//! Arbitrary bytes as a Gemini `streamGenerateContent?alt=sse` body, fed to the
//! protocol's stream reader (`SseAccumulator::for_protocol(&GENERATE)`): whole, split
//! at fuzzer-chosen points and one byte at a time.
//!
//! Must hold: no panic; the exchange and the stream summary are the same however the
//! bytes are chunked; the same events as the JSON array `:streamGenerateContent`
//! answers without `alt=sse` (through `parse_response`, whenever that array parses)
//! describe the answer alike (choices, id, model, token counts, truncation); and when the stream produced
//! choices and no cap bit, the rendered whole answer reads back to the same.
//!
//! Input layout (as `sse_stream`): byte 0 = how many cut points follow (mod 16), then
//! two bytes per cut point (a little-endian offset into the stream, taken modulo its
//! length + 1), then the stream itself.
#![no_main]

use celgate::protocol::gemini::GENERATE;
use celgate::protocol::sse::{EventSink, SseEvent, SseFramer};
use celgate::protocol::{Protocol, SseAccumulator, StreamSummary};
use celgate_engine::exchange::{Choice, Exchange, TokenDetails};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

fn run<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Exchange, StreamSummary) {
    let mut acc = SseAccumulator::for_protocol(&GENERATE);
    for chunk in chunks {
        acc.feed(chunk);
    }
    let mut ex = Exchange::default();
    let summary = acc.finish(&mut ex);
    (ex, summary)
}

type ResponseSide = (
    Vec<Choice>,
    Option<String>,
    Option<String>,
    [Option<i64>; 3],
    TokenDetails,
    bool,
);

fn response_side(ex: &Exchange) -> ResponseSide {
    (
        ex.choices.clone(),
        ex.response_id.clone(),
        ex.response_model.clone(),
        [ex.input_tokens, ex.output_tokens, ex.total_tokens],
        ex.token_details,
        ex.response_truncated,
    )
}

/// The stream's events as the framer hands them on: `(is named error, data)`.
#[derive(Default)]
struct Events(Vec<(bool, Vec<u8>)>);

impl EventSink for Events {
    fn event(&mut self, e: SseEvent<'_>) {
        self.0.push((e.name == b"error", e.data.trim_ascii().to_vec()));
    }
    fn oversized(&mut self) {}
}

/// The JSON array of the stream's well-formed chunks (each event whose data is a JSON
/// object, but `event: error` ones), as `:streamGenerateContent` without `alt=sse`
/// would have sent them. An event that is not JSON is left out, or two broken ones
/// could join into one that is.
fn as_json_array(stream: &[u8]) -> Vec<u8> {
    let (mut framer, mut events) = (SseFramer::default(), Events::default());
    framer.feed(stream, &mut events);
    framer.finish(&mut events);
    let chunks: Vec<Vec<u8>> = events
        .0
        .into_iter()
        .filter(|(is_error, data)| {
            !is_error
                && data.first() == Some(&b'{')
                && serde_json::from_slice::<IgnoredAny>(data).is_ok()
        })
        .map(|(_, data)| data)
        .collect();
    let mut array = b"[".to_vec();
    array.extend_from_slice(&chunks.join(&b","[..]));
    array.push(b']');
    array
}

/// The cut points and the stream.
fn split_input(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = usize::from(n % 16);
    let header = (2 * n).min(rest.len());
    let (cuts, stream) = rest.split_at(header);
    let mut points: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    (points, stream)
}

fn chunks_at<'a>(stream: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut from = 0;
    for &p in points {
        chunks.push(&stream[from..p]);
        from = p;
    }
    chunks.push(&stream[from..]);
    chunks
}

fuzz_target!(|data: &[u8]| {
    let (points, stream) = split_input(data);
    let whole = run([stream]);
    assert_eq!(
        run(chunks_at(stream, &points)),
        whole,
        "split at {points:?}"
    );
    assert_eq!(run(stream.chunks(1)), whole, "one byte at a time");

    let (ex, _) = &whole;
    // An element nested one level deeper than its event may pass serde_json's depth
    // limit, so an array that does not parse is no finding.
    let array = as_json_array(stream);
    let mut parsed = Exchange::default();
    if GENERATE.parse_response(&array, &mut parsed).is_ok() {
        assert_eq!(
            response_side(&parsed),
            response_side(ex),
            "as an array: {}",
            String::from_utf8_lossy(&array)
        );
    }
    if !ex.choices.is_empty() && !ex.response_truncated {
        let body = ex.response_body.as_deref().expect("a rendered body");
        let mut parsed = Exchange::default();
        GENERATE
            .parse_response(body.as_bytes(), &mut parsed)
            .expect("the rendering parses");
        assert_eq!(response_side(&parsed), response_side(ex), "rendered: {body}");
    }
});
