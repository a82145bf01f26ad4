//! Client keys: only the clients listed in a mounted keys file may spend the
//! backends' keys.
//!
//! With `auth.clientKeys` on, every proxied request must present a key (in
//! `Authorization: Bearer`, or the provider SDKs' own `x-api-key`, `api-key` or
//! `x-goog-api-key`). The key file lists clients by the SHA-256 of their key, never
//! the key itself, so the Secret it is mounted from holds nothing an attacker can
//! replay. A presented key is hashed and compared, in constant time, with every
//! entry (no early exit), so response timing does not say which entry, or how
//! much of one, matched. The file is read with the config, as part of a generation:
//! a change to it is a reload, and a broken file keeps the previous keys serving.
//!
//! Error messages name the file, a position and the client's name, never a value
//! from the file (a misplaced raw key would otherwise reach the log).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use celgate_engine::exchange::Client;
use http::HeaderMap;
use serde::Deserialize;
use serde_saphyr::Spanned;
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// The headers a client key may come in, after `Authorization: Bearer`: the
/// Anthropic, Azure OpenAI and Gemini SDKs' own.
pub const KEY_HEADERS: [&str; 3] = ["x-api-key", "api-key", "x-goog-api-key"];

/// Longest client name: it is a metrics label and an access-log field.
const MAX_NAME_LEN: usize = 128;

/// Why a keys file cannot be used. No variant carries a value read from the file
/// other than a client's name.
#[derive(Debug, thiserror::Error)]
pub enum ClientKeysError {
    #[error("cannot read the client keys file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {what}")]
    Syntax {
        path: PathBuf,
        line: u32,
        column: u32,
        what: String,
    },
    #[error("{path}:{line}:{column}: client `{name}`: {problem}")]
    Entry {
        path: PathBuf,
        line: u32,
        column: u32,
        name: String,
        problem: &'static str,
    },
    #[error(
        "{path}:{line}:{column}: a client name must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ - @ : /"
    )]
    BadName {
        path: PathBuf,
        line: u32,
        column: u32,
    },
    #[error(
        "{path}:{line}:{column}: clients `{first}` and `{second}` have the same sha256, i.e. the same key; give each client its own key"
    )]
    DuplicateKey {
        path: PathBuf,
        line: u32,
        column: u32,
        first: String,
        second: String,
    },
}

/// The keys file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    clients: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    sha256: String,
    team: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

struct Entry {
    digest: [u8; 32],
    client: Arc<Client>,
}

/// The clients of one generation.
pub struct ClientKeys {
    path: PathBuf,
    entries: Vec<Entry>,
}

/// What a request's key says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Client keys are off: everyone is let in, as no one is known.
    Open,
    /// The key of this client.
    Client(Arc<Client>),
    /// No key in any of the headers a key may come in.
    Missing,
    /// A key that is no client's.
    Unknown,
}

impl Admission {
    /// Whether the request may go on.
    pub fn admitted(&self) -> bool {
        matches!(self, Admission::Open | Admission::Client(_))
    }

    /// The authenticated client, if any.
    pub fn client(&self) -> Option<&Arc<Client>> {
        match self {
            Admission::Client(c) => Some(c),
            _ => None,
        }
    }
}

/// What a client without a valid key is told: OpenAI's 401 for a bad key (type
/// `invalid_request_error`, code `invalid_api_key`, or null when no key was sent,
/// as OpenAI answers) and an RFC 6750 challenge. Nothing of the key is echoed.
pub struct Unauthenticated {
    pub message: &'static str,
    /// OpenAI's error `code`: none for a missing key, `invalid_api_key` for an
    /// unknown one.
    pub code: Option<&'static str>,
    /// The `WWW-Authenticate` value.
    pub challenge: &'static str,
}

impl Unauthenticated {
    pub fn of(admission: &Admission) -> Unauthenticated {
        let (message, code, challenge) = if *admission == Admission::Missing {
            (
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). This gateway requires a client key (auth.clientKeys).",
                None,
                "Bearer realm=\"celgate\"",
            )
        } else {
            (
                "Incorrect API key provided. This gateway accepts only the client keys listed in its keys file (auth.clientKeys).",
                Some("invalid_api_key"),
                "Bearer realm=\"celgate\", error=\"invalid_token\"",
            )
        };
        Unauthenticated {
            message,
            code,
            challenge,
        }
    }
}

/// Checks `headers` against `keys` (`None`: client keys are off).
pub fn admit(keys: Option<&ClientKeys>, headers: &HeaderMap) -> Admission {
    let Some(keys) = keys else {
        return Admission::Open;
    };
    match presented_key(headers) {
        None => Admission::Missing,
        Some(key) => match keys.find(key) {
            Some(client) => Admission::Client(Arc::clone(client)),
            None => Admission::Unknown,
        },
    }
}

/// The key a request presents: the token of `Authorization: Bearer`, else the first
/// of [`KEY_HEADERS`] present. Empty values count as absent.
pub fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()));
    bearer
        .into_iter()
        .chain(
            KEY_HEADERS
                .iter()
                .filter_map(|h| headers.get(*h).map(|v| v.as_bytes().trim_ascii())),
        )
        .find(|k| !k.is_empty())
}

/// `Bearer TOKEN` (scheme case-insensitive, RFC 9110 §11.1) -> `TOKEN`.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    Some(rest.trim_ascii())
}

impl ClientKeys {
    /// Reads and checks the keys file at `path`.
    pub fn load(path: &Path) -> Result<ClientKeys, ClientKeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientKeysError::Read {
            path: path.to_owned(),
            source,
        })?;
        ClientKeys::parse(&text, path)
    }

    /// Checks `text` (the keys file at `path`, YAML or JSON).
    pub fn parse(text: &str, path: &Path) -> Result<ClientKeys, ClientKeysError> {
        let file: KeysFile = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map_or((1, 1), |l| (l.line() as u32, l.column() as u32));
            ClientKeysError::Syntax {
                path: path.to_owned(),
                line,
                column,
                what: describe_syntax_error(&e),
            }
        })?;
        let mut entries = Vec::with_capacity(file.clients.len());
        for spanned in file.clients {
            let at = spanned.referenced;
            let (line, column) = (at.line() as u32, at.column() as u32);
            let raw = spanned.value;
            if !valid_name(&raw.name) {
                return Err(ClientKeysError::BadName {
                    path: path.to_owned(),
                    line,
                    column,
                });
            }
            let Some(digest) = parse_digest(&raw.sha256) else {
                return Err(ClientKeysError::Entry {
                    path: path.to_owned(),
                    line,
                    column,
                    name: raw.name,
                    problem: "sha256 must be 64 hex digits: the SHA-256 of the key, as `printf %s \"$KEY\" | sha256sum` prints it (never the key itself)",
                });
            };
            if let Some(first) = entries.iter().find(|e: &&Entry| e.digest == digest) {
                return Err(ClientKeysError::DuplicateKey {
                    path: path.to_owned(),
                    line,
                    column,
                    first: first.client.name.clone(),
                    second: raw.name,
                });
            }
            entries.push(Entry {
                digest,
                client: Arc::new(Client {
                    name: raw.name,
                    team: raw.team,
                    metadata: raw.metadata.into_iter().collect(),
                }),
            });
        }
        Ok(ClientKeys {
            path: path.to_owned(),
            entries,
        })
    }

    /// The client whose key is `key`. Every entry is compared, in constant time,
    /// whatever matches: the time taken depends only on the number of entries.
    pub fn find(&self, key: &[u8]) -> Option<&Arc<Client>> {
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        let digest = digest.as_ref();
        let mut matched = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let eq = entry.digest[..].ct_eq(digest);
            index = u64::conditional_select(&index, &(i as u64), eq);
            matched |= eq;
        }
        if bool::from(matched) {
            self.entries.get(index as usize).map(|e| &e.client)
        } else {
            None
        }
    }

    /// The keys file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The clients' names, each once, in file order (a client may have several
    /// keys, e.g. while one is rotated).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !names.contains(&e.client.name.as_str()) {
                names.push(&e.client.name);
            }
        }
        names
    }

    /// How many keys the file lists.
    pub fn keys(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeys")
            .field("path", &self.path)
            .field("clients", &self.names())
            .finish()
    }
}

/// Logs whether client keys are on, and for how many clients.
pub fn describe(keys: Option<&ClientKeys>) {
    match keys {
        Some(k) if k.is_empty() => tracing::warn!(
            "client keys on, but {} lists no client: every proxied request is refused",
            k.path().display()
        ),
        Some(k) => tracing::info!(
            "client keys on: {} clients, {} keys, from {}",
            k.names().len(),
            k.keys(),
            k.path().display()
        ),
        None => {}
    }
}

/// Names are label values and log fields: a small, printable alphabet.
fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_@:/".contains(&b))
}

/// 64 hex digits (either case) -> 32 bytes.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// What is wrong, in words that quote nothing from the file: serde's messages
/// quote the offending value (`invalid type: string "sk-..."`) or key.
fn describe_syntax_error(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    if let Some(rest) = first.strip_prefix("missing field `") {
        // The field name is celgate's own.
        let field = rest.split('`').next().unwrap_or_default();
        if ["clients", "name", "sha256"].contains(&field) {
            return format!(
                "missing `{field}`: the file is `clients:`, a list of entries with name, sha256 and optional team and metadata"
            );
        }
    }
    let what = if first.starts_with("unknown field") {
        "unknown key: the file holds only `clients:`, whose entries take name, sha256, team and metadata"
    } else if first.starts_with("invalid type")
        || first.starts_with("invalid value")
        || first.starts_with("expected sequence")
        || first.starts_with("expected mapping")
    {
        "a value of the wrong type: `clients` is a list; name, sha256 and team are strings; metadata is a map of strings"
    } else if first.starts_with("unexpected end of input")
        && e.location().is_none_or(|l| l.line() <= 1)
    {
        "the file is empty: it should hold `clients:`, a list of entries with name and sha256"
    } else if first.contains("duplicate") {
        "a key appears twice in one mapping"
    } else {
        "not a valid YAML or JSON client keys file"
    };
    what.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn sha(key: &str) -> String {
        ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn keys(text: &str) -> Result<ClientKeys, String> {
        ClientKeys::parse(text, Path::new("clients.yaml")).map_err(|e| e.to_string())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn yaml_and_json_files_load() {
        let yaml = format!(
            "clients:\n  - name: ci\n    sha256: {}\n    team: ml\n    metadata: {{tenant: acme}}\n  - name: app\n    sha256: {}\n",
            sha("k1"),
            sha("k2").to_uppercase()
        );
        let k = keys(&yaml).unwrap();
        assert_eq!(k.names(), ["ci", "app"]);
        let ci = k.find(b"k1").unwrap();
        assert_eq!(ci.team.as_deref(), Some("ml"));
        assert_eq!(ci.metadata, [("tenant".to_owned(), "acme".to_owned())]);
        assert_eq!(k.find(b"k2").unwrap().name, "app");
        assert!(k.find(b"k3").is_none() && k.find(b"").is_none());

        let json = format!(
            r#"{{"clients": [{{"name": "ci", "sha256": "{}", "metadata": {{"tenant": "acme"}}}}]}}"#,
            sha("k1")
        );
        assert_eq!(keys(&json).unwrap().find(b"k1").unwrap().name, "ci");
        assert!(keys("clients: []\n").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_place_and_never_a_value() {
        let secret = "sk-live-0123456789abcdef";
        let cases = [
            // The raw key where its hash belongs.
            format!("clients:\n  - name: ci\n    sha256: {secret}\n"),
            // The raw key under an unknown key, and as an unknown key.
            format!("clients:\n  - name: ci\n    key: {secret}\n"),
            format!("clients:\n  - {secret}: x\n"),
            // A key where a list belongs, a number where a string belongs.
            format!("clients: {secret}\n"),
            format!(
                "clients:\n  - name: ci\n    sha256: {}\n    metadata: [{secret}]\n",
                sha("a")
            ),
            format!("{secret}\n"),
            format!("clients:\n  - name: ci\n    sha256: \"{secret}\n"),
            String::new(),
        ];
        for text in &cases {
            let e = keys(text)
                .err()
                .unwrap_or_else(|| panic!("accepted {text:?}"));
            assert!(e.starts_with("clients.yaml:"), "{e}");
            assert!(!e.contains("sk-live") && !e.contains("0123456789"), "{e}");
        }
        let e = keys(&cases[0]).unwrap_err();
        assert!(
            e.starts_with("clients.yaml:2:5: client `ci`: sha256 must be"),
            "{e}"
        );
    }

    #[test]
    fn keys_are_unique_and_names_are_plain() {
        let two = |a: &str, ka: &str, b: &str, kb: &str| {
            keys(&format!(
                "clients:\n  - name: {a}\n    sha256: {}\n  - name: {b}\n    sha256: {}\n",
                sha(ka),
                sha(kb)
            ))
        };
        assert!(two("a", "1", "b", "2").is_ok());
        // One client, two keys (a rotation in progress).
        let rotating = two("a", "1", "a", "2").unwrap();
        assert_eq!(rotating.names(), ["a"]);
        assert_eq!(rotating.keys(), 2);
        assert_eq!(rotating.find(b"1").unwrap().name, "a");
        assert_eq!(rotating.find(b"2").unwrap().name, "a");
        let e = two("a", "1", "b", "1").unwrap_err();
        assert!(
            e.contains("clients `a` and `b` have the same sha256"),
            "{e}"
        );
        assert!(!e.contains(&sha("1")), "{e}");
        for bad in ["\"\"", "'a b'", "'a\"b'", "'x=y'", &"n".repeat(129)] {
            let e = two(bad, "1", "b", "2").unwrap_err();
            assert!(e.contains("a client name must be"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_key_comes_from_bearer_or_the_sdks_own_headers() {
        let key = |pairs: &[(&str, &str)]| {
            presented_key(&headers(pairs)).map(|k| String::from_utf8_lossy(k).into_owned())
        };
        assert_eq!(
            key(&[("authorization", "Bearer sk-1")]).as_deref(),
            Some("sk-1")
        );
        assert_eq!(
            key(&[("authorization", "bearer   sk-1 ")]).as_deref(),
            Some("sk-1")
        );
        assert_eq!(key(&[("x-api-key", "sk-2")]).as_deref(), Some("sk-2"));
        assert_eq!(key(&[("api-key", "sk-3")]).as_deref(), Some("sk-3"));
        assert_eq!(key(&[("x-goog-api-key", "sk-4")]).as_deref(), Some("sk-4"));
        // Bearer first; a non-Bearer or empty Authorization does not hide the others.
        assert_eq!(
            key(&[("x-api-key", "sk-2"), ("authorization", "Bearer sk-1")]).as_deref(),
            Some("sk-1")
        );
        assert_eq!(
            key(&[("authorization", "Basic dTpw"), ("x-api-key", "sk-2")]).as_deref(),
            Some("sk-2")
        );
        assert_eq!(
            key(&[("authorization", "Bearer "), ("api-key", "sk-3")]).as_deref(),
            Some("sk-3")
        );
        for missing in [
            &[][..],
            &[("authorization", "Bearer")],
            &[("authorization", "Bearersk-1")],
            &[("authorization", "Basic dTpw")],
            &[("x-api-key", "  ")],
        ] {
            assert_eq!(key(missing), None, "{missing:?}");
        }
    }

    #[test]
    fn admission_says_who_or_why_not() {
        let k = keys(&format!(
            "clients:\n  - name: ci\n    sha256: {}\n",
            sha("sk-1")
        ))
        .unwrap();
        assert_eq!(admit(None, &headers(&[])), Admission::Open);
        assert_eq!(admit(Some(&k), &headers(&[])), Admission::Missing);
        assert_eq!(
            admit(Some(&k), &headers(&[("x-api-key", "sk-2")])),
            Admission::Unknown
        );
        let ok = admit(Some(&k), &headers(&[("x-api-key", "sk-1")]));
        assert_eq!(ok.client().map(|c| c.name.as_str()), Some("ci"));
        assert!(ok.admitted() && Admission::Open.admitted() && !Admission::Unknown.admitted());
        assert!(!format!("{k:?}").contains(&sha("sk-1")));
    }
}
