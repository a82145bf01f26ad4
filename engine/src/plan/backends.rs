//! The backends' checks at load: names that identify one backend each, base URLs
//! the gateway can use, and no credentials where a ConfigMap would show them.
//!
//! Every message names the URL masked ([`redact::mask_url`]): a config error is
//! printed and logged, and must not carry the password it complains about.

use crate::config::ConfigFile;
use crate::diagnostics::{ConfigError, Diagnostic};
use crate::redact;

/// Rejects backends the gateway could not use (no name, a name used twice, a base
/// URL that is not `http(s)://host...`) and URLs with a password in them.
pub(super) fn check(file: &ConfigFile) -> Result<(), ConfigError> {
    let mut diagnostics = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for b in &file.backends {
        let pos = b.referenced.into();
        let backend = &b.value;
        if backend.name.trim().is_empty() {
            diagnostics.push(Diagnostic::new(pos, "backend `name` must not be empty"));
        } else if !seen.insert(backend.name.as_str()) {
            diagnostics.push(Diagnostic::new(
                pos,
                format!(
                    "backend name `{}` is used twice; names identify backends in logs and metrics",
                    backend.name
                ),
            ));
        }
        let url = backend.base_url.as_str();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            diagnostics.push(Diagnostic::new(
                pos,
                format!(
                    "backend `{}`: baseUrl `{}` must start with http:// or https:// and name a host, e.g. https://api.openai.com/v1",
                    backend.name,
                    redact::mask_url(url)
                ),
            ));
        } else if redact::has_userinfo(url) {
            diagnostics.push(Diagnostic::new(
                pos,
                format!(
                    "backend `{}`: baseUrl `{}` carries credentials (user:password@), which celgate does not send and which do not belong in a ConfigMap: remove them and give the key as `apiKey: {{env: VARIABLE}}` or `{{file: PATH}}`",
                    backend.name,
                    redact::mask_url(url)
                ),
            ));
        }
    }
    if let Some(endpoint) = file
        .config
        .tracing
        .as_ref()
        .and_then(|t| t.otlp_endpoint.as_ref())
        .filter(|e| redact::has_userinfo(&e.value))
    {
        diagnostics.push(Diagnostic::new(
            endpoint.referenced.into(),
            format!(
                "otlpEndpoint `{}` carries credentials (user:password@), which do not belong in a ConfigMap: remove them and send the collector's credentials as a header, e.g. `headers: {{Authorization: \"Basic ${{COLLECTOR_AUTH}}\"}}`",
                redact::mask_url(&endpoint.value)
            ),
        ));
    }
    if diagnostics.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { diagnostics })
    }
}
