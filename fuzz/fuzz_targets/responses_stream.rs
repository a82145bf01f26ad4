//! Arbitrary bytes as an OpenAI Responses SSE body, fed to that protocol's stream
//! reader (`celgate::protocol::openai::responses::RESPONSES`, through an
//! `SseAccumulator`): whole, split at fuzzer-chosen points and one byte at a time.
//!
//! Must hold: no panic; the exchange and the stream summary are the same however the
//! bytes are chunked; and when the stream made a choice, the rendered body (the
//! equivalent `response` object) reads back through the protocol's whole-body parser
//! to the same choices, id, model and token counts: the stream reader and the body
//! reader agree.
//!
//! Input layout, as `sse_stream`'s: byte 0 = how many cut points follow (mod 16), then
//! two bytes per cut point (a little-endian offset into the stream, taken modulo its
//! length + 1), then the stream itself.
#![no_main]

use celgate::protocol::openai::responses::RESPONSES;
use celgate::protocol::{Protocol, SseAccumulator, StreamSummary};
use celgate_engine::exchange::Exchange;
use libfuzzer_sys::fuzz_target;

fn run<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Exchange, StreamSummary) {
    let mut acc = SseAccumulator::for_protocol(&RESPONSES);
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
    if !ex.choices.is_empty() {
        // A choice comes only from an answer, so the body is its rendering.
        let body = ex.response_body.as_deref().expect("a rendered body");
        let mut parsed = Exchange::default();
        RESPONSES
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
    }
});
