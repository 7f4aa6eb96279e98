//! The one error type of the crate.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong talking to a gateway.
///
/// New variants may be added: a `match` outside this crate needs a `_ =>` arm.
///
/// ```
/// // A payload in the versioned form whose object starts with an unknown opcode.
/// let err = execnet::loads::<execnet::Value>(b"\x02Z").unwrap_err();
/// match err {
///     execnet::Error::DataFormat { offset, .. } => assert_eq!(offset, Some(0)),
///     other => panic!("unexpected error: {other}"),
/// }
/// ```
///
/// Code that raises remotely comes back as [`Error::Remote`]:
///
/// ```
/// # fn main() -> execnet::Result<()> {
/// let gw = execnet::makegateway("popen")?;
/// let ch = gw.remote_exec("raise ValueError('boom')")?;
/// match ch.waitclose(None) {
///     Err(execnet::Error::Remote { traceback }) => assert!(traceback.contains("ValueError: boom")),
///     other => panic!("unexpected result: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Code on the remote side raised; `traceback` is the remote, formatted traceback.
    #[error("remote error:\n{traceback}")]
    Remote {
        /// The formatted traceback of the exception, as the remote side printed it.
        traceback: String,
    },

    /// A receive or wait did not complete within the given time.
    #[error("timed out after {0:?}")]
    Timeout(
        /// The timeout that ran out.
        Duration,
    ),

    /// The peer closed the channel and every item it sent has been received.
    #[error("end of channel {id}: the other side closed it")]
    EndOfChannel {
        /// The id of the channel.
        id: i32,
    },

    /// This side closed the channel (or sent its last message): nothing more can be sent.
    #[error("channel {id} is closed for sending")]
    ChannelClosed {
        /// The id of the channel.
        id: i32,
    },

    /// The connection to the worker broke: the process died, or the peer sent bad frames.
    #[error("{0}")]
    GatewayLost(
        /// Which gateway was lost, why, and how its process ended.
        LostInfo,
    ),

    /// Bytes that are not a valid frame or serialized object, or a value that
    /// cannot be written in the format.
    #[error("data format error: {message}{}", at_offset(*offset))]
    DataFormat {
        /// What is wrong with the data.
        message: String,
        /// Byte offset in the payload where the problem was found, when known.
        offset: Option<usize>,
    },

    /// The worker process could not be started.
    #[error("cannot start a gateway for spec {spec:?} (key {key:?}, program {program:?}): {reason}")]
    Spawn {
        /// The gateway spec being started, as a string (empty when no spec is involved,
        /// such as when reading a worker source from a local interpreter).
        spec: String,
        /// What was being started: the transport's spec key (`popen`, `python`, `ssh`,
        /// `socket`, `exec`, ...) or the feature that ran the program (`ssh_share`,
        /// `forward_imports`, `worker`).
        key: String,
        /// The program that was run (or, for `socket`, the address connected to).
        program: String,
        /// Why it failed.
        reason: String,
    },

    /// A gateway specification string is malformed or asks for something impossible.
    #[error("invalid gateway spec {spec:?}: {reason}")]
    Spec {
        /// The spec string as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The API was used in a way it does not allow: a bad argument or configuration, or
    /// an operation the object's state forbids (such as `receive` on a channel that has a
    /// callback). The text says what was wrong.
    #[error("{0}")]
    Misuse(
        /// What was wrong.
        String,
    ),

    /// An operating-system error.
    #[error(transparent)]
    Io(
        /// The underlying I/O error.
        #[from]
        std::io::Error,
    ),
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
    /// How the worker process ended, when it is known (displayed, for example, as
    /// "exit status 3" or "signal 9 (SIGKILL)").
    pub exit_status: Option<ExitStatus>,
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

/// How a worker process ended: [`LostInfo::exit_status`].
///
/// Displayed as "exit status N" or "signal N (NAME)".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal with this number ended it.
    Signal(i32),
}

impl ExitStatus {
    /// The exit code, for [`ExitStatus::Code`].
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(*c),
            ExitStatus::Signal(_) => None,
        }
    }

    /// The signal number, for [`ExitStatus::Signal`].
    pub fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Signal(s) => Some(*s),
            ExitStatus::Code(_) => None,
        }
    }

    /// True for exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit status {code}"),
            ExitStatus::Signal(sig) => write!(f, "signal {sig} ({})", signal_name(*sig)),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

impl Error {
    pub(crate) fn misuse(message: impl Into<String>) -> Error {
        Error::Misuse(message.into())
    }

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
            Error::Misuse(message) => Error::Misuse(message.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_display_as_before() {
        assert_eq!(ExitStatus::Code(3).to_string(), "exit status 3");
        assert_eq!(ExitStatus::Signal(9).to_string(), "signal 9 (SIGKILL)");
        assert_eq!(ExitStatus::Signal(64).to_string(), "signal 64 (signal)");
        let info = LostInfo {
            gateway: "gw0".into(),
            reason: "connection closed".into(),
            exit_status: Some(ExitStatus::Signal(11)),
            stderr_tail: "boom\n".into(),
        };
        assert_eq!(
            info.to_string(),
            "gateway gw0 lost: connection closed; worker process ended with signal 11 (SIGSEGV); \
             its stderr ended with:\nboom"
        );
    }

    #[test]
    fn misuse_displays_its_message() {
        let e = Error::misuse("channel 3 already has a callback");
        assert_eq!(e.to_string(), "channel 3 already has a callback");
        assert!(matches!(e.duplicate(), Error::Misuse(m) if m == "channel 3 already has a callback"));
    }
}
