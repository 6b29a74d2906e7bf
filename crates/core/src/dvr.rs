//! The digital video recorder: scheduled recordings (DVR entries), the rules
//! that create them (autorec: EPG title matches; timerec: repeating time
//! slots), the scheduler that starts and stops recorders, and the recorders
//! themselves, which write a channel's single-program MPEG-TS into
//! `<data_dir>/recordings`.
//!
//! Everything is persisted in the [`Store`] so that entries and files survive
//! a restart; a recording that was running when the server stopped resumes
//! (appending to its file) if its time window is still open.
//!
//! Protocol-neutral: HTSP, HTTP and the web UI all drive the recorder through
//! [`Dvr`]; nothing here knows a wire format.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, Local, TimeZone, Timelike};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::Yard;
use crate::access::Rights;
use crate::fanout::{ReaderEvent, ReaderOptions};
use crate::store::{Store, StoreError};

const KIND_ENTRY: &str = "dvr_entry";
const KIND_AUTOREC: &str = "dvr_autorec";
const KIND_TIMEREC: &str = "dvr_timerec";

/// How far ahead autorec and timerec rules create entries.
const LOOKAHEAD_SECS: i64 = 2 * 24 * 3600;

/// Priority "not set" (HTSP value 5); clients are sent "normal" instead.
pub const PRIORITY_NOT_SET: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DvrState {
    #[default]
    Scheduled,
    Recording,
    Completed,
    Missed,
    Invalid,
}

impl DvrState {
    pub fn as_str(self) -> &'static str {
        match self {
            DvrState::Scheduled => "scheduled",
            DvrState::Recording => "recording",
            DvrState::Completed => "completed",
            DvrState::Missed => "missed",
            DvrState::Invalid => "invalid",
        }
    }
}

/// One recording, planned, running or done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DvrEntry {
    /// 1…2³¹−1, stable across restarts (clients keep it in their databases).
    pub id: u32,
    /// 32 lowercase hex characters.
    pub uuid: String,
    pub enabled: bool,
    pub channel_id: u32,
    /// Kept when the channel disappears.
    pub channel_name: String,
    pub event_id: Option<u32>,
    pub autorec_id: Option<String>,
    pub timerec_id: Option<String>,
    /// Scheduled times, unix seconds (without padding).
    pub start: i64,
    pub stop: i64,
    /// Padding in minutes.
    pub start_extra: i64,
    pub stop_extra: i64,
    /// Days; 0 = default.
    pub retention: u32,
    pub removal: u32,
    /// 0 important … 4 unimportant, 5 not set, 6 default.
    pub priority: u32,
    pub title: String,
    pub subtitle: Option<String>,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub content_type: Option<u32>,
    pub age_rating: Option<u32>,
    pub owner: String,
    pub creator: String,
    pub comment: Option<String>,
    pub state: DvrState,
    /// Why a recording failed or stopped early.
    pub error: Option<String>,
    /// File name relative to the recordings folder.
    pub file: Option<String>,
    pub file_size: i64,
    pub playcount: u32,
    pub playposition: u32,
    /// Input errors seen while recording.
    pub data_errors: u32,
}

impl DvrEntry {
    /// Start of the recording window (with padding).
    pub fn window_start(&self) -> i64 {
        self.start
            .saturating_sub(self.start_extra.saturating_mul(60))
    }
    /// End of the recording window (with padding).
    pub fn window_stop(&self) -> i64 {
        self.stop.saturating_add(self.stop_extra.saturating_mul(60))
    }
    /// Recordings are private to their owner unless the user may see all.
    pub fn visible_to(&self, rights: &Rights) -> bool {
        rights.all_dvr
            || rights.admin
            || self.owner.is_empty()
            || rights.username.as_deref() == Some(self.owner.as_str())
    }
}

/// "Record every programme whose title matches."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Autorec {
    /// 32 lowercase hex characters.
    pub id: String,
    pub enabled: bool,
    pub name: String,
    /// Case-insensitive substring of the event title; empty matches all.
    pub title: String,
    pub channel_id: Option<u32>,
    /// Bit 0 = Monday … bit 6 = Sunday; 0 or 0x7f = every day.
    pub days_of_week: u32,
    /// "Start after", minutes after local midnight; −1 = any.
    pub start: i32,
    /// "Start before", minutes after local midnight; −1 = any.
    pub start_window: i32,
    /// Seconds; 0 = any.
    pub min_duration: u32,
    pub max_duration: u32,
    pub start_extra: i64,
    pub stop_extra: i64,
    pub priority: u32,
    pub retention: u32,
    pub removal: u32,
    pub dup_detect: u32,
    pub max_count: u32,
    pub broadcast_type: u32,
    pub directory: String,
    pub comment: String,
    pub serieslink_uri: Option<String>,
    pub owner: String,
    pub creator: String,
}

impl Default for Autorec {
    fn default() -> Self {
        Autorec {
            id: String::new(),
            enabled: true,
            name: String::new(),
            title: String::new(),
            channel_id: None,
            days_of_week: 0x7f,
            start: -1,
            start_window: -1,
            min_duration: 0,
            max_duration: 0,
            start_extra: 0,
            stop_extra: 0,
            priority: 2,
            retention: 0,
            removal: 0,
            dup_detect: 0,
            max_count: 0,
            broadcast_type: 0,
            directory: String::new(),
            comment: String::new(),
            serieslink_uri: None,
            owner: String::new(),
            creator: String::new(),
        }
    }
}

/// "Record this channel every Monday from 20:00 to 21:00."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timerec {
    pub id: String,
    pub enabled: bool,
    pub name: String,
    pub title: String,
    pub channel_id: Option<u32>,
    pub days_of_week: u32,
    /// Minutes after local midnight; a stop before the start ends next day.
    pub start: i32,
    pub stop: i32,
    pub priority: u32,
    pub retention: u32,
    pub removal: u32,
    pub directory: String,
    pub comment: String,
    pub owner: String,
    pub creator: String,
}

impl Default for Timerec {
    fn default() -> Self {
        Timerec {
            id: String::new(),
            enabled: true,
            name: String::new(),
            title: String::new(),
            channel_id: None,
            days_of_week: 0x7f,
            start: 0,
            stop: 0,
            priority: 2,
            retention: 0,
            removal: 0,
            directory: String::new(),
            comment: String::new(),
            owner: String::new(),
            creator: String::new(),
        }
    }
}

/// A new recording: either an EPG event or a manual timer.
#[derive(Debug, Clone, Default)]
pub struct NewEntry {
    pub event_id: Option<u32>,
    pub channel_id: Option<u32>,
    pub start: Option<i64>,
    pub stop: Option<i64>,
    pub title: Option<String>,
    pub subtitle: Option<String>,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub age_rating: Option<u32>,
    pub start_extra: i64,
    pub stop_extra: i64,
    pub priority: Option<u32>,
    pub retention: u32,
    pub removal: u32,
    pub enabled: bool,
    pub comment: Option<String>,
    pub owner: String,
    pub creator: String,
}

/// Changes to an entry; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EntryUpdate {
    pub channel_id: Option<u32>,
    pub start: Option<i64>,
    pub stop: Option<i64>,
    pub start_extra: Option<i64>,
    pub stop_extra: Option<i64>,
    pub title: Option<String>,
    pub subtitle: Option<String>,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub retention: Option<u32>,
    pub removal: Option<u32>,
    pub priority: Option<u32>,
    pub enabled: Option<bool>,
    pub age_rating: Option<u32>,
    pub comment: Option<String>,
    /// HTSP semantics: ≥ 2147483647 increment, 2147483646 keep, 1 = set to 1
    /// if 0, other values set.
    pub playcount: Option<u32>,
    pub playposition: Option<u32>,
}

/// One mark of a cut list (EDL next to the recording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutpoint {
    pub start_ms: u32,
    pub end_ms: u32,
    /// 0 cut, 1 mute, 2 scene marker, 3 commercial break.
    pub kind: u32,
}

/// What changed in the recorder; front ends re-read the item by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DvrEvent {
    EntryAdded(u32),
    EntryUpdated(u32),
    EntryRemoved(u32),
    AutorecAdded(String),
    AutorecUpdated(String),
    AutorecRemoved(String),
    TimerecAdded(String),
    TimerecUpdated(String),
    TimerecRemoved(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DvrError {
    #[error("DVR entry not found")]
    NotFound,
    #[error("Channel does not exist")]
    NoSuchChannel,
    #[error("Event does not exist")]
    NoSuchEvent,
    #[error("Invalid arguments: {0}")]
    Invalid(&'static str),
    #[error("recordings folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Default)]
struct State {
    entries: HashMap<u32, DvrEntry>,
    autorecs: HashMap<String, Autorec>,
    timerecs: HashMap<String, Timerec>,
    /// Running recorders: entry id → how to stop them.
    running: HashMap<u32, Running>,
}

struct Running {
    cancel: CancellationToken,
    /// Set before cancelling: what the recorder should record as the outcome.
    outcome: Arc<Mutex<Option<Option<String>>>>,
}

struct Inner {
    yard: Yard,
    store: Store,
    dir: PathBuf,
    state: Mutex<State>,
    feed: broadcast::Sender<DvrEvent>,
    wake: Notify,
    shutdown: CancellationToken,
}

/// The recorder; cheap to clone.
#[derive(Clone)]
pub struct Dvr {
    inner: Arc<Inner>,
}

fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    v.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Dvr {
    /// Loads the recorder's state and starts its scheduler; the server calls
    /// this once. Recordings interrupted by a restart resume if their window
    /// is still open.
    pub fn start(yard: Yard, store: Store, shutdown: CancellationToken) -> Result<Dvr, DvrError> {
        let dvr = Dvr::open(yard, store, shutdown)?;
        tokio::spawn(dvr.clone().run_scheduler());
        Ok(dvr)
    }

    /// Loads state without starting the scheduler (tests drive [`Dvr::tick`]).
    pub fn open(yard: Yard, store: Store, shutdown: CancellationToken) -> Result<Dvr, DvrError> {
        let dir = yard.data_dir().join("recordings");
        std::fs::create_dir_all(&dir).map_err(|source| DvrError::Folder {
            path: dir.clone(),
            source,
        })?;
        let mut state = State::default();
        for e in store.all::<DvrEntry>(KIND_ENTRY)? {
            state.entries.insert(e.id, e);
        }
        for a in store.all::<Autorec>(KIND_AUTOREC)? {
            state.autorecs.insert(a.id.clone(), a);
        }
        for t in store.all::<Timerec>(KIND_TIMEREC)? {
            state.timerecs.insert(t.id.clone(), t);
        }
        let (feed, _) = broadcast::channel(1024);
        Ok(Dvr {
            inner: Arc::new(Inner {
                yard,
                store,
                dir,
                state: Mutex::new(state),
                feed,
                wake: Notify::new(),
                shutdown,
            }),
        })
    }

    pub fn events(&self) -> broadcast::Receiver<DvrEvent> {
        self.inner.feed.subscribe()
    }

    pub fn recordings_dir(&self) -> &Path {
        &self.inner.dir
    }

    fn emit(&self, ev: DvrEvent) {
        let _ = self.inner.feed.send(ev);
    }

    fn persist(&self, e: &DvrEntry) {
        if let Err(err) = self.inner.store.put(KIND_ENTRY, &e.id.to_string(), e) {
            tracing::error!(id = e.id, error = %err, "could not save DVR entry");
        }
    }

    // ------------------------------------------------------------ entries

    /// All entries, sorted by start.
    pub fn entries(&self) -> Vec<DvrEntry> {
        let mut v: Vec<_> = self.inner.state.lock().entries.values().cloned().collect();
        v.sort_by_key(|e| (e.start, e.id));
        v
    }

    pub fn entry(&self, id: u32) -> Option<DvrEntry> {
        self.inner.state.lock().entries.get(&id).cloned()
    }

    /// The recording file of an entry, if it has one on disk.
    pub fn file_path(&self, id: u32) -> Option<PathBuf> {
        let e = self.entry(id)?;
        let f = e.file?;
        Some(self.inner.dir.join(f))
    }

    pub fn add_entry(&self, new: NewEntry) -> Result<DvrEntry, DvrError> {
        let yard = &self.inner.yard;
        let mut e = DvrEntry {
            uuid: random_hex(16),
            enabled: new.enabled,
            start_extra: new.start_extra,
            stop_extra: new.stop_extra,
            priority: new.priority.unwrap_or(2),
            retention: new.retention,
            removal: new.removal,
            owner: new.owner,
            creator: new.creator,
            comment: new.comment,
            ..DvrEntry::default()
        };
        if let Some(eid) = new.event_id {
            let ev = yard.epg_event(eid).ok_or(DvrError::NoSuchEvent)?;
            let ch = yard.channel(ev.channel_id).ok_or(DvrError::NoSuchChannel)?;
            e.event_id = Some(eid);
            e.channel_id = ch.id;
            e.channel_name = ch.name.clone();
            e.start = ev.start;
            e.stop = ev.stop;
            e.title = ev.title.clone();
            e.subtitle = ev.subtitle.clone();
            e.description = ev.description.clone();
            e.age_rating = ev.age_rating;
        } else {
            let cid = new
                .channel_id
                .ok_or(DvrError::Invalid("missing channelId"))?;
            let ch = yard.channel(cid).ok_or(DvrError::NoSuchChannel)?;
            let (Some(start), Some(stop)) = (new.start, new.stop) else {
                return Err(DvrError::Invalid("missing start or stop"));
            };
            if stop <= start {
                return Err(DvrError::Invalid("stop before start"));
            }
            let title = new
                .title
                .filter(|t| !t.is_empty())
                .ok_or(DvrError::Invalid("missing title"))?;
            e.channel_id = cid;
            e.channel_name = ch.name.clone();
            e.start = start;
            e.stop = stop;
            e.title = title;
            e.subtitle = new.subtitle;
            e.summary = new.summary;
            e.description = new.description;
            e.age_rating = new.age_rating;
        }
        Ok(self.insert_entry(e))
    }

    fn insert_entry(&self, mut e: DvrEntry) -> DvrEntry {
        {
            let mut st = self.inner.state.lock();
            e.id = loop {
                let id = rand::random::<u32>() & 0x7fff_ffff;
                if id != 0 && !st.entries.contains_key(&id) {
                    break id;
                }
            };
            st.entries.insert(e.id, e.clone());
        }
        self.persist(&e);
        self.emit(DvrEvent::EntryAdded(e.id));
        self.inner.wake.notify_one();
        tracing::info!(id = e.id, title = %e.title, channel = e.channel_id, start = e.start, "recording scheduled");
        e
    }

    pub fn update_entry(&self, id: u32, u: EntryUpdate) -> Result<DvrEntry, DvrError> {
        if let Some(cid) = u.channel_id
            && self.inner.yard.channel(cid).is_none()
        {
            return Err(DvrError::NoSuchChannel);
        }
        let e = {
            let mut st = self.inner.state.lock();
            let e = st.entries.get_mut(&id).ok_or(DvrError::NotFound)?;
            let scheduled = e.state == DvrState::Scheduled;
            if scheduled {
                if let Some(cid) = u.channel_id {
                    e.channel_id = cid;
                    if let Some(ch) = self.inner.yard.channel(cid) {
                        e.channel_name = ch.name.clone();
                    }
                }
                if let Some(v) = u.start {
                    e.start = v;
                }
                if let Some(v) = u.start_extra {
                    e.start_extra = v;
                }
            }
            if let Some(v) = u.stop {
                e.stop = v;
            }
            if let Some(v) = u.stop_extra {
                e.stop_extra = v;
            }
            if let Some(v) = u.title {
                e.title = v;
            }
            if u.subtitle.is_some() {
                e.subtitle = u.subtitle;
            }
            if u.summary.is_some() {
                e.summary = u.summary;
            }
            if u.description.is_some() {
                e.description = u.description;
            }
            if let Some(v) = u.retention {
                e.retention = v;
            }
            if let Some(v) = u.removal {
                e.removal = v;
            }
            if let Some(v) = u.priority {
                e.priority = v;
            }
            if let Some(v) = u.enabled {
                e.enabled = v;
            }
            if u.age_rating.is_some() {
                e.age_rating = u.age_rating;
            }
            if u.comment.is_some() {
                e.comment = u.comment;
            }
            if let Some(pc) = u.playcount {
                e.playcount = match pc {
                    2_147_483_647.. => e.playcount.saturating_add(1),
                    2_147_483_646 => e.playcount,
                    1 => e.playcount.max(1),
                    v => v,
                };
            }
            if let Some(pp) = u.playposition {
                e.playposition = pp;
            }
            e.clone()
        };
        self.persist(&e);
        self.emit(DvrEvent::EntryUpdated(id));
        self.inner.wake.notify_one();
        Ok(e)
    }

    /// A running recording ends normally now; other states are unchanged.
    pub fn stop_entry(&self, id: u32) -> Result<(), DvrError> {
        self.end_running(id, None)
    }

    /// A running recording is aborted (kept, with an error); a scheduled one
    /// is removed; finished ones are unchanged.
    pub fn cancel_entry(&self, id: u32) -> Result<(), DvrError> {
        let state = self.entry(id).ok_or(DvrError::NotFound)?.state;
        match state {
            DvrState::Recording => self.end_running(id, Some("Aborted by user".into())),
            DvrState::Scheduled => self.remove_entry(id),
            _ => Ok(()),
        }
    }

    /// Removes an entry: a running recording is aborted, its file deleted.
    pub fn delete_entry(&self, id: u32) -> Result<(), DvrError> {
        let _ = self.end_running(id, Some("Aborted by user".into()));
        self.remove_entry(id)
    }

    fn end_running(&self, id: u32, error: Option<String>) -> Result<(), DvrError> {
        let st = self.inner.state.lock();
        if !st.entries.contains_key(&id) {
            return Err(DvrError::NotFound);
        }
        if let Some(r) = st.running.get(&id) {
            *r.outcome.lock() = Some(error);
            r.cancel.cancel();
        }
        Ok(())
    }

    fn remove_entry(&self, id: u32) -> Result<(), DvrError> {
        let (e, running) = {
            let mut st = self.inner.state.lock();
            let e = st.entries.remove(&id).ok_or(DvrError::NotFound)?;
            (e, st.running.remove(&id))
        };
        if let Some(r) = running {
            r.cancel.cancel();
        }
        if let Some(f) = &e.file {
            let path = self.inner.dir.join(f);
            if let Err(err) = std::fs::remove_file(&path)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %err, "could not delete recording file");
            }
        }
        if let Err(err) = self.inner.store.delete(KIND_ENTRY, &id.to_string()) {
            tracing::error!(id, error = %err, "could not delete DVR entry from the database");
        }
        self.emit(DvrEvent::EntryRemoved(id));
        tracing::info!(id, title = %e.title, "recording removed");
        Ok(())
    }

    /// A client finished playing a recording.
    pub fn mark_played(
        &self,
        id: u32,
        playcount: Option<u32>,
        playposition: Option<u32>,
    ) -> Result<(), DvrError> {
        self.update_entry(
            id,
            EntryUpdate {
                playcount: Some(playcount.unwrap_or(2_147_483_647)),
                playposition,
                ..EntryUpdate::default()
            },
        )
        .map(|_| ())
    }

    /// The cut list of a recording: an EDL file (`start end type`, seconds)
    /// next to it. `None` when there is none.
    pub fn cutpoints(&self, id: u32) -> Result<Option<Vec<Cutpoint>>, DvrError> {
        let path = self.file_path(id);
        if self.entry(id).is_none() {
            return Err(DvrError::NotFound);
        }
        let Some(path) = path else { return Ok(None) };
        let Ok(text) = std::fs::read_to_string(path.with_extension("edl")) else {
            return Ok(None);
        };
        Ok(Some(parse_edl(&text)))
    }

    // ------------------------------------------------------------ rules

    pub fn autorecs(&self) -> Vec<Autorec> {
        let mut v: Vec<_> = self.inner.state.lock().autorecs.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn autorec(&self, id: &str) -> Option<Autorec> {
        self.inner.state.lock().autorecs.get(id).cloned()
    }

    pub fn add_autorec(&self, mut a: Autorec) -> Result<Autorec, DvrError> {
        if let Some(c) = a.channel_id
            && self.inner.yard.channel(c).is_none()
        {
            return Err(DvrError::NoSuchChannel);
        }
        a.id = random_hex(16);
        self.inner.store.put(KIND_AUTOREC, &a.id, &a)?;
        self.inner
            .state
            .lock()
            .autorecs
            .insert(a.id.clone(), a.clone());
        self.emit(DvrEvent::AutorecAdded(a.id.clone()));
        self.apply_rules(unix_now());
        Ok(a)
    }

    pub fn update_autorec(
        &self,
        id: &str,
        f: impl FnOnce(&mut Autorec),
    ) -> Result<Autorec, DvrError> {
        let a = {
            let mut st = self.inner.state.lock();
            let a = st.autorecs.get_mut(id).ok_or(DvrError::NotFound)?;
            f(a);
            a.id = id.to_owned();
            a.clone()
        };
        self.inner.store.put(KIND_AUTOREC, id, &a)?;
        self.emit(DvrEvent::AutorecUpdated(id.to_owned()));
        self.apply_rules(unix_now());
        Ok(a)
    }

    /// Removes the rule and the entries it scheduled that have not started.
    pub fn delete_autorec(&self, id: &str) -> Result<(), DvrError> {
        self.inner
            .state
            .lock()
            .autorecs
            .remove(id)
            .ok_or(DvrError::NotFound)?;
        self.inner.store.delete(KIND_AUTOREC, id)?;
        self.emit(DvrEvent::AutorecRemoved(id.to_owned()));
        for e in self.entries() {
            if e.autorec_id.as_deref() == Some(id) && e.state == DvrState::Scheduled {
                let _ = self.remove_entry(e.id);
            }
        }
        Ok(())
    }

    pub fn timerecs(&self) -> Vec<Timerec> {
        let mut v: Vec<_> = self.inner.state.lock().timerecs.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn timerec(&self, id: &str) -> Option<Timerec> {
        self.inner.state.lock().timerecs.get(id).cloned()
    }

    pub fn add_timerec(&self, mut t: Timerec) -> Result<Timerec, DvrError> {
        if let Some(c) = t.channel_id
            && self.inner.yard.channel(c).is_none()
        {
            return Err(DvrError::NoSuchChannel);
        }
        if t.channel_id.is_none() {
            return Err(DvrError::Invalid("missing channelId"));
        }
        t.id = random_hex(16);
        self.inner.store.put(KIND_TIMEREC, &t.id, &t)?;
        self.inner
            .state
            .lock()
            .timerecs
            .insert(t.id.clone(), t.clone());
        self.emit(DvrEvent::TimerecAdded(t.id.clone()));
        self.apply_rules(unix_now());
        Ok(t)
    }

    pub fn update_timerec(
        &self,
        id: &str,
        f: impl FnOnce(&mut Timerec),
    ) -> Result<Timerec, DvrError> {
        let t = {
            let mut st = self.inner.state.lock();
            let t = st.timerecs.get_mut(id).ok_or(DvrError::NotFound)?;
            f(t);
            t.id = id.to_owned();
            t.clone()
        };
        self.inner.store.put(KIND_TIMEREC, id, &t)?;
        self.emit(DvrEvent::TimerecUpdated(id.to_owned()));
        self.apply_rules(unix_now());
        Ok(t)
    }

    pub fn delete_timerec(&self, id: &str) -> Result<(), DvrError> {
        self.inner
            .state
            .lock()
            .timerecs
            .remove(id)
            .ok_or(DvrError::NotFound)?;
        self.inner.store.delete(KIND_TIMEREC, id)?;
        self.emit(DvrEvent::TimerecRemoved(id.to_owned()));
        for e in self.entries() {
            if e.timerec_id.as_deref() == Some(id) && e.state == DvrState::Scheduled {
                let _ = self.remove_entry(e.id);
            }
        }
        Ok(())
    }

    /// Creates the entries autorec and timerec rules call for within the
    /// look-ahead window.
    pub fn apply_rules(&self, now: i64) {
        let (autorecs, timerecs, existing) = {
            let st = self.inner.state.lock();
            let existing: HashSet<(Option<u32>, Option<String>, i64)> = st
                .entries
                .values()
                .flat_map(|e| [(e.event_id, None, 0), (None, e.timerec_id.clone(), e.start)])
                .collect();
            (
                st.autorecs
                    .values()
                    .filter(|a| a.enabled)
                    .cloned()
                    .collect::<Vec<_>>(),
                st.timerecs
                    .values()
                    .filter(|t| t.enabled)
                    .cloned()
                    .collect::<Vec<_>>(),
                existing,
            )
        };
        let yard = self.inner.yard.clone();
        let mut created_events: HashSet<u32> = HashSet::new();
        for a in &autorecs {
            let channels: Vec<u32> = match a.channel_id {
                Some(c) => vec![c],
                None => yard.channels().iter().map(|c| c.id).collect(),
            };
            for cid in channels {
                for ev in yard.epg_events(cid, now, now + LOOKAHEAD_SECS) {
                    if ev.stop <= now
                        || existing.contains(&(Some(ev.id), None, 0))
                        || created_events.contains(&ev.id)
                        || !autorec_matches(a, &ev.title, ev.start, ev.stop)
                    {
                        continue;
                    }
                    let Some(ch) = yard.channel(cid) else {
                        continue;
                    };
                    created_events.insert(ev.id);
                    self.insert_entry(DvrEntry {
                        uuid: random_hex(16),
                        enabled: true,
                        channel_id: cid,
                        channel_name: ch.name.clone(),
                        event_id: Some(ev.id),
                        autorec_id: Some(a.id.clone()),
                        start: ev.start,
                        stop: ev.stop,
                        start_extra: a.start_extra,
                        stop_extra: a.stop_extra,
                        retention: a.retention,
                        removal: a.removal,
                        priority: a.priority,
                        title: ev.title.clone(),
                        subtitle: ev.subtitle.clone(),
                        description: ev.description.clone(),
                        age_rating: ev.age_rating,
                        owner: a.owner.clone(),
                        creator: a.creator.clone(),
                        comment: Some(format!("Auto recording: {}", a.name))
                            .filter(|_| !a.name.is_empty()),
                        ..DvrEntry::default()
                    });
                }
            }
        }
        for t in &timerecs {
            let Some(cid) = t.channel_id else { continue };
            let Some(ch) = yard.channel(cid) else {
                continue;
            };
            for (start, stop) in timerec_occurrences(t, now, now + LOOKAHEAD_SECS) {
                if stop <= now || existing.contains(&(None, Some(t.id.clone()), start)) {
                    continue;
                }
                self.insert_entry(DvrEntry {
                    uuid: random_hex(16),
                    enabled: true,
                    channel_id: cid,
                    channel_name: ch.name.clone(),
                    timerec_id: Some(t.id.clone()),
                    start,
                    stop,
                    retention: t.retention,
                    removal: t.removal,
                    priority: t.priority,
                    title: if t.title.is_empty() {
                        t.name.clone()
                    } else {
                        t.title.clone()
                    },
                    owner: t.owner.clone(),
                    creator: t.creator.clone(),
                    ..DvrEntry::default()
                });
            }
        }
    }

    // ------------------------------------------------------------ scheduler

    async fn run_scheduler(self) {
        let mut last_rules = i64::MIN;
        loop {
            let now = unix_now();
            if now.saturating_sub(last_rules) >= 60 {
                self.apply_rules(now);
                last_rules = now;
            }
            self.tick(now);
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Starts recordings whose window opened, marks missed ones, finishes
    /// interrupted ones whose window closed.
    pub fn tick(&self, now: i64) {
        let mut to_start = Vec::new();
        let mut changed = Vec::new();
        {
            let mut st = self.inner.state.lock();
            let running: HashSet<u32> = st.running.keys().copied().collect();
            for e in st.entries.values_mut() {
                if running.contains(&e.id) {
                    continue;
                }
                let open = e.window_start() <= now && now < e.window_stop();
                match e.state {
                    DvrState::Scheduled | DvrState::Recording if e.enabled && open => {
                        to_start.push(e.id)
                    }
                    DvrState::Scheduled if now >= e.window_stop() => {
                        e.state = DvrState::Missed;
                        e.error = Some(if e.enabled { "Time missed" } else { "Disabled" }.into());
                        changed.push(e.clone());
                    }
                    DvrState::Recording if now >= e.window_stop() || !e.enabled => {
                        // Interrupted by a restart and not resumable any more.
                        e.state = DvrState::Completed;
                        changed.push(e.clone());
                    }
                    _ => {}
                }
            }
        }
        for e in changed {
            self.persist(&e);
            self.emit(DvrEvent::EntryUpdated(e.id));
        }
        for id in to_start {
            self.start_recorder(id, now);
        }
    }

    fn start_recorder(&self, id: u32, now: i64) {
        let cancel = self.inner.shutdown.child_token();
        let outcome = Arc::new(Mutex::new(None));
        let e = {
            let mut st = self.inner.state.lock();
            let Some(e) = st.entries.get_mut(&id) else {
                return;
            };
            if e.file.is_none() {
                e.file = Some(recording_file_name(e, now));
            }
            e.state = DvrState::Recording;
            e.error = None;
            let e = e.clone();
            st.running.insert(
                id,
                Running {
                    cancel: cancel.clone(),
                    outcome: outcome.clone(),
                },
            );
            e
        };
        self.persist(&e);
        self.emit(DvrEvent::EntryUpdated(id));
        tracing::info!(id, title = %e.title, channel = e.channel_id, "recording started");
        tokio::spawn(self.clone().record(e, cancel, outcome));
    }

    async fn record(
        self,
        e: DvrEntry,
        cancel: CancellationToken,
        outcome: Arc<Mutex<Option<Option<String>>>>,
    ) {
        let id = e.id;
        let path = self.inner.dir.join(e.file.clone().unwrap_or_default());
        let result = self.write_recording(&e, &path, &cancel).await;
        let shutting_down = self.inner.shutdown.is_cancelled();
        let size = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len() as i64)
            .unwrap_or(0);
        let updated = {
            let mut st = self.inner.state.lock();
            st.running.remove(&id);
            let Some(cur) = st.entries.get_mut(&id) else {
                return;
            };
            cur.file_size = size;
            if shutting_down && !cancel_requested(&outcome) {
                // Stay "recording": the next start resumes it if still on air.
                tracing::info!(id, "recording interrupted by shutdown");
            } else {
                cur.state = DvrState::Completed;
                cur.error = match (&result, outcome.lock().clone()) {
                    (_, Some(err)) => err,
                    (Err(msg), None) => Some(msg.clone()),
                    (Ok(()), None) => None,
                };
            }
            cur.clone()
        };
        self.persist(&updated);
        self.emit(DvrEvent::EntryUpdated(id));
        tracing::info!(id, size, error = ?updated.error, "recording finished");
    }

    async fn write_recording(
        &self,
        e: &DvrEntry,
        path: &Path,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|err| format!("Unable to open file: {err}"))?;
        let mut size = file.metadata().await.map(|m| m.len() as i64).unwrap_or(0);
        let label = format!("dvr {}", e.id);
        let mut reader = self
            .inner
            .yard
            .subscribe(e.channel_id, ReaderOptions::recorder(label.clone()))
            .map_err(|err| err.to_string())?;
        let mut last_report = tokio::time::Instant::now();
        let mut errors = 0u32;
        loop {
            // Re-read the end: a client may extend or shorten a running recording.
            let stop = self
                .inner
                .state
                .lock()
                .entries
                .get(&e.id)
                .map_or(e.window_stop(), DvrEntry::window_stop);
            let remaining = stop.saturating_sub(unix_now());
            if remaining <= 0 {
                break;
            }
            let ev = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(remaining.min(1) as u64)) => continue,
                ev = reader.recv() => ev,
            };
            match ev {
                Some(ReaderEvent::Ts(chunk)) => {
                    file.write_all(&chunk)
                        .await
                        .map_err(|err| format!("Write error: {err}"))?;
                    size += chunk.len() as i64;
                }
                Some(ReaderEvent::SourceLost { reason }) => {
                    errors = errors.saturating_add(1);
                    tracing::warn!(id = e.id, %reason, "recording: source lost");
                }
                Some(ReaderEvent::Overflow) | None => {
                    // The recorder fell behind (or the channel went away):
                    // say so loudly, then pick the channel up again.
                    errors = errors.saturating_add(1);
                    tracing::error!(id = e.id, "recorder queue overflowed; resubscribing");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    reader = match self
                        .inner
                        .yard
                        .subscribe(e.channel_id, ReaderOptions::recorder(label.clone()))
                    {
                        Ok(r) => r,
                        Err(err) => return Err(err.to_string()),
                    };
                }
                Some(_) => {}
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = tokio::time::Instant::now();
                let _ = file.flush().await;
                if let Some(cur) = self.inner.state.lock().entries.get_mut(&e.id) {
                    cur.file_size = size;
                    cur.data_errors = errors;
                }
                self.emit(DvrEvent::EntryUpdated(e.id));
            }
        }
        file.flush()
            .await
            .map_err(|err| format!("Write error: {err}"))?;
        if let Some(cur) = self.inner.state.lock().entries.get_mut(&e.id) {
            cur.data_errors = errors;
        }
        Ok(())
    }
}

fn cancel_requested(outcome: &Arc<Mutex<Option<Option<String>>>>) -> bool {
    outcome.lock().is_some()
}

fn recording_file_name(e: &DvrEntry, now: i64) -> String {
    let title: String = e
        .title
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    format!("{}-{}-{}.ts", e.id, title, now)
}

/// Minutes after local midnight and ISO weekday bit (bit 0 = Monday).
fn local_minutes_and_day(t: i64) -> Option<(i32, u32)> {
    let dt = Local.timestamp_opt(t, 0).single()?;
    Some((
        (dt.hour() * 60 + dt.minute()) as i32,
        1 << dt.weekday().num_days_from_monday(),
    ))
}

/// Whether an EPG event satisfies an autorec rule.
pub fn autorec_matches(a: &Autorec, title: &str, start: i64, stop: i64) -> bool {
    if !a.title.is_empty() && !title.to_lowercase().contains(&a.title.to_lowercase()) {
        return false;
    }
    let dur = stop.saturating_sub(start);
    if a.min_duration > 0 && dur < i64::from(a.min_duration) {
        return false;
    }
    if a.max_duration > 0 && dur > i64::from(a.max_duration) {
        return false;
    }
    let Some((minute, day)) = local_minutes_and_day(start) else {
        return false;
    };
    let days = a.days_of_week & 0x7f;
    if days != 0 && days & day == 0 {
        return false;
    }
    match (a.start >= 0, a.start_window >= 0) {
        (true, true) if a.start <= a.start_window => (a.start..=a.start_window).contains(&minute),
        (true, true) => minute >= a.start || minute <= a.start_window,
        (true, false) => minute >= a.start,
        (false, true) => minute <= a.start_window,
        (false, false) => true,
    }
}

/// The (start, stop) slots of a timerec rule starting within [from, to).
pub fn timerec_occurrences(t: &Timerec, from: i64, to: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let Some(first) = Local.timestamp_opt(from, 0).single() else {
        return out;
    };
    let start_min = i64::from(t.start.clamp(0, 24 * 60 - 1));
    let mut stop_min = i64::from(t.stop.clamp(0, 24 * 60 - 1));
    if stop_min <= start_min {
        stop_min += 24 * 60;
    }
    // Look one day back too, for a slot that began yesterday and is still on.
    for offset in -1..=((to - from) / 86_400 + 1) {
        let Some(day) = first
            .date_naive()
            .checked_add_signed(chrono::Duration::days(offset))
        else {
            continue;
        };
        let bit = 1u32 << day.weekday().num_days_from_monday();
        let days = t.days_of_week & 0x7f;
        if days != 0 && days & bit == 0 {
            continue;
        }
        let Some(midnight) = day.and_hms_opt(0, 0, 0) else {
            continue;
        };
        let Some(midnight) = Local.from_local_datetime(&midnight).earliest() else {
            continue;
        };
        let start = midnight.timestamp() + start_min * 60;
        let stop = midnight.timestamp() + stop_min * 60;
        if start < to && stop > from {
            out.push((start, stop));
        }
    }
    out
}

/// EDL: one `start end [type]` line per mark, times in seconds.
pub fn parse_edl(text: &str) -> Vec<Cutpoint> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let s: f64 = it.next()?.parse().ok()?;
            let e: f64 = it.next()?.parse().ok()?;
            let kind: u32 = it.next().and_then(|k| k.parse().ok()).unwrap_or(0);
            let ms = |v: f64| (v * 1000.0).clamp(0.0, f64::from(u32::MAX)) as u32;
            Some(Cutpoint {
                start_ms: ms(s),
                end_ms: ms(e),
                kind: kind.min(3),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autorec_title_and_window() {
        let a = Autorec {
            title: "news".into(),
            ..Autorec::default()
        };
        let t = Local
            .with_ymd_and_hms(2024, 8, 19, 20, 0, 0)
            .unwrap()
            .timestamp(); // a Monday
        assert!(autorec_matches(&a, "Switchyard NEWS", t, t + 1800));
        assert!(!autorec_matches(&a, "Sports", t, t + 1800));
        let b = Autorec {
            days_of_week: 0b10, // Tuesday
            ..a.clone()
        };
        assert!(!autorec_matches(&b, "News", t, t + 1800));
        let c = Autorec {
            start: 19 * 60,
            start_window: 21 * 60,
            min_duration: 3600,
            ..a.clone()
        };
        assert!(!autorec_matches(&c, "News", t, t + 1800));
        assert!(autorec_matches(&c, "News", t, t + 3600));
        let d = Autorec {
            start: 22 * 60,
            start_window: 2 * 60,
            ..a
        };
        assert!(!autorec_matches(&d, "News", t, t + 1800));
    }

    #[test]
    fn timerec_slots() {
        let monday = Local
            .with_ymd_and_hms(2024, 8, 19, 12, 0, 0)
            .unwrap()
            .timestamp();
        let t = Timerec {
            days_of_week: 0b1, // Mondays
            start: 20 * 60,
            stop: 21 * 60,
            channel_id: Some(1),
            ..Timerec::default()
        };
        let slots = timerec_occurrences(&t, monday, monday + 7 * 86_400);
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].0, monday + 8 * 3600);
        assert_eq!(slots[0].1 - slots[0].0, 3600);
        let overnight = Timerec {
            days_of_week: 0x7f,
            start: 23 * 60,
            stop: 60,
            ..t
        };
        let slots = timerec_occurrences(&overnight, monday, monday + 86_400);
        assert!(slots.iter().all(|(s, e)| e - s == 2 * 3600));
    }

    #[test]
    fn edl_parsing() {
        let c = parse_edl("0.0 12.5 3\n60\t70\nbad line\n");
        assert_eq!(
            c,
            vec![
                Cutpoint {
                    start_ms: 0,
                    end_ms: 12_500,
                    kind: 3
                },
                Cutpoint {
                    start_ms: 60_000,
                    end_ms: 70_000,
                    kind: 0
                }
            ]
        );
    }
}
