//! Many gateways and many channels at once: [`Group`] and [`MultiChannel`].

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::gateway::{terminate_all, Gateway, Source, WeakGateway, DEFAULT_EXIT_TIMEOUT};
use crate::sync::lock;
use crate::xspec::ToXSpec;
use crate::Channel;

enum Member {
    Strong(Gateway),
    Weak(String, WeakGateway),
}

impl Member {
    fn gateway(&self) -> Option<Gateway> {
        match self {
            Member::Strong(gw) => Some(gw.clone()),
            Member::Weak(_, w) => w.upgrade(),
        }
    }
}

struct Members {
    list: Vec<Member>,
    next_number: usize,
}

/// A set of gateways with unique ids (`gw0`, `gw1`, … unless a spec gives `id=`).
///
/// A group made with [`Group::new`] owns its gateways: dropping it terminates them all
/// (in parallel). The [default group](default_group), which [`crate::makegateway`] uses,
/// only keeps track of its gateways: each lives as long as some handle to it, and those
/// still alive are exited when the program ends.
///
/// ```
/// # fn main() -> execnet::Result<()> {
/// let group = execnet::Group::new();
/// group.makegateway("popen//id=a")?;
/// group.makegateway("popen//id=b")?;
/// assert!(group.get("a").is_some());
/// let pids: Vec<i64> = group.remote_exec("import os; channel.send(os.getpid())")?.receive_each()?;
/// assert_eq!(pids.len(), 2);
/// group.terminate(std::time::Duration::from_secs(5));
/// # Ok(()) }
/// ```
pub struct Group {
    members: Mutex<Members>,
    owning: bool,
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

impl Group {
    /// An empty group that owns the gateways it makes.
    pub fn new() -> Group {
        Group { members: Mutex::new(Members { list: Vec::new(), next_number: 0 }), owning: true }
    }

    /// Starts a gateway for `spec` (a string such as `"popen//python=python3"`, or an
    /// [`crate::XSpec`]) and adds it to the group. Gateways that were lost leave the group
    /// then, so that their ids can be given again (to retry a host, say).
    pub fn makegateway(&self, spec: impl ToXSpec) -> Result<Gateway> {
        let spec = spec.to_xspec()?;
        let mut gone = Vec::new(); // lost gateways leave the group (their ids are free again)
        let id = {
            let mut m = lock(&self.members);
            m.list.retain(|member| match member.gateway() {
                Some(gw) if gw.is_alive() => true,
                Some(gw) => {
                    gone.push(gw);
                    false
                }
                None => false,
            });
            let id = match spec.id() {
                Some(id) => id.to_string(),
                None => loop {
                    let candidate = format!("gw{}", m.next_number);
                    m.next_number += 1;
                    if !m.list.iter().any(|g| member_id(g).as_deref() == Some(&candidate)) {
                        break candidate;
                    }
                },
            };
            if m.list.iter().any(|g| member_id(g).as_deref() == Some(id.as_str())) {
                return Err(spec.invalid(format!("the group already has a gateway with id {id:?}")));
            }
            id
        };
        drop(gone); // outside the lock: dropping the last handle reaps the process
        let gw = match spec.via() {
            Some(via) => {
                let via_gw = self.get(via).ok_or_else(|| {
                    spec.invalid(format!("via={via}: this group has no gateway with that id"))
                })?;
                Gateway::start_via(&spec, &id, &via_gw)?
            }
            None => match spec.get("installvia") {
                Some(host) => {
                    let host_gw = self.get(host).ok_or_else(|| {
                        spec.invalid(format!("installvia={host}: this group has no gateway with that id"))
                    })?;
                    Gateway::start_installvia(&spec, &id, &host_gw)?
                }
                None => Gateway::start(&spec, &id)?,
            },
        };
        let member = if self.owning {
            Member::Strong(gw.clone())
        } else {
            Member::Weak(id, gw.downgrade())
        };
        lock(&self.members).list.push(member);
        Ok(gw)
    }

    /// The gateway with this id.
    pub fn get(&self, id: &str) -> Option<Gateway> {
        self.gateways().into_iter().find(|g| g.id() == id)
    }

    /// The gateways in the order they were made (those still alive, for the default group).
    pub fn gateways(&self) -> Vec<Gateway> {
        lock(&self.members).list.iter().filter_map(Member::gateway).collect()
    }

    /// How many gateways the group has.
    pub fn len(&self) -> usize {
        self.gateways().len()
    }

    /// True when the group has no gateways.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `source` on every gateway of the group; the channels come back in gateway order.
    pub fn remote_exec(&self, source: impl Into<Source>) -> Result<MultiChannel> {
        let source = source.into();
        let channels = self
            .gateways()
            .iter()
            .map(|gw| gw.remote_exec(source.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok(MultiChannel::new(channels))
    }

    /// Exits every gateway in parallel, with the steps of [`Gateway::terminate`] taken
    /// for all at once: all are asked to exit, local workers still running after half
    /// of `timeout` get SIGINT, and those still there at `timeout` are killed; all are
    /// reaped. The group is empty afterwards.
    pub fn terminate(&self, timeout: Duration) {
        let members: Vec<Member> = std::mem::take(&mut lock(&self.members).list);
        let gateways: Vec<Gateway> = members.iter().filter_map(Member::gateway).collect();
        drop(members);
        terminate_all(&gateways, timeout);
    }
}

fn member_id(m: &Member) -> Option<String> {
    match m {
        Member::Strong(gw) => Some(gw.id().to_string()),
        Member::Weak(id, w) => w.upgrade().map(|_| id.clone()),
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.owning {
            self.terminate(DEFAULT_EXIT_TIMEOUT);
        }
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.gateways().iter().map(|g| g.id().to_string()).collect();
        write!(f, "<Group {ids:?}>")
    }
}

/// The process-wide group used by [`crate::makegateway`]. It does not keep gateways
/// alive; the ones alive when the program ends (returns from `main` or calls
/// `std::process::exit`) are exited then.
pub fn default_group() -> &'static Group {
    static DEFAULT: OnceLock<Group> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        extern "C" fn at_exit() {
            if let Some(group) = DEFAULT.get() {
                if let Ok(mut m) = group.members.try_lock() {
                    let gateways: Vec<Gateway> = m.list.drain(..).filter_map(|m| m.gateway()).collect();
                    drop(m);
                    terminate_all(&gateways, Duration::from_secs(1));
                    // Handles may live on in leaked values; the processes are ended.
                    std::mem::forget(gateways);
                }
            }
        }
        crate::sys::at_exit(at_exit);
        Group { members: Mutex::new(Members { list: Vec::new(), next_number: 0 }), owning: false }
    })
}

/// Starts a gateway in the [default group](default_group).
///
/// ```
/// # fn main() -> execnet::Result<()> {
/// let gw = execnet::makegateway("popen//python=python3")?;
/// let ch = gw.remote_exec("channel.send(6 * 7)")?;
/// assert_eq!(ch.receive::<i64>()?, 42);
/// # Ok(()) }
/// ```
pub fn makegateway(spec: impl ToXSpec) -> Result<Gateway> {
    default_group().makegateway(spec)
}

/// Several channels used as one: receive from each, or from whichever has an item.
///
/// ```
/// # fn main() -> execnet::Result<()> {
/// let gw = execnet::makegateway("popen")?;
/// let multi = execnet::MultiChannel::new(vec![
///     gw.remote_exec("channel.send(1)")?,
///     gw.remote_exec("channel.send(2)")?,
/// ]);
/// let mut queue = multi.make_receive_queue::<i64>()?;
/// let mut sum = 0;
/// while let Ok((_channel, item)) = queue.get() {
///     // `None` means that channel closed; `get` fails once all have.
///     sum += item.unwrap_or(0);
/// }
/// assert_eq!(sum, 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MultiChannel {
    channels: Vec<Channel>,
}

impl FromIterator<Channel> for MultiChannel {
    fn from_iter<I: IntoIterator<Item = Channel>>(iter: I) -> Self {
        MultiChannel::new(iter.into_iter().collect())
    }
}

impl MultiChannel {
    /// Groups the given channels, in this order.
    pub fn new(channels: Vec<Channel>) -> MultiChannel {
        MultiChannel { channels }
    }

    /// The channels, in order.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// The number of channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// True when it holds no channels.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Sends `item` on every channel.
    pub fn send_each<T: Serialize + ?Sized>(&self, item: &T) -> Result<()> {
        self.channels.iter().try_for_each(|ch| ch.send(item))
    }

    /// Receives one item from each channel, in channel order.
    pub fn receive_each<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        self.channels.iter().map(Channel::receive).collect()
    }

    /// Like [`MultiChannel::receive_each`], pairing each item with its channel.
    pub fn receive_each_with_channel<T: DeserializeOwned>(&self) -> Result<Vec<(Channel, T)>> {
        self.channels.iter().map(|ch| Ok((ch.clone(), ch.receive()?))).collect()
    }

    /// A queue that yields `(channel, Some(item))` as items arrive on any channel, and
    /// `(channel, None)` once when a channel closes. It installs a callback on every
    /// channel, so the channels can no longer be received from directly.
    pub fn make_receive_queue<T: DeserializeOwned + Send + 'static>(&self) -> Result<ReceiveQueue<T>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        for (index, ch) in self.channels.iter().enumerate() {
            let item_tx = tx.clone();
            ch.install_callback(move |item: Option<T>| {
                let _ = item_tx.send((index, item));
            })?;
        }
        Ok(ReceiveQueue { rx, channels: self.channels.clone(), open: self.channels.len() })
    }

    /// Waits until every channel is closed; returns the first error found (a remote
    /// error, for example) after waiting for all, or a timeout.
    pub fn waitclose(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut first = None;
        for ch in &self.channels {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match ch.waitclose(left) {
                Ok(()) => {}
                Err(Error::Timeout(_)) => return Err(Error::Timeout(timeout.unwrap_or_default())),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Items from several channels as they arrive; see [`MultiChannel::make_receive_queue`].
pub struct ReceiveQueue<T> {
    rx: Receiver<(usize, Option<T>)>,
    channels: Vec<Channel>,
    open: usize,
}

impl<T> ReceiveQueue<T> {
    /// The next `(channel, item)`; `None` as the item means that channel closed.
    /// Fails with [`Error::EndOfChannel`] when every channel has closed and all was read.
    pub fn get(&mut self) -> Result<(Channel, Option<T>)> {
        self.get_inner(None)
    }

    /// Like [`ReceiveQueue::get`], giving up with [`Error::Timeout`] after `timeout`.
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<(Channel, Option<T>)> {
        self.get_inner(Some(timeout))
    }

    fn get_inner(&mut self, timeout: Option<Duration>) -> Result<(Channel, Option<T>)> {
        if self.open == 0 && self.rx.is_empty() {
            return Err(Error::EndOfChannel { id: 0 });
        }
        let (index, item) = match timeout {
            None => self.rx.recv().map_err(|_| Error::EndOfChannel { id: 0 })?,
            Some(t) => self.rx.recv_timeout(t).map_err(|e| match e {
                RecvTimeoutError::Timeout => Error::Timeout(t),
                RecvTimeoutError::Disconnected => Error::EndOfChannel { id: 0 },
            })?,
        };
        if item.is_none() {
            self.open -= 1;
        }
        Ok((self.channels[index].clone(), item))
    }

    /// The channels this queue reads from.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }
}

impl<T> Iterator for ReceiveQueue<T> {
    type Item = (Channel, Option<T>);
    /// Yields until every channel has closed.
    fn next(&mut self) -> Option<Self::Item> {
        self.get().ok()
    }
}
