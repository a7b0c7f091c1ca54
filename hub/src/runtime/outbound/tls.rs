//! TLS to department systems: the roots the hub trusts, the client
//! certificates adapters present, and TLS failures in words an operator
//! can act on.
//!
//! Department systems inside a government network are usually signed by
//! the network's own CA, not a public one, so the roots are the system's
//! store plus the deployment's CA files (`[tls] ca_files`). The client
//! configuration is built once and shared by every adapter without a
//! client certificate; an adapter with one gets its own, built at load.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the trusted roots come from (`[tls]` of the hub's config).
#[derive(Debug, Clone, Default)]
pub struct TrustConfig {
    /// Trust the system's certificate store (`/etc/ssl/certs`, or
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    pub system_roots: bool,
    /// PEM files of further CAs (the deployment's own).
    pub ca_files: Vec<PathBuf>,
}

/// The roots the hub trusts, and the shared client configuration.
pub struct Trust {
    roots: Arc<RootCertStore>,
    shared: Arc<ClientConfig>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// A client certificate and its key, loaded.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// sha256 over the chain and the key: two identities are the same
    /// when it is.
    pub fingerprint: [u8; 32],
}

impl Trust {
    /// Loads the roots. A CA file that cannot be read or holds no
    /// certificate is an error naming it; an empty or unreadable system
    /// store is not (a deployment may trust only its own CA).
    pub fn load(config: &TrustConfig) -> Result<Trust, String> {
        let mut roots = RootCertStore::empty();
        if config.system_roots {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::debug!("no certificates in the system store");
            }
        }
        for file in &config.ca_files {
            let pem = std::fs::read(file)
                .map_err(|e| format!("tls.ca_files: cannot read {}: {e}", file.display()))?;
            let mut count = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    format!(
                        "tls.ca_files: {} is not a PEM certificate file: {e}",
                        file.display()
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    format!(
                        "tls.ca_files: {} holds a certificate rustls cannot use as a root: {e}",
                        file.display()
                    )
                })?;
                count += 1;
            }
            if count == 0 {
                return Err(format!(
                    "tls.ca_files: {} holds no certificate (expected PEM, -----BEGIN CERTIFICATE-----)",
                    file.display()
                ));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let shared = build(&provider, &roots, None)?;
        Ok(Trust {
            roots,
            shared,
            provider,
        })
    }

    /// The configuration for an adapter: the shared one, or one presenting
    /// `identity`.
    pub fn client_config(&self, identity: Option<&Identity>) -> Result<Arc<ClientConfig>, String> {
        match identity {
            None => Ok(self.shared.clone()),
            Some(id) => build(&self.provider, &self.roots, Some(id)),
        }
    }

    /// How many roots are trusted.
    pub fn roots(&self) -> usize {
        self.roots.len()
    }
}

fn build(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    roots: &Arc<RootCertStore>,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots.clone());
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| format!("the client certificate and key do not make a pair: {e}"))?,
    };
    // Deliveries speak HTTP/1.1 (hyper's http1 client).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Identity {
    /// Reads a PEM certificate chain and its PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, String> {
        let cert_pem = std::fs::read(cert)
            .map_err(|e| format!("tls.client_cert: cannot read {}: {e}", cert.display()))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls.client_cert: {} is not PEM: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "tls.client_cert: {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                cert.display()
            ));
        }
        let key_pem = std::fs::read(key)
            .map_err(|e| format!("tls.client_key: cannot read {}: {e}", key.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!(
                "tls.client_key: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                key.display()
            )
        })?;
        let mut h = Sha256::new();
        for c in &chain {
            h.update(c.as_ref());
        }
        h.update(key.secret_der());
        Ok(Identity {
            chain,
            key,
            fingerprint: h.finalize().into(),
        })
    }
}

/// The rustls error somewhere in an error's chain (an I/O error wraps it
/// during the handshake or a read).
pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(tls);
            }
        }
        current = err.source();
    }
    None
}

/// A TLS failure with `authority`, in words, with the fix where one is
/// known.
pub fn explain(e: &rustls::Error, authority: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer) => format!(
            "the TLS certificate of {authority} is not trusted: no CA the hub trusts signed it; \
             add the CA that did to [tls] ca_files in the hub's config"
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            format!("the TLS certificate of {authority} is not valid for that host name ({e})")
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("the TLS certificate of {authority} has expired ({e})")
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!("the TLS certificate of {authority} is not valid yet; check the clocks ({e})")
        }
        E::InvalidCertificate(_) => {
            format!("the TLS certificate of {authority} was refused: {e}")
        }
        E::AlertReceived(A::CertificateRequired) => format!(
            "{authority} wants a client certificate: set [tls] client_cert and client_key \
             in the adapter's manifest"
        ),
        E::AlertReceived(
            a @ (A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::AccessDenied),
        ) => format!("{authority} refused the adapter's client certificate (TLS alert {a:?})"),
        E::AlertReceived(a @ A::HandshakeFailure) => format!(
            "{authority} ended the TLS handshake (alert {a:?}); it may want a client \
             certificate ([tls] client_cert in the adapter's manifest) or a TLS version \
             or cipher the hub does not offer"
        ),
        other => format!("TLS with {authority} failed: {other}"),
    }
}

/// The `wasi:http` error a TLS failure is reported to the adapter as.
pub fn error_code(e: &rustls::Error) -> wasmtime_wasi_http::Error {
    match e {
        rustls::Error::InvalidCertificate(_) => wasmtime_wasi_http::Error::TlsCertificateError,
        rustls::Error::AlertReceived(a) => wasmtime_wasi_http::Error::TlsAlertReceived {
            alert_id: Some(u8::from(*a)),
            alert_message: Some(format!("{a:?}")),
        },
        _ => wasmtime_wasi_http::Error::TlsProtocolError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_and_identities_name_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let e = Trust::load(&TrustConfig {
            system_roots: false,
            ca_files: vec![bad.clone()],
        })
        .err()
        .unwrap();
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = Trust::load(&TrustConfig {
            system_roots: false,
            ca_files: vec![missing],
        })
        .err()
        .unwrap();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
        let e = Identity::load(&bad, &bad).err().unwrap();
        assert!(e.contains("tls.client_cert"), "{e}");
    }

    #[test]
    fn tls_failures_say_what_to_do() {
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let m = explain(&e, "police.example:8443");
        assert!(
            m.contains("police.example:8443") && m.contains("not trusted"),
            "{m}"
        );
        assert!(m.contains("[tls] ca_files"), "{m}");
        let wrapped = std::io::Error::other(e.clone());
        assert_eq!(find(&wrapped), Some(&e));
        let e = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(explain(&e, "h:1").contains("client_cert"));
        assert!(matches!(
            error_code(&e),
            wasmtime_wasi_http::Error::TlsAlertReceived { .. }
        ));
    }
}
