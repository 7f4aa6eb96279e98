//! What a gateway does with each frame from the worker: channel data and ends go to
//! the channel's state (its queue or callback), requests of the worker (STATUS, an
//! exec it may not make) are answered, GATEWAY_TERMINATE is noted for the loss report.

use std::sync::atomic::Ordering;

use super::channel::EndReason;
use super::{GatewayInner, RemoteStatus};
use crate::error::{Error, Result};
use crate::wire::frame::Code;
use crate::wire::{self, ser};

impl GatewayInner {
    /// Handles one frame from the worker. Returns true when it gave an item to a receiver
    /// that was waiting for it.
    pub(super) fn dispatch(&self, code: Code, id: i32, payload: Vec<u8>) -> Result<bool> {
        if matches!(code, Code::ChannelData | Code::ChannelClose | Code::ChannelCloseError | Code::ChannelLastMessage) {
            self.table.check_channel_id(code, id)?;
        }
        match code {
            Code::ChannelData => match self.table.incoming_state(id) {
                Some(state) => {
                    if let Some(how) = state.peer_ended() {
                        return Err(Error::data_format(
                            format!("CHANNEL_DATA for channel {id} after the worker {how}"),
                            None,
                        ));
                    }
                    return Ok(state.deliver(payload));
                }
                None => {
                    if self.table.was_closed_by_peer(id) {
                        return Err(Error::data_format(
                            format!("CHANNEL_DATA for channel {id} after the worker closed it"),
                            None,
                        ));
                    }
                    tracing::debug!(gateway = %self.id, channel = id, "data for a closed channel dropped")
                }
            },
            Code::ChannelClose => self.peer_end(id, EndReason::Closed),
            Code::ChannelLastMessage => self.peer_end(id, EndReason::LastMessage),
            Code::ChannelCloseError => {
                let text: String = wire::de::from_payload(&payload)
                    .map_err(|e| Error::data_format(format!("CHANNEL_CLOSE_ERROR for channel {id}: {e}"), None))?;
                self.peer_end(id, EndReason::RemoteError(text))
            }
            Code::ChannelExec => {
                let mut text = Vec::new();
                ser::to_payload(
                    "execnet-rs hosts do not run code sent by the worker (remote_exec towards the host)",
                    &mut text,
                )?;
                self.send_frame(Code::ChannelCloseError, id, &text)?;
            }
            Code::Status => {
                let status =
                    RemoteStatus { numchannels: self.table.len() as u64, numexecuting: 0, execmodel: "thread".into() };
                let mut data = Vec::new();
                ser::to_payload(&status, &mut data)?;
                self.send_frame(Code::ChannelData, id, &data)?;
                self.send_frame(Code::ChannelClose, id, &[])?;
            }
            Code::Reconfigure => {}
            Code::GatewayTerminate => self.process.peer_terminated.store(true, Ordering::Relaxed),
        }
        Ok(false)
    }

    /// The worker closed channel `id` (or ended it with an error).
    fn peer_end(&self, id: i32, reason: EndReason) {
        let Some(state) = self.table.closed_by_peer(id) else {
            if let EndReason::RemoteError(tb) = reason {
                tracing::warn!(gateway = %self.id, channel = id, "remote error on a channel closed here:\n{tb}");
            }
            return;
        };
        state.end(reason);
        self.table.forget_if_done(&state);
    }
}
