//! A local PKI and TLS fronts, for the tests of celgate's TLS towards backends and
//! collectors.
//!
//! [`Pki::generate`] makes, with rcgen, a CA, a server certificate for `localhost`
//! and `127.0.0.1` and a client certificate signed by it, and a second, unrelated CA
//! (what a gateway trusting the wrong CA has), and writes the PEM files celgate is
//! pointed at. A [`TlsFront`] terminates TLS with the server certificate (optionally
//! requiring a client certificate signed by the CA) and relays the bytes to a plain
//! server: the scripted upstream or the OTLP receiver, unchanged, behind real TLS.
//! It offers ALPN `h2` and `http/1.1`, so gRPC and HTTP/2 clients get HTTP/2, and it
//! records every handshake it refused, with rustls's reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::oneshot;

/// The certificates of one test, as PEM files in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// The client certificate (signed by [`ca`](Self::ca)) and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("generate a CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (cert, rcgen::Issuer::new(params, key))
}

fn leaf(
    names: &[&str],
    purpose: rcgen::ExtendedKeyUsagePurpose,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("generate a key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("leaf params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "celgate test");
    params.extended_key_usages = vec![purpose];
    let cert = params
        .signed_by(&key, issuer)
        .expect("sign the certificate");
    (cert, key)
}

impl Pki {
    /// A fresh CA, server and client certificates, and an unrelated CA.
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("create the PKI directory");
        let (ca_cert, issuer) = ca("celgate test CA");
        let (other_cert, _) = ca("celgate unrelated CA");
        let (server, server_key) = leaf(
            &["localhost", "127.0.0.1"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let (client, client_key) = leaf(
            &["celgate-client"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
        );
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            other_ca: write("other-ca.pem", other_cert.pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
            ca_der: ca_cert.der().clone(),
            server_chain: vec![server.der().clone()],
            server_key: server_key.serialize_der(),
            dir,
        }
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An empty directory, for `SSL_CERT_DIR`: only `SSL_CERT_FILE` is trusted.
    pub fn empty_dir(&self) -> PathBuf {
        let path = self.dir.path().join("empty");
        std::fs::create_dir_all(&path).expect("create an empty directory");
        path
    }

    fn server_config(&self, client_auth: ClientAuth) -> ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions");
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required => {
                let mut roots = RootCertStore::empty();
                roots.add(self.ca_der.clone()).expect("trust the test CA");
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("build the client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = builder
            .with_single_cert(self.server_chain.clone(), key)
            .expect("the server certificate and key match");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// Whether a [`TlsFront`] asks for a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Server authentication only.
    None,
    /// mTLS: a client certificate signed by the test CA, or no handshake.
    Required,
}

/// A TLS server on `127.0.0.1` relaying each connection to a plain server; stops
/// when dropped.
#[derive(Debug)]
pub struct TlsFront {
    addr: SocketAddr,
    refused: Arc<Mutex<Vec<String>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsFront {
    /// A front for `target` with `pki`'s server certificate.
    pub fn start(pki: &Pki, target: SocketAddr, client_auth: ClientAuth) -> TlsFront {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(client_auth)));
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the TLS front's port");
        listener
            .set_nonblocking(true)
            .expect("make the TLS front's listener non-blocking");
        let addr = listener.local_addr().expect("the TLS front's address");
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, stopped) = oneshot::channel();
        let log = Arc::clone(&refused);
        let thread = std::thread::Builder::new()
            .name(format!("tls-front-{}", addr.port()))
            .spawn(move || serve(listener, acceptor, target, log, stopped))
            .expect("spawn the TLS front's thread");
        TlsFront {
            addr,
            refused,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Why each refused handshake failed, as rustls said, in order.
    pub fn refused(&self) -> Vec<String> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` for a refused handshake; returns its reason.
    pub fn wait_for_refusal(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(first) = self.refused().into_iter().next() {
                return Some(first);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    target: SocketAddr,
    refused: Arc<Mutex<Vec<String>>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the TLS front's runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("register the TLS front");
        loop {
            let accepted = tokio::select! {
                _ = &mut stopped => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            let refused = Arc::clone(&refused);
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(mut tls) => {
                        if let Ok(mut plain) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        }
                    }
                    Err(e) => refused
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(e.to_string()),
                }
            });
        }
    });
}
