//! The catalog: channels, tags and EPG events, and the change feed front ends
//! follow (HTSP's async metadata, HeliosTv's service list, the web pages).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::broadcast;

/// A watchable channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    pub id: u32,
    pub number: u32,
    /// The part after the dot of a number like `5.1` (M3U `tvg-chno`).
    pub number_minor: Option<u32>,
    pub name: String,
    pub icon: Option<String>,
    pub tags: Vec<u32>,
    /// The XMLTV channel id (`tvg-id`) EPG events are matched by.
    pub epg_id: Option<String>,
    pub service_name: Option<String>,
    pub provider_name: Option<String>,
    /// The programme of the input carrying this channel.
    pub program_number: u16,
    /// Stable across restarts: derived from the input and programme.
    pub uuid: String,
    /// What the programme carries, once its PMT has been seen (probed or
    /// played); both false before.
    pub has_video: bool,
    pub has_audio: bool,
}

impl ChannelInfo {
    /// A radio channel: its programme has sound and no picture.
    pub fn is_radio(&self) -> bool {
        self.has_audio && !self.has_video
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tag {
    pub id: u32,
    pub name: String,
    pub icon: Option<String>,
}

/// One programme of the electronic programme guide. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct EpgEvent {
    pub id: u32,
    pub channel_id: u32,
    pub start: i64,
    pub stop: i64,
    pub title: String,
    pub subtitle: Option<String>,
    pub description: Option<String>,
    pub categories: Vec<String>,
    pub episode: Option<String>,
    pub season_number: Option<u32>,
    pub episode_number: Option<u32>,
    pub image: Option<String>,
    pub age_rating: Option<u32>,
}

/// What changed in the yard. Front ends re-read the item by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YardEvent {
    ChannelAdded(u32),
    ChannelUpdated(u32),
    ChannelRemoved(u32),
    TagAdded(u32),
    TagUpdated(u32),
    TagRemoved(u32),
    EpgEventAdded(u32),
    EpgEventUpdated(u32),
    EpgEventRemoved(u32),
}

/// An EPG event as loaded from a guide, before it gets an id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EpgEntry {
    pub start: i64,
    pub stop: i64,
    pub title: String,
    pub subtitle: Option<String>,
    pub description: Option<String>,
    pub categories: Vec<String>,
    pub episode: Option<String>,
    pub season_number: Option<u32>,
    pub episode_number: Option<u32>,
    pub image: Option<String>,
    pub age_rating: Option<u32>,
}

#[derive(Default)]
struct Inner {
    channels: BTreeMap<u32, Arc<ChannelInfo>>,
    tags: BTreeMap<u32, Arc<Tag>>,
    events: BTreeMap<u32, Arc<EpgEvent>>,
    /// channel id → event ids sorted by start.
    schedule: BTreeMap<u32, Vec<u32>>,
    next_event_id: u32,
}

pub(crate) struct Catalog {
    inner: RwLock<Inner>,
    feed: broadcast::Sender<YardEvent>,
}

impl Catalog {
    pub(crate) fn new() -> Self {
        let (feed, _) = broadcast::channel(4096);
        Catalog {
            inner: RwLock::new(Inner {
                next_event_id: 1,
                ..Inner::default()
            }),
            feed,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<YardEvent> {
        self.feed.subscribe()
    }

    fn emit(&self, ev: YardEvent) {
        let _ = self.feed.send(ev);
    }

    pub(crate) fn channels(&self) -> Vec<Arc<ChannelInfo>> {
        let mut v: Vec<_> = self.inner.read().channels.values().cloned().collect();
        v.sort_by_key(|c| (c.number, c.id));
        v
    }

    pub(crate) fn channel(&self, id: u32) -> Option<Arc<ChannelInfo>> {
        self.inner.read().channels.get(&id).cloned()
    }

    pub(crate) fn upsert_channel(&self, ch: ChannelInfo) {
        let id = ch.id;
        let old = self.inner.write().channels.insert(id, Arc::new(ch));
        self.emit(if old.is_some() {
            YardEvent::ChannelUpdated(id)
        } else {
            YardEvent::ChannelAdded(id)
        });
    }

    /// Forget a channel and its guide; returns false when it did not exist.
    pub(crate) fn remove_channel(&self, id: u32) -> bool {
        let (existed, events) = {
            let mut inner = self.inner.write();
            let existed = inner.channels.remove(&id).is_some();
            let events = inner.schedule.remove(&id).unwrap_or_default();
            for e in &events {
                inner.events.remove(e);
            }
            (existed, events)
        };
        for e in events {
            self.emit(YardEvent::EpgEventRemoved(e));
        }
        if existed {
            self.emit(YardEvent::ChannelRemoved(id));
        }
        existed
    }

    pub(crate) fn tags(&self) -> Vec<Arc<Tag>> {
        self.inner.read().tags.values().cloned().collect()
    }

    pub(crate) fn tag(&self, id: u32) -> Option<Arc<Tag>> {
        self.inner.read().tags.get(&id).cloned()
    }

    /// The tag of this name, created when new.
    pub(crate) fn tag_id(&self, name: &str) -> u32 {
        let mut inner = self.inner.write();
        if let Some(t) = inner.tags.values().find(|t| t.name == name) {
            return t.id;
        }
        let id = inner.tags.keys().next_back().map_or(1, |k| k + 1);
        inner.tags.insert(
            id,
            Arc::new(Tag {
                id,
                name: name.to_string(),
                icon: None,
            }),
        );
        drop(inner);
        self.emit(YardEvent::TagAdded(id));
        id
    }

    pub(crate) fn event(&self, id: u32) -> Option<Arc<EpgEvent>> {
        self.inner.read().events.get(&id).cloned()
    }

    pub(crate) fn events_between(&self, channel_id: u32, from: i64, to: i64) -> Vec<Arc<EpgEvent>> {
        let inner = self.inner.read();
        inner
            .schedule
            .get(&channel_id)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.events.get(id))
            .filter(|e| e.stop > from && e.start < to)
            .cloned()
            .collect()
    }

    pub(crate) fn search(&self, needle: &str) -> Vec<Arc<EpgEvent>> {
        let needle = needle.to_lowercase();
        let inner = self.inner.read();
        let mut v: Vec<_> = inner
            .events
            .values()
            .filter(|e| e.title.to_lowercase().contains(&needle))
            .cloned()
            .collect();
        v.sort_by_key(|e| (e.start, e.channel_id));
        v
    }

    /// Replace a channel's schedule. Events that keep their start time keep
    /// their id (so clients' DVR entries and reminders stay attached).
    pub(crate) fn set_schedule(&self, channel_id: u32, mut entries: Vec<EpgEntry>) {
        entries.sort_by_key(|e| e.start);
        entries.dedup_by_key(|e| e.start);
        let mut added = Vec::new();
        let mut updated = Vec::new();
        let mut removed = Vec::new();
        {
            let mut inner = self.inner.write();
            let old_ids = inner.schedule.remove(&channel_id).unwrap_or_default();
            let mut old_by_start: BTreeMap<i64, Arc<EpgEvent>> = old_ids
                .iter()
                .filter_map(|id| inner.events.get(id).cloned())
                .map(|e| (e.start, e))
                .collect();
            let mut ids = Vec::with_capacity(entries.len());
            for entry in entries {
                let (id, was) = match old_by_start.remove(&entry.start) {
                    Some(old) => (old.id, Some(old)),
                    None => {
                        let id = inner.next_event_id;
                        inner.next_event_id = inner.next_event_id.wrapping_add(1).max(1);
                        (id, None)
                    }
                };
                let ev = EpgEvent {
                    id,
                    channel_id,
                    start: entry.start,
                    stop: entry.stop,
                    title: entry.title,
                    subtitle: entry.subtitle,
                    description: entry.description,
                    categories: entry.categories,
                    episode: entry.episode,
                    season_number: entry.season_number,
                    episode_number: entry.episode_number,
                    image: entry.image,
                    age_rating: entry.age_rating,
                };
                match was {
                    Some(old) if *old == ev => {}
                    Some(_) => updated.push(id),
                    None => added.push(id),
                }
                inner.events.insert(id, Arc::new(ev));
                ids.push(id);
            }
            for old in old_by_start.values() {
                inner.events.remove(&old.id);
                removed.push(old.id);
            }
            inner.schedule.insert(channel_id, ids);
        }
        for id in removed {
            self.emit(YardEvent::EpgEventRemoved(id));
        }
        for id in added {
            self.emit(YardEvent::EpgEventAdded(id));
        }
        for id in updated {
            self.emit(YardEvent::EpgEventUpdated(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: i64, title: &str) -> EpgEntry {
        EpgEntry {
            start,
            stop: start + 600,
            title: title.into(),
            ..EpgEntry::default()
        }
    }

    #[test]
    fn schedule_refresh_keeps_ids_of_unchanged_events() {
        let c = Catalog::new();
        let mut feed = c.subscribe();
        c.set_schedule(1, vec![entry(0, "News"), entry(600, "Film")]);
        let first = c.events_between(1, 0, 10_000);
        assert_eq!(first.len(), 2);
        c.set_schedule(1, vec![entry(600, "Film (HD)"), entry(1200, "Late")]);
        let second = c.events_between(1, 0, 10_000);
        assert_eq!(second[0].id, first[1].id, "same start keeps its id");
        assert_eq!(second[0].title, "Film (HD)");
        let mut seen = Vec::new();
        while let Ok(ev) = feed.try_recv() {
            seen.push(ev);
        }
        assert!(seen.contains(&YardEvent::EpgEventRemoved(first[0].id)));
        assert!(seen.contains(&YardEvent::EpgEventUpdated(first[1].id)));
        assert!(seen.contains(&YardEvent::EpgEventAdded(second[1].id)));
    }

    #[test]
    fn search_is_case_insensitive() {
        let c = Catalog::new();
        c.set_schedule(1, vec![entry(0, "Evening News"), entry(600, "Film")]);
        assert_eq!(c.search("news").len(), 1);
        assert_eq!(c.search("NEWS")[0].title, "Evening News");
    }
}
