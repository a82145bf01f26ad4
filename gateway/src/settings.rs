//! From a loaded config to what the running gateway uses: backends with their keys
//! read, the exporter's endpoint and headers resolved against the environment, and
//! the server's limits with their defaults.
//!
//! Everything that reads the environment or a secret file happens here, once per
//! config load, so a request never touches either. Precedence is always: the config
//! file, then the standard `OTEL_*` variables, then the default.

pub mod metrics;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use celgate_engine::config::{AccessLogFormat, Backend as BackendConfig, OtlpProtocol, SecretRef};
use celgate_engine::{ConfigFile, PresetName, TracingPlan, redact};

/// A value that must never be printed: API keys, auth headers.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a config cannot be put into service although it parsed and compiled.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("backend `{backend}`: apiKey names environment variable `{var}`, which is not set")]
    MissingKeyEnv { backend: String, var: String },
    #[error("backend `{backend}`: cannot read apiKey file `{path}`: {source}")]
    KeyFile {
        backend: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backend `{backend}`: the apiKey from {origin} is empty")]
    EmptyKey { backend: String, origin: KeyOrigin },
    #[error(
        "backend `{backend}`: the apiKey from {origin} {problem}: a key is one line of visible ASCII characters (one trailing newline is ignored)"
    )]
    BadKey {
        backend: String,
        origin: KeyOrigin,
        problem: &'static str,
    },
    #[error(
        "backend `{backend}`: passthrough entry {index} is not a path prefix: it must start with `/` and hold no `..`, `?` or `#`"
    )]
    BadPassthrough { backend: String, index: usize },
    /// `url` is masked: it never shows userinfo.
    #[error("backend `{backend}`: baseUrl `{url}` is not a valid URL: {reason}")]
    BadBaseUrl {
        backend: String,
        url: String,
        reason: String,
    },
    /// `url` is masked.
    #[error(
        "{origin} `{url}` carries credentials (user:password@), which celgate does not use: remove them and send the credentials as a header ({headers})"
    )]
    EndpointCredentials {
        origin: &'static str,
        url: String,
        headers: &'static str,
    },
    #[error(
        "tracing header `{header}`{origin} {problem}: a header value is visible ASCII characters and spaces (one trailing newline of a variable is ignored)"
    )]
    BadHeaderValue {
        header: String,
        /// ` (from ${A}, ${B})`, ` (from OTEL_EXPORTER_OTLP_HEADERS)`, or empty.
        origin: String,
        problem: &'static str,
    },
    #[error("tracing header name `{header}` is not a valid HTTP header name")]
    BadHeaderName { header: String },
    #[error("tracing header `{header}` references ${{{var}}}, which is not set in the environment")]
    MissingHeaderEnv { header: String, var: String },
    #[error("tracing header `{header}` has an unterminated ${{...}} reference")]
    BadHeaderRef { header: String },
    #[error(
        "OTEL_TRACES_SAMPLER is `{value}`: expected always_on, always_off, traceidratio or parentbased_(always_on|always_off|traceidratio)"
    )]
    BadSampler { value: String },
    #[error("{name} is `{value}`: expected grpc or http/protobuf")]
    BadProtocol { name: &'static str, value: String },
    #[error("auth.clientKeys: {0}")]
    ClientKeys(#[from] crate::client_auth::ClientKeysError),
    #[error(
        "backend `{backend}`: authPassthrough cannot be combined with auth.clientKeys: the client's own key would reach the backend; remove one of them"
    )]
    PassthroughWithClientKeys { backend: String },
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsSettingsError),
    #[error("collector TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("address `{value}` for `{key}` is not HOST:PORT: {reason}")]
    BadAddress {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Where a backend's key was read: named in errors instead of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    Env(String),
    File(PathBuf),
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::Env(var) => write!(f, "environment variable `{var}`"),
            KeyOrigin::File(path) => write!(f, "file `{}`", path.display()),
        }
    }
}

impl SettingsError {
    /// Whether the error is about something absent where this process runs (an
    /// unset variable, a secret file not mounted) rather than about the config:
    /// `celgate check` on a workstation reports these as warnings.
    pub fn is_environmental(&self) -> bool {
        match self {
            SettingsError::MissingKeyEnv { .. } | SettingsError::MissingHeaderEnv { .. } => true,
            SettingsError::KeyFile { source, .. }
            | SettingsError::Tls(crate::tls::TlsError::Read { source, .. }) => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
            _ => false,
        }
    }

    /// The top-level address key (`listen`, `admin`) the error is about, if any.
    pub fn address_key(&self) -> Option<&'static str> {
        match self {
            SettingsError::BadAddress { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The backend the error is about, if it is about one.
    pub fn backend(&self) -> Option<&str> {
        match self {
            SettingsError::MissingKeyEnv { backend, .. }
            | SettingsError::KeyFile { backend, .. }
            | SettingsError::EmptyKey { backend, .. }
            | SettingsError::BadKey { backend, .. }
            | SettingsError::BadBaseUrl { backend, .. }
            | SettingsError::BadPassthrough { backend, .. } => Some(backend),
            _ => None,
        }
    }
}

/// What is wrong with `value` as (part of) a header value, if anything: a line
/// break, another control character, a non-ASCII character or, unless
/// `spaces` allows them, a space. Never says where, nor what the value is.
pub fn header_value_problem(value: &str, spaces: bool) -> Option<&'static str> {
    value.chars().find_map(|c| match c {
        '\n' | '\r' => Some("contains a line break"),
        ' ' if spaces => None,
        ' ' | '\t' => Some("contains a space or tab"),
        c if c.is_ascii_control() => Some("contains a control character"),
        c if !c.is_ascii() => Some("contains a non-ASCII character"),
        _ => None,
    })
}

/// `text` without one trailing `\n` or `\r\n`: what `kubectl create secret
/// --from-file` and `echo` leave behind.
fn strip_one_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

/// One upstream, ready to receive requests.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: String,
    pub provider: String,
    /// `scheme://authority` of the base URL.
    pub origin: String,
    /// Path prefix of the base URL without a trailing slash (`/v1`, `/openai/v1`, ``).
    pub base_path: String,
    pub host: String,
    pub port: u16,
    pub api_key: Option<Secret>,
    /// The mounted file the key came from, watched for changes.
    pub key_file: Option<PathBuf>,
    pub auth_passthrough: bool,
    pub rewrite_model: Option<String>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub idle_timeout: Duration,
    config: BackendConfig,
}

impl Backend {
    /// Whether this backend serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.config.serves(model)
    }

    /// Whether this backend takes `path` unread (its `passthrough` list has a prefix
    /// of it, ending at a segment boundary).
    pub fn passes_through(&self, path: &str) -> bool {
        self.config.passthrough.iter().any(|prefix| {
            let prefix = prefix.trim_end_matches('/');
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.is_empty())
        })
    }

    /// The models this backend lists (for `/v1/models`); patterns are left out.
    pub fn listed_models(&self) -> impl Iterator<Item = &str> {
        self.config
            .models
            .iter()
            .filter(|m| !m.contains('*'))
            .map(String::as_str)
    }
}

/// Where spans go.
#[derive(Clone, Debug, PartialEq)]
pub enum ExportTarget {
    /// Nothing configured anywhere: spans are built (for the access log and
    /// metrics) but not sent.
    Disabled,
    /// Pretty-printed to stdout (`otlpEndpoint: stdout`).
    Stdout,
    /// An OTLP collector.
    Otlp {
        /// For `http`, the full URL including `/v1/traces`.
        endpoint: String,
        protocol: OtlpProtocol,
        headers: Vec<(String, Secret)>,
        /// For an `https://` endpoint: the CA trusted besides the system's and the
        /// client certificate (`OTEL_EXPORTER_OTLP_*CERTIFICATE`, `*CLIENT_KEY`).
        tls: Box<crate::tls::TlsSettings>,
    },
}

/// Batch settings (`OTEL_BSP_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay: Duration::from_millis(5000),
            export_timeout: Duration::from_millis(10_000),
        }
    }
}

/// Everything the exporter needs; comparing two tells a reload whether the exporter
/// must be rebuilt.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSettings {
    pub target: ExportTarget,
    pub batch: BatchSettings,
    /// `service.name`, `service.version`, `OTEL_RESOURCE_ATTRIBUTES`, then the
    /// config's `resources` (later entries win).
    pub resource: Vec<(String, celgate_engine::AttrValue)>,
}

/// The proxy's own limits.
#[derive(Clone, Copy, Debug)]
pub struct ServerSettings {
    pub max_body_bytes: u64,
    pub max_json_depth: u32,
    pub shutdown_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub access_log: AccessLogFormat,
}

/// Sampling from `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, used where the
/// config sets neither `randomSampling` nor `clientSampling`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EnvSampler {
    /// Probability of sampling a trace that has no (honoured) parent.
    pub ratio: f64,
    /// `parentbased_*`: an incoming `traceparent` decides.
    pub parent_based: bool,
}

/// One config generation, ready to serve.
#[derive(Debug)]
pub struct Settings {
    pub listen: String,
    pub admin: String,
    pub backends: Vec<Backend>,
    pub server: ServerSettings,
    pub export: ExportSettings,
    /// `OTEL_METRICS_EXPORTER` and the OTLP metrics exporter's settings.
    pub metrics: metrics::MetricsSettings,
    /// The standard sampler variables, when the config leaves sampling unset.
    pub env_sampler: Option<EnvSampler>,
    /// `auth.clientKeys`, read: who may use the gateway (`None`: anyone).
    pub client_keys: Option<crate::client_auth::ClientKeys>,
    /// Masks every backend key of this generation in responses.
    pub redactor: std::sync::Arc<crate::redact::Redactor>,
    /// The collector TLS files the environment names (CA, client certificate and
    /// key): watched like key files, so a rotated certificate is a new generation.
    pub tls_files: Vec<PathBuf>,
}

/// Reads the environment; a function so tests can pass their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`Settings::resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Settings {
    /// Resolves a loaded config against the environment and secret files;
    /// relative secret-file paths are relative to `config_dir`.
    pub fn resolve(
        file: &ConfigFile,
        plan: &TracingPlan,
        env: EnvLookup<'_>,
        config_dir: &std::path::Path,
    ) -> Result<Settings, SettingsError> {
        let backends = file
            .backends
            .iter()
            .map(|b| resolve_backend(&b.value, env, config_dir))
            .collect::<Result<Vec<_>, _>>()?;
        let server = &file.server;
        let server = ServerSettings {
            max_body_bytes: server.max_body_bytes.unwrap_or(10 * 1024 * 1024),
            max_json_depth: server.max_json_depth.unwrap_or(64),
            shutdown_timeout: server
                .shutdown_timeout
                .map_or(Duration::from_secs(30), |d| d.0),
            request_timeout: server
                .request_timeout
                .map_or(Duration::from_secs(30), |d| d.0),
            max_connections: server
                .max_connections
                .map_or_else(crate::fd_budget::default_max_connections, |n| {
                    n.get() as usize
                }),
            access_log: server.access_log.format.unwrap_or_default(),
        };
        let listen = file.listen().to_owned();
        let admin = file.admin().to_owned();
        check_address("listen", &listen)?;
        check_address("admin", &admin)?;
        let client_keys = resolve_client_keys(file, &backends, config_dir)?;
        let tracing = file.config.tracing.as_ref();
        let sampling_configured =
            tracing.is_some_and(|t| t.random_sampling.is_some() || t.client_sampling.is_some());
        let redactor = crate::redact::Redactor::new(
            backends
                .iter()
                .filter_map(|b| b.api_key.as_ref().map(Secret::expose)),
        );
        Ok(Settings {
            listen,
            admin,
            redactor: std::sync::Arc::new(redactor),
            backends,
            server,
            export: resolve_export(plan, env)?,
            metrics: metrics::resolve(plan, env)?,
            env_sampler: if sampling_configured {
                None
            } else {
                env_sampler(env)?
            },
            client_keys,
            tls_files: crate::tls::env_files(env),
        })
    }

    /// Everything [`resolve`](Self::resolve) would refuse, not only the first:
    /// for `celgate check`.
    pub fn problems(
        file: &ConfigFile,
        plan: &TracingPlan,
        env: EnvLookup<'_>,
        config_dir: &std::path::Path,
    ) -> Vec<SettingsError> {
        let mut out: Vec<SettingsError> = file
            .backends
            .iter()
            .filter_map(|b| resolve_backend(&b.value, env, config_dir).err())
            .collect();
        let listen = file.listen();
        let admin = file.admin();
        out.extend(check_address("listen", listen).err());
        out.extend(check_address("admin", admin).err());
        out.extend(resolve_export(plan, env).err());
        out.extend(metrics::resolve(plan, env).err());
        let tracing = file.config.tracing.as_ref();
        if !tracing.is_some_and(|t| t.random_sampling.is_some() || t.client_sampling.is_some()) {
            out.extend(env_sampler(env).err());
        }
        out
    }
}

/// The secret files `file` references (backends' `apiKey` files, then the client
/// keys file), then the collector TLS files `env` names, as [`Settings::resolve`]
/// will read them.
pub fn secret_files(
    file: &ConfigFile,
    config_dir: &std::path::Path,
    env: EnvLookup<'_>,
) -> Vec<PathBuf> {
    file.backends
        .iter()
        .filter_map(|b| match &b.value.api_key {
            Some(SecretRef::File(p)) => Some(config_dir.join(p)),
            _ => None,
        })
        .chain(
            file.auth
                .client_keys
                .as_ref()
                .map(|k| config_dir.join(&k.file)),
        )
        .chain(crate::tls::env_files(env))
        .collect()
}

/// Reads `auth.clientKeys.file`, if configured. A backend that forwards the
/// client's own key would defeat it, so the combination is refused.
fn resolve_client_keys(
    file: &ConfigFile,
    backends: &[Backend],
    config_dir: &std::path::Path,
) -> Result<Option<crate::client_auth::ClientKeys>, SettingsError> {
    let Some(keys) = &file.auth.client_keys else {
        return Ok(None);
    };
    if let Some(b) = backends.iter().find(|b| b.auth_passthrough) {
        return Err(SettingsError::PassthroughWithClientKeys {
            backend: b.name.clone(),
        });
    }
    let path = config_dir.join(&keys.file);
    Ok(Some(crate::client_auth::ClientKeys::load(&path)?))
}

/// `OTEL_TRACES_SAMPLER` as the OTel SDK environment spec defines it.
fn env_sampler(env: EnvLookup<'_>) -> Result<Option<EnvSampler>, SettingsError> {
    let Some(name) = env("OTEL_TRACES_SAMPLER") else {
        return Ok(None);
    };
    let arg = || {
        env("OTEL_TRACES_SAMPLER_ARG")
            .and_then(|a| a.trim().parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(1.0)
    };
    let (ratio, parent_based) = match name.trim() {
        "always_on" => (1.0, false),
        "always_off" => (0.0, false),
        "traceidratio" => (arg(), false),
        "parentbased_always_on" => (1.0, true),
        "parentbased_always_off" => (0.0, true),
        "parentbased_traceidratio" => (arg(), true),
        other => {
            return Err(SettingsError::BadSampler {
                value: other.to_owned(),
            });
        }
    };
    Ok(Some(EnvSampler {
        ratio,
        parent_based,
    }))
}

fn check_address(key: &'static str, value: &str) -> Result<(), SettingsError> {
    let bad = |reason: &str| SettingsError::BadAddress {
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host (use 0.0.0.0 for all interfaces)"));
    }
    port.parse::<u16>()
        .map_err(|_| bad("the port is not a number 0-65535"))?;
    Ok(())
}

fn resolve_backend(
    b: &BackendConfig,
    env: EnvLookup<'_>,
    config_dir: &std::path::Path,
) -> Result<Backend, SettingsError> {
    let bad_url = |reason: &str| SettingsError::BadBaseUrl {
        backend: b.name.clone(),
        url: redact::mask_url(&b.base_url),
        reason: reason.to_owned(),
    };
    if redact::has_userinfo(&b.base_url) {
        return Err(bad_url(
            "it carries credentials (user:password@), which celgate does not send: give the key as `apiKey` instead",
        ));
    }
    let uri: http::Uri = b
        .base_url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad_url(&e.to_string()))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| bad_url("no scheme"))?
        .to_owned();
    if scheme != "http" && scheme != "https" {
        return Err(bad_url("the scheme must be http or https"));
    }
    let authority = uri.authority().ok_or_else(|| bad_url("no host"))?;
    if uri.query().is_some() {
        return Err(bad_url("a base URL cannot carry a query string"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    if let Some(index) = b.passthrough.iter().position(|p| !is_path_prefix(p)) {
        return Err(SettingsError::BadPassthrough {
            backend: b.name.clone(),
            index,
        });
    }
    let api_key = match &b.api_key {
        None => None,
        Some(source) => Some(read_key(&b.name, source, env, config_dir)?),
    };
    Ok(Backend {
        name: b.name.clone(),
        provider: b.provider.clone(),
        origin: format!("{scheme}://{authority}"),
        base_path: uri.path().trim_end_matches('/').to_owned(),
        host,
        port,
        api_key,
        key_file: match &b.api_key {
            Some(SecretRef::File(p)) => Some(config_dir.join(p)),
            _ => None,
        },
        auth_passthrough: b.auth_passthrough,
        rewrite_model: b.rewrite_model.clone(),
        connect_timeout: b.connect_timeout.map_or(Duration::from_secs(5), |d| d.0),
        timeout: b.timeout.map_or(Duration::from_secs(300), |d| d.0),
        idle_timeout: b.idle_timeout.map_or(Duration::from_secs(300), |d| d.0),
        config: b.clone(),
    })
}

/// Whether `p` can be a `passthrough` entry: an absolute path without dot
/// segments, query or fragment.
fn is_path_prefix(p: &str) -> bool {
    p.starts_with('/') && !p.contains("..") && !p.contains(['?', '#'])
}

/// A backend's key from its source: one trailing newline dropped, then it must be
/// one line of visible ASCII (what an `Authorization` header can carry). Errors name
/// the source, never the key.
fn read_key(
    backend: &str,
    source: &SecretRef,
    env: EnvLookup<'_>,
    config_dir: &std::path::Path,
) -> Result<Secret, SettingsError> {
    let (origin, text) = match source {
        SecretRef::Env(var) => {
            let text = env(var).ok_or_else(|| SettingsError::MissingKeyEnv {
                backend: backend.to_owned(),
                var: var.clone(),
            })?;
            (KeyOrigin::Env(var.clone()), text)
        }
        SecretRef::File(path) => {
            let path = config_dir.join(path);
            let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::KeyFile {
                backend: backend.to_owned(),
                path: path.clone(),
                source,
            })?;
            (KeyOrigin::File(path), text)
        }
    };
    let key = strip_one_newline(&text);
    if key.is_empty() {
        return Err(SettingsError::EmptyKey {
            backend: backend.to_owned(),
            origin,
        });
    }
    if let Some(problem) = header_value_problem(key, false) {
        return Err(SettingsError::BadKey {
            backend: backend.to_owned(),
            origin,
            problem,
        });
    }
    Ok(Secret::new(key))
}

fn resolve_export(plan: &TracingPlan, env: EnvLookup<'_>) -> Result<ExportSettings, SettingsError> {
    let protocol = match plan.otlp_protocol {
        Some(p) => p,
        None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
            .or_else(|| {
                env("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v))
            }) {
            None => OtlpProtocol::Grpc,
            Some((name, v)) => match v.trim() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" | "http" => OtlpProtocol::Http,
                _ => return Err(SettingsError::BadProtocol { name, value: v }),
            },
        },
    };
    let langfuse = plan.preset == Some(PresetName::Langfuse);
    // With where it came from, for the error that refuses credentials in it.
    let mut endpoint: Option<(&'static str, String)> = match &plan.otlp_endpoint {
        Some(e) => Some(("otlpEndpoint", http_traces_path(e, protocol))),
        None => env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|e| ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e))
            .or_else(|| {
                env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| {
                    (
                        "OTEL_EXPORTER_OTLP_ENDPOINT",
                        http_traces_path(&e, protocol),
                    )
                })
            }),
    };
    let mut protocol = protocol;
    if langfuse && endpoint.is_none() {
        // The Langfuse SDKs' own variables: the host's OTLP ingestion path, which
        // takes OTLP/HTTP protobuf only.
        if let Some((name, host)) = env("LANGFUSE_BASE_URL")
            .map(|h| ("LANGFUSE_BASE_URL", h))
            .or_else(|| env("LANGFUSE_HOST").map(|h| ("LANGFUSE_HOST", h)))
        {
            endpoint = Some((
                name,
                format!(
                    "{}/api/public/otel/v1/traces",
                    host.trim().trim_end_matches('/')
                ),
            ));
            protocol = OtlpProtocol::Http;
        }
    }
    if let Some((origin, url)) = &endpoint {
        refuse_credentials(origin, url)?;
    }
    let endpoint = endpoint.map(|(_, url)| url);
    let target = match endpoint {
        None => ExportTarget::Disabled,
        Some(e) if e == "stdout" => ExportTarget::Stdout,
        Some(endpoint) => {
            // Env headers first, then the config's, which win on the same name.
            let mut headers: BTreeMap<String, Secret> = BTreeMap::new();
            for var in [
                "OTEL_EXPORTER_OTLP_HEADERS",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            ] {
                let text = env(var).unwrap_or_default();
                for (k, v) in parse_env_headers(strip_one_newline(&text)) {
                    check_header(&k, &v, &format!(" (from {var})"))?;
                    headers.insert(k, Secret::new(v));
                }
            }
            insert_config_headers(plan, env, &mut headers)?;
            // Langfuse authenticates with Basic public-key:secret-key. Only for the
            // langfuse preset, so these keys never travel to another kind of collector.
            if langfuse
                && !headers.contains_key("authorization")
                && let (Some(public), Some(secret)) =
                    (env("LANGFUSE_PUBLIC_KEY"), env("LANGFUSE_SECRET_KEY"))
            {
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    public.trim(),
                    secret.trim()
                ));
                headers.insert(
                    "authorization".to_owned(),
                    Secret::new(format!("Basic {token}")),
                );
            }
            ExportTarget::Otlp {
                endpoint,
                protocol,
                headers: headers.into_iter().collect(),
                tls: Box::new(crate::tls::TlsSettings::from_env(env)?),
            }
        }
    };
    let mut batch = batch_settings(env);
    if target == ExportTarget::Stdout && env("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        // On the console a person is watching: print spans promptly.
        batch.schedule_delay = Duration::from_millis(200);
    }
    Ok(ExportSettings {
        target,
        batch,
        resource: resource(plan, env),
    })
}

/// OTLP/HTTP posts to `/v1/traces`: append it unless the URL already ends with it.
fn http_traces_path(endpoint: &str, protocol: OtlpProtocol) -> String {
    let e = endpoint.trim();
    if protocol == OtlpProtocol::Grpc || e == "stdout" || e.ends_with("/v1/traces") {
        return e.to_owned();
    }
    format!("{}/v1/traces", e.trim_end_matches('/'))
}

/// The config's `headers` (with `${VAR}`s expanded and checked) into `out`, over
/// what is there: the config wins over the environment's headers.
fn insert_config_headers(
    plan: &TracingPlan,
    env: EnvLookup<'_>,
    out: &mut BTreeMap<String, Secret>,
) -> Result<(), SettingsError> {
    for (k, v) in &plan.headers {
        let (value, vars) = expand_env(k, v, env)?;
        let origin = match vars.as_slice() {
            [] => String::new(),
            vars => format!(" (after expanding ${{{}}})", vars.join("}, ${")),
        };
        check_header(k, &value, &origin)?;
        out.insert(k.to_ascii_lowercase(), Secret::new(value));
    }
    Ok(())
}

/// `k1=v1,k2=v2` with percent-encoded values, as `OTEL_EXPORTER_OTLP_HEADERS` is written.
fn parse_env_headers(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| {
                (
                    k.to_ascii_lowercase(),
                    percent_encoding::percent_decode_str(v.trim())
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            })
        })
        .collect()
}

/// Refuses an exporter endpoint with `user:password@` in it, naming where it was
/// set (`origin`) and showing it masked.
fn refuse_credentials(origin: &'static str, url: &str) -> Result<(), SettingsError> {
    if !redact::has_userinfo(url) {
        return Ok(());
    }
    Err(SettingsError::EndpointCredentials {
        origin,
        url: redact::mask_url(url),
        headers: match origin {
            "otlpEndpoint" => "`tracing.headers`, e.g. `Authorization: Basic ${COLLECTOR_AUTH}`",
            "LANGFUSE_HOST" | "LANGFUSE_BASE_URL" => {
                "set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY"
            }
            _ => "OTEL_EXPORTER_OTLP_HEADERS=authorization=Basic%20...",
        },
    })
}

/// A tracing header must be sendable: a valid name, a value of visible ASCII and
/// spaces. `origin` says where the value came from, for the error.
fn check_header(name: &str, value: &str, origin: &str) -> Result<(), SettingsError> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(SettingsError::BadHeaderName {
            header: name.to_owned(),
        });
    }
    match header_value_problem(value, true) {
        None => Ok(()),
        Some(problem) => Err(SettingsError::BadHeaderValue {
            header: name.to_ascii_lowercase(),
            origin: origin.to_owned(),
            problem,
        }),
    }
}

/// Expands `${NAME}` references in a header value (each variable's value without
/// one trailing newline); returns the value and the names it expanded.
fn expand_env(
    header: &str,
    value: &str,
    env: EnvLookup<'_>,
) -> Result<(String, Vec<String>), SettingsError> {
    let mut out = String::with_capacity(value.len());
    let mut vars = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| SettingsError::BadHeaderRef {
            header: header.to_owned(),
        })?;
        let var = &after[..end];
        let text = env(var).ok_or_else(|| SettingsError::MissingHeaderEnv {
            header: header.to_owned(),
            var: var.to_owned(),
        })?;
        out.push_str(strip_one_newline(&text));
        vars.push(var.to_owned());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, vars))
}

fn batch_settings(env: EnvLookup<'_>) -> BatchSettings {
    let d = BatchSettings::default();
    let num = |name: &str| env(name).and_then(|v| v.trim().parse::<u64>().ok());
    BatchSettings {
        max_queue_size: num("OTEL_BSP_MAX_QUEUE_SIZE")
            .map_or(d.max_queue_size, |n| n.max(1) as usize),
        max_export_batch_size: num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
            .map_or(d.max_export_batch_size, |n| n.max(1) as usize),
        schedule_delay: num("OTEL_BSP_SCHEDULE_DELAY")
            .map_or(d.schedule_delay, Duration::from_millis),
        export_timeout: num("OTEL_BSP_EXPORT_TIMEOUT")
            .or_else(|| num("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .map_or(d.export_timeout, Duration::from_millis),
    }
}

fn resource(plan: &TracingPlan, env: EnvLookup<'_>) -> Vec<(String, celgate_engine::AttrValue)> {
    use celgate_engine::AttrValue;
    let mut out: Vec<(String, AttrValue)> = vec![
        ("service.name".into(), AttrValue::String("celgate".into())),
        (
            "service.version".into(),
            AttrValue::String(env!("CARGO_PKG_VERSION").into()),
        ),
    ];
    let mut set = |k: String, v: AttrValue| match out.iter_mut().find(|(key, _)| *key == k) {
        Some(slot) => slot.1 = v,
        None => out.push((k, v)),
    };
    if let Some(attrs) = env("OTEL_RESOURCE_ATTRIBUTES") {
        for (k, v) in parse_env_headers(&attrs) {
            set(k, AttrValue::String(v));
        }
    }
    if let Some(name) = env("OTEL_SERVICE_NAME") {
        set("service.name".into(), AttrValue::String(name));
    }
    for (k, v) in &plan.resources {
        set(k.clone(), v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use celgate_engine::{AttrValue, LoadOptions, load};

    fn resolve(yaml: &str, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let loaded = load(yaml, &LoadOptions::default()).expect("test config loads");
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        Settings::resolve(&loaded.file, &loaded.plan, &env, std::path::Path::new("."))
    }

    #[test]
    fn config_wins_over_env_and_env_fills_gaps() {
        let s = resolve("{}", &[]).unwrap();
        assert_eq!(s.export.target, ExportTarget::Disabled);

        let s = resolve(
            "{}",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap();
        let ExportTarget::Otlp {
            endpoint, protocol, ..
        } = s.export.target
        else {
            panic!()
        };
        assert_eq!(
            (endpoint.as_str(), protocol),
            ("http://c:4318/v1/traces", OtlpProtocol::Http)
        );

        // The signal-specific variable is used as-is.
        let s = resolve(
            "{}",
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap();
        let ExportTarget::Otlp { endpoint, .. } = s.export.target else {
            panic!()
        };
        assert_eq!(endpoint, "http://c:4318/custom");

        let yaml = "config:\n  tracing:\n    otlpEndpoint: http://mine:4317\n    headers:\n      Authorization: Basic ${TOKEN}\n";
        let s = resolve(
            yaml,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
                ("TOKEN", "abc"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=nope,x-team=a%20b",
                ),
            ],
        )
        .unwrap();
        let ExportTarget::Otlp {
            endpoint,
            protocol,
            headers,
            ..
        } = s.export.target
        else {
            panic!()
        };
        assert_eq!(
            (endpoint.as_str(), protocol),
            ("http://mine:4317", OtlpProtocol::Grpc)
        );
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(headers, [("authorization", "Basic abc"), ("x-team", "a b")]);

        let yaml = "config:\n  tracing:\n    otlpEndpoint: https://cloud.langfuse.com/api/public/otel\n    otlpProtocol: http\n";
        let ExportTarget::Otlp { endpoint, .. } = resolve(yaml, &[]).unwrap().export.target else {
            panic!()
        };
        assert_eq!(
            endpoint,
            "https://cloud.langfuse.com/api/public/otel/v1/traces"
        );
    }

    #[test]
    fn langfuse_keys_and_host_from_the_langfuse_sdk_variables() {
        let keys = [
            ("LANGFUSE_PUBLIC_KEY", "pk-lf-1"),
            ("LANGFUSE_SECRET_KEY", "sk-lf-2"),
            ("LANGFUSE_HOST", "https://cloud.langfuse.com/"),
        ];
        let target =
            |yaml: &str, vars: &[(&str, &str)]| match resolve(yaml, vars).unwrap().export.target {
                ExportTarget::Otlp {
                    endpoint,
                    protocol,
                    headers,
                    ..
                } => {
                    let auth = headers
                        .iter()
                        .find(|(k, _)| k == "authorization")
                        .map(|(_, v)| v.expose().to_owned());
                    Some((endpoint, protocol, auth))
                }
                _ => None,
            };
        // base64("pk-lf-1:sk-lf-2")
        let basic = Some("Basic cGstbGYtMTpzay1sZi0y".to_owned());
        assert_eq!(
            target("config:\n  tracing:\n    preset: langfuse\n", &keys),
            Some((
                "https://cloud.langfuse.com/api/public/otel/v1/traces".to_owned(),
                OtlpProtocol::Http,
                basic.clone()
            ))
        );
        // An explicit endpoint is kept; the keys still authenticate.
        let yaml = "config:\n  tracing:\n    preset: langfuse\n    otlpEndpoint: http://lf:3000/api/public/otel\n    otlpProtocol: http/protobuf\n";
        assert_eq!(
            target(yaml, &keys),
            Some((
                "http://lf:3000/api/public/otel/v1/traces".to_owned(),
                OtlpProtocol::Http,
                basic
            ))
        );
        // A configured Authorization header wins over the keys.
        let yaml = "config:\n  tracing:\n    preset: langfuse\n    otlpEndpoint: http://lf:3000\n    otlpProtocol: http/protobuf\n    headers:\n      Authorization: Basic mine\n";
        assert_eq!(
            target(yaml, &keys).and_then(|t| t.2),
            Some("Basic mine".to_owned())
        );
        // Another preset never sends Langfuse's keys anywhere.
        let yaml =
            "config:\n  tracing:\n    preset: jaeger\n    otlpEndpoint: http://jaeger:4317\n";
        assert_eq!(target(yaml, &keys).and_then(|t| t.2), None);
        assert_eq!(
            target("config:\n  tracing:\n    preset: jaeger\n", &keys),
            None
        );
    }

    #[test]
    fn missing_secrets_are_clear_errors() {
        let yaml = "config:\n  tracing:\n    otlpEndpoint: http://c:4317\n    headers:\n      x-key: ${NOPE}\n";
        let e = resolve(yaml, &[]).err().unwrap().to_string();
        assert!(e.contains("references ${NOPE}"), "{e}");
        let yaml = "backends:\n  - name: oa\n    baseUrl: https://api.openai.com/v1\n    apiKey: {env: OPENAI_KEY}\n";
        let e = resolve(yaml, &[]).err().unwrap().to_string();
        assert_eq!(
            e,
            "backend `oa`: apiKey names environment variable `OPENAI_KEY`, which is not set"
        );
        let s = resolve(yaml, &[("OPENAI_KEY", "sk-1")]).unwrap();
        let b = &s.backends[0];
        assert_eq!(
            (b.origin.as_str(), b.base_path.as_str(), b.port),
            ("https://api.openai.com", "/v1", 443)
        );
        assert_eq!(format!("{:?}", b.api_key), "Some(Secret(***))");
        assert!(!format!("{s:?}").contains("sk-1"));
    }

    #[test]
    fn keys_lose_one_trailing_newline_and_must_be_one_line() {
        let yaml = "backends:\n  - name: oa\n    baseUrl: https://api.openai.com/v1\n    apiKey: {env: K}\n";
        for (value, want) in [
            ("sk-x", Ok("sk-x")),
            ("sk-x\n", Ok("sk-x")),
            ("sk-x\r\n", Ok("sk-x")),
            ("sk-x\n\n", Err("contains a line break")),
            ("sk-a\nsk-b", Err("contains a line break")),
            ("sk-x\r", Err("contains a line break")),
            (" sk-x", Err("contains a space or tab")),
            ("sk-\u{1b}x", Err("contains a control character")),
            ("sk-é", Err("contains a non-ASCII character")),
            ("\n", Err("is empty")),
        ] {
            let got = resolve(yaml, &[("K", value)]);
            match (got, want) {
                (Ok(s), Ok(key)) => {
                    assert_eq!(s.backends[0].api_key.as_ref().unwrap().expose(), key)
                }
                (Err(e), Err(problem)) => {
                    let e = e.to_string();
                    assert!(
                        e.starts_with("backend `oa`: the apiKey from environment variable `K`"),
                        "{e}"
                    );
                    assert!(e.contains(problem), "{value:?}: {e}");
                    assert!(!e.contains("sk-"), "{e}");
                }
                (got, want) => panic!("{value:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn tracing_headers_must_be_sendable_after_expansion() {
        let yaml = "config:\n  tracing:\n    otlpEndpoint: http://c:4317\n    headers:\n      Authorization: Bearer ${TOKEN}\n";
        let s = resolve(yaml, &[("TOKEN", "t-1\n")]).unwrap();
        let ExportTarget::Otlp { headers, .. } = s.export.target else {
            panic!()
        };
        assert_eq!(headers[0].1.expose(), "Bearer t-1");
        let e = resolve(yaml, &[("TOKEN", "t-1\nt-2")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "tracing header `authorization` (after expanding ${TOKEN}) contains a line break"
            ),
            "{e}"
        );
        assert!(!e.contains("t-1"), "{e}");
        let e = resolve(
            "config:\n  tracing:\n    otlpEndpoint: http://c:4317\n",
            &[("OTEL_EXPORTER_OTLP_HEADERS", "x-key=a%0Ab")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "tracing header `x-key` (from OTEL_EXPORTER_OTLP_HEADERS) contains a line break"
            ),
            "{e}"
        );
    }

    #[test]
    fn endpoints_with_credentials_are_refused_masked() {
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            let e = resolve("{}", &[(var, "http://u:hunter2@c:4318")])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("{var} `http://***@c:4318")), "{e}");
            assert!(
                e.contains("OTEL_EXPORTER_OTLP_HEADERS") && !e.contains("hunter2"),
                "{e}"
            );
        }
        let e = resolve(
            "config:\n  tracing:\n    preset: langfuse\n",
            &[("LANGFUSE_HOST", "https://pk:sk@cloud.langfuse.com")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "LANGFUSE_HOST `https://***@cloud.langfuse.com/api/public/otel/v1/traces`"
            ),
            "{e}"
        );
        // The engine refuses these first; resolving refuses them on its own too.
        let backend: BackendConfig =
            serde_saphyr::from_str("name: oa\nbaseUrl: https://u:12/hunter2@api.openai.com/v1\n")
                .unwrap();
        let e = resolve_backend(&backend, &|_| None, std::path::Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`https://***@api.openai.com/v1`") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn otel_traces_sampler_applies_only_when_the_config_is_silent() {
        let s = resolve(
            "{}",
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
        )
        .unwrap();
        assert_eq!(
            s.env_sampler,
            Some(EnvSampler {
                ratio: 0.25,
                parent_based: true
            })
        );
        let s = resolve("{}", &[("OTEL_TRACES_SAMPLER", "always_off")]).unwrap();
        assert_eq!(
            s.env_sampler,
            Some(EnvSampler {
                ratio: 0.0,
                parent_based: false
            })
        );
        let yaml = "config:\n  tracing:\n    randomSampling: 0.5\n";
        assert_eq!(
            resolve(yaml, &[("OTEL_TRACES_SAMPLER", "always_off")])
                .unwrap()
                .env_sampler,
            None
        );
        let e = resolve("{}", &[("OTEL_TRACES_SAMPLER", "sometimes")])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`sometimes`"), "{e}");
    }

    #[test]
    fn resource_layers() {
        let yaml =
            "config:\n  tracing:\n    resources:\n      deployment.environment: '\"prod\"'\n";
        let s = resolve(
            yaml,
            &[
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "team=ml,deployment.environment=dev",
                ),
                ("OTEL_SERVICE_NAME", "gw"),
            ],
        )
        .unwrap();
        let get = |k: &str| {
            s.export
                .resource
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("service.name"), Some(AttrValue::String("gw".into())));
        assert_eq!(get("team"), Some(AttrValue::String("ml".into())));
        assert_eq!(
            get("deployment.environment"),
            Some(AttrValue::String("prod".into()))
        );
    }
}
