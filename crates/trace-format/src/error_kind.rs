//! [`ErrorKind`]: the `error_kind` column's stable codes, one type for every writer (the client,
//! the recording proxy, the dispatcher, importers) and reader.

use std::fmt;

/// Why a request failed: the short stable code stored in `error_kind` (null on success).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No HTTP response was obtained (refused, reset or closed before the headers; out of file
    /// descriptors).
    Connect,
    /// The request deadline or the idle limit between reads passed.
    Timeout,
    /// An HTTP 4xx status.
    Http4xx,
    /// An HTTP 5xx status (or another non-success status).
    Http5xx,
    /// An error after HTTP 200: an error event, a cut or truncated stream.
    Stream,
    /// Some event's data was not valid JSON.
    Parse,
    /// Cancelled by the caller: a stop, a drain timeout, a client that left.
    Cancelled,
    /// Never sent (the run stopped while it was queued, or it was dropped by design).
    Dropped,
    /// The request could not be built; nothing was sent.
    InvalidRequest,
    /// The row failed in the source an importer read (a results file's error, a zero-token
    /// response).
    SourceFailed,
    /// A code this build does not know (a file from a newer writer); kept as written.
    Other(String),
}

impl ErrorKind {
    /// The code as stored.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::Stream => "stream",
            Self::Parse => "parse",
            Self::Cancelled => "cancelled",
            Self::Dropped => "dropped",
            Self::InvalidRequest => "invalid_request",
            Self::SourceFailed => "source_failed",
            Self::Other(s) => s,
        }
    }

    /// The kind of a stored code; unknown codes are kept as [`ErrorKind::Other`].
    pub fn parse(code: &str) -> Self {
        match code {
            "connect" => Self::Connect,
            "timeout" => Self::Timeout,
            "http_4xx" => Self::Http4xx,
            "http_5xx" => Self::Http5xx,
            "stream" => Self::Stream,
            "parse" => Self::Parse,
            "cancelled" => Self::Cancelled,
            "dropped" => Self::Dropped,
            "invalid_request" => Self::InvalidRequest,
            "source_failed" => Self::SourceFailed,
            other => Self::Other(other.to_string()),
        }
    }

    /// The kind of a non-success HTTP status: `http_4xx` for 4xx, else `http_5xx`.
    pub fn of_status(status: u16) -> Self {
        if (400..500).contains(&status) {
            Self::Http4xx
        } else {
            Self::Http5xx
        }
    }
}

impl From<&str> for ErrorKind {
    fn from(code: &str) -> Self {
        Self::parse(code)
    }
}

/// An error kind reads as its stored code, so `rec.error_kind.as_deref() == Some("timeout")`
/// compares with the column's value.
impl std::ops::Deref for ErrorKind {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_kept() {
        for k in [
            ErrorKind::Connect,
            ErrorKind::Timeout,
            ErrorKind::Http4xx,
            ErrorKind::Http5xx,
            ErrorKind::Stream,
            ErrorKind::Parse,
            ErrorKind::Cancelled,
            ErrorKind::Dropped,
            ErrorKind::InvalidRequest,
            ErrorKind::SourceFailed,
        ] {
            assert_eq!(ErrorKind::parse(k.as_str()), k);
        }
        assert_eq!(ErrorKind::parse("gpu_fell_off").as_str(), "gpu_fell_off");
        assert_eq!(ErrorKind::of_status(429), ErrorKind::Http4xx);
        assert_eq!(ErrorKind::of_status(503), ErrorKind::Http5xx);
    }
}
