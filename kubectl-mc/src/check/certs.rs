//! Certificate expiry from PEM.

use std::time::Duration;

use x509_parser::pem::Pem;

/// One certificate's validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    /// Subject, for messages.
    pub subject: String,
    /// Seconds since the epoch.
    pub not_after: i64,
}

/// The validity of every certificate in a PEM text.
pub fn validities(pem: &str) -> Result<Vec<Validity>, String> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| format!("unreadable PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let cert = block
            .parse_x509()
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        out.push(Validity {
            subject: cert.subject().to_string(),
            not_after: cert.validity().not_after.timestamp(),
        });
    }
    if out.is_empty() {
        return Err("no certificate in the PEM".to_string());
    }
    Ok(out)
}

/// How a certificate's remaining lifetime compares to `warn_within`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// Fine.
    Valid,
    /// Expires within the warning window: days left.
    Soon(i64),
    /// Already expired.
    Expired,
}

/// Classifies `not_after` at `now` (both Unix seconds).
pub fn expiry(not_after: i64, now: i64, warn_within: Duration) -> Expiry {
    let window = i64::try_from(warn_within.as_secs()).unwrap_or(i64::MAX);
    if not_after <= now {
        Expiry::Expired
    } else if not_after - now <= window {
        Expiry::Soon((not_after - now) / 86_400)
    } else {
        Expiry::Valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_expiry() {
        let month = Duration::from_secs(30 * 86_400);
        assert_eq!(expiry(100, 200, month), Expiry::Expired);
        assert_eq!(expiry(200 + 86_400 * 3, 200, month), Expiry::Soon(3));
        assert_eq!(expiry(200 + 86_400 * 90, 200, month), Expiry::Valid);
    }
}
