//! TLS to Postgres, with libpq's `sslmode` and `sslrootcert` in `DATABASE_URL`.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and verifies nothing itself;
//! csrd takes the two parameters out of the URL and sets up rustls as libpq would:
//!
//! | sslmode | encrypted | certificate chain checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | — | — |
//! | `prefer` (default), `require` | if offered / always | only when `sslrootcert` is given | no |
//! | `verify-ca` | always | yes | no |
//! | `verify-full` | always | yes | yes |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for Mozilla's roots (also the
//! default for the verify modes when it is absent).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::DbError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encrypt, check nothing (libpq's `require` without a root certificate).
    Nothing,
    /// The chain up to a trusted root, not the host name.
    Chain,
    /// The chain and the host name.
    Full,
}

/// A `DATABASE_URL` taken apart: the connection settings and how to check the server.
pub struct DatabaseUrl {
    pub config: tokio_postgres::Config,
    pub verify: Verify,
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL (`postgres://…?sslmode=…`) or a key=value
/// string (`host=… sslmode=…`): what is left, the mode, the root certificate.
fn split_tls_params(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root_cert) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            root_cert = Some(value);
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if !take(&key, value.to_string()) {
                kept.append_pair(&key, &value);
            }
        }
        let kept = kept.finish();
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{kept}")
        }
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|token| match token.split_once('=') {
                Some((key, value)) => !take(key.trim(), value.trim_matches('\'').to_owned()),
                None => true,
            })
            .collect();
        kept.join(" ")
    };
    (rest, mode, root_cert)
}

pub fn parse(url: &str) -> Result<DatabaseUrl, DbError> {
    let bad = |what: String| DbError::Config(what);
    let (rest, mode, root_cert) = split_tls_params(url);
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
    let (ssl_mode, mut verify) = match mode.as_deref().unwrap_or("prefer") {
        "disable" => (SslMode::Disable, Verify::Nothing),
        "prefer" | "allow" => (SslMode::Prefer, Verify::Nothing),
        "require" => (SslMode::Require, Verify::Nothing),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::Full),
        other => return Err(bad(format!("unknown sslmode {other:?}"))),
    };
    // libpq: with a root certificate, `require` (and `prefer`) check the chain as verify-ca does.
    if verify == Verify::Nothing && root_cert.is_some() {
        verify = Verify::Chain;
    }
    config.ssl_mode(ssl_mode);
    Ok(DatabaseUrl {
        config,
        verify,
        root_cert,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(root_cert: Option<&str>) -> Result<RootCertStore, DbError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        None | Some("system") => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| DbError::Config(format!("sslrootcert {path:?}: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(DbError::Config(format!(
                    "sslrootcert {path:?} holds no usable certificate"
                )));
            }
        }
    }
    Ok(roots)
}

/// The TLS connector for a parsed URL (unused when its sslmode is `disable`).
pub fn connector(url: &DatabaseUrl) -> Result<MakeRustlsConnect, DbError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Config(e.to_string()))?;
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match url.verify {
        Verify::Nothing => Arc::new(Relaxed {
            algorithms,
            chain: None,
        }),
        Verify::Chain | Verify::Full => {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(url.root_cert.as_deref())?),
                provider,
            )
            .build()
            .map_err(|e| DbError::Config(e.to_string()))?;
            if url.verify == Verify::Full {
                webpki
            } else {
                Arc::new(Relaxed {
                    algorithms,
                    chain: Some(webpki),
                })
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// What libpq checks below `verify-full`, the handshake's signatures always: `require`
/// (`chain: None`) checks no certificate, as libpq does without a root certificate;
/// `verify-ca` (`chain: Some`) checks everything WebPKI checks except that the name matches
/// the host.
#[derive(Debug)]
struct Relaxed {
    algorithms: WebPkiSupportedAlgorithms,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let url = parse(
            "postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url.verify, Verify::Full);
        assert_eq!(url.root_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(url.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(url.config.get_application_name(), Some("x"));

        let plain = parse("postgres://u@h/db").unwrap();
        assert_eq!(
            (plain.verify, plain.config.get_ssl_mode()),
            (Verify::Nothing, SslMode::Prefer)
        );
        let pinned = parse("postgres://u@h/db?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(pinned.verify, Verify::Chain);
        assert_eq!(
            parse("postgres://u@h/db?sslmode=disable")
                .unwrap()
                .config
                .get_ssl_mode(),
            SslMode::Disable
        );
        assert!(parse("postgres://u@h/db?sslmode=sometimes").is_err());
        let kv = parse("host=h user=u sslmode=verify-ca sslrootcert=/ca.pem").unwrap();
        assert_eq!(kv.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(kv.verify, Verify::Chain);
        assert_eq!(kv.config.get_hosts().len(), 1);
    }
}
