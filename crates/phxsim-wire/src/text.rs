//! Field checks shared by the two JSON serializers.

use serde_json::Value;

use crate::error::{DecodeError, json_kind};

/// `topic` and `event` must be strings.
pub(crate) fn required_string(field: &'static str, value: Value) -> Result<String, DecodeError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(DecodeError::WrongType {
            field,
            expected: "a string",
            found: json_kind(&other),
        }),
    }
}

/// `join_ref` and `ref` are strings or null.
pub(crate) fn optional_string(
    field: &'static str,
    value: Value,
) -> Result<Option<String>, DecodeError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(DecodeError::WrongType {
            field,
            expected: "a string or null",
            found: json_kind(&other),
        }),
    }
}
