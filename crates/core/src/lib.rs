//! The yard: Switchyard's core. It owns the domain every front end serves: the
//! catalog (channels, tags, EPG events), the channels' sources and their
//! fan-out to readers, the conference rooms, and the event feed that tells
//! front ends what changed.
//!
//! Front ends talk to the yard only, never to each other. The yard knows no
//! protocol: nothing here may speak HTSP, HeliosTv, HTTP or Galène, and
//! nothing here may block a producer on a consumer.

pub mod access;
pub mod catalog;
pub mod channel;
pub mod config;
pub mod demo;
pub mod dvr;
pub mod fanout;
pub mod guide;
pub mod input;
mod pipeline;
pub mod room;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use catalog::{ChannelInfo, EpgEntry, EpgEvent, Tag, YardEvent};
pub use channel::{ProgramSelector, SourcePolicy};
pub use config::{InputConfig, Programs, TvConfig};
pub use fanout::{DropPolicy, Reader, ReaderEvent, ReaderKind, ReaderOptions, ReaderStats};
pub use input::Input;

use catalog::Catalog;
use channel::Source;
use fanout::Hub;

#[derive(Debug, thiserror::Error)]
pub enum YardError {
    #[error("no such channel: {0}")]
    NoSuchChannel(u32),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("input {input}: {message}")]
    Input { input: String, message: String },
    #[error("data folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

struct ChannelRuntime {
    info: Arc<ChannelInfo>,
    hub: Arc<Hub>,
    source: Arc<Source>,
}

struct Inner {
    catalog: Catalog,
    channels: RwLock<std::collections::BTreeMap<u32, ChannelRuntime>>,
    data_dir: PathBuf,
    policy: SourcePolicy,
    reader_max_bytes: usize,
    shutdown: CancellationToken,
    rooms: room::Rooms,
}

/// A handle on the yard; cheap to clone.
#[derive(Clone)]
pub struct Yard {
    inner: Arc<Inner>,
}

impl Yard {
    /// An empty yard. Channels are added with [`Yard::add_input`] (or
    /// [`Yard::load`], which reads a whole [`TvConfig`]).
    pub fn new(
        data_dir: impl Into<PathBuf>,
        policy: SourcePolicy,
        shutdown: CancellationToken,
    ) -> Result<Yard, YardError> {
        let data_dir = data_dir.into();
        std::fs::create_dir_all(&data_dir).map_err(|source| YardError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        Ok(Yard {
            inner: Arc::new(Inner {
                catalog: Catalog::new(),
                channels: RwLock::new(Default::default()),
                data_dir,
                policy,
                reader_max_bytes: ReaderOptions::DEFAULT_MAX_BYTES,
                shutdown,
                rooms: room::Rooms::new(),
            }),
        })
    }

    /// A yard with the demo channels and guide, for tests of front ends.
    /// Sources stop 200 ms after their last reader.
    pub fn demo_for_tests(data_dir: impl Into<PathBuf>) -> Yard {
        let policy = SourcePolicy {
            grace: std::time::Duration::from_millis(200),
            ..SourcePolicy::default()
        };
        let yard = match Yard::new(data_dir, policy, CancellationToken::new()) {
            Ok(y) => y,
            Err(e) => panic!("demo yard: {e}"),
        };
        yard.add_demo();
        yard
    }

    /// Load every input and guide of the configuration.
    pub async fn load(&self, config: &TvConfig) -> Vec<String> {
        config::load(self, config).await
    }

    /// The embedded demo channels, with a guide that covers now.
    pub fn add_demo(&self) {
        let now = chrono::Utc::now().timestamp();
        for (i, d) in demo::CHANNELS.iter().enumerate() {
            let input = Input::Memory {
                name: d.name.to_string(),
                data: bytes::Bytes::from_static(d.ts),
            };
            let tags = d
                .tags
                .iter()
                .map(|t| self.inner.catalog.tag_id(t))
                .collect();
            let id = self.add_channel(
                input_source(input),
                ProgramSelector::First,
                ChannelSpec {
                    name: d.name.to_string(),
                    number: Some(d.number),
                    number_minor: None,
                    icon: None,
                    tags,
                    epg_id: Some(d.epg_id.to_string()),
                    uuid_seed: format!("demo:{}", d.name),
                },
            );
            self.inner
                .catalog
                .set_schedule(id, demo::schedule(now, i * 2));
        }
    }

    pub(crate) fn add_channel(
        &self,
        source: Arc<Source>,
        selector: ProgramSelector,
        spec: ChannelSpec,
    ) -> u32 {
        let hub = source.add_output(selector);
        let weak = Arc::downgrade(&self.inner);
        let mut channels = self.inner.channels.write();
        let id = channels.keys().next_back().map_or(1, |k| k + 1);
        let number = spec
            .number
            .unwrap_or_else(|| channels.values().map(|c| c.info.number).max().unwrap_or(0) + 1);
        let info = Arc::new(ChannelInfo {
            id,
            number,
            number_minor: spec.number_minor.filter(|n| *n > 0),
            name: spec.name,
            icon: spec.icon,
            tags: spec.tags,
            epg_id: spec.epg_id,
            service_name: None,
            provider_name: None,
            program_number: match selector {
                ProgramSelector::Number(n) => n,
                ProgramSelector::First => 0,
            },
            uuid: uuid_of(&spec.uuid_seed),
            has_video: false,
            has_audio: false,
        });
        hub.set_on_program(Box::new(move |p| {
            if let Some(inner) = weak.upgrade() {
                (Yard { inner }).note_program(id, p);
            }
        }));
        channels.insert(
            id,
            ChannelRuntime {
                info: info.clone(),
                hub,
                source: source.clone(),
            },
        );
        drop(channels);
        self.inner.catalog.upsert_channel((*info).clone());
        if source.outputs.lock().len() == 1 {
            tokio_spawn_source(source, self.inner.policy, self.inner.shutdown.clone());
        }
        id
    }

    pub fn channels(&self) -> Vec<Arc<ChannelInfo>> {
        self.inner.catalog.channels()
    }
    pub fn channel(&self, id: u32) -> Option<Arc<ChannelInfo>> {
        self.inner.catalog.channel(id)
    }
    pub fn channel_by_number(&self, n: u32) -> Option<Arc<ChannelInfo>> {
        self.channels().into_iter().find(|c| c.number == n)
    }
    pub fn channel_by_name(&self, name: &str) -> Option<Arc<ChannelInfo>> {
        let chans = self.channels();
        chans
            .iter()
            .find(|c| c.name == name)
            .or_else(|| chans.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
            .cloned()
    }
    pub fn tags(&self) -> Vec<Arc<Tag>> {
        self.inner.catalog.tags()
    }
    pub fn tag(&self, id: u32) -> Option<Arc<Tag>> {
        self.inner.catalog.tag(id)
    }
    /// Events overlapping [from, to), unix seconds, sorted by start.
    pub fn epg_events(&self, channel_id: u32, from: i64, to: i64) -> Vec<Arc<EpgEvent>> {
        self.inner.catalog.events_between(channel_id, from, to)
    }
    pub fn epg_event(&self, event_id: u32) -> Option<Arc<EpgEvent>> {
        self.inner.catalog.event(event_id)
    }
    pub fn epg_now_next(
        &self,
        channel_id: u32,
        now: i64,
    ) -> (Option<Arc<EpgEvent>>, Option<Arc<EpgEvent>>) {
        let mut it = self.epg_events(channel_id, now, i64::MAX).into_iter();
        let first = it.next();
        match first {
            Some(e) if e.start <= now => (Some(e), it.next()),
            other => (None, other),
        }
    }
    /// Case-insensitive title search over the whole guide.
    pub fn epg_search(&self, title: &str) -> Vec<Arc<EpgEvent>> {
        self.inner.catalog.search(title)
    }
    /// Replace the guide of one channel.
    pub fn set_schedule(&self, channel_id: u32, entries: Vec<EpgEntry>) {
        self.inner.catalog.set_schedule(channel_id, entries)
    }

    /// Start reading a channel. The source starts if it was idle.
    pub fn subscribe(&self, channel_id: u32, opts: ReaderOptions) -> Result<Reader, YardError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(YardError::ShuttingDown);
        }
        let channels = self.inner.channels.read();
        let rt = channels
            .get(&channel_id)
            .ok_or(YardError::NoSuchChannel(channel_id))?;
        let info = self
            .inner
            .catalog
            .channel(channel_id)
            .unwrap_or_else(|| rt.info.clone());
        Ok(rt.hub.add_reader(info, opts))
    }

    /// The channel's programme (tracks and codec parameters) as last seen,
    /// without subscribing; `None` until its source has run once.
    pub fn program(&self, channel_id: u32) -> Option<Arc<media::Program>> {
        self.inner
            .channels
            .read()
            .get(&channel_id)
            .and_then(|rt| rt.hub.program())
    }

    /// The queue bound front ends should use unless they have a reason not to.
    pub fn reader_max_bytes(&self) -> usize {
        self.inner.reader_max_bytes
    }

    /// Follow changes of channels, tags and the guide.
    pub fn events(&self) -> broadcast::Receiver<YardEvent> {
        self.inner.catalog.subscribe()
    }

    /// Where the database, recordings and certificates live.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// The conference rooms (shared by Galène and OWT).
    pub fn rooms(&self) -> &room::Rooms {
        &self.inner.rooms
    }

    /// Cancelled when the server shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Remove a channel at run time (a configuration reload, an operator):
    /// its readers end, front ends hear `ChannelRemoved` (and the removal of
    /// its guide events). Returns false when there was no such channel.
    pub fn remove_channel(&self, channel_id: u32) -> bool {
        let Some(rt) = self.inner.channels.write().remove(&channel_id) else {
            return false;
        };
        rt.hub.close();
        // The source's next (re)start no longer feeds this channel.
        rt.source
            .outputs
            .lock()
            .retain(|(_, h)| !Arc::ptr_eq(h, &rt.hub));
        rt.source.readers_changed.notify_one();
        self.inner.catalog.remove_channel(channel_id);
        tracing::info!(channel = channel_id, name = %rt.info.name, "channel removed");
        true
    }

    /// Learned from the stream: the service and provider names of a channel
    /// and whether it carries video and audio.
    pub(crate) fn note_program(&self, channel_id: u32, p: &media::Program) {
        let Some(cur) = self.inner.catalog.channel(channel_id) else {
            return;
        };
        let has_video = p.tracks.iter().any(|t| t.codec.is_video());
        let has_audio = p.tracks.iter().any(|t| t.codec.is_audio());
        if cur.service_name == p.service_name
            && cur.provider_name == p.provider_name
            && cur.has_video == has_video
            && cur.has_audio == has_audio
        {
            return;
        }
        let mut next = (*cur).clone();
        next.service_name = p.service_name.clone();
        next.provider_name = p.provider_name.clone();
        next.has_video = has_video;
        next.has_audio = has_audio;
        self.inner.catalog.upsert_channel(next);
    }

    /// A programme found by probing the input before any reader came: known
    /// at once to [`Yard::program`] and the channel's flags (radio).
    pub(crate) fn note_probed(&self, channel_id: u32, p: &media::Program) {
        let hub = self
            .inner
            .channels
            .read()
            .get(&channel_id)
            .map(|rt| rt.hub.clone());
        match hub {
            Some(hub) if p.is_ready() && hub.program().is_none() => {
                hub.set_program(Arc::new(p.clone()))
            }
            _ => self.note_program(channel_id, p),
        }
    }
}

pub(crate) struct ChannelSpec {
    pub name: String,
    pub number: Option<u32>,
    pub number_minor: Option<u32>,
    pub icon: Option<String>,
    pub tags: Vec<u32>,
    pub epg_id: Option<String>,
    pub uuid_seed: String,
}

pub(crate) fn input_source(input: Input) -> Arc<Source> {
    Source::new(input)
}

fn tokio_spawn_source(source: Arc<Source>, policy: SourcePolicy, shutdown: CancellationToken) {
    tokio::spawn(channel::run_source(source, policy, shutdown));
}

/// A stable 128-bit id in hex from a seed (FNV-1a twice, differently salted):
/// Tvheadend clients key channels by uuid across restarts.
fn uuid_of(seed: &str) -> String {
    let fnv = |salt: u64| {
        seed.bytes().fold(0xcbf29ce484222325u64 ^ salt, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        })
    };
    format!("{:016x}{:016x}", fnv(0), fnv(0x9e3779b97f4a7c15))
}
