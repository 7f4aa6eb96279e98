//! Frames: a 9-byte header (code, channel id, payload length) and a payload.

use std::io::{self, Read};

use crate::error::{Error, Result};

/// Length of a frame header in bytes.
pub const HEADER_LEN: usize = 9;

/// The default largest payload accepted from a peer (1 GiB).
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 30;

/// The message codes of PROTOCOL.md section 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum Code {
    /// Asks the peer for its status; the answer (channel and execution counts, execution
    /// model) comes back as data on the frame's channel, which is then closed.
    Status = 0,
    /// Changes string-coercion settings; only Python 2 peers cared, and both sides ignore it.
    Reconfigure = 1,
    /// The sender is shutting the gateway down; nothing follows it.
    GatewayTerminate = 2,
    /// Runs the source code in the payload remotely, attached to the frame's channel.
    ChannelExec = 3,
    /// One serialized item sent on the frame's channel.
    ChannelData = 4,
    /// The sender closed the channel: nothing more comes from it.
    ChannelClose = 5,
    /// The sender closed the channel with an error; the payload is the error text (for a
    /// remote execution, its traceback).
    ChannelCloseError = 6,
    /// The sender will send nothing more on the channel, but may still be sent to on it.
    ChannelLastMessage = 7,
}

impl Code {
    /// The code for a byte, or None when the byte is not a known code.
    pub fn from_byte(b: u8) -> Option<Code> {
        Some(match b as i8 {
            0 => Code::Status,
            1 => Code::Reconfigure,
            2 => Code::GatewayTerminate,
            3 => Code::ChannelExec,
            4 => Code::ChannelData,
            5 => Code::ChannelClose,
            6 => Code::ChannelCloseError,
            7 => Code::ChannelLastMessage,
            _ => return None,
        })
    }

    /// The protocol name, as in PROTOCOL.md.
    pub fn name(self) -> &'static str {
        match self {
            Code::Status => "STATUS",
            Code::Reconfigure => "RECONFIGURE",
            Code::GatewayTerminate => "GATEWAY_TERMINATE",
            Code::ChannelExec => "CHANNEL_EXEC",
            Code::ChannelData => "CHANNEL_DATA",
            Code::ChannelClose => "CHANNEL_CLOSE",
            Code::ChannelCloseError => "CHANNEL_CLOSE_ERROR",
            Code::ChannelLastMessage => "CHANNEL_LAST_MESSAGE",
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message code.
    pub code: Code,
    /// The id of the channel the frame is about (0 for gateway-wide messages).
    pub channel: i32,
    /// The length of the payload that follows, in bytes.
    pub len: usize,
}

/// Encodes a header.
pub fn encode_header(code: Code, channel: i32, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = code as i8 as u8;
    h[1..5].copy_from_slice(&channel.to_be_bytes());
    h[5..9].copy_from_slice(&(len as i32).to_be_bytes());
    h
}

/// Appends a whole frame (header and payload) to `out`.
pub fn write_frame(out: &mut Vec<u8>, code: Code, channel: i32, payload: &[u8]) {
    out.extend_from_slice(&encode_header(code, channel, payload.len()));
    out.extend_from_slice(payload);
}

/// Decodes and checks a header: the code must be known and the length within `max_len`.
pub fn decode_header(h: &[u8; HEADER_LEN], max_len: usize) -> Result<Header> {
    let code = Code::from_byte(h[0])
        .ok_or_else(|| Error::data_format(format!("unknown message code {} in frame header", h[0] as i8), Some(0)))?;
    let channel = i32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    let len = i32::from_be_bytes([h[5], h[6], h[7], h[8]]);
    if len < 0 {
        return Err(Error::data_format(format!("negative payload length {len} in {} frame", code.name()), Some(5)));
    }
    let len = len as usize;
    if len > max_len {
        return Err(Error::data_format(
            format!(
                "{} frame announces a payload of {len} bytes, more than the maximum message size of {max_len}",
                code.name()
            ),
            Some(5),
        ));
    }
    Ok(Header { code, channel, len })
}

/// Reads one frame. Returns Ok(None) on a clean end of stream before a header starts;
/// a stream that ends inside a frame is a data format error.
pub fn read_frame<R: Read>(r: &mut R, max_len: usize) -> Result<Option<(Header, Vec<u8>)>> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(Error::data_format(
                    format!("stream ended inside a frame header ({got} of {HEADER_LEN} bytes)"),
                    None,
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let header = decode_header(&h, max_len)?;
    let mut payload = Vec::new();
    // Read in bounded steps so that a lying length cannot allocate more than arrives.
    // Each step is read with reads as large as what is left of it (a zero-filled
    // buffer, then plain reads): Read::read_to_end into spare capacity would skip the
    // zeroing but reads in small, growing pieces, which measured 3-4 times slower for
    // megabyte payloads.
    let mut remaining = header.len;
    while remaining > 0 {
        let step = remaining.min(1 << 20);
        let start = payload.len();
        payload.resize(start + step, 0);
        let mut got = 0;
        while got < step {
            match r.read(&mut payload[start + got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if got < step {
            payload.truncate(start + got);
            return Err(Error::data_format(
                format!(
                    "stream ended inside the payload of a {} frame ({} of {} bytes)",
                    header.code.name(),
                    payload.len(),
                    header.len
                ),
                None,
            ));
        }
        remaining -= step;
    }
    Ok(Some((header, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = encode_header(Code::ChannelData, -7, 1234);
        let d = decode_header(&h, 4096).unwrap();
        assert_eq!(d, Header { code: Code::ChannelData, channel: -7, len: 1234 });
    }

    #[test]
    fn rejects_unknown_code_and_big_length() {
        let mut h = encode_header(Code::Status, 1, 0);
        h[0] = 9;
        assert!(decode_header(&h, 10).unwrap_err().to_string().contains("unknown message code 9"));
        let h = encode_header(Code::ChannelData, 1, 11);
        assert!(decode_header(&h, 10).unwrap_err().to_string().contains("maximum message size"));
        let mut h = encode_header(Code::ChannelData, 1, 0);
        h[5] = 0x80;
        assert!(decode_header(&h, 10).unwrap_err().to_string().contains("negative"));
    }

    #[test]
    fn truncated_frames_are_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Code::ChannelData, 3, b"hello");
        assert!(read_frame(&mut &buf[..], 100).unwrap().is_some());
        assert!(read_frame(&mut &b""[..], 100).unwrap().is_none());
        let e = read_frame(&mut &buf[..4], 100).unwrap_err();
        assert!(e.to_string().contains("inside a frame header"), "{e}");
        let e = read_frame(&mut &buf[..11], 100).unwrap_err();
        assert!(e.to_string().contains("inside the payload"), "{e}");
    }
}
