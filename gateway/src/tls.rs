//! TLS for celgate's own connections to a collector: which certificate authorities
//! it trusts and which certificate it presents (mTLS), from the OTel SDK variables
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
//! `OTEL_EXPORTER_OTLP_CLIENT_KEY` (each overridden by its `_TRACES_` variant), and
//! why a handshake failed, in words an operator can act on.
//!
//! The files are read and checked when a config is resolved ([`TlsSettings::from_env`]),
//! so a missing file or a bad PEM stops `celgate run`, fails `celgate check` and
//! keeps the previous config on a reload, instead of surfacing as dropped spans. The
//! exporter then asks [`client_config`] for a rustls config (ring, the one crypto
//! provider of the process): the system's roots (webpki's built-in ones when the
//! system has none) plus the configured CA file, and the client identity if any.
//! ALPN is the caller's (hyper-rustls sets it from the HTTP versions it enables).
//! Private key material never leaves this module in a message: [`Identity`]'s
//! `Debug` shows the paths only, and key errors name the file, never its content.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use crate::settings::EnvLookup;

/// The variables, each as (signal-specific, general): the first one set wins.
const CA_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];
const CERT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
];
const KEY_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
];

/// Why the collector's TLS settings cannot be used. Messages name the variable and
/// the file, never a key's content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{var} names `{path}`, which cannot be read: {source}")]
    Read {
        var: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{var} names `{path}`, which holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { var: &'static str, path: PathBuf },
    #[error("{var} names `{path}`, which is not valid PEM: {reason}")]
    BadPem {
        var: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{var} names `{path}`, which holds no readable PEM private key (PKCS#8, PKCS#1 or SEC1)"
    )]
    NoKey { var: &'static str, path: PathBuf },
    #[error("{var} names `{path}`, whose certificate cannot be a trusted CA: {reason}")]
    BadCa {
        var: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{set} is set but {missing} is not: a client certificate (mTLS) needs both")]
    HalfIdentity {
        set: &'static str,
        missing: &'static str,
    },
    #[error(
        "the client certificate `{cert}` and the key `{key}` cannot be used together: {reason}"
    )]
    BadIdentity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot set up TLS with the ring provider: {0}")]
    Provider(String),
}

/// A PEM file of CA certificates, read.
#[derive(Clone, Debug, PartialEq)]
pub struct CaFile {
    /// The variable that named it.
    pub var: &'static str,
    pub path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
}

/// The certificate chain and key celgate presents to a collector that asks (mTLS).
#[derive(Clone, PartialEq)]
pub struct Identity {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("key", &"***")
            .finish()
    }
}

/// A private key; compared by content (so a rotated key is a change), never printed.
struct PrivateKey(PrivateKeyDer<'static>);

impl Clone for PrivateKey {
    fn clone(&self) -> Self {
        PrivateKey(self.0.clone_key())
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.secret_der() == other.0.secret_der()
    }
}

/// TLS towards the collector; the default trusts the system's roots and presents
/// no certificate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsSettings {
    /// Trusted besides the system's roots.
    pub ca: Option<CaFile>,
    pub identity: Option<Identity>,
}

/// The value of the first of `vars` that is set, with its name.
fn first(env: EnvLookup<'_>, vars: [&'static str; 2]) -> Option<(&'static str, PathBuf)> {
    vars.into_iter()
        .find_map(|var| env(var).map(|v| (var, PathBuf::from(v.trim()))))
}

/// The files the variables name (CA, client certificate, client key), read or not:
/// what a reload watches.
pub fn env_files(env: EnvLookup<'_>) -> Vec<PathBuf> {
    [CA_VARS, CERT_VARS, KEY_VARS]
        .into_iter()
        .filter_map(|vars| first(env, vars).map(|(_, path)| path))
        .collect()
}

impl TlsSettings {
    /// Reads the files the variables name and checks that rustls can use them.
    pub fn from_env(env: EnvLookup<'_>) -> Result<TlsSettings, TlsError> {
        let ca = first(env, CA_VARS)
            .map(|(var, path)| read_ca(var, path))
            .transpose()?;
        let identity = match (first(env, CERT_VARS), first(env, KEY_VARS)) {
            (None, None) => None,
            (Some((set, _)), None) => {
                return Err(TlsError::HalfIdentity {
                    set,
                    missing: KEY_VARS[1],
                });
            }
            (None, Some((set, _))) => {
                return Err(TlsError::HalfIdentity {
                    set,
                    missing: CERT_VARS[1],
                });
            }
            (Some(cert), Some(key)) => Some(read_identity(cert, key)?),
        };
        let settings = TlsSettings { ca, identity };
        // What the exporter will do, minus the system's roots: fails now on a
        // certificate rustls refuses or a key that does not match.
        settings.build(RootCertStore::empty())?;
        Ok(settings)
    }

    /// The files read, for the admin page: paths only.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "ca": self.ca.as_ref().map(|c| c.path.display().to_string()),
            "clientCertificate": self.identity.as_ref().map(|i| i.cert_path.display().to_string()),
        })
    }

    fn build(&self, mut roots: RootCertStore) -> Result<ClientConfig, TlsError> {
        if let Some(ca) = &self.ca {
            for cert in &ca.certs {
                roots.add(cert.clone()).map_err(|e| TlsError::BadCa {
                    var: ca.var,
                    path: ca.path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Provider(e.to_string()))?
            .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_client_cert_resolver(Arc::new(NoIdentity::default()))),
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.0.clone_key())
                .map_err(|e| TlsError::BadIdentity {
                    cert: id.cert_path.clone(),
                    key: id.key_path.clone(),
                    reason: e.to_string(),
                }),
        }
    }
}

/// The client certificate of a config without one: none, and a warning when a
/// collector asks for one. Under TLS 1.3 a server refuses a missing certificate
/// after the client's handshake is over, with an alert the client may never read
/// (its first write can meet a closed connection: "broken pipe"), so being asked is
/// the one sure sign.
#[derive(Debug, Default)]
struct NoIdentity {
    warned: AtomicBool,
}

impl rustls::client::ResolvesClientCert for NoIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "celgate::export", "the collector asks for a client certificate (mTLS) and none is configured: set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY");
        }
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// The rustls config for a collector: the system's roots (webpki's when the system
/// has none) plus `tls`'s CA, `tls`'s client identity if any, no ALPN.
pub fn client_config(tls: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    tls.build(system_roots()).map(Arc::new)
}

/// The roots rustls-native-certs finds (it honours `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`), or webpki's built-in ones when it finds none.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

fn read(var: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        var,
        path: path.to_owned(),
        source,
    })
}

fn read_certs(var: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(var, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            var,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            var,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_ca(var: &'static str, path: PathBuf) -> Result<CaFile, TlsError> {
    Ok(CaFile {
        var,
        certs: read_certs(var, &path)?,
        path,
    })
}

/// The client certificate chain and its key. A PEM error on the key file is not
/// quoted: it could show part of the key.
fn read_identity(
    (cert_var, cert_path): (&'static str, PathBuf),
    (key_var, key_path): (&'static str, PathBuf),
) -> Result<Identity, TlsError> {
    let chain = read_certs(cert_var, &cert_path)?;
    let pem = read(key_var, &key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey {
        var: key_var,
        path: key_path.clone(),
    })?;
    Ok(Identity {
        cert_path,
        key_path,
        chain,
        key: PrivateKey(key),
    })
}

/// Why a TLS handshake with `peer` ("backend", "collector") failed, if `error` (or
/// an error under it) is a TLS one: `TLS: the backend's certificate is not trusted
/// (unknown issuer)`, say.
pub fn explain(error: &(dyn StdError + 'static), peer: &str) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(format!("TLS: {}", reason(tls, peer)));
        }
        if e.is::<std::io::Error>()
            && let Some(reason) = reason_from_text(&e.to_string(), peer)
        {
            return Some(format!("TLS: {reason}"));
        }
        next = under(e);
    }
    None
}

/// The error under `e`. For an `io::Error` that is the error it wraps:
/// `io::Error::source` skips it (and returns *its* source), so a walk of sources
/// alone would miss a rustls error carried in one, or in an `io::Error` in one.
fn under<'e>(e: &'e (dyn StdError + 'static)) -> Option<&'e (dyn StdError + 'static)> {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    }
}

/// The reason from a rustls error's text, anywhere in `text`: h2 keeps only the
/// kind and the text of an I/O error, and tonic's errors reach the exporter's
/// caller as text, so an HTTP/2 connection's TLS failure arrives as words. Reads
/// the two forms that name a reason (`received fatal alert: NAME`, `invalid peer
/// certificate: ...`).
fn reason_from_text(text: &str, peer: &str) -> Option<String> {
    const ALERT: &str = "received fatal alert: ";
    const CERT: &str = "invalid peer certificate: ";
    if let Some(at) = text.find(ALERT) {
        let name: String = text[at + ALERT.len()..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let alert = (0..=u8::MAX)
            .map(AlertDescription::from)
            .find(|a| format!("{a:?}") == name)?;
        return Some(alert_reason(alert, peer));
    }
    let cert = &text[text.find(CERT)? + CERT.len()..];
    let known = [
        ("UnknownIssuer", CertificateError::UnknownIssuer),
        (
            "certificate not valid for name",
            CertificateError::NotValidForName,
        ),
        ("NotValidForName", CertificateError::NotValidForName),
        ("certificate expired", CertificateError::Expired),
        ("Expired", CertificateError::Expired),
        ("certificate not valid yet", CertificateError::NotValidYet),
        ("NotValidYet", CertificateError::NotValidYet),
        ("Revoked", CertificateError::Revoked),
        ("BadSignature", CertificateError::BadSignature),
        (
            "certificate does not allow extended key usage",
            CertificateError::InvalidPurpose,
        ),
        ("InvalidPurpose", CertificateError::InvalidPurpose),
    ];
    Some(
        match known.iter().find(|(start, _)| cert.starts_with(start)) {
            Some((_, e)) => certificate_reason(e, peer),
            None => format!("the {peer}'s certificate was refused: {cert}"),
        },
    )
}

fn reason(e: &rustls::Error, peer: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(cert) => certificate_reason(cert, peer),
        rustls::Error::AlertReceived(alert) => alert_reason(*alert, peer),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "the {peer} did not answer in TLS ({e}): is it a plain-HTTP port? Then use http://"
        ),
        other => format!("the handshake with the {peer} failed: {other}"),
    }
}

fn certificate_reason(e: &CertificateError, peer: &str) -> String {
    let what = match e {
        CertificateError::UnknownIssuer => {
            "is not trusted (unknown issuer): its CA is not among the trusted roots"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "is not valid for this host name (name mismatch)"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "has expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "is not valid yet"
        }
        CertificateError::Revoked => "is revoked",
        CertificateError::BadSignature => "has a bad signature",
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "is not meant for a TLS server (invalid purpose)"
        }
        other => return format!("the {peer}'s certificate was refused: {other}"),
    };
    format!("the {peer}'s certificate {what}")
}

fn alert_reason(alert: AlertDescription, peer: &str) -> String {
    match alert {
        AlertDescription::CertificateRequired => format!(
            "the {peer} requires a client certificate (mTLS) and celgate sent none: set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY"
        ),
        AlertDescription::UnknownCA
        | AlertDescription::BadCertificate
        | AlertDescription::CertificateUnknown
        | AlertDescription::AccessDenied => {
            format!("the {peer} refused celgate's client certificate (alert: {alert:?})")
        }
        other => format!("the {peer} ended the handshake (alert: {other:?})"),
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// `message` (an export error as text) with the TLS reason it quotes in front, if it
/// quotes one: tonic's errors reach the exporter's caller as text only.
pub fn with_reason(message: String, peer: &str) -> String {
    match reason_from_text(&message, peer) {
        Some(reason) => format!("TLS: {reason} ({message})"),
        None => message,
    }
}

/// A tonic channel to `endpoint` (`https://HOST:PORT`) over `config`, for the gRPC
/// exporter. tonic does TLS itself for an `https` URI (and refuses one without its
/// own TLS config), so it is handed the endpoint as `http://` and [`ForceTls`]
/// connects with TLS whatever the scheme.
pub fn grpc_channel(
    endpoint: &str,
    config: Arc<ClientConfig>,
    timeout: std::time::Duration,
) -> Result<tonic::transport::Channel, String> {
    let rest = endpoint.strip_prefix("https://").unwrap_or(endpoint);
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{rest}"))
        .map_err(|e| e.to_string())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(config))
        .https_only()
        .enable_http2()
        .wrap_connector(crate::upstream::tcp_connector(Some(
            std::time::Duration::from_secs(10),
        )));
    Ok(plain
        .timeout(timeout)
        .connect_with_connector_lazy(ForceTls(connector)))
}

/// A connector that always speaks TLS (`https_only` behind a scheme set to `https`).
#[derive(Clone)]
struct ForceTls(crate::upstream::HttpsConnector);

type Connecting = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>,
                    BoxError,
                >,
            > + Send,
    >,
>;

impl tower_service::Service<http::Uri> for ForceTls {
    type Response = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut parts = uri.into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        match http::Uri::from_parts(parts) {
            Ok(uri) => {
                let connecting = self.0.call(uri);
                Box::pin(connecting)
            }
            Err(e) => Box::pin(std::future::ready(Err(Box::new(e) as BoxError))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn ca_pem() -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), rcgen::Issuer::new(params, key))
    }

    #[test]
    fn nothing_set_is_the_default_and_traces_variables_win() {
        let none = env_of(vec![]);
        assert_eq!(
            TlsSettings::from_env(&none).unwrap(),
            TlsSettings::default()
        );
        let dir = tempfile::tempdir().unwrap();
        let (pem, _) = ca_pem();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, pem).unwrap();
        let env = env_of(vec![
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                "/nonexistent/ca.pem".into(),
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                good.display().to_string(),
            ),
        ]);
        let tls = TlsSettings::from_env(&env).unwrap();
        assert_eq!(tls.ca.as_ref().map(|c| c.path.clone()), Some(good.clone()));
        assert_eq!(env_files(&env), vec![good]);
        assert!(client_config(&tls).is_ok());
    }

    #[test]
    fn bad_files_are_errors_naming_the_variable_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = |vars: Vec<(&'static str, String)>| {
            TlsSettings::from_env(&env_of(vars))
                .unwrap_err()
                .to_string()
        };
        let e = err(vec![(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "/nonexistent/ca.pem".into(),
        )]);
        assert!(
            e.starts_with(
                "OTEL_EXPORTER_OTLP_CERTIFICATE names `/nonexistent/ca.pem`, which cannot be read"
            ),
            "{e}"
        );
        let e = err(vec![(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            junk.display().to_string(),
        )]);
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = err(vec![(
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            junk.display().to_string(),
        )]);
        assert_eq!(
            e,
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set but OTEL_EXPORTER_OTLP_CLIENT_KEY is not: a client certificate (mTLS) needs both"
        );
    }

    #[test]
    fn a_key_is_never_printed_and_must_match_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (_, issuer) = ca_pem();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let cert_path = write("client.pem", cert.pem());
        let key_path = write("client-key.pem", key.serialize_pem());
        let other_path = write("other-key.pem", other_key.serialize_pem());
        let secret = key.serialize_pem();
        let body: String = secret.lines().nth(1).unwrap().to_owned();
        let env = env_of(vec![
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert_path.clone()),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key_path.clone()),
        ]);
        let tls = TlsSettings::from_env(&env).unwrap();
        let shown = format!("{tls:?}");
        assert!(shown.contains("***") && !shown.contains(&body), "{shown}");
        assert!(!shown.contains("48, 129"), "no key bytes: {shown}");
        let mismatched = env_of(vec![
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert_path.clone()),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", other_path),
        ]);
        let e = TlsSettings::from_env(&mismatched).unwrap_err().to_string();
        assert!(e.contains("cannot be used together"), "{e}");
        // A certificate where the key should be: named, not quoted.
        let swapped = env_of(vec![
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert_path.clone()),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", cert_path.clone()),
        ]);
        let e = TlsSettings::from_env(&swapped).unwrap_err().to_string();
        assert!(e.contains("holds no readable PEM private key"), "{e}");
    }

    #[test]
    fn handshake_errors_are_explained_through_io_errors() {
        let unknown = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(
            explain(&unknown, "backend").as_deref(),
            Some(
                "TLS: the backend's certificate is not trusted (unknown issuer): its CA is not among the trusted roots"
            )
        );
        let required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(
            explain(&required, "collector")
                .unwrap()
                .starts_with("TLS: the collector requires a client certificate (mTLS)")
        );
        let nested = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        ));
        assert_eq!(
            explain(&nested, "collector").as_deref(),
            Some("TLS: the collector's certificate has expired")
        );
        // What h2 hands back: the kind and the text.
        let h2 = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRequired",
        );
        assert!(
            explain(&h2, "collector")
                .unwrap()
                .starts_with("TLS: the collector requires a client certificate (mTLS)")
        );
        let h2 = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        assert!(
            explain(&h2, "collector")
                .unwrap()
                .contains("(unknown issuer)")
        );
        let plain = std::io::Error::other("connection refused");
        assert_eq!(explain(&plain, "backend"), None);
        // tonic's error as the exporter's text.
        let text = "export failed with gRPC code: Unknown: transport error: connection error: received fatal alert: CertificateRequired".to_owned();
        assert!(
            with_reason(text.clone(), "collector")
                .starts_with("TLS: the collector requires a client certificate (mTLS)")
        );
        assert_eq!(with_reason("refused".to_owned(), "collector"), "refused");
    }
}
