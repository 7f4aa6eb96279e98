//! Blocking on a channel's state (counted, so that delivery notifies only when some
//! thread waits) and the error a channel's end turns into.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::state::{ChannelState, EndReason, Inner};
use crate::error::{Error, Result};
use crate::sync::{self, wait_timeout};

pub(super) fn wait<'a>(
    state: &ChannelState,
    mut inner: MutexGuard<'a, Inner>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
) -> Result<MutexGuard<'a, Inner>> {
    let cond = &state.cond;
    inner.waiters += 1;
    state.waiting.fetch_add(1, Ordering::Relaxed);
    let _counted = Counted(&state.waiting);
    let res = match deadline {
        None => Ok(sync::wait(cond, inner)),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                Err(inner)
            } else {
                Ok(wait_timeout(cond, inner, d - now))
            }
        }
    };
    match res {
        Ok(mut g) => {
            g.waiters -= 1;
            Ok(g)
        }
        Err(mut g) => {
            g.waiters -= 1;
            Err(Error::Timeout(timeout.unwrap_or_default()))
        }
    }
}

/// Takes one off a count when dropped.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) fn end_error(id: i32, reason: &EndReason, receiving: bool) -> Error {
    match reason {
        EndReason::RemoteError(tb) => Error::Remote { traceback: tb.clone() },
        EndReason::Lost(info) => Error::GatewayLost(info.clone()),
        EndReason::LocalError(msg) => Error::data_format(msg.clone(), None),
        _ if receiving => Error::EndOfChannel { id },
        _ => Error::ChannelClosed { id },
    }
}
