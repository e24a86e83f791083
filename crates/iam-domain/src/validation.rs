//! The error every value constructor returns: a machine-readable reason plus a human message.
//!
//! Adapters attach the field path (`displayName`, `roles[2]`) when they report it.

use std::fmt;

/// Why a raw value could not become a domain value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    /// `SCREAMING_SNAKE_CASE` reason code, stable for clients (`INVALID_FORMAT`, `TOO_LONG`, …).
    pub reason: &'static str,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
}

impl InvalidValue {
    pub(crate) fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for InvalidValue {}

/// Checks a string's length in characters against `min..=max`.
pub(crate) fn check_length(value: &str, min: usize, max: usize) -> Result<(), InvalidValue> {
    let len = value.chars().count();
    if len < min {
        return Err(InvalidValue::new(
            if min == 1 { "REQUIRED" } else { "TOO_SHORT" },
            format!("must be at least {min} characters long"),
        ));
    }
    if len > max {
        return Err(InvalidValue::new(
            "TOO_LONG",
            format!("must be at most {max} characters long"),
        ));
    }
    Ok(())
}
