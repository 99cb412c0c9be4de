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

/// How a codec that accepts numeric refs (Phoenix 1.7.21 does, and echoes them as numbers)
/// keeps them in a [`crate::Message`]'s string refs, losslessly: a number becomes this mark
/// followed by the number's JSON text; a string that itself starts with the mark gets a second
/// one. Two refs compare equal exactly when Phoenix's would (`1` is not `"1"`). Codecs without
/// numeric refs never add or read the mark.
pub const NUMERIC_REF_MARK: char = '\u{1}';

/// `join_ref` and `ref` on a codec with numeric refs: strings, numbers or null.
pub(crate) fn optional_ref(
    field: &'static str,
    value: Value,
    numeric: bool,
) -> Result<Option<String>, DecodeError> {
    match value {
        Value::String(s) if numeric && s.starts_with(NUMERIC_REF_MARK) => {
            Ok(Some(format!("{NUMERIC_REF_MARK}{s}")))
        }
        Value::Number(n) if numeric => Ok(Some(format!("{NUMERIC_REF_MARK}{n}"))),
        other => optional_string(field, other),
    }
}

/// A ref as JSON for a codec with numeric refs (see [`NUMERIC_REF_MARK`]), or as a plain
/// string for one without.
pub(crate) fn ref_value(r: Option<&str>, numeric: bool) -> Value {
    let Some(s) = r else {
        return Value::Null;
    };
    if !numeric {
        return Value::String(s.to_owned());
    }
    match s.strip_prefix(NUMERIC_REF_MARK) {
        Some(rest) if rest.starts_with(NUMERIC_REF_MARK) => Value::String(rest.to_owned()),
        Some(rest) => serde_json::from_str::<serde_json::Number>(rest)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(rest.to_owned())),
        None => Value::String(s.to_owned()),
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
