//! The admin listener: health, readiness, metrics (unless `OTEL_METRICS_EXPORTER`
//! leaves `prometheus` out), the effective config.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::state::Shared;

/// Serves the admin endpoints until aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        let service = service_fn(move |req| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, std::convert::Infallible>(respond(&shared, &req)) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

fn respond(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if shared.draining.load(std::sync::atomic::Ordering::Relaxed) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n".to_owned(),
        ),
        "/readyz" => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        "/config" => (
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&config_json(shared)).unwrap_or_default() + "\n",
        ),
        "/metrics" if !shared.current().settings.metrics.prometheus => (
            StatusCode::NOT_FOUND,
            "text/plain",
            metrics_off(&shared.current().settings.metrics),
        ),
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.sinks.metrics.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz, /readyz, /metrics, /config\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// The one line `/metrics` answers when Prometheus is not among the exporters.
fn metrics_off(m: &crate::settings::metrics::MetricsSettings) -> String {
    format!(
        "/metrics is off: OTEL_METRICS_EXPORTER is `{}`, which has no `prometheus`\n",
        m.exporter_var.as_deref().unwrap_or_default()
    )
}

/// `/config`: the effective config (preset merged into the fields, each field
/// with its origin), its generation, hash and load time, and the last reload
/// error. Header values are masked, and URL userinfo (refused at load, masked all
/// the same); keys appear only as where they come from; client keys as the file,
/// the number of clients and their names (no hashes).
pub fn config_json(shared: &Shared) -> serde_json::Value {
    use celgate_engine::config::{Sampling, SecretRef};
    use celgate_engine::plan::Origin;
    use celgate_engine::redact::mask_url;
    use serde_json::json;
    let g = shared.current();
    let plan = &g.plan;
    let tracing = g.source.config.tracing.as_ref();
    let sampling = |s: Option<&Sampling>| match s {
        None => json!(null),
        Some(Sampling::Bool(b)) => json!(b),
        Some(Sampling::Ratio(r)) => json!(r),
        Some(Sampling::Expression(e)) => json!(e),
    };
    let fields: Vec<_> = plan
        .fields()
        .map(|(key, expr, origin)| {
            json!({"key": key, "expression": expr, "from": match origin {
                Origin::Preset(p) => format!("preset:{}", p.as_str()),
                Origin::User => "config".to_owned(),
            }})
        })
        .collect();
    let export = match &g.settings.export.target {
        crate::settings::ExportTarget::Disabled => json!({"target": "disabled"}),
        crate::settings::ExportTarget::Stdout => json!({"target": "stdout"}),
        crate::settings::ExportTarget::Otlp {
            endpoint,
            protocol,
            headers,
            tls,
        } => json!({
            "target": "otlp",
            "endpoint": mask_url(endpoint),
            "protocol": format!("{protocol:?}").to_lowercase(),
            "headers": headers.iter().map(|(k, _)| (k.clone(), json!("***"))).collect::<serde_json::Map<_, _>>(),
            "tls": tls.describe(),
        }),
    };
    let metrics = {
        let m = &g.settings.metrics;
        json!({
            "exporters": m.exporter_var,
            "prometheus": m.prometheus,
            "otlp": m.otlp.as_ref().map(|o| json!({
                "endpoint": mask_url(&o.target.endpoint),
                "protocol": format!("{:?}", o.target.protocol).to_lowercase(),
                "headers": o.target.headers.iter().map(|(k, _)| (k.clone(), json!("***"))).collect::<serde_json::Map<_, _>>(),
                "timeoutMs": o.target.timeout.as_millis() as u64,
                "intervalMs": o.interval.as_millis() as u64,
                "exportTimeoutMs": o.export_timeout.as_millis() as u64,
                "temporality": format!("{:?}", o.temporality).to_lowercase(),
            })),
        })
    };
    let backends: Vec<_> = g
        .settings
        .backends
        .iter()
        .zip(&g.source.backends)
        .map(|(b, src)| {
            json!({
                "name": b.name,
                "provider": b.provider,
                "baseUrl": mask_url(&src.value.base_url),
                "models": src.value.models,
                "rewriteModel": b.rewrite_model,
                "authPassthrough": b.auth_passthrough,
                "apiKey": match &src.value.api_key {
                    None => json!(null),
                    Some(SecretRef::Env(v)) => json!({"env": v, "value": "***"}),
                    Some(SecretRef::File(p)) => json!({"file": p, "value": "***"}),
                },
                "connectTimeoutMs": b.connect_timeout.as_millis() as u64,
                "timeoutMs": b.timeout.as_millis() as u64,
                "idleTimeoutMs": b.idle_timeout.as_millis() as u64,
            })
        })
        .collect();
    let last_error = shared
        .last_reload_error
        .lock()
        .ok()
        .and_then(|e| e.clone())
        .map(|e| json!({"at": rfc3339(e.at), "message": e.message}));
    let vis = plan.visibility();
    json!({
        "generation": g.number,
        "hash": format!("{:016x}", g.source_hash),
        "loadedAt": rfc3339(g.loaded_at),
        "lastReloadError": last_error,
        "listen": g.settings.listen,
        "admin": g.settings.admin,
        "tracing": {
            "preset": plan.preset.map(|p| p.as_str()),
            "export": export,
            "randomSampling": sampling(tracing.and_then(|t| t.random_sampling.as_ref()).map(|s| &s.value)),
            "clientSampling": sampling(tracing.and_then(|t| t.client_sampling.as_ref()).map(|s| &s.value)),
            "privacy": {"hideInputs": vis.hide_inputs, "hideOutputs": vis.hide_outputs},
            "resources": g.settings.export.resource.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
            "fields": fields,
        },
        "metrics": metrics,
        "server": {
            "maxBodyBytes": g.settings.server.max_body_bytes,
            "maxJsonDepth": g.settings.server.max_json_depth,
            "shutdownTimeoutMs": g.settings.server.shutdown_timeout.as_millis() as u64,
            "requestTimeoutMs": g.settings.server.request_timeout.as_millis() as u64,
            "accessLog": format!("{:?}", g.settings.server.access_log).to_lowercase(),
        },
        "auth": {
            "clientKeys": g.settings.client_keys.as_ref().map(|k| json!({
                "file": k.path().display().to_string(),
                "clients": k.names().len(),
                "keys": k.keys(),
                "names": k.names(),
            })),
        },
        "backends": backends,
    })
}

/// `2026-11-21T10:00:00Z` (UTC, seconds).
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_262_400);
        assert_eq!(super::rfc3339(t), "2026-11-21T12:00:00Z");
        assert_eq!(
            super::rfc3339(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00Z"
        );
    }
}
