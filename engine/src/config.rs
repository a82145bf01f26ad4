//! The `config.yaml` model.
//!
//! The `config.tracing` block is agentgateway's, so ConfigMaps written for it work
//! unchanged; celgate adds `preset`, `resources`, `limits`, `privacy` and the
//! gateway's own top-level keys (`listen`, `admin`, `server`, `auth`, `backends`). Unknown keys are
//! errors (a typo'd key would otherwise be silently ignored), duplicate keys too.
//! The JSON Schema in `schema/config.schema.json` is generated from these types.

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;

/// A position in the YAML source (1-based).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl From<serde_saphyr::Location> for Pos {
    fn from(l: serde_saphyr::Location) -> Self {
        Pos {
            line: l.line() as u32,
            column: l.column() as u32,
        }
    }
}

/// The whole file. A file holding only the `config:` block (as in the agentgateway
/// docs) is valid.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "celgate config.yaml")]
pub struct ConfigFile {
    /// agentgateway-compatible settings.
    #[serde(default)]
    pub config: ConfigBlock,
    /// Address the proxy listens on. Default `0.0.0.0:8080`. Changing it needs a restart.
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
    /// Address of the admin endpoints (healthz, readyz, metrics, config).
    /// Default `127.0.0.1:9901`.
    #[schemars(with = "Option<String>")]
    pub admin: Option<Spanned<String>>,
    /// Request limits, timeouts and the access log.
    #[serde(default)]
    pub server: Server,
    /// Who may use the gateway. Absent: anyone who reaches it (as before).
    #[serde(default)]
    pub auth: Auth,
    /// Upstream LLM backends, matched by model in order.
    #[serde(default)]
    #[schemars(with = "Vec<Backend>")]
    pub backends: Vec<Spanned<Backend>>,
    /// Model prices for `llm.cost`: `default` (the table shipped in
    /// `pricing/default.yaml`), or a list of entries, first match wins, where the
    /// item `default` stands for the shipped table. Absent: `llm.cost` is null.
    pub pricing: Option<Pricing>,
}

impl ConfigFile {
    /// The proxy's address, or its default.
    pub fn listen(&self) -> &str {
        self.listen
            .as_ref()
            .map_or("0.0.0.0:8080", |s| s.value.as_str())
    }

    /// The admin endpoints' address, or its default.
    pub fn admin(&self) -> &str {
        self.admin
            .as_ref()
            .map_or("127.0.0.1:9901", |s| s.value.as_str())
    }
}

/// `server:` — how the proxy treats requests.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Server {
    /// Largest request body accepted, in bytes (default 10 MiB); larger gets a 413.
    pub max_body_bytes: Option<u64>,
    /// Deepest JSON nesting accepted in a request body (default 64); deeper gets a 400.
    pub max_json_depth: Option<u32>,
    /// How long in-flight requests (streams included) may run on after SIGTERM
    /// (default `30s`).
    pub shutdown_timeout: Option<DurationText>,
    /// Longest a client may take to send a request's headers, and the whole body of
    /// an LLM call (default `30s`); a slower one gets a 408 (headers: the connection
    /// is closed). A connection, HTTP/1 or HTTP/2, with no request in flight for this
    /// long is closed too.
    pub request_timeout: Option<DurationText>,
    /// Most client connections open at once (default 10000, or fewer when the
    /// open-file limit would not hold that many with room for upstream sockets); one
    /// more is closed at once, unanswered.
    pub max_connections: Option<std::num::NonZeroU32>,
    /// One line per request on stdout.
    #[serde(default)]
    pub access_log: AccessLog,
}

/// `auth:` — client authentication.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth {
    /// Require a client key on every proxied request (`Authorization: Bearer`,
    /// `x-api-key`, `api-key` or `x-goog-api-key`), checked against the SHA-256
    /// hashes in a mounted file. Off when absent.
    pub client_keys: Option<ClientKeysRef>,
}

/// `auth.clientKeys`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientKeysRef {
    /// Path of the keys file (YAML or JSON: `clients:` entries of `name`, `sha256`,
    /// optional `team` and `metadata`), typically mounted from a Secret. A relative
    /// path is relative to the directory of config.yaml. Watched and reloaded like
    /// the config.
    pub file: String,
}

/// `server.accessLog`.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLog {
    /// `text` (default), `json`, or `off`.
    pub format: Option<AccessLogFormat>,
}

/// How access-log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// `key=value` pairs, as agentgateway prints them.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
    /// No access log.
    Off,
}

/// A duration written as `500ms`, `30s`, `5m` or `1h` (a bare number means seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(with = "DurationSchema")]
pub struct DurationText(pub std::time::Duration);

/// Schema stand-in for [`DurationText`].
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum DurationSchema {
    /// Seconds.
    Seconds(u64),
    /// `500ms`, `30s`, `5m`, `1h`.
    Text(#[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))] String),
}

impl DurationText {
    /// Parses `500ms`, `30s`, `5m`, `1h` or a bare number of seconds.
    pub fn parse(text: &str) -> Option<DurationText> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let ms = match unit.trim() {
            "ms" => n,
            "" | "s" => n.checked_mul(1_000)?,
            "m" => n.checked_mul(60_000)?,
            "h" => n.checked_mul(3_600_000)?,
            _ => return None,
        };
        Some(DurationText(std::time::Duration::from_millis(ms)))
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `500ms`, `30s`, `5m` or `1h`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
                Ok(DurationText(std::time::Duration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                // The text is not echoed: it may be anything, a key included.
                DurationText::parse(v).ok_or_else(|| {
                    E::custom(
                        "invalid duration: write a whole number with ms, s, m or h, e.g. `30s`",
                    )
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The `config:` block.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigBlock {
    /// Tracing: where spans go and which attributes they carry.
    pub tracing: Option<Tracing>,
}

/// The `config.tracing` block.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tracing {
    /// A built-in attribute set for one backend. `fields.add` entries override
    /// the preset's keys of the same name.
    pub preset: Option<PresetName>,
    /// OTLP collector endpoint, e.g. `http://phoenix:4317`. Falls back to
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    /// `stdout` prints spans to the console instead. No `user:password@`: send
    /// credentials as `headers`.
    #[schemars(with = "Option<String>")]
    pub otlp_endpoint: Option<Spanned<String>>,
    /// `grpc` (default) or `http` (OTLP/HTTP protobuf).
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Headers sent with every export; values may reference env vars as `${NAME}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `true`/`false`, a ratio in 0..1, or a CEL expression over the request.
    #[schemars(with = "Option<Sampling>")]
    pub random_sampling: Option<Spanned<Sampling>>,
    /// Honour the sampled flag of an incoming `traceparent`: `true`/`false`, or a
    /// CEL expression.
    #[schemars(with = "Option<Sampling>")]
    pub client_sampling: Option<Spanned<Sampling>>,
    /// Resource attributes: name -> CEL expression, evaluated once per config load.
    #[serde(default)]
    pub resources: Fields,
    /// Span attributes.
    #[serde(default)]
    pub fields: FieldsBlock,
    /// Caps on attributes, applied last; values are truncated rather than dropped.
    #[serde(default)]
    pub limits: Limits,
    /// Keep prompt or completion text out of every attribute.
    #[serde(default)]
    pub privacy: Privacy,
}

/// The built-in presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PresetName {
    Jaeger,
    Langfuse,
    Phoenix,
    Openllmetry,
    /// OpenLLMetry's older indexed `gen_ai.prompt.{i}.*` form, for backends that
    /// read only that.
    #[serde(rename = "openllmetry-indexed")]
    OpenllmetryIndexed,
}

impl PresetName {
    pub const ALL: [PresetName; 5] = [
        PresetName::Jaeger,
        PresetName::Langfuse,
        PresetName::Phoenix,
        PresetName::Openllmetry,
        PresetName::OpenllmetryIndexed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PresetName::Jaeger => "jaeger",
            PresetName::Langfuse => "langfuse",
            PresetName::Phoenix => "phoenix",
            PresetName::Openllmetry => "openllmetry",
            PresetName::OpenllmetryIndexed => "openllmetry-indexed",
        }
    }

    pub fn parse(name: &str) -> Option<PresetName> {
        PresetName::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`/v1/traces`). `http/protobuf`, the
    /// spelling of `OTEL_EXPORTER_OTLP_PROTOCOL`, is accepted too.
    #[serde(alias = "http/protobuf")]
    Http,
}

/// A sampling decision: fixed, a ratio, or a CEL expression yielding a bool.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Sampling {
    Bool(bool),
    Ratio(f64),
    Expression(String),
}

/// `fields:` — what to add and what to remove.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldsBlock {
    /// Attribute name -> CEL expression, evaluated per request, in order. The key
    /// `span.name` sets the span name, `span.kind` its kind and `span.status` its
    /// status (`ok`, `error`, `unset`; a failed call is `error` regardless).
    #[serde(default)]
    pub add: Fields,
    /// Attribute names (or prefixes ending in `.*`) to drop from the result.
    #[serde(default)]
    pub remove: Vec<String>,
}

impl Backend {
    /// Whether this backend serves `model`: an exact name, or a pattern where `*`
    /// matches any run of characters (`gpt-4o*`, `*-mini`). No list means any model.
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| wildcard_match(p, model))
    }
}

/// `*`-only glob match, the form model lists use.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all: exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `pricing:` — `default`, or a list of [`PricingItem`]s.
#[derive(Clone, Debug, PartialEq)]
pub enum Pricing {
    /// The shipped table, `pricing/default.yaml`.
    Default,
    /// These entries, in order.
    Entries(Vec<Spanned<PricingItem>>),
}

/// One item of a `pricing:` list.
#[derive(Clone, Debug, PartialEq)]
pub enum PricingItem {
    /// `default`: the shipped table's entries, here.
    Default,
    Price(PriceEntry),
}

/// The prices of the models a pattern matches, in USD per million tokens.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PriceEntry {
    /// An exact model name or a `*` pattern (`gpt-4o-2024-*`), matched against the
    /// model the upstream reported, else the one asked for.
    pub model: String,
    /// Input tokens that are neither read from nor written to a prompt cache.
    pub input: f64,
    /// Input tokens read from the prompt cache (default: `input`).
    pub cached_input: Option<f64>,
    /// Input tokens written to the prompt cache (default: `input`).
    pub cache_write: Option<f64>,
    /// Output tokens (`0` for an embedding model).
    pub output: f64,
    /// Output tokens spent on reasoning (default: `output`).
    pub reasoning: Option<f64>,
}

const PRICING_EXPECTED: &str =
    "`default`, or a list of price entries (`{model, input, output, ...}`) and `default`";

impl<'de> Deserialize<'de> for Pricing {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pricing;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(PRICING_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Pricing, E> {
                match v {
                    "default" => Ok(Pricing::Default),
                    _ => Err(E::custom(format!("pricing must be {PRICING_EXPECTED}"))),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Pricing, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<PricingItem>>()? {
                    items.push(item);
                }
                Ok(Pricing::Entries(items))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for PricingItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PricingItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a price entry `{model, input, output, ...}` or `default`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PricingItem, E> {
                match v {
                    "default" => Ok(PricingItem::Default),
                    _ => Err(E::custom(
                        "a pricing item is a price entry `{model, input, output, ...}` or `default`",
                    )),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PricingItem, A::Error> {
                let entry = PriceEntry::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(PricingItem::Price(entry))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Pricing {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Pricing".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let entry = generator.subschema_for::<PriceEntry>();
        schemars::json_schema!({
            "description": "`default` (the shipped table, pricing/default.yaml), or a list of price entries, first match wins, where `default` stands for the shipped table.",
            "oneOf": [
                {"const": "default"},
                {"type": "array", "items": {"oneOf": [{"const": "default"}, entry]}}
            ]
        })
    }
}

/// Limits on the attributes of one span.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// At most this many attributes per span (default 128); the rest are dropped
    /// and counted.
    pub max_attributes: Option<usize>,
    /// String values longer than this many bytes are truncated (default 32768).
    pub max_value_length: Option<usize>,
}

/// Privacy switches (OpenInference's `OPENINFERENCE_HIDE_INPUTS`/`_OUTPUTS` work too).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Privacy {
    /// No prompt text in any attribute; `llm.requestBody` reads `__REDACTED__`.
    pub hide_inputs: Option<bool>,
    /// No completion text in any attribute; `llm.responseBody` reads `__REDACTED__`.
    pub hide_outputs: Option<bool>,
}

/// One backend under `backends:`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backend {
    /// Name used in logs, metrics and `backend.name`.
    pub name: String,
    /// The API it speaks and what `llm.provider` evaluates to. `anthropic` serves
    /// Anthropic Messages (`/v1/messages`, key as `x-api-key`), `gemini` serves
    /// Gemini `generateContent` (key as `x-goog-api-key`), any other (`openai`, the
    /// default, `azure`, `vllm`, ...) the OpenAI Responses API; every provider serves
    /// the OpenAI-compatible Chat Completions, Completions and Embeddings.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// The API root with its version, as an SDK's `base_url`:
    /// `https://api.openai.com/v1`, `https://api.anthropic.com/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta`. A client's path goes
    /// after it without its own version segment (`/v1`, `/v1beta`, `/v1alpha`).
    pub base_url: String,
    /// Path prefixes (`/v1/files`, `/v1/audio`) of requests no protocol knows that
    /// this backend takes, forwarded unread with its key. A path in no backend's
    /// list is answered 404 (default: the list is empty).
    #[serde(default)]
    pub passthrough: Vec<String>,
    /// Where the API key comes from: never plain text in the ConfigMap.
    pub api_key: Option<SecretRef>,
    /// Exact model names and `*` patterns this backend serves; first match wins.
    /// An empty list serves every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Send this model name upstream instead of the one the client asked for.
    pub rewrite_model: Option<String>,
    /// Forward the client's own `Authorization` header instead of `apiKey`
    /// (default false: the client's header is always removed).
    #[serde(default)]
    pub auth_passthrough: bool,
    /// Time allowed to open a connection (default `5s`).
    pub connect_timeout: Option<DurationText>,
    /// Time allowed until the response headers arrive (default `300s`).
    pub timeout: Option<DurationText>,
    /// Longest silence allowed between two chunks of a response body (default `300s`).
    pub idle_timeout: Option<DurationText>,
}

fn default_provider() -> String {
    "openai".to_owned()
}

/// A secret's source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretRef {
    /// Name of an environment variable.
    Env(String),
    /// Path of a mounted secret file (trailing newline trimmed); a relative path is
    /// relative to the directory of config.yaml.
    File(String),
}

/// `{env: NAME}` or `{file: PATH}`. A plain string is refused with a message that
/// says what to write instead and does not repeat the string (it is likely the key).
impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`{env: VARIABLE}` or `{file: PATH}`")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(
                    "apiKey must be `{env: VARIABLE}` or `{file: PATH}`: a key written in the config itself is refused (and not shown here)",
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                const SOURCES: &[&str] = &["env", "file"];
                let Some(source) = map.next_key::<String>()? else {
                    return Err(de::Error::invalid_length(0, &self));
                };
                let value: String = map.next_value()?;
                let secret = match source.as_str() {
                    "env" => SecretRef::Env(value),
                    "file" => SecretRef::File(value),
                    other => return Err(de::Error::unknown_variant(other, SOURCES)),
                };
                if map.next_key::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom(
                        "apiKey takes one source: `env` or `file`, not both",
                    ));
                }
                Ok(secret)
            }
        }
        d.deserialize_any(V)
    }
}

/// One `name: expression` entry, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub key: String,
    pub expr: String,
    /// Where the key is written.
    pub key_pos: Pos,
    /// Where the expression's scalar starts.
    pub expr_pos: Pos,
}

/// An ordered `name: CEL expression` map that remembers positions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fields(pub Vec<Field>);

impl Fields {
    pub fn iter(&self) -> impl Iterator<Item = &Field> {
        self.0.iter()
    }
}

/// An expression written as a YAML scalar: a string, or a bare number or bool
/// (`llm.is_streaming: true` is the CEL expression `true`).
struct ExprText(String);

impl<'de> Deserialize<'de> for ExprText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ExprText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CEL expression (a string)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExprText, E> {
                Ok(ExprText(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ExprText, E> {
                Ok(ExprText(format!("{v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of attribute name to CEL expression")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Fields, E> {
                Ok(Fields::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value: Spanned<ExprText> = map.next_value()?;
                    out.push(Field {
                        key: key.value,
                        expr: value.value.0,
                        key_pos: key.referenced.into(),
                        expr_pos: value.referenced.into(),
                    });
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl JsonSchema for Fields {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Fields".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Attribute name -> CEL expression (a string; bare numbers and booleans are literal expressions).",
            "type": ["object", "null"],
            "additionalProperties": {"type": ["string", "number", "boolean"]}
        })
    }
}

/// The JSON Schema of `config.yaml`, as checked in at `schema/config.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ConfigFile);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_patterns() {
        let cases = [
            ("gpt-4o", "gpt-4o", true),
            ("gpt-4o", "gpt-4o-mini", false),
            ("gpt-4o*", "gpt-4o-mini", true),
            ("*-mini", "gpt-4o-mini", true),
            ("*-mini", "gpt-4o", false),
            ("gpt-*-mini", "gpt-4o-mini", true),
            ("a*a", "a", false),
            ("*", "", true),
            ("claude-*", "gpt-4o", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(wildcard_match(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn durations() {
        let ms = |s: &str| DurationText::parse(s).map(|d| d.0.as_millis());
        assert_eq!(ms("500ms"), Some(500));
        assert_eq!(ms("30s"), Some(30_000));
        assert_eq!(ms("30"), Some(30_000));
        assert_eq!(ms("5m"), Some(300_000));
        assert_eq!(ms("1h"), Some(3_600_000));
        assert_eq!(ms("1.5s"), None);
        assert_eq!(ms("s"), None);
        assert_eq!(ms("10 parsecs"), None);
    }
}
