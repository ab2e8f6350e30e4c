//! Kafka framing: a big-endian i32 length, then the request header and body. Nothing here
//! trusts the peer: the length is checked before the frame is read, and the header is
//! decoded only after its API key and version are known to be served.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::limits::FRAME_HEADER_BYTES_MIN;

/// Why a connection's input cannot be taken: every variant closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {declared} bytes is over the limit of {max}")]
    TooLarge { declared: i64, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} version {version} is not served")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {cause}")]
    Malformed { api: ApiKey, version: i16, cause: String },
    #[error("{0:?} before SASL authentication")]
    Unauthenticated(ApiKey),
    #[error("SASL authentication failed")]
    AuthenticationFailed,
    /// A response that cannot be encoded: a bug, reported and the connection closed.
    #[error("cannot encode the {api:?} v{version} response: {cause}")]
    Encode { api: ApiKey, version: i16, cause: String },
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the next frame's length: `None` at a clean end of the stream (between frames).
pub(crate) async fn read_length<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Option<usize>, FrameError> {
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix[..1]).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    reader.read_exact(&mut prefix[1..]).await?;
    let declared = i32::from_be_bytes(prefix);
    match usize::try_from(declared) {
        Ok(length) if length > max => Err(FrameError::TooLarge { declared: i64::from(declared), max }),
        Ok(length) if length < FRAME_HEADER_BYTES_MIN => Err(FrameError::TooShort(length)),
        Ok(length) => Ok(Some(length)),
        Err(_) => Err(FrameError::TooLarge { declared: i64::from(declared), max }),
    }
}

/// A request frame whose header is decoded; the body is decoded by its API's handler.
#[derive(Debug, Clone)]
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// What the first 8 bytes of a frame say, before anything else is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prelude {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

pub fn prelude(frame: &[u8]) -> Result<Prelude, FrameError> {
    if frame.len() < FRAME_HEADER_BYTES_MIN {
        return Err(FrameError::TooShort(frame.len()));
    }
    let mut bytes = &frame[..FRAME_HEADER_BYTES_MIN];
    Ok(Prelude { api_key: bytes.get_i16(), api_version: bytes.get_i16(), correlation_id: bytes.get_i32() })
}

/// Decodes a frame's header. `served` says which versions of which APIs this listener takes;
/// anything else is refused before the header's strings are read.
pub fn parse_request(frame: Bytes) -> Result<RequestFrame, FrameError> {
    let Prelude { api_key, api_version, correlation_id } = prelude(&frame)?;
    let api = ApiKey::try_from(api_key).map_err(|_| FrameError::UnknownApi(api_key))?;
    if !crate::api::serves(api, api_version) {
        return Err(FrameError::UnsupportedVersion { api, version: api_version });
    }
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, api.request_header_version(api_version))
        .map_err(|error| FrameError::Malformed { api, version: api_version, cause: error.to_string() })?;
    Ok(RequestFrame { api_key: api, api_version, correlation_id, header, body })
}
