//! How an answer is delivered ([`Pace`]): streamed or one JSON body whatever the
//! request asked, the delays between events, a stall, where a stream is cut and how
//! its body ends, and the [`Shape`] applied to its bytes. A normal request gets the
//! default; the fault scripts ([`crate::faults`]) set the rest.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::body::End;
use crate::request::wants_stream;
use crate::shape::Shape;

/// How an answer is delivered.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pace {
    /// Stream even when the request did not ask to.
    pub(crate) force_stream: bool,
    /// Answer one JSON body even when the request asked to stream.
    pub(crate) force_plain: bool,
    /// Wait this long before each event.
    pub(crate) delay: Duration,
    /// Before event `.0` (0-based), wait `.1` instead.
    pub(crate) stall: Option<(usize, Duration)>,
    /// Send only this many events, then end as `end` says.
    pub(crate) cut_after: Option<usize>,
    /// How the body ends after its last event.
    pub(crate) end: End,
    /// What is done to the finished answer's bytes.
    pub(crate) shape: Shape,
    /// `big-<MB>`: the chat content is this many MiB.
    pub(crate) big: Option<usize>,
    /// Wait this long after the last event before ending the body.
    pub(crate) linger: Option<Duration>,
}

impl Pace {
    /// Whether the answer is a stream: as asked, unless the script says otherwise.
    pub(crate) fn streams(&self, request: &Map<String, Value>) -> bool {
        self.streams_when(wants_stream(request))
    }

    /// Whether the answer is a stream when the request `asked` for one (Gemini asks
    /// by its path).
    pub(crate) fn streams_when(&self, asked: bool) -> bool {
        !self.force_plain && (asked || self.force_stream)
    }
}
