//! Certificate attestation: the HTTPS listener asks for a client certificate without requiring
//! one and checks only that the client holds its key ([`OptionalClientCertificates`]); which CA
//! must have signed it depends on the policy the request names, so the chain is checked per
//! request ([`verify`]) against that policy's CA.

use std::sync::Arc;

use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// Offers client authentication, accepts a connection without a certificate, and with one
/// checks the handshake signature (the client holds the certificate's key); the chain is
/// checked later, against the CA of the policy a request names.
#[derive(Debug)]
pub struct OptionalClientCertificates {
    algorithms: WebPkiSupportedAlgorithms,
}

impl OptionalClientCertificates {
    /// A verifier using the signature algorithms of `provider`.
    pub fn new(provider: &CryptoProvider) -> Arc<OptionalClientCertificates> {
        Arc::new(OptionalClientCertificates {
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

impl ClientCertVerifier for OptionalClientCertificates {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The common name of the client certificate `chain[0]` when it chains (through the rest of
/// `chain`) to one of the PEM certificates in `ca_pem` and is valid now for client
/// authentication; else why not.
pub fn verify(
    ca_pem: &[u8],
    chain: &[CertificateDer<'static>],
    now: jiff::Timestamp,
) -> Result<String, String> {
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the policy's CA certificate does not parse: {e}"))?;
    let anchors = cas
        .iter()
        .map(|ca| webpki::anchor_from_trusted_cert(ca).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the policy's CA certificate is not usable: {e}"))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| "no client certificate".to_string())?;
    let leaf_cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let seconds = u64::try_from(now.as_second()).unwrap_or_default();
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    leaf_cert
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| format!("the client certificate is not signed by the policy's CA: {e}"))?;
    common_name(leaf)
}

fn common_name(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .ok_or_else(|| "the client certificate has no common name".to_string())
}
