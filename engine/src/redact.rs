//! What a message may show of a value that may be a secret.
//!
//! Config errors, logs and the admin page name keys and positions; the values they
//! are about can be API keys pasted in the wrong place, a password in a URL, or the
//! first line of a secret file that a config path pointed at by mistake. These
//! helpers decide how much of such a value is printed: URL userinfo never (it is
//! replaced by `***`), an unknown name only as a 3-character prefix (not enough of
//! any key to matter, enough to find the line), a name in full only when it looks
//! like a name and not like a token.

/// How many characters of an unknown name an error may show.
pub const PREFIX_CHARS: usize = 3;

/// The first [`PREFIX_CHARS`] characters of `text`, with `…` when there is more.
pub fn prefix(text: &str) -> String {
    let mut chars = text.chars();
    let shown: String = chars.by_ref().take(PREFIX_CHARS).collect();
    if chars.next().is_some() {
        format!("{shown}…")
    } else {
        shown
    }
}

/// `text` if it reads as a name (an attribute, header or config key), else its
/// [`prefix`]. A name is at most 64 characters of letters, digits and `._-/*`, with
/// no run of 16 letters and digits and no run of 8 that mixes letters and digits:
/// API keys, hashes and base64 tokens are made of such runs, names are not.
pub fn name_or_prefix(text: &str) -> String {
    if looks_like_a_name(text) {
        text.to_owned()
    } else {
        prefix(text)
    }
}

fn looks_like_a_name(text: &str) -> bool {
    if text.is_empty()
        || text.len() > 64
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/*".contains(c))
    {
        return false;
    }
    text.split(|c: char| !c.is_ascii_alphanumeric()).all(|run| {
        let mixed =
            run.chars().any(|c| c.is_ascii_digit()) && run.chars().any(|c| c.is_ascii_alphabetic());
        run.len() < 16 && !(mixed && run.len() >= 8)
    })
}

/// Whether `url` carries `user:password@` (or just `user@`): an `@` before the
/// query or fragment. Stricter than the URL grammar (whose authority ends at the
/// first `/`), so a password containing `/` is caught too; a base URL whose path
/// holds an `@` is refused with it, which no LLM API needs.
pub fn has_userinfo(url: &str) -> bool {
    mask_url(url) != url
}

/// `url` with its userinfo replaced by `***`: `https://***@host/v1`. Everything
/// between `scheme://` and the last `@` before a query or fragment goes, which also
/// covers a password containing `/`. Works on text that is no valid URL.
pub fn mask_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_names() {
        assert_eq!(prefix("sk-live-abcdef1234567890"), "sk-…");
        assert_eq!(prefix("abc"), "abc");
        assert_eq!(prefix("äöüß"), "äöü…");
        for name in [
            "gen_ai.request.model",
            "llm.input_messages.0.message.role",
            "Authorization",
            "x-api-key",
            "llm.tools.*",
            "openinference.project.name",
        ] {
            assert_eq!(name_or_prefix(name), name);
        }
        for token in [
            "sk-live-abcdef1234567890",
            "ghp_abcdefghijklmnopqrstuvwxyz",
            "root:$6$salt$hash:19000",
            "a1b2c3d4e5",
            "Bearer abc",
        ] {
            assert_eq!(name_or_prefix(token), prefix(token), "{token}");
        }
    }

    #[test]
    fn userinfo_is_found_and_masked() {
        let cases = [
            ("https://u:p@host/v1", "https://***@host/v1"),
            ("http://u@host:4317", "http://***@host:4317"),
            ("http://u:p@ss@host", "http://***@host"),
            ("u:p@host:4317", "***@host:4317"),
            ("https://host/v1?a=b@c", "https://host/v1?a=b@c"),
            ("stdout", "stdout"),
            ("", ""),
        ];
        for (url, masked) in cases {
            assert_eq!(mask_url(url), masked, "{url}");
            assert_eq!(has_userinfo(url), url != masked, "{url}");
        }
        // Not userinfo by the URL grammar (the authority would be `u:12`), but a
        // password all the same.
        assert!(has_userinfo("https://u:12/ss@host/v1"));
        assert_eq!(mask_url("https://u:12/ss@host/v1"), "https://***@host/v1");
    }
}
