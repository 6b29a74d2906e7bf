//! A connection's output queues (reference §3.3, §8.5), sans-IO.
//!
//! One control queue (replies, metadata), one queue per subscription, and a
//! priority status queue (`queueStatus`). The writer takes the status queue
//! first, otherwise one message from each non-empty queue in turn, so a
//! metadata burst cannot starve video. A subscription's queue stays inactive
//! until the reply to its `subscribe` has been taken. Video packets are
//! dropped by picture type once the queued payload passes 1×, 2×, 3× the
//! subscription's `queueDepth`; audio never is.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use media::FrameKind;

use crate::streaming::Packet;
use crate::wire::{Msg, encode_frame_chunks};

/// One encoded message ready for the socket.
#[derive(Debug, Clone)]
pub struct Item {
    pub chunks: Vec<Bytes>,
    /// Taking this item activates that subscription's queue.
    pub activates: Option<u32>,
    payload: usize,
    dts: Option<i64>,
}

impl Item {
    pub fn new(msg: &Msg) -> Item {
        Item {
            chunks: encode_frame_chunks(msg),
            activates: None,
            payload: 0,
            dts: None,
        }
    }
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drop counters of one subscription (cumulative, as in `queueStatus`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    pub b: u32,
    pub p: u32,
    pub i: u32,
}

struct SubQueue {
    items: VecDeque<Item>,
    active: bool,
    bytes: usize,
    depth: usize,
    drops: Drops,
    /// After a reference picture was dropped, its dependants are useless.
    skip_until_key: bool,
    last_status_sec: Option<u64>,
    /// Distinguishes a re-used subscription id from its predecessor, whose
    /// task may not have noticed yet that it was cancelled.
    generation: u64,
}

/// The subscription's queue grew past any sane size (audio alone, from a
/// client that stopped reading): the connection should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscription {0}: output queue overflow")]
pub struct Overflow(pub u32);

#[derive(Default)]
pub struct OutQueues {
    control: VecDeque<Item>,
    /// Status messages of a subscription (`queueStatus`, `signalStatus`);
    /// like its other messages, held until its queue is active.
    status: VecDeque<(u32, Item)>,
    subs: BTreeMap<u32, SubQueue>,
    /// Round-robin position: `None` = control queue, `Some(id)` = that subscription.
    last: Option<Option<u32>>,
    generations: u64,
}

/// Above this much queued payload beyond 3×depth the connection is hopeless.
const HARD_EXTRA: usize = 32 * 1024 * 1024;

impl OutQueues {
    pub fn new() -> OutQueues {
        OutQueues::default()
    }

    pub fn push_control(&mut self, msg: &Msg, activates: Option<u32>) {
        let mut item = Item::new(msg);
        item.activates = activates;
        self.control.push_back(item);
    }

    /// A new, inactive subscription queue; returns its generation.
    pub fn add_subscription(&mut self, id: u32, queue_depth: u32) -> u64 {
        self.generations += 1;
        let generation = self.generations;
        self.subs.insert(
            id,
            SubQueue {
                items: VecDeque::new(),
                active: false,
                bytes: 0,
                depth: (queue_depth as usize).max(1),
                drops: Drops::default(),
                skip_until_key: false,
                last_status_sec: None,
                generation,
            },
        );
        generation
    }

    /// The queue of `id` exists and is the one created as `generation`.
    pub fn is_current(&self, id: u32, generation: u64) -> bool {
        self.subs
            .get(&id)
            .is_some_and(|q| q.generation == generation)
    }

    /// Drops the queue and everything in it.
    pub fn remove_subscription(&mut self, id: u32) {
        self.subs.remove(&id);
    }

    pub fn has_subscription(&self, id: u32) -> bool {
        self.subs.contains_key(&id)
    }

    pub fn push_sub(&mut self, id: u32, msg: &Msg) {
        if let Some(q) = self.subs.get_mut(&id) {
            q.items.push_back(Item::new(msg));
        }
    }

    /// A message for the priority queue (`signalStatus`).
    pub fn push_status(&mut self, id: u32, msg: &Msg) {
        if self.subs.contains_key(&id) {
            self.status.push_back((id, Item::new(msg)));
        }
    }

    pub fn drops(&self, id: u32) -> Option<Drops> {
        self.subs.get(&id).map(|q| q.drops)
    }

    pub fn queued_bytes(&self, id: u32) -> Option<usize> {
        self.subs.get(&id).map(|q| q.bytes)
    }

    /// Queues a `muxpkt` unless the drop policy says otherwise; then, at most
    /// once per second (`now_sec`, monotonic), queues a `queueStatus`.
    pub fn push_packet(&mut self, id: u32, pkt: Packet, now_sec: u64) -> Result<(), Overflow> {
        let Some(q) = self.subs.get_mut(&id) else {
            return Ok(());
        };
        let mut dropped = false;
        if let Some(kind) = pkt.video {
            let fill = q.bytes;
            let key = kind == FrameKind::Key;
            if key {
                q.skip_until_key = false;
            }
            let drop = fill > 3 * q.depth
                || (fill > 2 * q.depth && !key)
                || (fill > q.depth && kind == FrameKind::Bidirectional)
                || (q.skip_until_key && !key);
            if drop {
                match kind {
                    FrameKind::Key => q.drops.i = q.drops.i.saturating_add(1),
                    FrameKind::Bidirectional => q.drops.b = q.drops.b.saturating_add(1),
                    _ => q.drops.p = q.drops.p.saturating_add(1),
                }
                if kind != FrameKind::Bidirectional {
                    q.skip_until_key = true;
                }
                metrics::counter!("switchyard_htsp_dropped_frames_total", "type" => match kind {
                    FrameKind::Key => "I",
                    FrameKind::Bidirectional => "B",
                    _ => "P",
                })
                .increment(1);
                dropped = true;
            }
        }
        if !dropped {
            if q.bytes > 3 * q.depth + HARD_EXTRA {
                return Err(Overflow(id));
            }
            let mut item = Item::new(&pkt.msg);
            item.payload = pkt.payload_len;
            item.dts = Some(pkt.dts);
            q.bytes += pkt.payload_len;
            q.items.push_back(item);
        }
        if q.last_status_sec != Some(now_sec) {
            q.last_status_sec = Some(now_sec);
            let (min, max) = q
                .items
                .iter()
                .filter_map(|i| i.dts)
                .fold((i64::MAX, i64::MIN), |(lo, hi), d| (lo.min(d), hi.max(d)));
            let delay = if max >= min { max - min } else { 0 };
            let status = Msg::new()
                .with("method", "queueStatus")
                .with("subscriptionId", id)
                .with("packets", q.items.len())
                .with("bytes", q.bytes)
                .with("delay", delay)
                .with("Bdrops", q.drops.b)
                .with("Pdrops", q.drops.p)
                .with("Idrops", q.drops.i);
            self.status.push_back((id, Item::new(&status)));
        }
        Ok(())
    }

    /// The next message to write, by §3.3's rules.
    pub fn pop(&mut self) -> Option<Item> {
        let subs = &self.subs;
        self.status.retain(|(id, _)| subs.contains_key(id));
        if let Some(pos) = self
            .status
            .iter()
            .position(|(id, _)| subs.get(id).is_some_and(|q| q.active))
        {
            return self.status.remove(pos).map(|(_, i)| i);
        }
        // Round robin over [control, active subscriptions...] starting after `last`.
        let mut order: Vec<Option<u32>> = vec![None];
        order.extend(
            self.subs
                .iter()
                .filter(|(_, q)| q.active)
                .map(|(id, _)| Some(*id)),
        );
        let start = match self.last {
            Some(last) => order.iter().position(|k| *k == last).map_or(0, |p| p + 1),
            None => 0,
        };
        for k in 0..order.len() {
            let key = order[(start + k) % order.len()];
            let item = match key {
                None => self.control.pop_front(),
                Some(id) => self.subs.get_mut(&id).and_then(|q| {
                    let it = q.items.pop_front()?;
                    q.bytes = q.bytes.saturating_sub(it.payload);
                    Some(it)
                }),
            };
            if let Some(item) = item {
                self.last = Some(key);
                if let Some(id) = item.activates
                    && let Some(q) = self.subs.get_mut(&id)
                {
                    q.active = true;
                }
                return Some(item);
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.status
            .iter()
            .all(|(id, _)| !self.subs.get(id).is_some_and(|q| q.active))
            && self.control.is_empty()
            && self.subs.values().all(|q| !q.active || q.items.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode_body;

    fn pkt(kind: Option<FrameKind>, len: usize, dts: i64) -> Packet {
        Packet {
            msg: Msg::new().with("method", "muxpkt").with("dts", dts),
            video: kind,
            payload_len: len,
            dts,
        }
    }

    fn method(i: &Item) -> String {
        let all: Vec<u8> = i.chunks.concat();
        decode_body(&all[4..])
            .unwrap()
            .get_str("method")
            .unwrap_or_default()
    }

    #[test]
    fn subscription_waits_for_its_reply() {
        let mut q = OutQueues::new();
        q.add_subscription(1, 1000);
        q.push_sub(1, &Msg::new().with("method", "subscriptionStart"));
        q.push_control(&Msg::new().with("method", "x"), None);
        q.push_control(&Msg::new().with("seq", 1i64), Some(1));
        assert_eq!(method(&q.pop().unwrap()), "x");
        let reply = q.pop().unwrap();
        assert_eq!(reply.activates, Some(1));
        assert_eq!(method(&q.pop().unwrap()), "subscriptionStart");
        assert!(q.pop().is_none());
    }

    #[test]
    fn drops_b_then_p_then_i_never_audio() {
        let mut q = OutQueues::new();
        q.add_subscription(1, 100);
        q.push_control(&Msg::new(), Some(1));
        q.pop();
        // fill to just above 1× depth
        q.push_packet(1, pkt(Some(FrameKind::Key), 101, 0), 0)
            .unwrap();
        q.push_packet(1, pkt(Some(FrameKind::Bidirectional), 10, 1), 0)
            .unwrap();
        q.push_packet(1, pkt(Some(FrameKind::Predicted), 100, 2), 0)
            .unwrap();
        assert_eq!(q.drops(1), Some(Drops { b: 1, p: 0, i: 0 }));
        q.push_packet(1, pkt(Some(FrameKind::Predicted), 10, 3), 0)
            .unwrap();
        assert_eq!(q.drops(1), Some(Drops { b: 1, p: 1, i: 0 }));
        q.push_packet(1, pkt(None, 200, 4), 0).unwrap();
        q.push_packet(1, pkt(Some(FrameKind::Key), 10, 5), 0)
            .unwrap();
        assert_eq!(q.drops(1), Some(Drops { b: 1, p: 1, i: 1 }));
        assert_eq!(q.queued_bytes(1), Some(101 + 100 + 200));
    }

    #[test]
    fn queue_status_once_per_second_with_priority() {
        let mut q = OutQueues::new();
        q.add_subscription(1, 1_000_000);
        q.push_control(&Msg::new(), Some(1));
        q.pop();
        for i in 0..5 {
            q.push_packet(1, pkt(None, 10, i * 100), 7).unwrap();
        }
        q.push_packet(1, pkt(None, 10, 600), 8).unwrap();
        assert_eq!(method(&q.pop().unwrap()), "queueStatus");
        assert_eq!(method(&q.pop().unwrap()), "queueStatus");
        assert_eq!(method(&q.pop().unwrap()), "muxpkt");
    }

    #[test]
    fn status_waits_for_the_subscribe_reply_and_dies_with_its_subscription() {
        let mut q = OutQueues::new();
        q.add_subscription(1, 1_000_000);
        q.add_subscription(2, 1_000_000);
        q.push_packet(1, pkt(None, 10, 0), 0).unwrap();
        q.push_status(1, &Msg::new().with("method", "signalStatus"));
        q.push_status(2, &Msg::new().with("method", "signalStatus"));
        q.push_control(&Msg::new().with("method", "reply"), Some(1));
        assert_eq!(method(&q.pop().unwrap()), "reply");
        assert_eq!(method(&q.pop().unwrap()), "queueStatus");
        assert_eq!(method(&q.pop().unwrap()), "signalStatus");
        assert_eq!(method(&q.pop().unwrap()), "muxpkt");
        assert!(q.pop().is_none(), "subscription 2 is not active yet");
        q.remove_subscription(2);
        q.push_control(&Msg::new().with("method", "late"), Some(2));
        assert_eq!(method(&q.pop().unwrap()), "late");
        assert!(q.pop().is_none(), "a removed subscription's status is gone");
        assert!(q.is_empty());
    }

    #[test]
    fn round_robin_between_control_and_media() {
        let mut q = OutQueues::new();
        q.add_subscription(1, 1_000_000);
        q.push_control(&Msg::new(), Some(1));
        q.pop();
        for _ in 0..3 {
            q.push_control(&Msg::new().with("method", "eventAdd"), None);
            q.push_sub(1, &Msg::new().with("method", "muxpkt"));
        }
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).map(|i| method(&i)).collect();
        assert_eq!(
            order,
            [
                "muxpkt", "eventAdd", "muxpkt", "eventAdd", "muxpkt", "eventAdd"
            ]
        );
    }
}
