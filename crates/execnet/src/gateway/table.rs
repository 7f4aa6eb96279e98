//! The channel table of a gateway: the channels open on it, by id, with the id
//! bookkeeping of the protocol (odd ids are made here, even ones by the worker, in
//! increasing order) and the queue budget all its channels share.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::channel::{ChannelHandle, ChannelState, EndReason, QueueBudget};
use super::Gateway;
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::wire::frame::Code;
use crate::Channel;

/// How many channels closed by the worker a gateway remembers (see `Slots::peer_closed`).
const PEER_CLOSED_MEMORY: usize = 1024;

struct Entry {
    state: Arc<ChannelState>,
    handle: Weak<ChannelHandle>,
    /// A handle was ever made. A channel the worker made may be closed by it before
    /// the item that carries it is received here; it must stay findable until then.
    claimed: bool,
}

struct Slots {
    map: HashMap<i32, Entry>,
    /// The next id for a channel made here (odd).
    next_id: i32,
    /// The highest id of a channel the worker made (even); lower unknown ids are closed.
    max_peer_id: i32,
    /// The last channels the worker closed (at most PEER_CLOSED_MEMORY), to recognize
    /// data it sends on them afterwards as the protocol error it is.
    peer_closed: VecDeque<i32>,
}

pub(super) struct ChannelTable {
    slots: Mutex<Slots>,
    /// Bytes of received items queued over all channels (see `DEFAULT_QUEUE_LIMIT`).
    pub(super) budget: Arc<QueueBudget>,
    /// Threads blocked in receive/waitclose on any channel of this gateway.
    pub(super) waiting: Arc<AtomicUsize>,
}

impl ChannelTable {
    pub(super) fn new(queue_limit: usize) -> ChannelTable {
        ChannelTable {
            slots: Mutex::new(Slots { map: HashMap::new(), next_id: 1, max_peer_id: 0, peer_closed: VecDeque::new() }),
            budget: Arc::new(QueueBudget::new(queue_limit)),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        lock(&self.slots)
    }

    fn new_state(&self, id: i32) -> Arc<ChannelState> {
        Arc::new(ChannelState::new(id, self.budget.clone(), self.waiting.clone()))
    }

    /// A new channel made here, on `gateway`.
    pub(super) fn open(&self, gateway: &Gateway) -> Channel {
        let mut slots = self.slots();
        let id = slots.next_id;
        slots.next_id += 2;
        let state = self.new_state(id);
        let channel = Channel { h: Arc::new(ChannelHandle { state: state.clone(), gateway: gateway.clone() }) };
        slots.map.insert(id, Entry { state, handle: Arc::downgrade(&channel.h), claimed: true });
        channel
    }

    /// The handle for channel `id`, creating its state when it is new. `lost` tells
    /// (asked with the table locked) whether the gateway is lost already.
    pub(super) fn channel_for_id(&self, gateway: &Gateway, id: i32, lost: impl Fn() -> bool) -> Channel {
        let mut slots = self.slots();
        if let Some(entry) = slots.map.get(&id) {
            if let Some(h) = entry.handle.upgrade() {
                return Channel { h };
            }
            let state = entry.state.clone();
            let channel = Channel { h: Arc::new(ChannelHandle { state, gateway: gateway.clone() }) };
            let entry = slots.map.get_mut(&id).expect("entry");
            entry.handle = Arc::downgrade(&channel.h);
            entry.claimed = true;
            return channel;
        }
        let state = self.new_state(id);
        let known_closed = id % 2 != 0 || id <= slots.max_peer_id || lost();
        if known_closed {
            // A channel that was already closed and forgotten here: hand out a closed one.
            state.end(EndReason::Closed);
            return Channel { h: Arc::new(ChannelHandle { state, gateway: gateway.clone() }) };
        }
        slots.max_peer_id = id;
        let channel = Channel { h: Arc::new(ChannelHandle { state: state.clone(), gateway: gateway.clone() }) };
        slots.map.insert(id, Entry { state, handle: Arc::downgrade(&channel.h), claimed: true });
        channel
    }

    /// Removes a channel once it is closed both ways.
    pub(super) fn forget_if_done(&self, state: &Arc<ChannelState>) {
        let mut slots = self.slots();
        if let Some(entry) = slots.map.get(&state.id) {
            if entry.claimed && Arc::ptr_eq(&entry.state, state) && state.is_done() {
                slots.map.remove(&state.id);
            }
        }
    }

    /// A channel frame must name a channel that can exist: a positive id, and when odd
    /// (made here) one this side has handed out.
    pub(super) fn check_channel_id(&self, code: Code, id: i32) -> Result<()> {
        if id <= 0 {
            return Err(Error::data_format(
                format!("{} for channel {id}: channel ids are positive", code.name()),
                None,
            ));
        }
        if id % 2 != 0 && id >= self.slots().next_id {
            return Err(Error::data_format(
                format!("{} for channel {id}, which the host never opened", code.name()),
                None,
            ));
        }
        Ok(())
    }

    /// The state that incoming data for `id` goes to; None for channels closed here.
    pub(super) fn incoming_state(&self, id: i32) -> Option<Arc<ChannelState>> {
        let mut slots = self.slots();
        if let Some(entry) = slots.map.get(&id) {
            return Some(entry.state.clone());
        }
        // Odd ids are made here; an unknown one was closed and forgotten. Even ids come
        // from the worker in increasing order, so one we have passed was closed too.
        if id <= 0 || id % 2 != 0 || id <= slots.max_peer_id {
            return None;
        }
        slots.max_peer_id = id;
        let state = self.new_state(id);
        slots.map.insert(id, Entry { state: state.clone(), handle: Weak::new(), claimed: false });
        Some(state)
    }

    /// Records that the worker closed channel `id`; its state, if it is open here.
    pub(super) fn closed_by_peer(&self, id: i32) -> Option<Arc<ChannelState>> {
        let mut slots = self.slots();
        if slots.peer_closed.len() >= PEER_CLOSED_MEMORY {
            slots.peer_closed.pop_front();
        }
        slots.peer_closed.push_back(id);
        slots.map.get(&id).map(|e| e.state.clone())
    }

    /// Whether the worker closed channel `id` lately.
    pub(super) fn was_closed_by_peer(&self, id: i32) -> bool {
        self.slots().peer_closed.contains(&id)
    }

    /// How many channels are open.
    pub(super) fn len(&self) -> usize {
        self.slots().map.len()
    }

    /// Empties the table (the gateway is lost); the states that were in it.
    pub(super) fn drain(&self) -> Vec<Arc<ChannelState>> {
        self.slots().map.drain().map(|(_, e)| e.state).collect()
    }
}
