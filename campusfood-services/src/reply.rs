//! Small helpers for error replies, shared by the services.

use campusfood_core::events::ErrorBody;
use campusfood_core::order::ValidationError;
use campusfood_core::transport::Reply;

/// A reply `{"error": message}` with `status`.
pub(crate) fn error_reply(status: u16, message: &str) -> Reply {
    let body = format!("{{\"error\":{}}}", serde_json::Value::from(message));
    Reply {
        status,
        body: body.into(),
    }
}

/// Decodes a request body into `T`, or the reply refusing it: `400` when
/// the body is not a JSON object (serde would take an array for a struct),
/// `422` when it is one but not a valid `T` (serde's message names the
/// field).
pub(crate) fn decode_request<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| error_reply(400, &format!("body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(error_reply(400, "body is not a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| error_reply(422, &e.to_string()))
}

/// The reply for an order that failed validation: `400` when the body is
/// not a JSON object, `422` naming the field otherwise.
pub(crate) fn validation_reply(e: &ValidationError) -> Reply {
    let status = if matches!(e, ValidationError::Malformed(_)) {
        400
    } else {
        422
    };
    let body = ErrorBody {
        error: e.to_string(),
        field: e.field().map(str::to_owned),
        request_id: None,
    };
    Reply::json(status, &body).unwrap_or_else(|e| error_reply(500, &e.to_string()))
}
