//! Session: which agent session (and end user) a call belongs to, from its headers.
//!
//! An agent run is many LLM calls, and trace backends group them by session. The
//! clients say which session a call is part of, each in its own place: Claude Code
//! in the body (`metadata.user_id`, read by the Anthropic protocol), Codex in its
//! `session-id` header, the OpenAI Agents SDK and others in `x-session-id`. What a
//! protocol found in the body wins; the headers fill in what it did not. The values
//! are client-chosen: cut to a label's length, like every other client-chosen label.

use celgate_engine::attributes::cut_str;
use celgate_engine::exchange::Exchange;
use http::HeaderMap;

/// Headers that name the session, in the order they are tried.
pub const SESSION_HEADERS: [&str; 5] = [
    "x-session-id",
    "session-id",
    "session_id",
    "x-claude-code-session-id",
    "thread-id",
];

/// Headers that name the end user, in the order they are tried.
pub const USER_HEADERS: [&str; 1] = ["x-user-id"];

/// The longest session or user id kept, in bytes.
const MAX_ID_BYTES: usize = 256;

/// Fills `exchange.session_id` and `user_id` from `headers` where the body named none.
pub fn from_headers(headers: &HeaderMap, exchange: &mut Exchange) {
    if exchange.session_id.is_none() {
        exchange.session_id = first_of(headers, &SESSION_HEADERS);
    }
    if exchange.user_id.is_none() {
        exchange.user_id = first_of(headers, &USER_HEADERS);
    }
}

/// The first of `names` present with a non-empty text value, cut to
/// [`MAX_ID_BYTES`].
fn first_of(headers: &HeaderMap, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| {
        let value = headers.get(*name)?.to_str().ok()?.trim();
        (!value.is_empty()).then(|| cut_str(value, MAX_ID_BYTES).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn headers_fill_in_what_the_body_did_not_say() {
        let mut ex = Exchange::default();
        from_headers(
            &headers(&[
                ("session-id", "codex-1"),
                ("thread-id", "t"),
                ("x-user-id", "u"),
            ]),
            &mut ex,
        );
        assert_eq!(ex.session_id.as_deref(), Some("codex-1"));
        assert_eq!(ex.user_id.as_deref(), Some("u"));

        let mut ex = Exchange {
            session_id: Some("from-body".into()),
            ..Exchange::default()
        };
        from_headers(&headers(&[("x-session-id", "h")]), &mut ex);
        assert_eq!(ex.session_id.as_deref(), Some("from-body"));
    }

    #[test]
    fn empty_values_are_absent_and_long_ones_are_cut() {
        let mut ex = Exchange::default();
        let long = "s".repeat(1000);
        from_headers(
            &headers(&[("x-session-id", " "), ("session-id", &long)]),
            &mut ex,
        );
        assert_eq!(ex.session_id.map(|s| s.len()), Some(MAX_ID_BYTES));
        assert_eq!(ex.user_id, None);
    }
}
