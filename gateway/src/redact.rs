//! Backend keys never leave celgate in a response.
//!
//! A backend that echoes the key celgate sent it (`Authorization: Bearer <key>`) in a
//! 401 body, a header, completion text or an SSE error event would otherwise hand it
//! to every client and, through the span, to the collector. A [`Redactor`] holds every
//! backend key of one config generation (all backends, not only the routed one: a
//! misconfigured backend may echo another's) and masks each occurrence with `*`
//! repeated to the key's length: a `content-length` stays valid, byte offsets in a
//! stream do not move, a mask split over two chunks is still all `*`, and `*` needs no
//! escaping in JSON, SSE or a header value. Keys shorter than [`MIN_SECRET_BYTES`] are
//! not masked: such short strings occur in ordinary text far too often.
//!
//! [`RedactedBody`] wraps a response body on its way to the client, so the client and
//! the span capture (which reads what the client gets) see masked bytes alike. A key
//! split across two chunks is still caught without buffering the stream: only a
//! chunk's tail that is a prefix of some key is held back until the next chunk (a real
//! SSE chunk ends in `\n\n`, no key's prefix, so a normal stream is not delayed by a
//! byte), and the held tail is flushed at the end of the body. Compressed bodies are
//! not rewritten (see [`crate::capture::Capture::redact_decoded`] for the span's side).
//! A chunk is first asked whether it holds any key at all (memchr's SIMD substring
//! search, one per key); only one that does is handed to Aho-Corasick for the
//! positions. A response that holds no key costs a few nanoseconds per chunk.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use bytes::Bytes;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use memchr::memmem::Finder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::BackendLabels;

/// Keys shorter than this are not masked (documented in the README).
pub const MIN_SECRET_BYTES: usize = 8;

/// What every byte of a key becomes.
pub const MASK: u8 = b'*';

/// Up to this many keys, whether a text holds any is asked of one SIMD substring
/// search per key (~10 ns for a 250-byte SSE chunk each), far quicker on JSON text
/// than Aho-Corasick's own prefilter, which stops at every `s` of `sk-`; above it,
/// the automaton answers.
const FINDER_KEYS: usize = 32;

/// The keys of one config generation and the automata that find them.
pub struct Redactor {
    /// Each distinct key, for the held-tail check.
    keys: Vec<Box<[u8]>>,
    /// Where keys are, overlapping ones too (case matters); built on first use for a
    /// per-request redactor, at once for a generation's. `None` if it cannot be built
    /// (the finders then find the positions).
    exact: OnceLock<Option<AhoCorasick>>,
    /// One substring search per key: whether a text holds any (the prefilter).
    finders: Vec<Finder<'static>>,
    /// The keys lower-cased, for header names (which HTTP lower-cases).
    lower: Vec<Finder<'static>>,
    /// Whether some key starts with this byte.
    first: [bool; 256],
    /// Whether some key holds this byte.
    in_key: [bool; 256],
    /// Length of the longest key.
    longest: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} keys)", self.keys.len())
    }
}

impl Redactor {
    /// A redactor for `keys` (a generation's); those shorter than
    /// [`MIN_SECRET_BYTES`] are left out.
    pub fn new(keys: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Redactor {
        let redactor = Redactor::lazy(keys);
        redactor.automaton();
        redactor
    }

    /// These keys and `more` (a client's own, forwarded with `authPassthrough`), for
    /// one request: cheap to build, as the automaton waits until a key is found.
    pub fn with(&self, more: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Redactor {
        let mine = self.keys.iter().map(|k| k.to_vec());
        Redactor::lazy(mine.chain(more.into_iter().map(|k| k.as_ref().to_vec())))
    }

    fn lazy(keys: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Redactor {
        let mut distinct: Vec<Box<[u8]>> = Vec::new();
        for key in keys {
            let key = key.as_ref();
            if key.len() >= MIN_SECRET_BYTES && !distinct.iter().any(|k| **k == *key) {
                distinct.push(key.into());
            }
        }
        let finders = distinct
            .iter()
            .map(|k| Finder::new(k).into_owned())
            .collect();
        let lower = distinct
            .iter()
            .map(|k| Finder::new(&k.to_ascii_lowercase()).into_owned())
            .collect();
        let mut first = [false; 256];
        let mut in_key = [false; 256];
        for key in &distinct {
            first[usize::from(key[0])] = true;
            for b in key.iter() {
                in_key[usize::from(*b)] = true;
            }
        }
        Redactor {
            longest: distinct.iter().map(|k| k.len()).max().unwrap_or(0),
            keys: distinct,
            exact: OnceLock::new(),
            finders,
            lower,
            first,
            in_key,
        }
    }

    fn automaton(&self) -> Option<&AhoCorasick> {
        self.exact
            .get_or_init(|| {
                (!self.keys.is_empty())
                    .then(|| {
                        AhoCorasickBuilder::new()
                            .match_kind(MatchKind::Standard)
                            .build(&self.keys)
                            .ok()
                    })
                    .flatten()
            })
            .as_ref()
    }

    /// Whether `text` holds some key.
    fn any(&self, text: &[u8]) -> bool {
        if self.keys.len() > FINDER_KEYS
            && let Some(ac) = self.automaton()
        {
            return ac.is_match(text);
        }
        self.finders.iter().any(|f| f.find(text).is_some())
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A redactor for one body streamed through it.
    pub fn stream(self: &Arc<Self>) -> StreamRedactor {
        StreamRedactor {
            redactor: Arc::clone(self),
            held: Vec::new(),
            carry: 0,
            found: 0,
        }
    }

    /// The spans of `text` that hold a key (overlapping keys all reported).
    fn matches(&self, text: &[u8]) -> Vec<(usize, usize)> {
        if !self.any(text) {
            return Vec::new();
        }
        match self.automaton() {
            Some(ac) => ac
                .find_overlapping_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect(),
            None => self
                .finders
                .iter()
                .flat_map(|f| f.find_iter(text).map(|at| (at, at + f.needle().len())))
                .collect(),
        }
    }

    /// Where the longest suffix of `text` that is a proper prefix of some key starts
    /// (`text.len()` when there is none): what must wait for the next chunk.
    fn hold_from(&self, text: &[u8]) -> usize {
        let window = text.len().saturating_sub(self.longest.saturating_sub(1));
        // A held tail is key bytes only: it starts after the last byte no key holds
        // (an SSE chunk's final `\n`, a JSON body's `}`: nothing to check).
        let start = text[window..]
            .iter()
            .rposition(|b| !self.in_key[usize::from(*b)])
            .map_or(window, |i| window + i + 1);
        (start..text.len())
            .find(|&at| {
                let tail = &text[at..];
                self.first[usize::from(tail[0])]
                    && self
                        .keys
                        .iter()
                        .any(|k| k.len() > tail.len() && k.starts_with(tail))
            })
            .unwrap_or(text.len())
    }

    /// Masks every key in `text`; returns how many were found.
    pub fn mask(&self, text: &mut [u8]) -> u64 {
        let found = self.matches(text);
        for &(start, end) in &found {
            text[start..end].fill(MASK);
        }
        found.len() as u64
    }

    /// `text` with every key masked, and how many were found.
    pub fn mask_str(&self, text: String) -> (String, u64) {
        if !self.any(text.as_bytes()) {
            return (text, 0);
        }
        let mut bytes = text.into_bytes();
        let found = self.mask(&mut bytes);
        // A key is whole UTF-8 and `*` is ASCII: the text stays UTF-8.
        (String::from_utf8_lossy(&bytes).into_owned(), found)
    }

    /// Masks keys in header values and drops headers whose name holds one (a name of
    /// `*`s would mean nothing); returns how many were found.
    pub fn mask_headers(&self, headers: &mut HeaderMap) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let mut found = 0;
        let named: Vec<HeaderName> = headers
            .keys()
            .filter(|n| {
                self.lower
                    .iter()
                    .any(|f| f.find(n.as_str().as_bytes()).is_some())
            })
            .cloned()
            .collect();
        for name in named {
            found += headers.get_all(&name).iter().count() as u64;
            headers.remove(&name);
        }
        for value in headers.values_mut() {
            if !self.any(value.as_bytes()) {
                continue;
            }
            let mut bytes = value.as_bytes().to_vec();
            found += self.mask(&mut bytes);
            // Only visible ASCII was replaced by `*`: still a valid value.
            if let Ok(mut masked) = HeaderValue::from_bytes(&bytes) {
                masked.set_sensitive(value.is_sensitive());
                *value = masked;
            }
        }
        found
    }
}

/// Masks keys in one body that arrives in chunks (see the module doc).
pub struct StreamRedactor {
    redactor: Arc<Redactor>,
    /// The unsent tail of the last chunk, as it came: a proper prefix of some key.
    held: Vec<u8>,
    /// Bytes at the start of `held` that belong to a key found already.
    carry: usize,
    /// Keys found and not yet taken by [`take_found`](Self::take_found).
    found: u64,
}

impl StreamRedactor {
    /// The next chunk; returns what may go out now (possibly empty).
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.held.is_empty() {
            return self.scan(chunk);
        }
        let mut text = std::mem::take(&mut self.held);
        text.extend_from_slice(&chunk);
        self.scan(Bytes::from(text))
    }

    /// The end of the body: the held tail, masked where a key was found in it.
    pub fn finish(&mut self) -> Bytes {
        let mut text = std::mem::take(&mut self.held);
        let carry = std::mem::take(&mut self.carry).min(text.len());
        self.found += self.redactor.mask(&mut text);
        text[..carry].fill(MASK);
        Bytes::from(text)
    }

    /// Bytes held back, waiting for the next chunk.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Keys masked since the last call.
    pub fn take_found(&mut self) -> u64 {
        std::mem::take(&mut self.found)
    }

    /// Masks `text` up to the held tail, keeps the tail; a key that starts before the
    /// tail and runs into it is counted now and its rest is masked next time.
    fn scan(&mut self, text: Bytes) -> Bytes {
        let redactor = &*self.redactor;
        let hold = redactor.hold_from(&text);
        let carry = std::mem::take(&mut self.carry);
        let found = redactor.matches(&text);
        if carry == 0 && found.is_empty() {
            if hold < text.len() {
                self.held = text[hold..].to_vec();
            }
            return text.slice(..hold);
        }
        let mut out = text[..hold].to_vec();
        // The rest of a key found last time: masked now, or carried on.
        out[..carry.min(hold)].fill(MASK);
        self.carry = carry.saturating_sub(hold);
        for (start, end) in found {
            // A key starting in the held tail is found again next time.
            if start < hold {
                out[start..end.min(hold)].fill(MASK);
                self.carry = self.carry.max(end.saturating_sub(hold));
                self.found += 1;
            }
        }
        if hold < text.len() {
            self.held = text[hold..].to_vec();
        }
        Bytes::from(out)
    }
}

/// Counts masked keys by the backend whose response held them, and says so in the log
/// once per response (never the key).
pub struct Tally {
    family: Family<BackendLabels, Counter>,
    backend: String,
    /// Where in the response, for the log line.
    place: &'static str,
    logged: bool,
}

impl Tally {
    pub fn new(
        family: &Family<BackendLabels, Counter>,
        backend: &str,
        place: &'static str,
    ) -> Tally {
        Tally {
            family: family.clone(),
            backend: backend.to_owned(),
            place,
            logged: false,
        }
    }

    /// Records `n` masked keys (nothing when 0).
    pub fn add(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.family
            .get_or_create(&BackendLabels {
                backend: self.backend.clone(),
            })
            .inc_by(n);
        if !self.logged {
            self.logged = true;
            tracing::warn!(
                "backend `{}` echoed a backend key {}; masked (celgate_secrets_redacted_total counts each)",
                self.backend,
                self.place
            );
        }
    }
}

/// A response body with every backend key masked, chunk by chunk.
pub struct RedactedBody<B: Body> {
    inner: B,
    /// `None`: passed through untouched (no keys, or a compressed body).
    stream: Option<(StreamRedactor, Tally)>,
    /// What came after the held tail (trailers, or the error that ended the body),
    /// sent once the tail is out.
    queued: Option<Result<Frame<Bytes>, B::Error>>,
    ended: bool,
}

// Nothing is pinned structurally: `inner` is `Unpin`, the rest is plain data.
impl<B: Body + Unpin> Unpin for RedactedBody<B> {}

impl<B: Body<Data = Bytes> + Unpin> RedactedBody<B> {
    /// `inner` masked by `stream`, counted in `tally`; untouched when `stream` is `None`.
    pub fn new(inner: B, stream: Option<(StreamRedactor, Tally)>) -> Self {
        RedactedBody {
            inner,
            stream,
            queued: None,
            ended: false,
        }
    }

    /// The held tail, masked and counted (empty when nothing is held).
    fn flush(&mut self) -> Bytes {
        match &mut self.stream {
            Some((stream, tally)) if stream.held() > 0 => {
                let tail = stream.finish();
                tally.add(stream.take_found());
                tail
            }
            _ => Bytes::new(),
        }
    }

    /// A data chunk from the backend: what of it may go out now.
    fn chunk(&mut self, data: Bytes) -> Bytes {
        let Some((stream, tally)) = &mut self.stream else {
            return data;
        };
        let out = stream.push(data);
        tally.add(stream.take_found());
        if !self.inner.is_end_stream() {
            return out;
        }
        // Over: nothing will follow to complete a held tail.
        let tail = self.flush();
        if tail.is_empty() {
            return out;
        }
        if out.is_empty() {
            return tail;
        }
        let mut whole = Vec::with_capacity(out.len() + tail.len());
        whole.extend_from_slice(&out);
        whole.extend_from_slice(&tail);
        Bytes::from(whole)
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for RedactedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(queued) = this.queued.take() {
                return Poll::Ready(Some(queued));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let next = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            };
            let tail = match next {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.chunk(data);
                        if out.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    Err(trailers) => {
                        this.queued = Some(Ok(trailers));
                        this.flush()
                    }
                },
                Some(Err(e)) => {
                    this.queued = Some(Err(e));
                    this.flush()
                }
                None => {
                    this.ended = true;
                    this.flush()
                }
            };
            if !tail.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(tail))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let held = self.stream.as_ref().is_some_and(|(s, _)| s.held() > 0);
        (self.ended || self.inner.is_end_stream()) && !held && self.queued.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.stream.as_ref().map_or(0, |(s, _)| s.held() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-live-0123456789abcdef";

    fn redactor(keys: &[&str]) -> Arc<Redactor> {
        Arc::new(Redactor::new(keys.iter().copied()))
    }

    /// `text` through a fresh stream redactor cut at `cuts`; what went out chunk by
    /// chunk and how many keys were counted.
    fn through(r: &Arc<Redactor>, text: &[u8], cuts: &[usize]) -> (Vec<Bytes>, u64) {
        let mut stream = r.stream();
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([text.len()].iter()) {
            out.push(stream.push(Bytes::copy_from_slice(&text[from..cut])));
            from = cut;
        }
        out.push(stream.finish());
        let found = stream.take_found();
        (out, found)
    }

    fn joined(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.to_vec()).collect()
    }

    fn masked(text: &str, key: &str) -> Vec<u8> {
        text.replace(key, &"*".repeat(key.len())).into_bytes()
    }

    #[test]
    fn a_key_is_masked_at_every_split_point_and_counted_once() {
        let r = redactor(&[KEY]);
        let text = format!("data: {{\"content\":\"your key is {KEY}, bye\"}}\n\n");
        let want = masked(&text, KEY);
        for a in 0..=text.len() {
            let (chunks, found) = through(&r, text.as_bytes(), &[a]);
            assert_eq!(joined(&chunks), want, "split at {a}");
            assert_eq!(found, 1, "split at {a}");
        }
        // Three pieces: every pair of split points.
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let (chunks, found) = through(&r, text.as_bytes(), &[a, b]);
                assert_eq!(joined(&chunks), want, "split at {a}, {b}");
                assert_eq!(found, 1, "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn byte_by_byte_with_repeated_and_overlapping_keys() {
        // `b` begins with the end of `a`; `c` holds `a`; and the keys repeat.
        let a = "sk-aaaa-bbbb-cccc";
        let b = "cccc-dddd-eeee";
        let c = "x-sk-aaaa-bbbb-cccc-x";
        let r = redactor(&[a, b, c]);
        let text = format!("{a}{a} sk-aaaa-bbbb-cccc-dddd-eeee {c} sk-aaaa-bbbb-ccc.");
        let cuts: Vec<usize> = (1..text.len()).collect();
        let (chunks, found) = through(&r, text.as_bytes(), &cuts);
        // a twice, a and b, c and the a in it.
        assert_eq!(found, 6);
        let out = String::from_utf8(joined(&chunks)).unwrap();
        let want = format!(
            "{}{} {} {} sk-aaaa-bbbb-ccc.",
            "*".repeat(a.len()),
            "*".repeat(a.len()),
            "*".repeat("sk-aaaa-bbbb-cccc-dddd-eeee".len()),
            "*".repeat(c.len()),
        );
        assert_eq!(out, want);
        let (whole, found) = through(&r, text.as_bytes(), &[]);
        assert_eq!(joined(&whole), want.as_bytes());
        assert_eq!(found, 6);
    }

    #[test]
    fn any_chunking_masks_and_counts_like_the_whole_text() {
        // Self-overlapping keys over a four-letter alphabet: many partial matches.
        let keys = ["abcabcab", "bcabcabx", "cabcabcabc", "xxxxxxxx"];
        let r = redactor(&keys);
        let mut rng = crate::test_rng::Rng(0x5eed_1234_abcd_0001);
        for _ in 0..3000 {
            // Random letters and random pieces of keys: many near and partial matches.
            let mut text: Vec<u8> = Vec::new();
            for _ in 0..rng.below(8) {
                let key = keys[rng.below(keys.len())].as_bytes();
                let from = rng.below(key.len());
                text.extend_from_slice(&key[from..from + 1 + rng.below(key.len() - from)]);
                text.extend((0..rng.below(3)).map(|_| b"abcx"[rng.below(4)]));
            }
            let len = text.len();
            let mut want = text.clone();
            let want_found = r.mask(&mut want);
            let mut cuts: Vec<usize> = (0..rng.below(12)).map(|_| rng.below(len + 1)).collect();
            cuts.sort_unstable();
            let (chunks, found) = through(&r, &text, &cuts);
            let text = String::from_utf8_lossy(&text);
            assert_eq!(joined(&chunks), want, "{text} cut at {cuts:?}");
            assert_eq!(found, want_found, "{text} cut at {cuts:?}");
        }
    }

    #[test]
    fn a_normal_chunk_is_passed_as_is_and_nothing_is_held() {
        let r = redactor(&[KEY]);
        let chunk =
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"sk\"}}]}\n\n");
        let mut stream = r.stream();
        let out = stream.push(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr(), "no copy");
        assert_eq!(out.len(), chunk.len());
        assert_eq!(stream.held(), 0);
        // Only a tail that could start a key waits, and only until the next chunk.
        assert_eq!(
            &stream.push(Bytes::from_static(b"hello sk-li"))[..],
            b"hello "
        );
        assert_eq!(stream.held(), 5);
        assert_eq!(&stream.push(Bytes::from_static(b"ke"))[..], b"sk-like");
        assert_eq!(stream.held(), 0);
        assert_eq!(&stream.push(Bytes::from_static(b"sk-"))[..], b"");
        assert_eq!(
            &stream.finish()[..],
            b"sk-",
            "an unfinished prefix is flushed as is"
        );
        assert_eq!(stream.take_found(), 0);
    }

    #[test]
    fn short_keys_are_not_masked_and_no_keys_mean_no_work() {
        let r = redactor(&["short", "1234567"]);
        assert!(r.is_empty());
        let (chunks, found) = through(&r, b"short 1234567", &[3]);
        assert_eq!(joined(&chunks), b"short 1234567");
        assert_eq!(found, 0);
        let r = redactor(&["12345678"]);
        assert_eq!(joined(&through(&r, b"a12345678b", &[4]).0), b"a********b");
    }

    #[test]
    fn headers_are_masked_in_values_and_dropped_by_name() {
        let r = redactor(&["Sk-Mixed-Case-Key"]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-echo",
            HeaderValue::from_static("Bearer Sk-Mixed-Case-Key"),
        );
        headers.insert("x-other", HeaderValue::from_static("sk-mixed-case-key"));
        headers.insert(
            HeaderName::from_static("x-sk-mixed-case-key"),
            HeaderValue::from_static("1"),
        );
        assert_eq!(r.mask_headers(&mut headers), 2);
        assert_eq!(headers["x-echo"], "Bearer *****************");
        assert_eq!(
            headers["x-other"], "sk-mixed-case-key",
            "values: case matters"
        );
        assert!(!headers.contains_key("x-sk-mixed-case-key"));
    }

    #[test]
    fn strings_are_masked_whole() {
        let r = redactor(&[KEY]);
        let (text, found) = r.mask_str(format!("invalid key {KEY} (twice: {KEY})"));
        assert_eq!(found, 2);
        assert!(!text.contains(KEY) && text.contains(&"*".repeat(KEY.len())));
        let (same, found) = r.mask_str("nothing here".into());
        assert_eq!((same.as_str(), found), ("nothing here", 0));
    }

    #[test]
    fn many_keys_are_found_by_the_automaton() {
        let keys: Vec<String> = (0..FINDER_KEYS + 8)
            .map(|i| format!("sk-many-{i:04}"))
            .collect();
        let r = Arc::new(Redactor::new(keys.iter().map(String::as_str)));
        assert!(r.keys.len() > FINDER_KEYS);
        let text = format!("a {} b {} c", keys[0], keys[FINDER_KEYS + 7]);
        let (chunks, found) = through(&r, text.as_bytes(), &[5, 17]);
        assert_eq!(joined(&chunks), b"a ************ b ************ c");
        assert_eq!(found, 2);
    }

    #[test]
    fn a_request_adds_its_own_key_without_building_the_automaton_first() {
        let generation = redactor(&[KEY]);
        let request = Arc::new(generation.with(["sk-client-own-key", "short"]));
        assert_eq!(request.keys.len(), 2);
        let (chunks, found) = through(&request, b"nothing to see", &[4]);
        assert_eq!(joined(&chunks), b"nothing to see");
        assert!(request.exact.get().is_none(), "no key seen, no automaton");
        let text = format!("{KEY} sk-client-own-key");
        let (chunks, found_both) = through(&request, text.as_bytes(), &[9]);
        let want = format!("{} {}", "*".repeat(KEY.len()), "*".repeat(17));
        assert_eq!(joined(&chunks), want.as_bytes());
        assert_eq!((found, found_both), (0, 2));
    }

    #[test]
    fn the_debug_form_names_no_key() {
        assert_eq!(format!("{:?}", redactor(&[KEY])), "Redactor(1 keys)");
    }
}
