//! Arbitrary bytes as an SSE response body, fed to the OpenAI family's stream reader
//! (`celgate::protocol::openai::stream_accumulator`, an `SseAccumulator`) for
//! every operation: whole and split at fuzzer-chosen points, and for chat also one
//! byte at a time.
//!
//! Must hold: no panic; the exchange and the stream summary are the same however the
//! bytes are chunked; and for chat, the rendered non-streaming body reads back (through
//! `parse_response`) to the same choices, ids and usage.
//!
//! Input layout: byte 0 = how many cut points follow (mod 16), then two bytes per cut
//! point (a little-endian offset into the stream, taken modulo its length + 1), then
//! the stream itself.
#![no_main]

use celgate::protocol::StreamSummary;
use celgate::protocol::openai::{parse_response, stream_accumulator};
use celgate_engine::exchange::{Exchange, Operation};
use libfuzzer_sys::fuzz_target;

const OPERATIONS: [Operation; 4] = [
    Operation::Chat,
    Operation::TextCompletion,
    Operation::Embeddings,
    Operation::Other,
];

fn run<'a>(op: Operation, chunks: impl IntoIterator<Item = &'a [u8]>) -> (Exchange, StreamSummary) {
    let mut acc = stream_accumulator(op);
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
    let chunks = chunks_at(stream, &points);
    for op in OPERATIONS {
        let whole = run(op, [stream]);
        assert_eq!(
            run(op, chunks.iter().copied()),
            whole,
            "{op:?}: split at {points:?}"
        );
        if op == Operation::Chat {
            // The costliest split (a feed per byte); the line machinery is the same
            // for every operation, so once is enough.
            assert_eq!(
                run(op, stream.chunks(1)),
                whole,
                "{op:?}: one byte at a time"
            );
        }

        let (ex, _) = &whole;
        if op == Operation::Chat && !ex.choices.is_empty() {
            // Choices only come from applied chunks, so the body is the rendering.
            let body = ex.response_body.as_deref().expect("a rendered body");
            let mut parsed = Exchange::default();
            parse_response(op, body.as_bytes(), &mut parsed).expect("the rendering parses");
            assert_eq!(parsed.choices, ex.choices, "rendered body: {body}");
            assert_eq!(parsed.response_id, ex.response_id);
            assert_eq!(parsed.response_model, ex.response_model);
            assert_eq!(
                (
                    parsed.input_tokens,
                    parsed.output_tokens,
                    parsed.total_tokens
                ),
                (ex.input_tokens, ex.output_tokens, ex.total_tokens),
                "rendered body: {body}"
            );
        }
    }
});
