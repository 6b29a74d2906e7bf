//! Fan-out of one channel's media to its readers.
//!
//! The producer (a channel's source task) never waits for a reader: every reader
//! has its own bounded queue and a slow reader loses data by the house policy
//! (ARCHITECTURE.md): for frame readers drop B, then P, then all video until the
//! next keyframe, never audio; TS players skip to the next keyframe chunk; a
//! recorder is closed loudly with `Overflow` rather than silently cut.
//!
//! A hub also keeps the current group of pictures so that a new reader starts at
//! the last keyframe at once instead of waiting up to a GOP for the next one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use media::{Frame, FrameKind, Program};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::catalog::ChannelInfo;

/// What a reader wants from a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderKind {
    /// Whole access units (HTSP, WebRTC/HLS gateways).
    Frames,
    /// A single-program transport stream (HTTP, HeliosTv, recorders).
    Ts,
}

/// How a reader that falls behind loses data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropPolicy {
    /// Keep up with live: drop by picture type, audio last.
    Live,
    /// Never lose data silently: on overflow the reader gets `Overflow` and ends.
    Recorder,
}

#[derive(Debug, Clone)]
pub struct ReaderOptions {
    pub kind: ReaderKind,
    pub policy: DropPolicy,
    /// Bound of the queue in payload bytes.
    pub max_bytes: usize,
    /// Who reads, for logs and metrics ("htsp 127.0.0.1:5000", "http", ...).
    pub label: String,
}

impl ReaderOptions {
    pub const DEFAULT_MAX_BYTES: usize = 2 * 1024 * 1024;

    pub fn frames(label: impl Into<String>) -> Self {
        ReaderOptions {
            kind: ReaderKind::Frames,
            policy: DropPolicy::Live,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            label: label.into(),
        }
    }
    pub fn ts(label: impl Into<String>) -> Self {
        ReaderOptions {
            kind: ReaderKind::Ts,
            ..Self::frames(label)
        }
    }
    pub fn recorder(label: impl Into<String>) -> Self {
        ReaderOptions {
            kind: ReaderKind::Ts,
            policy: DropPolicy::Recorder,
            max_bytes: 16 * 1024 * 1024,
            label: label.into(),
        }
    }
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }
}

/// What a reader receives, in order.
#[derive(Debug, Clone)]
pub enum ReaderEvent {
    /// First event once codec parameters are known; again on any change.
    Program(Arc<Program>),
    /// `ReaderKind::Frames` only.
    Frame(Frame),
    /// `ReaderKind::Ts` only: n×188 bytes of a single-program TS. The first chunk
    /// (and the first after a drop) starts with PAT, PMT and a video keyframe.
    Ts(Bytes),
    /// The input failed; the yard retries and the reader stays subscribed.
    SourceLost {
        reason: String,
    },
    SourceResumed,
    /// `DropPolicy::Recorder` only: the queue overflowed; `recv` returns `None` next.
    Overflow,
}

impl ReaderEvent {
    fn weight(&self) -> usize {
        match self {
            ReaderEvent::Frame(f) => f.data.len(),
            ReaderEvent::Ts(b) => b.len(),
            _ => 0,
        }
    }
}

/// Counters of one reader, for HTSP's queueStatus and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderStats {
    pub queued_items: usize,
    pub queued_bytes: usize,
    /// Span of presentation time waiting in the queue, in microseconds.
    pub queue_delay_us: u64,
    pub dropped_key: u64,
    pub dropped_predicted: u64,
    pub dropped_bidir: u64,
    pub dropped_audio: u64,
    pub dropped_ts_bytes: u64,
    pub delivered_items: u64,
}

/// One unit the producer publishes. A TS chunk says whether it starts at a keyframe.
#[derive(Debug, Clone)]
pub(crate) enum Unit {
    Frame(Frame),
    Ts { data: Bytes, starts_key: bool },
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(ReaderEvent, Option<FrameKind>)>,
    bytes: usize,
    /// Drop incoming video (or TS chunks) until a keyframe arrives.
    await_key: bool,
    /// A keyframe was delivered: skipping before the first one is joining, not dropping.
    started: bool,
    closed: bool,
    stats: ReaderStats,
}

pub(crate) struct ReaderSlot {
    id: u64,
    opts: ReaderOptions,
    queue: Mutex<Queue>,
    notify: Notify,
}

/// Audio is "never" dropped, but a reader that stopped reading altogether must
/// not grow without bound: past this multiple of its bound even audio goes.
const HARD_LIMIT_FACTOR: usize = 4;

impl ReaderSlot {
    fn new(id: u64, opts: ReaderOptions) -> Self {
        ReaderSlot {
            id,
            opts,
            queue: Mutex::new(Queue {
                await_key: true,
                ..Queue::default()
            }),
            notify: Notify::new(),
        }
    }

    fn push_control(&self, ev: ReaderEvent) {
        let mut q = self.queue.lock();
        if q.closed {
            return;
        }
        q.items.push_back((ev, None));
        drop(q);
        self.notify.notify_one();
    }

    fn close(&self) {
        self.queue.lock().closed = true;
        self.notify.notify_one();
    }

    /// Queue a media unit by the reader's policy. Returns false when the
    /// reader is (now) closed.
    fn push_unit(&self, unit: &Unit) -> bool {
        let mut q = self.queue.lock();
        if q.closed {
            return false;
        }
        let (ev, kind, starts_key) = match (unit, self.opts.kind) {
            (Unit::Frame(f), ReaderKind::Frames) => (
                ReaderEvent::Frame(f.clone()),
                Some(f.kind),
                f.kind == FrameKind::Key,
            ),
            (Unit::Ts { data, starts_key }, ReaderKind::Ts) => {
                (ReaderEvent::Ts(data.clone()), None, *starts_key)
            }
            _ => return true,
        };
        let size = ev.weight();
        let is_video = matches!(
            kind,
            Some(FrameKind::Key | FrameKind::Predicted | FrameKind::Bidirectional)
        );
        let gated = is_video || self.opts.kind == ReaderKind::Ts;

        if q.await_key && gated {
            if starts_key {
                q.await_key = false;
                q.started = true;
            } else {
                if q.started {
                    count_drop(&mut q.stats, kind, size);
                }
                return true;
            }
        }

        if q.bytes + size > self.opts.max_bytes {
            match self.opts.policy {
                DropPolicy::Recorder => {
                    q.items.push_back((ReaderEvent::Overflow, None));
                    q.closed = true;
                    drop(q);
                    tracing::warn!(reader = %self.opts.label, "recorder fell behind: closing it");
                    metrics::counter!("switchyard_fanout_recorder_overflows_total").increment(1);
                    self.notify.notify_one();
                    return false;
                }
                DropPolicy::Live => make_room(&mut q, self.opts.max_bytes, size),
            }
            if q.await_key && gated {
                if starts_key {
                    q.await_key = false;
                } else {
                    count_drop(&mut q.stats, kind, size);
                    return true;
                }
            }
            if q.bytes + size > self.opts.max_bytes * HARD_LIMIT_FACTOR {
                count_drop(&mut q.stats, kind, size);
                return true;
            }
        }
        q.bytes += size;
        q.items.push_back((ev, kind));
        let was_single = q.items.len() == 1;
        drop(q);
        if was_single {
            self.notify.notify_one();
        }
        true
    }
}

fn count_drop(stats: &mut ReaderStats, kind: Option<FrameKind>, size: usize) {
    let counter = match kind {
        Some(FrameKind::Key) => &mut stats.dropped_key,
        Some(FrameKind::Predicted) => &mut stats.dropped_predicted,
        Some(FrameKind::Bidirectional) => &mut stats.dropped_bidir,
        Some(FrameKind::Audio) => &mut stats.dropped_audio,
        Some(FrameKind::Other) => &mut stats.dropped_audio,
        None => {
            stats.dropped_ts_bytes += size as u64;
            metrics::counter!("switchyard_fanout_dropped_bytes_total").increment(size as u64);
            return;
        }
    };
    *counter += 1;
    metrics::counter!("switchyard_fanout_dropped_frames_total").increment(1);
}

/// Free room for `incoming` bytes: B frames first, then P frames, then all
/// video (and wait for the next keyframe). TS readers drop their whole queue.
fn make_room(q: &mut Queue, max: usize, incoming: usize) {
    let fits = |q: &Queue| q.bytes + incoming <= max;
    let stages: &[&[FrameKind]] = &[
        &[FrameKind::Bidirectional],
        &[FrameKind::Predicted],
        &[
            FrameKind::Key,
            FrameKind::Predicted,
            FrameKind::Bidirectional,
        ],
    ];
    for (stage, kinds) in stages.iter().enumerate() {
        if fits(q) {
            return;
        }
        drop_where(q, |k| matches!(k, Some(k) if kinds.contains(&k)));
        if stage >= 1 {
            // Once a P frame is gone, later video cannot decode until a keyframe.
            q.await_key = true;
        }
    }
    if fits(q) {
        return;
    }
    // TS readers (kind None) lose everything queued and restart at a keyframe.
    drop_where(q, |k| k.is_none());
    q.await_key = true;
}

fn drop_where(q: &mut Queue, pred: impl Fn(Option<FrameKind>) -> bool) {
    let mut kept = VecDeque::with_capacity(q.items.len());
    for (ev, kind) in q.items.drain(..) {
        let droppable = matches!(ev, ReaderEvent::Frame(_) | ReaderEvent::Ts(_));
        if droppable && pred(kind) {
            let size = ev.weight();
            q.bytes -= size;
            count_drop(&mut q.stats, kind, size);
        } else {
            kept.push_back((ev, kind));
        }
    }
    q.items = kept;
}

fn queue_delay_us(q: &Queue) -> u64 {
    let pts = |ev: &ReaderEvent| match ev {
        ReaderEvent::Frame(f) => f.dts.or(f.pts),
        _ => None,
    };
    let first = q.items.iter().find_map(|(ev, _)| pts(ev));
    let last = q.items.iter().rev().find_map(|(ev, _)| pts(ev));
    match (first, last) {
        (Some(a), Some(b)) if b > a => ((b - a) as u64).saturating_mul(1_000_000) / 90_000,
        _ => 0,
    }
}

/// The shared state of one channel's fan-out.
pub(crate) struct Hub {
    inner: Mutex<HubInner>,
    next_id: AtomicU64,
    reader_count: AtomicUsize,
    /// Wakes the source's controller when readers come and go.
    readers_changed: Arc<Notify>,
}

#[derive(Default)]
struct HubInner {
    readers: Vec<Arc<ReaderSlot>>,
    program: Option<Arc<Program>>,
    /// Units since the last keyframe, to start a new reader at once.
    gop_frames: Vec<Unit>,
    gop_ts: Vec<Unit>,
    source_lost: Option<String>,
    closed: bool,
    on_program: Option<ProgramCallback>,
}

type ProgramCallback = Box<dyn Fn(&Program) + Send + Sync>;

/// A GOP longer than this is not cached (an audio-only or broken stream).
const GOP_CACHE_MAX_BYTES: usize = 8 * 1024 * 1024;

impl Hub {
    pub(crate) fn new(readers_changed: Arc<Notify>) -> Arc<Self> {
        Arc::new(Hub {
            inner: Mutex::new(HubInner::default()),
            next_id: AtomicU64::new(1),
            reader_count: AtomicUsize::new(0),
            readers_changed,
        })
    }

    pub(crate) fn reader_count(&self) -> usize {
        self.reader_count.load(Ordering::Relaxed)
    }

    pub(crate) fn add_reader(
        self: &Arc<Self>,
        channel: Arc<ChannelInfo>,
        opts: ReaderOptions,
    ) -> Reader {
        let slot = Arc::new(ReaderSlot::new(
            self.next_id.fetch_add(1, Ordering::Relaxed),
            opts,
        ));
        let mut inner = self.inner.lock();
        if let Some(p) = &inner.program {
            slot.push_control(ReaderEvent::Program(p.clone()));
        }
        if let Some(reason) = &inner.source_lost {
            slot.push_control(ReaderEvent::SourceLost {
                reason: reason.clone(),
            });
        }
        let gop = match slot.opts.kind {
            ReaderKind::Frames => &inner.gop_frames,
            ReaderKind::Ts => &inner.gop_ts,
        };
        for unit in gop {
            slot.push_unit(unit);
        }
        if inner.closed {
            slot.close();
        }
        inner.readers.push(slot.clone());
        self.reader_count
            .store(inner.readers.len(), Ordering::Relaxed);
        drop(inner);
        self.readers_changed.notify_one();
        metrics::gauge!("switchyard_fanout_readers").increment(1.0);
        Reader {
            slot,
            hub: self.clone(),
            channel,
        }
    }

    fn remove_reader(&self, id: u64) {
        let mut inner = self.inner.lock();
        inner.readers.retain(|r| r.id != id);
        self.reader_count
            .store(inner.readers.len(), Ordering::Relaxed);
        drop(inner);
        self.readers_changed.notify_one();
        metrics::gauge!("switchyard_fanout_readers").decrement(1.0);
    }

    pub(crate) fn program(&self) -> Option<Arc<Program>> {
        self.inner.lock().program.clone()
    }

    /// Called (under the hub's lock: keep it short) whenever the programme changes.
    pub(crate) fn set_on_program(&self, f: ProgramCallback) {
        self.inner.lock().on_program = Some(f);
    }

    pub(crate) fn set_program(&self, program: Arc<Program>) {
        let mut inner = self.inner.lock();
        if inner.program.as_deref() == Some(&*program) {
            return;
        }
        if let Some(f) = &inner.on_program {
            f(&program);
        }
        inner.program = Some(program.clone());
        for r in &inner.readers {
            r.push_control(ReaderEvent::Program(program.clone()));
        }
    }

    pub(crate) fn publish(&self, unit: Unit) {
        let mut inner = self.inner.lock();
        let (is_key, gop) = match &unit {
            Unit::Frame(f) => (f.kind == FrameKind::Key, &mut inner.gop_frames),
            Unit::Ts { starts_key, .. } => (*starts_key, &mut inner.gop_ts),
        };
        if is_key {
            gop.clear();
        }
        let cached: usize = gop
            .iter()
            .map(|u| match u {
                Unit::Frame(f) => f.data.len(),
                Unit::Ts { data, .. } => data.len(),
            })
            .sum();
        if is_key || (!gop.is_empty() && cached < GOP_CACHE_MAX_BYTES) {
            gop.push(unit.clone());
        }
        // A reader closed by overflow stays listed until its `Reader` is dropped.
        for r in &inner.readers {
            r.push_unit(&unit);
        }
    }

    pub(crate) fn source_lost(&self, reason: &str) {
        let mut inner = self.inner.lock();
        if inner.source_lost.is_some() {
            return;
        }
        inner.source_lost = Some(reason.to_string());
        inner.gop_frames.clear();
        inner.gop_ts.clear();
        for r in &inner.readers {
            r.push_control(ReaderEvent::SourceLost {
                reason: reason.to_string(),
            });
            // After an outage nothing decodes until the next keyframe.
            r.queue.lock().await_key = true;
        }
    }

    pub(crate) fn source_resumed(&self) {
        let mut inner = self.inner.lock();
        if inner.source_lost.take().is_none() {
            return;
        }
        for r in &inner.readers {
            r.push_control(ReaderEvent::SourceResumed);
        }
    }

    /// The source stopped for want of readers: forget cached media.
    pub(crate) fn reset_cache(&self) {
        let mut inner = self.inner.lock();
        inner.gop_frames.clear();
        inner.gop_ts.clear();
    }

    /// The channel is gone (removed, or the server stops).
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        for r in &inner.readers {
            r.close();
        }
    }
}

/// A subscription to one channel. Dropping it unsubscribes.
pub struct Reader {
    slot: Arc<ReaderSlot>,
    hub: Arc<Hub>,
    channel: Arc<ChannelInfo>,
}

impl Reader {
    /// The next event; `None` when the channel is gone, the server stops, or
    /// after `Overflow`.
    pub async fn recv(&mut self) -> Option<ReaderEvent> {
        loop {
            if let Some(ev) = self.try_recv_inner() {
                return ev;
            }
            self.slot.notify.notified().await;
        }
    }

    pub fn try_recv(&mut self) -> Option<ReaderEvent> {
        self.try_recv_inner().flatten()
    }

    /// Outer None: nothing now, wait. Inner None: closed.
    fn try_recv_inner(&mut self) -> Option<Option<ReaderEvent>> {
        let mut q = self.slot.queue.lock();
        if let Some((ev, _)) = q.items.pop_front() {
            q.bytes -= ev.weight();
            q.stats.delivered_items += 1;
            return Some(Some(ev));
        }
        if q.closed {
            return Some(None);
        }
        None
    }

    pub fn stats(&self) -> ReaderStats {
        let q = self.slot.queue.lock();
        let mut s = q.stats.clone();
        s.queued_items = q.items.len();
        s.queued_bytes = q.bytes;
        s.queue_delay_us = queue_delay_us(&q);
        s
    }

    pub fn program(&self) -> Option<Arc<Program>> {
        self.hub.program()
    }

    pub fn channel(&self) -> &Arc<ChannelInfo> {
        &self.channel
    }

    pub fn options(&self) -> &ReaderOptions {
        &self.slot.opts
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.hub.remove_reader(self.slot.id);
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("channel", &self.channel.id)
            .field("label", &self.slot.opts.label)
            .finish()
    }
}
