//! Forwarding delay inside the SFU: from the moment a publisher's frame was
//! complete (the worker has just read its last packet and str0m handed the
//! frame over) to the moment its packets were handed to the kernel for one
//! subscriber. One count
//! per video frame per subscriber, in 25 µs buckets up to 50 ms (the last
//! bucket holds everything slower). Lock-free so every worker records into
//! the same histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKET_US: u64 = 25;
const BUCKETS: usize = 2000;

pub(crate) struct DelayHistogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        DelayHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl DelayHistogram {
    pub(crate) fn record(&self, d: Duration) {
        let i = usize::try_from(d.as_micros() / u128::from(BUCKET_US))
            .unwrap_or(usize::MAX)
            .min(BUCKETS - 1);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> DelaySnapshot {
        DelaySnapshot {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// Counts of forwarded video frames per delay bucket, see [`crate::Sfu::forward_delays`].
#[derive(Debug, Clone, Default)]
pub struct DelaySnapshot {
    counts: Vec<u64>,
}

impl DelaySnapshot {
    /// What was recorded between `earlier` and this snapshot.
    pub fn since(&self, earlier: &DelaySnapshot) -> DelaySnapshot {
        DelaySnapshot {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The delay below which a fraction `q` (0..=1) of the frames left: the
    /// upper edge of the bucket holding that rank. `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros((i as u64 + 1) * BUCKET_US));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_upper_edges() {
        let h = DelayHistogram::default();
        for _ in 0..98 {
            h.record(Duration::from_micros(110));
        }
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(2));
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.percentile(0.5), Some(Duration::from_micros(125)));
        assert_eq!(s.percentile(0.99), Some(Duration::from_micros(3025)));
        // Anything beyond the range lands in the last bucket.
        assert_eq!(s.percentile(1.0), Some(Duration::from_millis(50)));
    }

    #[test]
    fn since_subtracts_an_earlier_snapshot() {
        let h = DelayHistogram::default();
        h.record(Duration::from_millis(1));
        let before = h.snapshot();
        h.record(Duration::from_millis(7));
        let d = h.snapshot().since(&before);
        assert_eq!(d.count(), 1);
        assert_eq!(d.percentile(0.5), Some(Duration::from_micros(7025)));
        assert_eq!(DelaySnapshot::default().percentile(0.5), None);
    }
}
