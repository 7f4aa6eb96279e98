//! The one error type of the crate.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong talking to a gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Code on the remote side raised; `traceback` is the remote, formatted traceback.
    #[error("remote error:\n{traceback}")]
    Remote { traceback: String },

    /// A receive or wait did not complete within the given time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// The peer closed the channel and every item it sent has been received.
    #[error("end of channel {id}: the other side closed it")]
    EndOfChannel { id: i32 },

    /// This side closed the channel (or sent its last message): nothing more can be sent.
    #[error("channel {id} is closed for sending")]
    ChannelClosed { id: i32 },

    /// The connection to the worker broke: the process died, or the peer sent bad frames.
    #[error("{0}")]
    GatewayLost(LostInfo),

    /// Bytes that are not a valid frame or serialized object, or a value that
    /// cannot be written in the format.
    #[error("data format error: {message}{}", at_offset(*offset))]
    DataFormat {
        message: String,
        /// Byte offset in the payload where the problem was found, when known.
        offset: Option<usize>,
    },

    /// The worker process could not be started.
    #[error("cannot start a gateway for spec {spec:?} (key {key:?}, program {program:?}): {reason}")]
    Spawn {
        spec: String,
        key: String,
        program: String,
        reason: String,
    },

    /// A gateway specification string is malformed or asks for something impossible.
    #[error("invalid gateway spec {spec:?}: {reason}")]
    Spec { spec: String, reason: String },

    /// An operating-system error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn at_offset(offset: Option<usize>) -> String {
    match offset {
        Some(o) => format!(" (at byte {o})"),
        None => String::new(),
    }
}

/// Why a gateway was lost: what happened, how the process ended, what it last wrote to stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostInfo {
    /// Gateway id, such as `gw0`.
    pub gateway: String,
    /// What was observed, such as "connection closed" or a frame error.
    pub reason: String,
    /// How the worker process ended, when it is known (for example "exit status: 3"
    /// or "signal: 9 (SIGKILL)").
    pub exit_status: Option<String>,
    /// The last lines the worker wrote to its stderr (at most a few KiB).
    pub stderr_tail: String,
}

impl fmt::Display for LostInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gateway {} lost: {}", self.gateway, self.reason)?;
        if let Some(st) = &self.exit_status {
            write!(f, "; worker process ended with {st}")?;
        }
        if !self.stderr_tail.trim().is_empty() {
            write!(f, "; its stderr ended with:\n{}", self.stderr_tail.trim_end())?;
        }
        Ok(())
    }
}

impl Error {
    pub(crate) fn data_format(message: impl Into<String>, offset: Option<usize>) -> Error {
        Error::DataFormat { message: message.into(), offset }
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// True for [`Error::EndOfChannel`]: the channel was closed normally by the peer.
    pub fn is_end_of_channel(&self) -> bool {
        matches!(self, Error::EndOfChannel { .. })
    }

    /// The remote traceback, for [`Error::Remote`].
    pub fn remote_traceback(&self) -> Option<&str> {
        match self {
            Error::Remote { traceback } => Some(traceback),
            _ => None,
        }
    }

    /// A copy of this error (I/O errors keep their kind and message).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Remote { traceback } => Error::Remote { traceback: traceback.clone() },
            Error::Timeout(d) => Error::Timeout(*d),
            Error::EndOfChannel { id } => Error::EndOfChannel { id: *id },
            Error::ChannelClosed { id } => Error::ChannelClosed { id: *id },
            Error::GatewayLost(i) => Error::GatewayLost(i.clone()),
            Error::DataFormat { message, offset } => {
                Error::DataFormat { message: message.clone(), offset: *offset }
            }
            Error::Spawn { spec, key, program, reason } => Error::Spawn {
                spec: spec.clone(),
                key: key.clone(),
                program: program.clone(),
                reason: reason.clone(),
            },
            Error::Spec { spec, reason } => Error::Spec { spec: spec.clone(), reason: reason.clone() },
            Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::data_format(msg.to_string(), None)
    }
}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::data_format(msg.to_string(), None)
    }
}

/// `Result<T, execnet::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
