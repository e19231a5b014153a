//! The tunnel's wire format: the request header the agent sends first on a
//! tunnel connection and the one-byte status the gateway answers with.
//!
//! The format is specified in `docs/tunnel-protocol.md`. Decoding is
//! incremental (give it whatever bytes you have; it says how many more it
//! needs), bounded (never looks at more than [`MAX_REQUEST_LEN`] bytes) and
//! never panics on any input.

use thiserror::Error;

/// The three magic bytes that open every request: ASCII `MCT`.
pub const MAGIC: [u8; 3] = *b"MCT";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed prefix: magic, version, body length.
pub const PREFIX_LEN: usize = 6;
/// Longest body a version 1 request may have, in bytes.
pub const MAX_BODY_LEN: usize = 2 + 4 * (1 + MAX_NAME_LEN) + 1 + MAX_SERVICE_ACCOUNT_LEN;
/// Longest encoded request, in bytes.
pub const MAX_REQUEST_LEN: usize = PREFIX_LEN + MAX_BODY_LEN;
/// Shortest body a version 1 request may have (port, three one-byte names,
/// two empty optional names).
pub const MIN_BODY_LEN: usize = 2 + 3 * 2 + 2;
/// Longest namespace, service or cluster name (a DNS-1123 label).
pub const MAX_NAME_LEN: usize = 63;
/// Longest service account name (a DNS-1123 subdomain).
pub const MAX_SERVICE_ACCOUNT_LEN: usize = 253;

/// Which field of a request a validation error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `target.namespace`
    TargetNamespace,
    /// `target.service`
    TargetService,
    /// `target.port`
    TargetPort,
    /// `source.cluster`
    SourceCluster,
    /// `source.namespace`
    SourceNamespace,
    /// `source.service_account`
    SourceServiceAccount,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::TargetNamespace => "target namespace",
            Field::TargetService => "target service",
            Field::TargetPort => "target port",
            Field::SourceCluster => "source cluster",
            Field::SourceNamespace => "source namespace",
            Field::SourceServiceAccount => "source service account",
        })
    }
}

/// Why bytes are not a valid request or status, or why a request cannot be
/// encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The first bytes are not `MCT`: the peer does not speak this protocol.
    #[error("bad magic: not an mc tunnel request")]
    BadMagic,
    /// The peer speaks a protocol version this crate does not know.
    #[error("unsupported tunnel protocol version {0} (this side speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// The declared body length is outside `MIN_BODY_LEN..=MAX_BODY_LEN`.
    #[error("request body length {0} is out of bounds")]
    BodyLength(usize),
    /// A field's length prefix runs past the end of the body.
    #[error("{0} runs past the end of the request body")]
    Truncated(Field),
    /// The body has bytes left after the last field.
    #[error("{0} unexpected bytes after the last request field")]
    TrailingBytes(usize),
    /// A required name is empty.
    #[error("{0} is empty")]
    Empty(Field),
    /// A name is longer than its limit.
    #[error("{field} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// The offending field.
        field: Field,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A name holds a byte outside `[a-z0-9.-]`.
    #[error("{0} holds a character outside [a-z0-9.-]")]
    InvalidCharacter(Field),
    /// The target port is zero.
    #[error("target port is 0")]
    ZeroPort,
}

/// The service a proxied connection is for, in the gateway's cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Namespace of the exported Service.
    pub namespace: String,
    /// Name of the exported Service (not the mirror's name).
    pub service: String,
    /// Service port (not the pod's target port).
    pub port: u16,
}

/// Who opened a proxied connection, as far as the agent knows. The gateway
/// must not trust these fields beyond what the tunnel's client certificate
/// proves (it proves the agent's cluster trust, not the pod's identity).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// Name of the cluster the caller runs in (as the gateway's cluster
    /// knows it, i.e. the `--cluster-name` of the link).
    pub cluster: String,
    /// Namespace of the calling pod, when the agent knows it.
    pub namespace: Option<String>,
    /// Service account of the calling pod, when the agent knows it.
    pub service_account: Option<String>,
}

/// The header that opens every tunnel connection (agent to gateway).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    /// Where to connect.
    pub target: Target,
    /// Who is calling.
    pub source: Source,
}

/// Why the gateway refused a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The request header could not be decoded.
    Malformed,
    /// The request's protocol version is not supported by the gateway.
    UnsupportedVersion,
    /// The caller's identity is not allowed to reach the target.
    Forbidden,
    /// No exported Service with that namespace, name and port.
    NotExported,
    /// The Service has no ready endpoint.
    NoEndpoints,
    /// The chosen endpoint refused the connection.
    ConnectRefused,
    /// Connecting to the endpoint timed out.
    ConnectTimeout,
    /// Connecting to the endpoint failed for another reason.
    ConnectFailed,
    /// The gateway is at its connection limit.
    Overloaded,
    /// A code this version does not know (sent by a newer gateway).
    Other(u8),
}

impl Reason {
    /// The status byte for this reason (never 0, which means OK).
    pub fn code(self) -> u8 {
        match self {
            Reason::Malformed => 1,
            Reason::UnsupportedVersion => 2,
            Reason::Forbidden => 3,
            Reason::NotExported => 4,
            Reason::NoEndpoints => 5,
            Reason::ConnectRefused => 6,
            Reason::ConnectTimeout => 7,
            Reason::ConnectFailed => 8,
            Reason::Overloaded => 9,
            // 0 is OK: an unknown reason must still read as a refusal.
            Reason::Other(0) => 255,
            Reason::Other(code) => code,
        }
    }

    /// The reason for a non-zero status byte.
    fn from_code(code: u8) -> Reason {
        match code {
            1 => Reason::Malformed,
            2 => Reason::UnsupportedVersion,
            3 => Reason::Forbidden,
            4 => Reason::NotExported,
            5 => Reason::NoEndpoints,
            6 => Reason::ConnectRefused,
            7 => Reason::ConnectTimeout,
            8 => Reason::ConnectFailed,
            9 => Reason::Overloaded,
            other => Reason::Other(other),
        }
    }

    /// A short snake_case name, suitable as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::Forbidden => "forbidden",
            Reason::NotExported => "not_exported",
            Reason::NoEndpoints => "no_endpoints",
            Reason::ConnectRefused => "connect_refused",
            Reason::ConnectTimeout => "connect_timeout",
            Reason::ConnectFailed => "connect_failed",
            Reason::Overloaded => "overloaded",
            Reason::Other(_) => "other",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Other(code) => write!(f, "refusal code {code}"),
            known => f.write_str(known.as_str()),
        }
    }
}

/// The gateway's answer, one byte, sent before any upstream byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Connected to the target; raw upstream bytes follow.
    Ok,
    /// Refused; the gateway closes the connection after this byte.
    Refused(Reason),
}

impl Status {
    /// The encoded status: always exactly one byte.
    pub fn encode(self) -> [u8; 1] {
        match self {
            Status::Ok => [0],
            Status::Refused(reason) => [reason.code()],
        }
    }

    /// Decodes a status byte. Every byte value is a valid status.
    pub fn from_byte(byte: u8) -> Status {
        match byte {
            0 => Status::Ok,
            code => Status::Refused(Reason::from_code(code)),
        }
    }

    /// Incremental decode: `Ok(None)` until at least one byte is available,
    /// then the status and the number of bytes it used (always 1).
    pub fn decode(buf: &[u8]) -> Option<(Status, usize)> {
        buf.first().map(|&byte| (Status::from_byte(byte), 1))
    }
}

/// Checks one name field against its limits and character set.
fn check_name(field: Field, value: &str, max: usize, required: bool) -> Result<(), WireError> {
    if value.is_empty() {
        return if required {
            Err(WireError::Empty(field))
        } else {
            Ok(())
        };
    }
    if value.len() > max {
        return Err(WireError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.';
    if !value.as_bytes().iter().all(allowed) {
        return Err(WireError::InvalidCharacter(field));
    }
    Ok(())
}

impl Request {
    /// Checks every field against the limits of the wire format.
    pub fn validate(&self) -> Result<(), WireError> {
        check_name(
            Field::TargetNamespace,
            &self.target.namespace,
            MAX_NAME_LEN,
            true,
        )?;
        check_name(
            Field::TargetService,
            &self.target.service,
            MAX_NAME_LEN,
            true,
        )?;
        if self.target.port == 0 {
            return Err(WireError::ZeroPort);
        }
        check_name(
            Field::SourceCluster,
            &self.source.cluster,
            MAX_NAME_LEN,
            true,
        )?;
        let namespace = self.source.namespace.as_deref().unwrap_or("");
        check_name(Field::SourceNamespace, namespace, MAX_NAME_LEN, false)?;
        let account = self.source.service_account.as_deref().unwrap_or("");
        check_name(
            Field::SourceServiceAccount,
            account,
            MAX_SERVICE_ACCOUNT_LEN,
            false,
        )?;
        Ok(())
    }

    /// Encodes the request, after validating it.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        self.validate()?;
        let names = [
            self.target.namespace.as_str(),
            self.target.service.as_str(),
            self.source.cluster.as_str(),
            self.source.namespace.as_deref().unwrap_or(""),
            self.source.service_account.as_deref().unwrap_or(""),
        ];
        let body_len = 2 + names.iter().map(|n| 1 + n.len()).sum::<usize>();
        let mut out = Vec::with_capacity(PREFIX_LEN + body_len);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        // validate() bounds every name, so body_len <= MAX_BODY_LEN < 2^16.
        out.extend_from_slice(&(body_len as u16).to_be_bytes());
        out.extend_from_slice(&self.target.port.to_be_bytes());
        for name in names {
            // validate() bounds every name to at most 253 bytes.
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
        }
        Ok(out)
    }

    /// Incremental decode. Returns `Ok(None)` when `buf` is a valid but
    /// incomplete prefix of a request, `Ok(Some((request, consumed)))` once a
    /// whole request is present (bytes after `consumed` are not looked at),
    /// and an error as soon as the bytes cannot be a valid request.
    pub fn decode(buf: &[u8]) -> Result<Option<(Request, usize)>, WireError> {
        let magic_seen = buf.len().min(MAGIC.len());
        if buf[..magic_seen] != MAGIC[..magic_seen] {
            return Err(WireError::BadMagic);
        }
        match buf.get(3) {
            None => return Ok(None),
            Some(&VERSION) => {}
            Some(&other) => return Err(WireError::UnsupportedVersion(other)),
        }
        let Some(len_bytes) = buf.get(4..PREFIX_LEN) else {
            return Ok(None);
        };
        let body_len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        Request::check_body_len(body_len)?;
        let Some(body) = buf.get(PREFIX_LEN..PREFIX_LEN + body_len) else {
            return Ok(None);
        };
        let request = Request::decode_body(body)?;
        Ok(Some((request, PREFIX_LEN + body_len)))
    }

    /// Checks a body length read from a prefix.
    pub(crate) fn check_body_len(body_len: usize) -> Result<(), WireError> {
        if (MIN_BODY_LEN..=MAX_BODY_LEN).contains(&body_len) {
            Ok(())
        } else {
            Err(WireError::BodyLength(body_len))
        }
    }

    /// Decodes a complete body (the bytes after the prefix).
    pub(crate) fn decode_body(body: &[u8]) -> Result<Request, WireError> {
        let mut reader = BodyReader { rest: body };
        let port = reader.port()?;
        let namespace = reader.name(Field::TargetNamespace, MAX_NAME_LEN, true)?;
        let service = reader.name(Field::TargetService, MAX_NAME_LEN, true)?;
        let cluster = reader.name(Field::SourceCluster, MAX_NAME_LEN, true)?;
        let source_namespace = reader.name(Field::SourceNamespace, MAX_NAME_LEN, false)?;
        let service_account =
            reader.name(Field::SourceServiceAccount, MAX_SERVICE_ACCOUNT_LEN, false)?;
        if !reader.rest.is_empty() {
            return Err(WireError::TrailingBytes(reader.rest.len()));
        }
        let optional = |name: String| (!name.is_empty()).then_some(name);
        Ok(Request {
            target: Target {
                namespace,
                service,
                port,
            },
            source: Source {
                cluster,
                namespace: optional(source_namespace),
                service_account: optional(service_account),
            },
        })
    }
}

/// Reads fields off the front of a complete request body.
struct BodyReader<'a> {
    rest: &'a [u8],
}

impl BodyReader<'_> {
    fn port(&mut self) -> Result<u16, WireError> {
        let Some((bytes, rest)) = self.rest.split_first_chunk::<2>() else {
            return Err(WireError::Truncated(Field::TargetPort));
        };
        self.rest = rest;
        match u16::from_be_bytes(*bytes) {
            0 => Err(WireError::ZeroPort),
            port => Ok(port),
        }
    }

    fn name(&mut self, field: Field, max: usize, required: bool) -> Result<String, WireError> {
        let Some((&len, rest)) = self.rest.split_first() else {
            return Err(WireError::Truncated(field));
        };
        let len = usize::from(len);
        if len > max {
            return Err(WireError::TooLong { field, len, max });
        }
        let Some(bytes) = rest.get(..len) else {
            return Err(WireError::Truncated(field));
        };
        self.rest = &rest[len..];
        // check_name accepts only ASCII, so the conversion cannot fail
        // after it; decode lossily first to keep the check in one place.
        let value = String::from_utf8_lossy(bytes).into_owned();
        check_name(field, &value, max, required)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Request {
        Request {
            target: Target {
                namespace: "shop".into(),
                service: "backend".into(),
                port: 8080,
            },
            source: Source {
                cluster: "west".into(),
                namespace: Some("frontend".into()),
                service_account: Some("web.v2".into()),
            },
        }
    }

    #[test]
    fn round_trip_with_and_without_optional_fields() {
        let full = sample();
        let bytes = full.encode().unwrap();
        assert_eq!(Request::decode(&bytes).unwrap(), Some((full, bytes.len())));

        let mut bare = sample();
        bare.source.namespace = None;
        bare.source.service_account = None;
        let bytes = bare.encode().unwrap();
        assert_eq!(bytes.len(), PREFIX_LEN + MIN_BODY_LEN + 4 + 7 + 4 - 3);
        assert_eq!(Request::decode(&bytes).unwrap(), Some((bare, bytes.len())));
    }

    #[test]
    fn encoding_is_the_documented_layout() {
        let mut req = sample();
        req.source.namespace = None;
        req.source.service_account = None;
        req.target.service = "b".into();
        req.target.namespace = "n".into();
        req.source.cluster = "w".into();
        let bytes = req.encode().unwrap();
        assert_eq!(
            bytes,
            [
                b'M', b'C', b'T', 1, 0, 10, 0x1f, 0x90, 1, b'n', 1, b'b', 1, b'w', 0, 0
            ]
        );
    }

    #[test]
    fn bytes_after_the_request_are_left_alone() {
        let req = sample();
        let mut bytes = req.encode().unwrap();
        let len = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(Request::decode(&bytes).unwrap(), Some((req, len)));
    }

    #[test]
    fn every_truncation_asks_for_more() {
        let bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(Request::decode(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn wrong_magic_and_version_are_refused_early() {
        assert_eq!(Request::decode(b"G"), Err(WireError::BadMagic));
        assert_eq!(Request::decode(b"GET / HTTP/1.1"), Err(WireError::BadMagic));
        assert_eq!(
            Request::decode(b"MCT\x02"),
            Err(WireError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn body_length_out_of_bounds_is_refused_before_reading_it() {
        let mut prefix = b"MCT\x01".to_vec();
        prefix.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            Request::decode(&prefix),
            Err(WireError::BodyLength(usize::from(u16::MAX)))
        );
        assert_eq!(
            Request::decode(b"MCT\x01\x00\x03"),
            Err(WireError::BodyLength(3))
        );
    }

    #[test]
    fn oversize_and_invalid_fields_are_refused_by_encode_and_decode() {
        let mut long = sample();
        long.target.service = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            long.encode(),
            Err(WireError::TooLong {
                field: Field::TargetService,
                ..
            })
        ));

        let mut upper = sample();
        upper.target.namespace = "Shop".into();
        assert_eq!(
            upper.encode(),
            Err(WireError::InvalidCharacter(Field::TargetNamespace))
        );

        let mut zero = sample();
        zero.target.port = 0;
        assert_eq!(zero.encode(), Err(WireError::ZeroPort));

        let mut empty = sample();
        empty.source.cluster.clear();
        assert_eq!(empty.encode(), Err(WireError::Empty(Field::SourceCluster)));

        // Hand-made body whose service name claims 64 bytes.
        let mut body = vec![0x1f, 0x90, 1, b'n', 64];
        body.extend_from_slice(&[b'a'; 64]);
        body.extend_from_slice(&[1, b'w', 0, 0]);
        let mut bytes = b"MCT\x01".to_vec();
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&body);
        assert!(matches!(
            Request::decode(&bytes),
            Err(WireError::TooLong {
                field: Field::TargetService,
                len: 64,
                ..
            })
        ));
    }

    #[test]
    fn garbage_bodies_are_errors_not_panics() {
        // A field whose length runs past the declared body.
        let bytes = b"MCT\x01\x00\x0a\x00\x50\x09abcdefgh";
        assert_eq!(
            Request::decode(bytes),
            Err(WireError::Truncated(Field::TargetNamespace))
        );
        // Trailing bytes inside the body.
        let bytes = b"MCT\x01\x00\x0b\x00\x50\x01n\x01b\x01w\x00\x00\xff";
        assert_eq!(Request::decode(bytes), Err(WireError::TrailingBytes(1)));
        // Non-ASCII name.
        let bytes = b"MCT\x01\x00\x0a\x00\x50\x01\xff\x01b\x01w\x00\x00";
        assert_eq!(
            Request::decode(bytes),
            Err(WireError::InvalidCharacter(Field::TargetNamespace))
        );
        // Every single-byte corruption of a good request decodes or errors.
        let good = sample().encode().unwrap();
        for i in 0..good.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = value;
                let _ = Request::decode(&bad);
            }
        }
    }

    #[test]
    fn status_round_trips_and_unknown_codes_stay_refusals() {
        for status in [
            Status::Ok,
            Status::Refused(Reason::Malformed),
            Status::Refused(Reason::Forbidden),
            Status::Refused(Reason::Overloaded),
            Status::Refused(Reason::Other(77)),
        ] {
            assert_eq!(Status::decode(&status.encode()), Some((status, 1)));
        }
        assert_eq!(Status::decode(&[]), None);
        assert_eq!(Status::from_byte(200), Status::Refused(Reason::Other(200)));
        assert_eq!(Status::Refused(Reason::Other(0)).encode(), [255]);
    }
}
