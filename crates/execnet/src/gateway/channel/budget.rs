//! The queue budget: how many bytes of received items one gateway's channels hold,
//! and the backpressure that stops the reader above the limit.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::sync::{lock, wait_timeout};

/// What one queued item counts against the budget: its payload and a fixed estimate of
/// its bookkeeping, so that a flood of empty items is bounded too.
pub(crate) fn item_cost(payload_len: usize) -> usize {
    payload_len + 64
}

/// The bytes of received items queued in all channels of one gateway, and the limit
/// above which the gateway's reader stops reading (backpressure: the worker's writes
/// then block once the pipe or socket buffer is full).
pub(crate) struct QueueBudget {
    used: Mutex<usize>,
    cond: Condvar,
    /// 0: no limit.
    limit: usize,
    /// Set when the gateway ends: the reader no longer waits.
    released: std::sync::atomic::AtomicBool,
}

impl QueueBudget {
    pub(crate) fn new(limit: usize) -> QueueBudget {
        QueueBudget {
            used: Mutex::new(0),
            cond: Condvar::new(),
            limit,
            released: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn used(&self) -> usize {
        *lock(&self.used)
    }

    pub(super) fn add(&self, n: usize) {
        *lock(&self.used) += n;
    }

    pub(super) fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut used = lock(&self.used);
        let was_above = self.limit != 0 && *used > self.limit;
        *used = used.saturating_sub(n);
        if was_above && *used <= self.limit {
            self.cond.notify_all();
        }
    }

    /// Blocks the reader while more than the limit is queued, until the gateway ends.
    pub(crate) fn wait_for_room(&self) {
        if self.limit == 0 {
            return;
        }
        let mut used = lock(&self.used);
        while *used > self.limit && !self.released.load(std::sync::atomic::Ordering::SeqCst) {
            used = wait_timeout(&self.cond, used, Duration::from_millis(200));
        }
    }

    /// Stops the reader from waiting (the gateway is ending).
    pub(crate) fn release(&self) {
        self.released.store(true, std::sync::atomic::Ordering::SeqCst);
        let _used = lock(&self.used);
        self.cond.notify_all();
    }
}

#[cfg(test)]
mod budget_tests {
    use super::QueueBudget;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn reader_waits_above_the_limit_until_items_are_taken_or_released() {
        let b = Arc::new(QueueBudget::new(100));
        b.add(150);
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            b2.wait_for_room();
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        b.sub(60); // 90: below the limit
        assert!(t.join().unwrap() >= Duration::from_millis(90));
        b.add(500);
        b.release();
        b.wait_for_room(); // released: no waiting
        assert_eq!(b.used(), 590);
        let unlimited = QueueBudget::new(0);
        unlimited.add(1 << 40);
        unlimited.wait_for_room();
    }
}
