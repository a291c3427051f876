//! The waiting line of asynchronous turns: highest priority first, first
//! come first served within a priority, and aging so low priority never
//! starves. Each level above low is worth `aging` of waiting: a turn's
//! place is its arrival time minus its priority's credit, which is the
//! same order as "priority plus one level per `aging` waited" at every
//! moment — so a plain heap keeps it, with no re-sorting as time passes.

use super::record::Record;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::time::Duration;

/// How soon an asynchronous turn runs, relative to the others waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Levels above low.
    fn levels(self) -> u32 {
        match self {
            Priority::High => 2,
            Priority::Normal => 1,
            Priority::Low => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

struct Waiting {
    /// Arrival (ns since the epoch) minus the priority's credit.
    place: i64,
    /// Arrival order, for equal places.
    seq: u64,
    record: Record,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.place, self.seq) == (other.place, other.seq)
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.place, self.seq).cmp(&(other.place, other.seq))
    }
}

pub(super) struct Queue {
    aging: Duration,
    line: Mutex<(BinaryHeap<Reverse<Waiting>>, u64)>,
}

impl Queue {
    pub fn new(aging: Duration) -> Queue {
        Queue {
            aging,
            line: Mutex::default(),
        }
    }

    /// Puts a turn in line as if it arrived at `arrival_ns` (its operation's
    /// creation: a turn resumed after a restart keeps its age).
    pub fn push(&self, record: Record, arrival_ns: i64) {
        let credit = self.aging.as_nanos() * u128::from(record.operation.priority.levels());
        let place = arrival_ns.saturating_sub(i64::try_from(credit).unwrap_or(i64::MAX));
        let mut line = self.lock();
        line.1 += 1;
        let seq = line.1;
        line.0.push(Reverse(Waiting { place, seq, record }));
        crate::meter::operations_queued(line.0.len());
    }

    /// The turn to run next.
    pub fn pop(&self) -> Option<Record> {
        let mut line = self.lock();
        let next = line.0.pop().map(|Reverse(w)| w.record);
        crate::meter::operations_queued(line.0.len());
        next
    }

    pub fn is_empty(&self) -> bool {
        self.lock().0.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (BinaryHeap<Reverse<Waiting>>, u64)> {
        // A poisoned lock only means a panic elsewhere; the heap is whole.
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, priority: Priority) -> Record {
        Record::for_test(id, priority)
    }

    fn order(queue: &Queue) -> Vec<String> {
        std::iter::from_fn(|| queue.pop())
            .map(|r| r.operation.id)
            .collect()
    }

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn higher_priority_first_then_arrival_order() {
        let queue = Queue::new(Duration::from_secs(3600));
        for (i, (id, p)) in [
            ("low-1", Priority::Low),
            ("normal-1", Priority::Normal),
            ("high-1", Priority::High),
            ("low-2", Priority::Low),
            ("high-2", Priority::High),
            ("normal-2", Priority::Normal),
        ]
        .into_iter()
        .enumerate()
        {
            queue.push(record(id, p), i64::try_from(i).unwrap() * SEC);
        }
        assert_eq!(
            order(&queue),
            ["high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]
        );
    }

    #[test]
    fn a_low_turn_that_waited_long_enough_goes_before_newer_high_ones() {
        let queue = Queue::new(Duration::from_secs(10));
        queue.push(record("low", Priority::Low), 0);
        // Highs arriving for a minute, one every 5 s: two levels are worth
        // 20 s of waiting, so highs arriving after 20 s wait behind the low.
        for i in 1..=12 {
            queue.push(record(&format!("high-{i:02}"), Priority::High), i * 5 * SEC);
        }
        let served = order(&queue);
        let low_at = served.iter().position(|id| id == "low").unwrap();
        assert_eq!(&served[..low_at], ["high-01", "high-02", "high-03"]);
        // Exactly at 20 s the places tie: arrival order decides.
        assert_eq!(served[low_at + 1], "high-04");
        assert_eq!(served.len(), 13);
    }
}
