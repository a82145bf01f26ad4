//! Rewrites of a finished answer's bytes ([`Shape`]), for the scripts whose answer is
//! the normal one made wrong: `malformed-sse` (the events wrapped in what a sloppy
//! server sends, cut into tiny frames), `sse-error` (an error event mid-stream),
//! `invalid-json` (half a JSON body) and `gzip` (the body compressed, a stream event
//! by event).

use std::collections::VecDeque;
use std::io::Write as _;

use bytes::Bytes;
use http::{HeaderValue, Response, header};

use crate::body::ScriptedBody;
use crate::dialect::Dialect;

/// A rewrite of an answer's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Shape {
    #[default]
    Plain,
    /// See `malformed-sse` in the module doc.
    MalformedSse,
    /// Keep this many events, then an error event in the dialect's shape, then end
    /// (no `[DONE]`, no final event).
    ErrorAfter(usize, Dialect),
    /// Keep the first half of a JSON body.
    HalfBody,
    /// gzip the body (a stream event by event).
    Gzip,
}

impl Shape {
    /// Rewrites a finished answer's bytes (and headers) as the script says.
    pub(crate) fn apply(self, mut response: Response<ScriptedBody>) -> Response<ScriptedBody> {
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = response.body_mut();
        match self {
            Shape::Plain => {}
            Shape::MalformedSse if is_sse => {
                body.events = malformed(std::mem::take(&mut body.events));
            }
            Shape::ErrorAfter(keep, dialect) if is_sse => {
                body.events.truncate(keep);
                let message = "The scripted upstream failed mid-stream (sse-error).";
                body.events.push_back(dialect.stream_error(message, keep));
            }
            Shape::HalfBody if !is_sse => {
                let whole: Vec<u8> = body.events.iter().flat_map(|b| b.to_vec()).collect();
                let half = Bytes::copy_from_slice(&whole[..whole.len() / 2]);
                *body = ScriptedBody::full(half);
            }
            Shape::Gzip => {
                let frames = gzip_frames(&body.events);
                if body.exact_len.is_some() {
                    let whole: Vec<u8> = frames.iter().flat_map(|b| b.to_vec()).collect();
                    *body = ScriptedBody::full(Bytes::from(whole));
                } else {
                    body.events = frames;
                }
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            Shape::MalformedSse | Shape::ErrorAfter(..) | Shape::HalfBody => {}
        }
        response
    }
}

/// The gzip stream of `events`, one frame per event (sync-flushed, so each frame
/// decodes to its whole event), the trailer in a frame of its own.
fn gzip_frames(events: &VecDeque<Bytes>) -> VecDeque<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut frames = VecDeque::new();
    for event in events {
        // Writing into a Vec cannot fail.
        let _ = encoder.write_all(event);
        let _ = encoder.flush();
        frames.push_back(Bytes::from(std::mem::take(encoder.get_mut())));
    }
    if let Ok(rest) = encoder.finish() {
        frames.push_back(Bytes::from(rest));
    }
    frames
}

/// A `malformed-sse` stream made of the events of a normal one (see the crate doc).
fn malformed(events: VecDeque<Bytes>) -> VecDeque<Bytes> {
    let mut text: Vec<u8> = Vec::new();
    text.extend_from_slice(b": keep-alive comment\n\n");
    text.extend_from_slice(b"this line has no colon\n\n");
    text.extend_from_slice(b"event: ping\n\n");
    let content: Vec<&Bytes> = events
        .iter()
        .filter(|e| e.as_ref() != b"data: [DONE]\n\n")
        .collect();
    for (i, event) in content.iter().enumerate() {
        match i % 4 {
            0 => {
                text.extend_from_slice(b"id: ");
                text.extend_from_slice(i.to_string().as_bytes());
                text.extend_from_slice(b"\nretry: 1000\n");
                text.extend_from_slice(event);
            }
            1 => {
                // CRLF line endings.
                let line = event.strip_suffix(b"\n\n").unwrap_or(event);
                text.extend_from_slice(line);
                text.extend_from_slice(b"\r\n\r\n");
            }
            2 => {
                text.extend_from_slice(b": comment between events\nunknown-field: x\n");
                text.extend_from_slice(event);
            }
            _ => text.extend_from_slice(event),
        }
        if i == 1 {
            text.extend_from_slice(b"data: {\"choices\": [{\"delta\": \n\n");
        }
    }
    // Frames of 1 to 61 bytes, so lines, CRLF pairs and UTF-8 characters are split.
    let sizes = [1, 2, 3, 5, 8, 13, 21, 34, 61];
    let mut frames = VecDeque::new();
    let mut rest = text.as_slice();
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (frame, tail) = rest.split_at((*size).min(rest.len()));
        frames.push_back(Bytes::copy_from_slice(frame));
        rest = tail;
    }
    frames
}
