//! Header rules the phases share: which headers the span may see (never a
//! credential), and which never cross a proxy (hop-by-hop ones, RFC 9110 §7.6.1).

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use http::header::{self, HeaderMap, HeaderName};

/// Words that make a header name a credential's, in any case.
const SECRET_WORDS: [&str; 7] = [
    "auth",
    "key",
    "token",
    "secret",
    "password",
    "credential",
    "signature",
];

/// Header names whose values must never reach a span: credentials of any kind.
///
/// One pass of an automaton over the name, case-insensitive, allocating nothing
/// (lower-casing the name and searching it once per word was ~1.5k instructions
/// per header, paid for every header of every traced call).
pub fn is_secret_header(name: &str) -> bool {
    static WORDS: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(SECRET_WORDS)
            .ok()
    });
    name.eq_ignore_ascii_case("cookie")
        || name.eq_ignore_ascii_case("set-cookie")
        // Without the automaton (it cannot fail to build), every header is secret.
        || WORDS.as_ref().is_none_or(|words| words.is_match(name))
}

/// Headers as the CEL context sees them: lower-case names, secrets left out.
pub fn visible_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !is_secret_header(name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// Headers never forwarded: hop-by-hop ones (RFC 9110 §7.6.1) and those the
/// proxy sets itself.
///
/// A message framed by `Transfer-Encoding` loses its `Content-Length` too (RFC 9112
/// §6.3: the chunked framing wins, and a proxy must not forward the length): the
/// body is re-framed by hyper from what actually arrives, and a stale length would
/// cut it short. Used for requests and responses alike.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    // Most messages carry none of these: find those present in one pass over the
    // names rather than hashing each of the eight for a removal.
    let mut present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name))
        .cloned()
        .collect();
    present.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
    );
    for name in present {
        headers.remove(name);
    }
}

/// The hop-by-hop headers of RFC 9110 §7.6.1 (`Keep-Alive` among them).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_headers_are_recognised() {
        for h in [
            "authorization",
            "Authorization",
            "x-api-key",
            "api-key",
            "cookie",
            "x-goog-api-key",
            "proxy-authorization",
            "x-amz-security-token",
        ] {
            assert!(is_secret_header(h), "{h}");
        }
        for h in ["content-type", "x-session-id", "user-agent", "traceparent"] {
            assert!(!is_secret_header(h), "{h}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "10".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type"]);
    }
}
