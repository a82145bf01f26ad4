//! Arbitrary bytes as a Messages SSE response body, fed to the Anthropic protocol's
//! stream reader (`SseAccumulator::for_protocol(&MESSAGES)`): whole, split at
//! fuzzer-chosen points, and one byte at a time.
//!
//! Must hold: no panic; the exchange and the stream summary are the same however the
//! bytes are chunked; and when the stream made a choice, the rendered non-streamed
//! message reads back (through the protocol's own `parse_response`, the whole-body
//! reader) to the same choice, id, model and token counts.
//!
//! Input layout (as `sse_stream`): byte 0 = how many cut points follow (mod 16), then
//! two bytes per cut point (a little-endian offset into the stream, taken modulo its
//! length + 1), then the stream itself.
#![no_main]

use celgate::protocol::anthropic::MESSAGES;
use celgate::protocol::{Protocol, SseAccumulator, StreamSummary};
use celgate_engine::exchange::Exchange;
use libfuzzer_sys::fuzz_target;

fn run<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Exchange, StreamSummary) {
    let mut acc = SseAccumulator::for_protocol(&MESSAGES);
    for chunk in chunks {
        acc.feed(chunk);
    }
    let mut ex = Exchange::default();
    let summary = acc.finish(&mut ex);
    (ex, summary)
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
        // Repeated points give empty chunks, which must be harmless too.
        chunks.push(&stream[from..p]);
        from = p;
    }
    chunks.push(&stream[from..]);
    chunks
}

fuzz_target!(|data: &[u8]| {
    let (points, stream) = split_input(data);
    let whole = run([stream]);
    let chunks = chunks_at(stream, &points);
    assert_eq!(run(chunks.iter().copied()), whole, "split at {points:?}");
    assert_eq!(run(stream.chunks(1)), whole, "one byte at a time");

    let (ex, _) = &whole;
    if ex.choices.is_empty() {
        return;
    }
    // A choice comes only from the message's events, so the body is the rendering.
    let body = ex.response_body.as_deref().expect("a rendered body");
    let mut parsed = Exchange::default();
    MESSAGES
        .parse_response(body.as_bytes(), &mut parsed)
        .expect("the rendering parses");
    assert_eq!(parsed.choices, ex.choices, "rendered body: {body}");
    assert_eq!(parsed.response_id, ex.response_id);
    assert_eq!(parsed.response_model, ex.response_model);
    assert_eq!(
        (
            parsed.input_tokens,
            parsed.output_tokens,
            parsed.total_tokens,
            parsed.token_details
        ),
        (
            ex.input_tokens,
            ex.output_tokens,
            ex.total_tokens,
            ex.token_details
        ),
        "rendered body: {body}"
    );
});
