//! Reading the SPIFFE ID out of a certificate or out of an established TLS
//! connection's peer certificates.

use rustls::pki_types::CertificateDer;
use thiserror::Error;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Why no SPIFFE ID could be read from a certificate or connection.
#[derive(Debug, Error)]
pub enum PeerIdError {
    /// The connection has no peer certificate (yet).
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The certificate is not parseable DER X.509.
    #[error("unparseable certificate: {0}")]
    Unparseable(String),
    /// The certificate has no URI SAN, or more than one (an X.509-SVID has
    /// exactly one).
    #[error("the certificate carries {0} URI SANs, expected exactly one")]
    UriSanCount(usize),
    /// The URI SAN is not an mc SPIFFE ID.
    #[error("the certificate's URI SAN is not an mc SPIFFE ID")]
    NotSpiffe(#[from] SpiffeIdError),
}

/// The SPIFFE ID in a certificate's single URI SAN.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, PeerIdError> {
    let uris = uri_sans(cert).map_err(PeerIdError::Unparseable)?;
    match uris.as_slice() {
        [uri] => Ok(SpiffeId::parse(uri)?),
        other => Err(PeerIdError::UriSanCount(other.len())),
    }
}

/// The URI SANs of a certificate, or why it could not be read.
pub(crate) fn uri_sans<'a>(cert: &'a CertificateDer<'_>) -> Result<Vec<&'a str>, String> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).map_err(|e| e.to_string())?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| e.to_string())?;
    Ok(san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect())
}

/// The SPIFFE ID of the peer of an established connection. Works on both
/// ends and after resumption: pass `tls_stream.get_ref().1` (a
/// `ClientConnection` or `ServerConnection` derefs to `CommonState`).
pub fn peer_spiffe_id(conn: &rustls::CommonState) -> Result<SpiffeId, PeerIdError> {
    let leaf = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(PeerIdError::NoCertificate)?;
    spiffe_id_of(leaf)
}

/// `not_before` and `not_after` of a certificate, as seconds since the Unix
/// epoch.
pub fn validity_of(cert: &CertificateDer<'_>) -> Result<(i64, i64), PeerIdError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| PeerIdError::Unparseable(e.to_string()))?;
    let validity = parsed.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}
