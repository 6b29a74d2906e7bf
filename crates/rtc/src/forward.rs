//! Forwarding decisions that need no I/O: keyframe-request rate limiting and
//! simulcast layer choice. Kept apart from the worker so they are unit-tested with
//! an explicit `now`.

use std::time::{Duration, Instant};

/// Lets one keyframe request through per interval; requests inside the interval
/// are remembered and released when it ends, so a subscriber that joined during
/// the quiet period still gets its keyframe.
#[derive(Debug, Clone)]
pub struct KeyframeLimiter {
    interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeLimiter {
    pub fn new(interval: Duration) -> Self {
        KeyframeLimiter {
            interval,
            last_sent: None,
            pending: false,
        }
    }

    /// A request arrived; true if it should be sent upstream now.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// Called on timeouts: true if a deferred request is due now.
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.pending && self.request(now) {
            return true;
        }
        false
    }

    /// When a deferred request becomes due, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(t)) => Some(t + self.interval),
            _ => None,
        }
    }
}

/// Picks the simulcast encoding index (0 = first = highest) a subscriber should
/// receive. `rates` are the measured bits per second of each encoding, in the
/// publisher's order (empty or all zero = not measured yet); `current` is what is
/// forwarded now; `estimate` what the subscriber may be sent (its bandwidth
/// estimate or REMB). `High` with an estimate is the highest encoding that
/// fits it: a receiver that says it can not take the first encoding gets a
/// lower one rather than a stalled picture.
///
/// Encodings measured at zero are skipped once anything is measured: a browser
/// leaves its low encoding off until the room grows, and `video-low` must not
/// mean a black tile then. Going up needs 25 % headroom over the encoding's rate,
/// staying needs none: the gap keeps a subscriber near the edge from flapping
/// between layers (each switch costs a keyframe).
pub(crate) fn choose_encoding(
    layer: &crate::Layer,
    rids: &[String],
    rates: &[u64],
    current: Option<usize>,
    estimate: Option<u64>,
) -> usize {
    let n = rids.len();
    if n == 0 {
        return 0;
    }
    let measured = rates.iter().take(n).any(|r| *r > 0);
    let alive = |i: usize| !measured || rates.get(i).is_some_and(|r| *r > 0);
    let highest = (0..n).find(|i| alive(*i)).unwrap_or(0);
    let lowest = (0..n).rev().find(|i| alive(*i)).unwrap_or(n - 1);
    match layer {
        crate::Layer::High if estimate.is_none() => highest,
        crate::Layer::Low => lowest,
        crate::Layer::Rid(r) => match rids.iter().position(|x| x == r) {
            Some(i) if alive(i) => i,
            _ => highest,
        },
        crate::Layer::High | crate::Layer::Auto => {
            let (Some(estimate), true) = (estimate, measured) else {
                return current.filter(|c| alive(*c)).unwrap_or(highest);
            };
            for i in (0..n).filter(|i| alive(*i)) {
                let rate = rates.get(i).copied().unwrap_or(0);
                let needed = match current {
                    Some(c) if i >= c => rate,
                    // Moving up (or starting): demand headroom.
                    _ => rate.saturating_add(rate / 4),
                };
                if needed <= estimate {
                    return i;
                }
            }
            lowest
        }
    }
}

/// Loss-based rate control toward one subscriber, as Galène does it: a receiver
/// reporting more than 10 % loss gets a cap below what it is sent (which the
/// layer choice honours by moving down), and the cap goes once the loss has
/// stayed under 2 % for a few seconds. Fed once a second with the receiver's
/// last reported loss fraction and the bit rate it is sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct LossControl {
    cap: Option<u64>,
    clean_seconds: u32,
}

impl LossControl {
    const HIGH_LOSS: f32 = 0.10;
    const LOW_LOSS: f32 = 0.02;
    /// Clean seconds before the cap is lifted: long enough that a receiver on
    /// a lossy path does not bounce between layers (each switch costs a keyframe).
    const RECOVERY_SECONDS: u32 = 3;

    pub(crate) fn cap(&self) -> Option<u64> {
        self.cap
    }

    pub(crate) fn second(&mut self, loss: f32, sending: u64) {
        if loss > Self::HIGH_LOSS {
            self.clean_seconds = 0;
            let base = self.cap.map_or(sending, |c| c.min(sending.max(1)));
            // Back off in proportion to the loss, at most by half.
            let factor = 1.0 - f64::from(loss.min(1.0)) / 2.0;
            self.cap = Some(((base as f64) * factor).round() as u64);
        } else if loss < Self::LOW_LOSS && self.cap.is_some() {
            self.clean_seconds += 1;
            if self.clean_seconds >= Self::RECOVERY_SECONDS {
                self.cap = None;
                self.clean_seconds = 0;
            }
        } else {
            self.clean_seconds = 0;
        }
    }
}

/// Keeps one down track's RTP clock continuous when its source changes (simulcast
/// encodings have unrelated timestamp bases): output = input + offset, with the
/// offset re-anchored at each switch so the new source starts one frame after
/// the last output.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timeline {
    offset: u64,
    last_out: Option<u64>,
    anchored: bool,
}

impl Timeline {
    /// Forget the anchor: the next `map` starts a new segment.
    pub(crate) fn reanchor(&mut self) {
        self.anchored = false;
    }

    /// Maps an input timestamp (source clock, extended to 64 bits) to the output
    /// clock. `step` is the gap inserted at a switch (one frame).
    pub(crate) fn map(&mut self, input: u64, step: u64) -> u64 {
        if !self.anchored {
            let start = match self.last_out {
                Some(l) => l.wrapping_add(step),
                None => input,
            };
            self.offset = start.wrapping_sub(input);
            self.anchored = true;
        }
        let out = input.wrapping_add(self.offset);
        self.last_out = Some(out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_over_ten_percent_caps_below_the_rate_sent_and_clean_seconds_lift_it() {
        let mut c = LossControl::default();
        c.second(0.05, 1_000_000);
        assert_eq!(c.cap(), None, "5 % is tolerated");
        c.second(0.20, 1_000_000);
        assert_eq!(c.cap(), Some(900_000));
        // Still lossy after moving down: the cap follows what is sent now.
        c.second(0.40, 300_000);
        assert_eq!(c.cap(), Some(240_000));
        c.second(0.01, 240_000);
        c.second(0.05, 240_000);
        c.second(0.01, 240_000);
        c.second(0.01, 240_000);
        assert_eq!(c.cap(), Some(240_000), "a lossy second restarts recovery");
        c.second(0.0, 240_000);
        assert_eq!(c.cap(), None);
    }
    use crate::Layer;

    #[test]
    fn limiter_lets_one_through_then_defers() {
        let t0 = Instant::now();
        let mut l = KeyframeLimiter::new(Duration::from_millis(500));
        assert!(l.request(t0));
        assert!(!l.request(t0 + Duration::from_millis(100)));
        assert_eq!(l.deadline(), Some(t0 + Duration::from_millis(500)));
        assert!(!l.poll(t0 + Duration::from_millis(400)));
        assert!(l.poll(t0 + Duration::from_millis(500)));
        assert!(
            !l.poll(t0 + Duration::from_millis(600)),
            "deferred request sent once"
        );
        assert!(l.request(t0 + Duration::from_millis(1001)));
    }

    #[test]
    fn layer_names_pick_first_and_last() {
        let rids = vec!["h".to_string(), "m".to_string(), "l".to_string()];
        assert_eq!(choose_encoding(&Layer::High, &rids, &[], None, None), 0);
        assert_eq!(choose_encoding(&Layer::Low, &rids, &[], None, None), 2);
        assert_eq!(
            choose_encoding(&Layer::Rid("m".into()), &rids, &[], None, None),
            1
        );
        assert_eq!(
            choose_encoding(&Layer::Rid("x".into()), &rids, &[], None, None),
            0
        );
    }

    #[test]
    fn auto_follows_estimate_with_hysteresis() {
        let rids = vec!["h".to_string(), "l".to_string()];
        let rates = [1_000_000, 100_000];
        // Plenty of room: high.
        assert_eq!(
            choose_encoding(&Layer::Auto, &rids, &rates, Some(0), Some(2_000_000)),
            0
        );
        // Estimate below the high rate: drop to low.
        assert_eq!(
            choose_encoding(&Layer::Auto, &rids, &rates, Some(0), Some(900_000)),
            1
        );
        // On low, 1.1 Mbit/s is not enough headroom to go back up.
        assert_eq!(
            choose_encoding(&Layer::Auto, &rids, &rates, Some(1), Some(1_100_000)),
            1
        );
        assert_eq!(
            choose_encoding(&Layer::Auto, &rids, &rates, Some(1), Some(1_300_000)),
            0
        );
    }

    #[test]
    fn high_respects_a_receiver_cap() {
        let rids = vec!["h".to_string(), "l".to_string()];
        let rates = [1_000_000, 250_000];
        assert_eq!(
            choose_encoding(&Layer::High, &rids, &rates, Some(0), Some(400_000)),
            1
        );
        assert_eq!(
            choose_encoding(&Layer::High, &rids, &rates, Some(1), Some(10_000_000)),
            0
        );
        assert_eq!(
            choose_encoding(&Layer::High, &rids, &rates, Some(1), None),
            0
        );
        // A cap below every encoding: the lowest still flows.
        assert_eq!(
            choose_encoding(&Layer::High, &rids, &rates, Some(0), Some(10_000)),
            1
        );
    }

    #[test]
    fn silent_encodings_are_skipped_once_rates_are_known() {
        let rids = vec!["h".to_string(), "l".to_string()];
        // The low encoding is off: video-low falls back to the high one.
        assert_eq!(
            choose_encoding(&Layer::Low, &rids, &[800_000, 0], None, None),
            0
        );
        // Nothing measured yet: names decide.
        assert_eq!(choose_encoding(&Layer::Low, &rids, &[0, 0], None, None), 1);
        // The high encoding is off (bandwidth-limited sender): high means low.
        assert_eq!(
            choose_encoding(&Layer::High, &rids, &[0, 100_000], None, None),
            1
        );
        assert_eq!(
            choose_encoding(&Layer::Auto, &rids, &[0, 100_000], Some(0), Some(5_000_000)),
            1
        );
    }

    #[test]
    fn timeline_is_continuous_across_switches() {
        let mut t = Timeline::default();
        assert_eq!(t.map(1000, 3000), 1000);
        assert_eq!(t.map(4000, 3000), 4000);
        t.reanchor();
        // The new source has an unrelated base.
        assert_eq!(t.map(900_000, 3000), 7000);
        assert_eq!(t.map(903_000, 3000), 10_000);
    }
}

/// Upstream REMB toward a publisher, as Galène computes it (reference §23.4):
/// 100 kbit/s per audio track and per rid-`l` encoding; for every other
/// video encoding the smallest allowance among the receivers it is being
/// forwarded to, floored at 200 kbit/s (no temporal or spatial layers are
/// selected inside a track here, so the base-layer doubling does not apply);
/// the total capped at 1 Gbit/s. An encoding nobody receives gets the floor,
/// as in Galène (`maxUpBitrate` starts its maximum at the group's minimum
/// bitrate and returns it when there are no receivers): the encoder keeps
/// running cheaply and the next second's REMB raises it for a newcomer. A
/// receiver with no allowance known yet sets no limit.
pub(crate) fn upstream_remb<'a>(
    audio_tracks: usize,
    video_encodings: impl IntoIterator<Item = (Option<&'a str>, &'a [Option<u64>])>,
) -> u64 {
    const PER_AUDIO: u64 = 100_000;
    const PER_LOW: u64 = 100_000;
    const FLOOR: u64 = 200_000;
    const CAP: u64 = 1_000_000_000;
    let mut total = PER_AUDIO.saturating_mul(audio_tracks as u64);
    for (rid, receivers) in video_encodings {
        let part = if rid == Some("l") {
            PER_LOW
        } else {
            // A receiver without a known allowance takes whatever comes.
            match receivers.iter().map(|a| a.unwrap_or(CAP)).min() {
                Some(least) => least.max(FLOOR),
                None => FLOOR,
            }
        };
        total = total.saturating_add(part);
    }
    total.min(CAP)
}

#[cfg(test)]
mod remb_tests {
    use super::upstream_remb;

    #[test]
    fn smallest_receiver_allowance_plus_audio() {
        let r = [Some(300_000), Some(2_000_000)];
        assert_eq!(upstream_remb(1, [(None, &r[..])]), 400_000);
    }

    #[test]
    fn allowances_are_floored_at_200k_and_low_encodings_count_100k() {
        let high = [Some(50_000)];
        let low = [Some(50_000)];
        assert_eq!(
            upstream_remb(1, [(Some("h"), &high[..]), (Some("l"), &low[..])]),
            100_000 + 200_000 + 100_000
        );
    }

    #[test]
    fn unwatched_encodings_get_the_floor_and_unlimited_receivers_no_limit() {
        assert_eq!(upstream_remb(1, [(None, &[][..])]), 300_000);
        assert_eq!(upstream_remb(0, [(None, &[None][..])]), 1_000_000_000);
        assert_eq!(upstream_remb(2, std::iter::empty()), 200_000);
    }
}
