//! Locking as the whole crate does it: a mutex whose holder panicked is used as it is
//! (every guarded state here stays consistent between statements, so a panic in a user
//! callback must not take the gateway down with it), and a one-way [`Flag`].

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Locks `m`, recovering the guard from a poisoned mutex.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `cond.wait(guard)`, recovering the guard from a poisoned mutex.
pub(crate) fn wait<'a, T>(cond: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cond.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// `cond.wait_timeout(guard, timeout)`, recovering the guard from a poisoned mutex.
pub(crate) fn wait_timeout<'a, T>(cond: &Condvar, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
    cond.wait_timeout(guard, timeout).unwrap_or_else(|e| e.into_inner()).0
}

/// A one-way flag that threads can wait on.
#[derive(Default)]
pub(crate) struct Flag {
    set: Mutex<bool>,
    cond: Condvar,
}

impl Flag {
    pub(crate) fn set(&self) {
        *lock(&self.set) = true;
        self.cond.notify_all();
    }

    /// Waits until the flag is set or the deadline passes; true when set.
    pub(crate) fn wait_until(&self, deadline: Instant) -> bool {
        let mut set = lock(&self.set);
        while !*set {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            set = wait_timeout(&self.cond, set, deadline - now);
        }
        true
    }
}
