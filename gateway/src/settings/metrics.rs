//! Where metrics go: `OTEL_METRICS_EXPORTER` and the OTLP metrics exporter's
//! settings, read from the environment as the OTel SDK environment spec has them.
//!
//! celgate's default stays `prometheus` (pull: `/metrics` on the admin port, as
//! before). `otlp` pushes the GenAI metrics to a collector; `none` turns both off.
//! The collector's endpoint, protocol, headers and timeout come from
//! `OTEL_EXPORTER_OTLP_METRICS_*`, else the generic `OTEL_EXPORTER_OTLP_*`, else the
//! config's trace collector (`otlpEndpoint`, `otlpProtocol`, `headers`): the
//! config's `tracing` settings are trace-specific, like `OTEL_EXPORTER_OTLP_TRACES_*`,
//! so the generic variables come first. The config's headers travel only to the
//! config's own endpoint: a collector named in the environment never receives the
//! credentials meant for another.

use std::collections::BTreeMap;
use std::time::Duration;

use celgate_engine::TracingPlan;
use celgate_engine::config::OtlpProtocol;

use super::{
    EnvLookup, Secret, SettingsError, check_header, insert_config_headers, parse_env_headers,
    refuse_credentials, strip_one_newline,
};

/// Why the metrics settings in the environment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MetricsSettingsError {
    #[error("metrics collector TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(
        "OTEL_METRICS_EXPORTER is `{value}`: `{entry}` is not an exporter celgate has; expected a comma-separated list of otlp and prometheus, or none"
    )]
    UnknownExporter { value: String, entry: String },
    #[error("OTEL_METRICS_EXPORTER is `{value}`: `none` cannot be combined with other exporters")]
    NoneWithOthers { value: String },
    #[error("{name} is `{value}`: expected a whole number of milliseconds above 0")]
    BadMillis { name: &'static str, value: String },
    #[error(
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE is `{value}`: expected cumulative, delta or lowmemory"
    )]
    BadTemporality { value: String },
    #[error(
        "OTEL_METRICS_EXPORTER has otlp, but the only collector endpoint is the config's `otlpEndpoint: stdout`, which prints spans: set OTEL_EXPORTER_OTLP_METRICS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    StdoutEndpoint,
}

/// Which temporality the pushed metrics have
/// (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Temporality {
    #[default]
    Cumulative,
    Delta,
    LowMemory,
}

/// The OTLP metrics collector and how to talk to it; comparing two tells a
/// reload whether the exporter must be rebuilt.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpMetricsTarget {
    /// For `http`, the full URL (`.../v1/metrics`, or the signal-specific
    /// variable as given).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: Vec<(String, Secret)>,
    /// How long one export may take (`OTEL_EXPORTER_OTLP_METRICS_TIMEOUT`,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s).
    pub timeout: Duration,
    /// The collector TLS variables (`OTEL_EXPORTER_OTLP_CERTIFICATE`, ...), as
    /// for spans.
    pub tls: Box<crate::tls::TlsSettings>,
}

/// Push settings: the target, and the reader's settings that only a restart
/// changes (the environment is read once per process).
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpMetrics {
    pub target: OtlpMetricsTarget,
    /// `OTEL_METRIC_EXPORT_INTERVAL`, default 60 s.
    pub interval: Duration,
    /// `OTEL_METRIC_EXPORT_TIMEOUT`, default 30 s: the most one collect-and-push
    /// may take, retries included.
    pub export_timeout: Duration,
    pub temporality: Temporality,
}

/// What `OTEL_METRICS_EXPORTER` asks for, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSettings {
    /// Serve `/metrics` on the admin port.
    pub prometheus: bool,
    /// Push to an OTLP collector.
    pub otlp: Option<OtlpMetrics>,
    /// `OTEL_METRICS_EXPORTER` as set (trimmed), for messages; `None` when unset.
    pub exporter_var: Option<String>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            prometheus: true,
            otlp: None,
            exporter_var: None,
        }
    }
}

/// Resolves the metrics settings of one config generation against `env`.
pub fn resolve(plan: &TracingPlan, env: EnvLookup<'_>) -> Result<MetricsSettings, SettingsError> {
    let var = env("OTEL_METRICS_EXPORTER").map(|v| v.trim().to_owned());
    let (prometheus, otlp) = match &var {
        None => (true, false),
        Some(value) => exporters(value)?,
    };
    let otlp = if otlp {
        Some(OtlpMetrics {
            target: target(plan, env)?,
            interval: millis(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000)?,
            export_timeout: millis(env, "OTEL_METRIC_EXPORT_TIMEOUT", 30_000)?,
            temporality: temporality(env)?,
        })
    } else {
        None
    };
    Ok(MetricsSettings {
        prometheus,
        otlp,
        exporter_var: var,
    })
}

/// `(prometheus, otlp)` from `OTEL_METRICS_EXPORTER`'s comma list.
fn exporters(value: &str) -> Result<(bool, bool), MetricsSettingsError> {
    let entries: Vec<String> = value
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect();
    let (mut prometheus, mut otlp, mut none) = (false, false, false);
    for entry in &entries {
        match entry.as_str() {
            "prometheus" => prometheus = true,
            "otlp" => otlp = true,
            "none" => none = true,
            _ => {
                return Err(MetricsSettingsError::UnknownExporter {
                    value: value.to_owned(),
                    entry: entry.clone(),
                });
            }
        }
    }
    if none && (prometheus || otlp) {
        return Err(MetricsSettingsError::NoneWithOthers {
            value: value.to_owned(),
        });
    }
    if entries.is_empty() {
        // Only commas and spaces: as if unset.
        return Ok((true, false));
    }
    Ok((prometheus, otlp))
}

/// A duration in milliseconds from `name`, `default_ms` when unset. Zero is
/// refused for the interval (it would push without pause) and for timeouts.
fn millis(
    env: EnvLookup<'_>,
    name: &'static str,
    default_ms: u64,
) -> Result<Duration, MetricsSettingsError> {
    let Some(value) = env(name) else {
        return Ok(Duration::from_millis(default_ms));
    };
    match value.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(MetricsSettingsError::BadMillis { name, value }),
    }
}

fn temporality(env: EnvLookup<'_>) -> Result<Temporality, MetricsSettingsError> {
    let Some(value) = env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") else {
        return Ok(Temporality::Cumulative);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "cumulative" => Ok(Temporality::Cumulative),
        "delta" => Ok(Temporality::Delta),
        "lowmemory" => Ok(Temporality::LowMemory),
        _ => Err(MetricsSettingsError::BadTemporality { value }),
    }
}

/// Where an endpoint came from, for the protocol and headers that go with it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    SignalVar,
    GenericVar,
    Config,
    Default,
}

/// The collector: endpoint, protocol, headers and timeout, each by the rule in
/// the module's doc.
fn target(plan: &TracingPlan, env: EnvLookup<'_>) -> Result<OtlpMetricsTarget, SettingsError> {
    let protocol = protocol(plan, env)?;
    let (origin, endpoint) = endpoint(plan, env, protocol)?;
    let name = match origin {
        Origin::SignalVar => "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        Origin::GenericVar => "OTEL_EXPORTER_OTLP_ENDPOINT",
        Origin::Config => "otlpEndpoint",
        Origin::Default => "the default endpoint",
    };
    refuse_credentials(name, &endpoint)?;
    let timeout = match env("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT") {
        Some(_) => millis(env, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", 10_000)?,
        None => millis(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
    };
    Ok(OtlpMetricsTarget {
        endpoint,
        protocol,
        headers: headers(plan, env, origin == Origin::Config)?,
        timeout,
        tls: Box::new(crate::tls::TlsSettings::from_env(env)?),
    })
}

/// `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`, the
/// config's `otlpProtocol`, then gRPC.
fn protocol(plan: &TracingPlan, env: EnvLookup<'_>) -> Result<OtlpProtocol, SettingsError> {
    for name in [
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(v) = env(name) {
            return match v.trim() {
                "grpc" => Ok(OtlpProtocol::Grpc),
                "http/protobuf" | "http" => Ok(OtlpProtocol::Http),
                _ => Err(SettingsError::BadProtocol { name, value: v }),
            };
        }
    }
    Ok(plan.otlp_protocol.unwrap_or_default())
}

/// The endpoint and where it came from. A signal-specific URL is used as is; a
/// generic one or the config's gets `/v1/metrics` for OTLP/HTTP (a config
/// endpoint written with `/v1/traces` has it replaced).
fn endpoint(
    plan: &TracingPlan,
    env: EnvLookup<'_>,
    protocol: OtlpProtocol,
) -> Result<(Origin, String), MetricsSettingsError> {
    if let Some(e) = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        return Ok((Origin::SignalVar, e.trim().to_owned()));
    }
    if let Some(e) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        return Ok((Origin::GenericVar, metrics_path(&e, protocol)));
    }
    match plan.otlp_endpoint.as_deref().map(str::trim) {
        Some("stdout") => Err(MetricsSettingsError::StdoutEndpoint),
        Some(e) => Ok((Origin::Config, metrics_path(e, protocol))),
        None => Ok((
            Origin::Default,
            match protocol {
                OtlpProtocol::Grpc => "http://localhost:4317".to_owned(),
                OtlpProtocol::Http => "http://localhost:4318/v1/metrics".to_owned(),
            },
        )),
    }
}

/// OTLP/HTTP posts metrics to `{base}/v1/metrics`.
fn metrics_path(endpoint: &str, protocol: OtlpProtocol) -> String {
    let e = endpoint.trim();
    if protocol == OtlpProtocol::Grpc {
        return e.to_owned();
    }
    let base = e.trim_end_matches('/');
    let base = base.strip_suffix("/v1/traces").unwrap_or(base);
    if base.ends_with("/v1/metrics") {
        return base.to_owned();
    }
    format!("{base}/v1/metrics")
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, then the config's headers when the endpoint is
/// the config's, then `OTEL_EXPORTER_OTLP_METRICS_HEADERS`; later ones win on the
/// same name.
fn headers(
    plan: &TracingPlan,
    env: EnvLookup<'_>,
    config_endpoint: bool,
) -> Result<Vec<(String, Secret)>, SettingsError> {
    let mut out: BTreeMap<String, Secret> = BTreeMap::new();
    let from_var = |var: &str, out: &mut BTreeMap<String, Secret>| {
        let text = env(var).unwrap_or_default();
        for (k, v) in parse_env_headers(strip_one_newline(&text)) {
            check_header(&k, &v, &format!(" (from {var})"))?;
            out.insert(k, Secret::new(v));
        }
        Ok::<(), SettingsError>(())
    };
    from_var("OTEL_EXPORTER_OTLP_HEADERS", &mut out)?;
    if config_endpoint {
        insert_config_headers(plan, env, &mut out)?;
    }
    from_var("OTEL_EXPORTER_OTLP_METRICS_HEADERS", &mut out)?;
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use celgate_engine::{LoadOptions, load};

    fn resolve_with(yaml: &str, vars: &[(&str, &str)]) -> Result<MetricsSettings, SettingsError> {
        let plan = load(yaml, &LoadOptions::default())
            .expect("test config loads")
            .plan;
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        resolve(&plan, &env)
    }

    fn target_of(yaml: &str, vars: &[(&str, &str)]) -> OtlpMetricsTarget {
        resolve_with(yaml, vars)
            .unwrap()
            .otlp
            .expect("otlp is on")
            .target
    }

    fn headers_of(t: &OtlpMetricsTarget) -> Vec<(&str, &str)> {
        t.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect()
    }

    #[test]
    fn prometheus_stays_the_default_and_the_list_is_read_as_the_spec_has_it() {
        let s = resolve_with("{}", &[]).unwrap();
        assert!(s.prometheus && s.otlp.is_none());
        for (value, prometheus, otlp) in [
            ("prometheus", true, false),
            ("otlp", false, true),
            ("OTLP , prometheus", true, true),
            ("none", false, false),
            (" , ", true, false),
        ] {
            let s = resolve_with("{}", &[("OTEL_METRICS_EXPORTER", value)]).unwrap();
            assert_eq!(
                (s.prometheus, s.otlp.is_some()),
                (prometheus, otlp),
                "{value}"
            );
        }
        let e = resolve_with("{}", &[("OTEL_METRICS_EXPORTER", "otlp,statsd")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("OTEL_METRICS_EXPORTER is `otlp,statsd`: `statsd` is not"),
            "{e}"
        );
        let e = resolve_with("{}", &[("OTEL_METRICS_EXPORTER", "none,otlp")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`none` cannot be combined"), "{e}");
    }

    #[test]
    fn signal_variables_win_then_generic_ones_then_the_config() {
        let otlp = ("OTEL_METRICS_EXPORTER", "otlp");
        let yaml = "config:\n  tracing:\n    otlpEndpoint: http://mine:4318/v1/traces\n    otlpProtocol: http\n    headers:\n      Authorization: Bearer ${TOKEN}\n";
        let token = ("TOKEN", "t-1");
        // The config's collector, its headers included.
        let t = target_of(yaml, &[otlp, token]);
        assert_eq!(t.endpoint, "http://mine:4318/v1/metrics");
        assert_eq!(t.protocol, OtlpProtocol::Http);
        assert_eq!(headers_of(&t), [("authorization", "Bearer t-1")]);
        // A generic variable wins, and the config's headers stay with the config's
        // collector.
        let t = target_of(
            yaml,
            &[
                otlp,
                token,
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-team=a%20b"),
            ],
        );
        assert_eq!(t.endpoint, "http://c:4318/v1/metrics");
        assert_eq!(headers_of(&t), [("x-team", "a b")]);
        // The signal-specific endpoint is used as is; its headers win.
        let t = target_of(
            yaml,
            &[
                otlp,
                token,
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "http://m:9000/ingest",
                ),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-team=a,x-other=1"),
                ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-team=metrics"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ],
        );
        assert_eq!(
            (t.endpoint.as_str(), t.protocol),
            ("http://m:9000/ingest", OtlpProtocol::Grpc)
        );
        assert_eq!(headers_of(&t), [("x-other", "1"), ("x-team", "metrics")]);
        assert_eq!(t.timeout, Duration::from_millis(2500));
        // Nothing anywhere: the SDK's default collector.
        let t = target_of("{}", &[otlp]);
        assert_eq!(
            (t.endpoint.as_str(), t.protocol),
            ("http://localhost:4317", OtlpProtocol::Grpc)
        );
        let t = target_of(
            "{}",
            &[otlp, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
        );
        assert_eq!(t.endpoint, "http://localhost:4318/v1/metrics");
    }

    #[test]
    fn reader_settings_have_the_spec_defaults_and_refuse_nonsense() {
        let otlp = ("OTEL_METRICS_EXPORTER", "otlp");
        let s = resolve_with("{}", &[otlp]).unwrap().otlp.unwrap();
        assert_eq!(s.interval, Duration::from_secs(60));
        assert_eq!(s.export_timeout, Duration::from_secs(30));
        assert_eq!(s.target.timeout, Duration::from_secs(10));
        assert_eq!(s.temporality, Temporality::Cumulative);
        let s = resolve_with(
            "{}",
            &[
                otlp,
                ("OTEL_METRIC_EXPORT_INTERVAL", "250"),
                ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
            ],
        )
        .unwrap()
        .otlp
        .unwrap();
        assert_eq!(s.interval, Duration::from_millis(250));
        assert_eq!(s.temporality, Temporality::Delta);
        for (var, value) in [
            ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1s"),
            ("OTEL_METRIC_EXPORT_TIMEOUT", "-5"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "x"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "sometimes",
            ),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json"),
        ] {
            let e = resolve_with("{}", &[otlp, (var, value)])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("{var} is `{value}`")), "{e}");
        }
        // Without otlp the push settings are not read at all.
        assert!(resolve_with("{}", &[("OTEL_METRIC_EXPORT_INTERVAL", "0")]).is_ok());
    }

    #[test]
    fn secrets_stay_out_of_errors_and_debug_output() {
        let otlp = ("OTEL_METRICS_EXPORTER", "otlp");
        let e = resolve_with(
            "{}",
            &[
                otlp,
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "http://u:hunter2@c:4318",
                ),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT `http://***@c:4318`"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = resolve_with(
            "{}",
            &[
                otlp,
                ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-key=hunter2%0A"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("(from OTEL_EXPORTER_OTLP_METRICS_HEADERS) contains a line break"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let s = resolve_with(
            "{}",
            &[
                otlp,
                ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-key=hunter2"),
            ],
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        let e = resolve_with("config:\n  tracing:\n    otlpEndpoint: stdout\n", &[otlp])
            .unwrap_err()
            .to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"), "{e}");
    }
}
