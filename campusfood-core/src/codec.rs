//! The one codec every transport uses: JSON via serde, UTF-8, with
//! `content_type: application/json`.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The content type of every encoded message.
pub const CONTENT_TYPE: &str = "application/json";

/// A message that could not be encoded or decoded.
#[derive(Debug, Error)]
#[error("JSON codec: {0}")]
pub struct CodecError(#[from] serde_json::Error);

/// Encodes `value` as JSON.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
    Ok(Bytes::from(serde_json::to_vec(value)?))
}

/// Decodes JSON `bytes` into a `T`, validating every field on the way.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(serde_json::from_slice(bytes)?)
}
