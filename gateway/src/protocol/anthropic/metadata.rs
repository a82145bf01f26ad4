//! The session and end user a Messages request names in `metadata.user_id`.
//!
//! Anthropic's `metadata.user_id` is an opaque string for the end user. Claude Code
//! packs its identity into it: since 2.1.78 a JSON object as a string,
//! `{"device_id": "<hash>", "account_uuid": "<uuid or empty>", "session_id": "<uuid>"}`,
//! before that `user_<hash>_account_<uuid or empty>_session_<uuid>`. Either form
//! names the agent session (`llm.sessionId`) and who runs it (`llm.userId`: the
//! account when there is one, else the device); any other string is the end user as
//! the client says. Values are cut to [`MAX_LABEL_BYTES`]: a client's label, not a
//! document.

use celgate_engine::exchange::Exchange;
use serde_json::{Map, Value};

use super::super::limits::{MAX_LABEL_BYTES, truncate};

/// Sets `ex.session_id` and `ex.user_id` from a request's `metadata` object.
pub(super) fn read(metadata: &Map<String, Value>, ex: &mut Exchange) {
    let Some(Value::String(user_id)) = metadata.get("user_id") else {
        return;
    };
    let keep = |s: Option<&str>| {
        s.filter(|s| !s.is_empty())
            .map(|s| truncate(s.to_owned(), MAX_LABEL_BYTES))
    };
    let json = serde_json::from_str::<Map<String, Value>>(user_id).ok();
    let (session, user) = match &json {
        Some(fields) => from_json(fields),
        None => legacy(user_id).unwrap_or((None, Some(user_id.as_str()))),
    };
    let (session, user) = (keep(session), keep(user));
    if let Some(session) = session {
        ex.session_id = Some(session);
    }
    if let Some(user) = user {
        ex.user_id = Some(user);
    }
}

/// (session, user) of the JSON form: `account_uuid`, else a `user_id`, else
/// `device_id` is the user.
fn from_json(fields: &Map<String, Value>) -> (Option<&str>, Option<&str>) {
    let text = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let user = text("account_uuid")
        .or_else(|| text("user_id"))
        .or_else(|| text("device_id"));
    (text("session_id"), user)
}

/// (session, user) of the older `user_<hash>_account_<uuid>_session_<uuid>` form:
/// the account when it is not empty, else the hash, is the user.
fn legacy(user_id: &str) -> Option<(Option<&str>, Option<&str>)> {
    let rest = user_id.strip_prefix("user_")?;
    let (hash, rest) = rest.split_once("_account_")?;
    let (account, session) = rest.split_once("_session_")?;
    let user = Some(account).filter(|a| !a.is_empty()).unwrap_or(hash);
    Some((Some(session), Some(user)))
}
