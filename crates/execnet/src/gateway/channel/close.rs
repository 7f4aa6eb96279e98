//! Closing a channel (both ways, with an error, or only for sending) and waiting for
//! it to be closed.

use std::time::{Duration, Instant};

use super::state::EndReason;
use super::wait::{end_error, wait};
use super::Channel;
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::wire::{self, frame::Code};

impl Channel {
    /// Waits until the channel is closed: by the peer (its code finished), by this side,
    /// or because the gateway was lost. Returns the remote error if the remote code
    /// raised. Items still queued stay receivable.
    pub fn waitclose(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let state = &self.h.state;
        let mut inner = lock(&state.inner);
        loop {
            let delivering_elsewhere =
                inner.end_delivering.is_some_and(|t| t != std::thread::current().id());
            match &inner.ended {
                Some(reason) if !delivering_elsewhere => {
                    return match reason {
                        EndReason::RemoteError(_) | EndReason::Lost(_) | EndReason::LocalError(_) => {
                            Err(end_error(state.id, reason, false))
                        }
                        _ => Ok(()),
                    };
                }
                _ => {}
            }
            inner = wait(state, inner, deadline, timeout)?;
        }
    }

    /// The error this channel ended with, without waiting: the remote error, the loss
    /// of the gateway, or a local decoding failure. None while it is open or when it
    /// closed cleanly.
    pub fn end_error(&self) -> Option<Error> {
        let inner = lock(&self.h.state.inner);
        match &inner.ended {
            Some(
                reason @ (EndReason::RemoteError(_) | EndReason::Lost(_) | EndReason::LocalError(_)),
            ) => Some(end_error(self.h.state.id, reason, false)),
            _ => None,
        }
    }

    /// Closes the channel on both sides: the remote code sees end-of-channel (EOFError)
    /// on receive, this side can no longer send, and local receives end once the queue
    /// is drained. Closing twice is harmless.
    pub fn close(&self) -> Result<()> {
        self.close_inner(Code::ChannelClose, &[])
    }

    /// Closes the channel with an error: the remote side sees a RemoteError with `text`.
    pub fn close_with_error(&self, text: &str) -> Result<()> {
        let mut payload = Vec::new();
        wire::ser::to_payload(text, &mut payload)?;
        self.close_inner(Code::ChannelCloseError, &payload)
    }

    /// Tells the peer that this side sends no more (CHANNEL_LAST_MESSAGE): remote
    /// receives end with `EOFError` once the items sent before are drained, while this
    /// side keeps receiving until the peer closes. Sending afterwards is an error;
    /// calling it again, or after `close`, does nothing.
    pub fn close_sending(&self) -> Result<()> {
        let state = &self.h.state;
        {
            let mut inner = lock(&state.inner);
            if inner.send_closed {
                return Ok(());
            }
            inner.send_closed = true;
        }
        let res = self.h.gateway.inner.send_frame(Code::ChannelLastMessage, state.id, &[]);
        self.h.gateway.inner.forget_if_done(state);
        match res {
            Err(Error::GatewayLost(_)) => Ok(()),
            other => other,
        }
    }

    fn close_inner(&self, code: Code, payload: &[u8]) -> Result<()> {
        let state = &self.h.state;
        let mut inner = lock(&state.inner);
        if inner.send_closed {
            return Ok(());
        }
        inner.send_closed = true;
        if inner.ended.is_none() {
            inner.ended = Some(EndReason::LocalClose);
            state.cond.notify_all();
        }
        drop(inner);
        let res = self.h.gateway.inner.send_frame(code, state.id, payload);
        self.h.gateway.inner.forget_if_done(state);
        match res {
            Err(Error::GatewayLost(_)) => Ok(()), // nothing left to close on the other side
            other => other,
        }
    }

    /// True once the channel is closed: by this side, or by the peer for good.
    pub fn is_closed(&self) -> bool {
        let inner = lock(&self.h.state.inner);
        inner.send_closed || matches!(inner.ended, Some(ref r) if !matches!(r, EndReason::LastMessage))
    }
}
