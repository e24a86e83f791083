//! HTTPS fetching: the built-in roots do not trust a private CA; `extra_root_pem` does.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;

use common::{LEEWAY, NOW, claims, fetcher};
use iam_oidc::testing::{FakeAlg, FakeIssuer};
use iam_oidc::{FetchCounts, FetcherConfig, JwksLocation, VerifyError};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// TEST-ONLY CA that issued [`LOCALHOST`].
const CA: &[u8] = include_bytes!("tls/test-only-ca.pem");

/// TEST-ONLY certificate for `localhost` and `127.0.0.1`, then its private key.
const LOCALHOST: &[u8] = include_bytes!("tls/test-only-localhost.pem");

/// Serves TLS on `127.0.0.1`, forwarding the plain bytes to the fake issuer. Returns the port.
async fn tls_front(issuer: &FakeIssuer) -> u16 {
    let certificate = CertificateDer::from_pem_slice(LOCALHOST).unwrap();
    let key = PrivateKeyDer::from_pem_slice(LOCALHOST).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = issuer
        .jwks_uri()
        .trim_start_matches("http://")
        .trim_end_matches("/jwks")
        .to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_needs_a_trusted_root() {
    let issuer = FakeIssuer::start().await;
    let port = tls_front(&issuer).await;
    let token = issuer.sign(FakeAlg::Rs256, &claims(&issuer.issuer()));
    for host in ["localhost", "127.0.0.1"] {
        let location = JwksLocation::Url(format!("https://{host}:{port}/jwks"));

        let untrusting = fetcher(FetcherConfig::default());
        let err = untrusting
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await;
        assert_eq!(
            err.unwrap_err(),
            VerifyError::KeysUnavailable,
            "{host}: unknown CA"
        );
        assert_eq!(
            untrusting.counts(),
            FetchCounts {
                fetched: 0,
                failed: 1
            }
        );

        let config = FetcherConfig {
            extra_root_pem: Some(CA.to_vec()),
            ..Default::default()
        };
        let trusting = fetcher(config);
        let claims = trusting
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await;
        assert_eq!(claims.unwrap()["sub"], "workload-1", "{host}");
    }
}
