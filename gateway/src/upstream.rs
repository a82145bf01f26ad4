//! The HTTP client celgate uses to reach backends (and OTLP/HTTP collectors):
//! hyper with connection pooling, HTTP/1.1 and HTTP/2 (ALPN), rustls with the
//! ring provider and the system's roots (webpki's built-in roots when the system
//! has none).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The connector type of every outgoing connection.
pub type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A pooled client sending request bodies of type `B`.
pub type HttpClient<B> = Client<HttpsConnector, B>;

/// The single rustls crypto provider of the process. Installing it as the default
/// makes any library that asks rustls for "the" provider agree with us.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The TCP connector under every TLS one: no Nagle, `connect_timeout`.
pub fn tcp_connector(connect_timeout: Option<Duration>) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    http
}

/// A connector for `https://` with `config` (ALPN set here: h2, then http/1.1) and
/// plain `http://`; what the OTLP/HTTP exporter uses with the collector's TLS.
pub fn https_connector_from(config: rustls::ClientConfig) -> HttpsConnector {
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp_connector(Some(Duration::from_secs(10))))
}

/// A TLS-capable connector with `connect_timeout`.
pub fn https_connector_with(connect_timeout: Option<Duration>) -> HttpsConnector {
    let http = tcp_connector(connect_timeout);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(Arc::clone(&provider)) {
        Ok(b) => b,
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .unwrap_or_else(|_| {
                // ring supports rustls' safe defaults, so this cannot happen;
                // fall back to the builder's own default provider regardless.
                hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots()
            }),
    };
    builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}

/// A connector with a 10 s connect timeout, for the OTLP/HTTP exporter.
pub fn https_connector() -> HttpsConnector {
    https_connector_with(Some(Duration::from_secs(10)))
}

/// Clients for backends, one per distinct connect timeout (usually one), kept
/// across config reloads so pooled connections survive them.
#[derive(Default)]
pub struct Clients<B> {
    by_timeout: Mutex<HashMap<Duration, HttpClient<B>>>,
}

impl<B> Clients<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new() -> Self {
        Clients {
            by_timeout: Mutex::new(HashMap::new()),
        }
    }

    /// The pooled client for `connect_timeout`.
    pub fn get(&self, connect_timeout: Duration) -> HttpClient<B> {
        let mut map = match self.by_timeout.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(connect_timeout)
            .or_insert_with(|| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(256)
                    .build(https_connector_with(Some(connect_timeout)))
            })
            .clone()
    }
}
