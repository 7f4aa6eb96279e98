//! File-like adapters, like execnet's `makefile`: [`ChannelWriter`] (`std::io::Write`)
//! and [`ChannelReader`] (`std::io::Read` and `BufRead`).

use super::Channel;
use crate::error::Error;

impl Channel {
    /// A writer that sends what is written as `bytes` items (`std::io::Write`), like
    /// execnet's `makefile("w")`. Closing (dropping) it does not close the channel.
    pub fn makefile_writer(&self) -> ChannelWriter {
        ChannelWriter { channel: self.clone() }
    }

    /// A reader over received `str`/`bytes` items (`std::io::Read`), like execnet's
    /// `makefile("r")`; it reads until the channel ends.
    pub fn makefile_reader(&self) -> ChannelReader {
        ChannelReader { channel: self.clone(), buf: Vec::new(), pos: 0 }
    }
}

/// `std::io::Write` over a channel; see [`Channel::makefile_writer`].
pub struct ChannelWriter {
    channel: Channel,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.channel
            .send(serde_bytes::Bytes::new(buf))
            .map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `std::io::Read` over a channel; see [`Channel::makefile_reader`].
pub struct ChannelReader {
    channel: Channel,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    /// Makes sure unread bytes are buffered; false at the end of the channel.
    fn refill(&mut self) -> std::io::Result<bool> {
        while self.pos >= self.buf.len() {
            match self.channel.receive::<crate::Value>() {
                Ok(crate::Value::Bytes(b)) => self.buf = b,
                Ok(crate::Value::Str(s)) => self.buf = s.into_bytes(),
                Ok(other) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "channel {} sent {other} where str or bytes was expected",
                            self.channel.id()
                        ),
                    ))
                }
                Err(Error::EndOfChannel { .. }) => return Ok(false),
                Err(e) => return Err(std::io::Error::other(e)),
            }
            self.pos = 0;
        }
        Ok(true)
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if !self.refill()? {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl std::io::BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if !self.refill()? {
            return Ok(&[]);
        }
        Ok(&self.buf[self.pos..])
    }
    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.buf.len());
    }
}
