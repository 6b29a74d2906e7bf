//! One HTSP connection as a state machine (reference §3–§7, §9).
//!
//! The server feeds it decoded requests ([`Session::handle`]) and changes of
//! the yard ([`Session::on_change`]), each with the current unix time, and
//! writes out what it returns ([`Output`]). The session never reads a clock,
//! opens a socket or spawns a task; what it needs to know about the world it
//! asks the [`Backend`], which tests replace with a fake.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha1::{Digest, Sha1};
use yard::access::Rights;
use yard::dvr::{
    Autorec, Cutpoint, DvrEntry, DvrError, DvrEvent, DvrState, EntryUpdate, NewEntry, Timerec,
};
use yard::{ChannelInfo, EpgEvent, Tag, YardEvent};

use crate::wire::{Msg, Value};

/// The protocol version Switchyard speaks (and announces in every `hello`).
pub const HTSP_VERSION: u32 = 44;
/// Tvheadend's JSON API version, announced in `hello`.
pub const API_VERSION: u32 = 19;
/// How long a privilege failure (or a failed login) waits before its reply.
pub const NOACCESS_DELAY: Duration = Duration::from_millis(250);
/// Default `queueDepth` of a subscription, bytes.
pub const DEFAULT_QUEUE_DEPTH: u32 = 500_000;
/// Per-connection caps, so one client cannot hold unbounded server state.
pub const MAX_SUBSCRIPTIONS: usize = 64;
pub const MAX_OPEN_FILES: usize = 32;
/// Seconds we tell clients we wait for an input before giving up.
pub const GRACE_SECS: u32 = 5;
/// The one streaming profile (stable uuid: clients store it).
pub const PROFILE_UUID: &str = "5f1c0e9d2a7b4e6c8d3f0a1b2c4d6e8f";
pub const DVR_CONFIG_UUID: &str = "0d5a8e3c7b1f4a2e9c6d8b0a1e3f5c7d";

/// What the server must do, in this order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Wait before doing anything else on this connection (privilege
    /// failures; requests stay strictly ordered).
    Pause(Duration),
    /// A reply or a metadata message: the control queue.
    Send(Msg),
    /// A `subscribe` reply; the subscription's queue may be written only
    /// after this message has been handed to the socket (§3.3).
    SendActivating { msg: Msg, subscription_id: u32 },
    /// A message on a subscription's own queue.
    SendSub { subscription_id: u32, msg: Msg },
    /// Start a subscription (its queue stays inactive until activated).
    Subscribe(SubscribeParams),
    /// Tear down a subscription and discard its queue, before the reply that
    /// follows is queued.
    Unsubscribe { subscription_id: u32 },
    /// Change which streams of a subscription are delivered.
    FilterStreams {
        subscription_id: u32,
        enable: Vec<u32>,
        disable: Vec<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeParams {
    pub subscription_id: u32,
    pub channel_id: u32,
    /// Timestamps in 90 kHz instead of microseconds.
    pub ninety_khz: bool,
    /// Bytes of queued payload above which video is dropped (§8.5).
    pub queue_depth: u32,
    pub weight: u32,
}

/// Something changed that async-metadata clients must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Yard(YardEvent),
    Dvr(DvrEvent),
}

/// Free, used and total bytes of the recordings storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub free: i64,
    pub used: i64,
    pub total: i64,
}

/// An open file of `fileOpen`.
pub trait FileHandle: Send {
    /// Reads up to `size` bytes at `offset` (or the current position).
    fn read(&mut self, offset: Option<u64>, size: usize) -> std::io::Result<Vec<u8>>;
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64>;
    /// (size, mtime unix seconds)
    fn stat(&mut self) -> std::io::Result<(i64, i64)>;
}

/// The session's view of the yard, the recorder and the access rules.
pub trait Backend: Send + Sync {
    fn server_name(&self) -> String {
        "Switchyard".into()
    }
    /// `Some(rights)` when `username` exists and `proof(password)` holds.
    fn verify(&self, username: &str, proof: &dyn Fn(&str) -> bool) -> Option<Rights>;
    fn channels(&self) -> Vec<Arc<ChannelInfo>>;
    fn channel(&self, id: u32) -> Option<Arc<ChannelInfo>>;
    fn tags(&self) -> Vec<Arc<Tag>>;
    fn tag(&self, id: u32) -> Option<Arc<Tag>>;
    /// Events overlapping [from, to), sorted by start.
    fn events(&self, channel_id: u32, from: i64, to: i64) -> Vec<Arc<EpgEvent>>;
    fn event(&self, id: u32) -> Option<Arc<EpgEvent>>;
    fn search(&self, title: &str) -> Vec<Arc<EpgEvent>>;
    fn utc_offset_minutes(&self, _now: i64) -> i32 {
        0
    }
    fn disk_space(&self) -> Option<DiskSpace> {
        None
    }
    /// A 40-hex ticket granting `rights` on `path` for a while.
    fn create_ticket(&self, path: &str, rights: &Rights) -> String;

    // The recorder; a backend without one answers every DVR call with an error.
    fn dvr_entries(&self) -> Vec<DvrEntry> {
        Vec::new()
    }
    fn dvr_entry(&self, _id: u32) -> Option<DvrEntry> {
        None
    }
    fn autorecs(&self) -> Vec<Autorec> {
        Vec::new()
    }
    fn autorec(&self, _id: &str) -> Option<Autorec> {
        None
    }
    fn timerecs(&self) -> Vec<Timerec> {
        Vec::new()
    }
    fn timerec(&self, _id: &str) -> Option<Timerec> {
        None
    }
    fn add_dvr_entry(&self, _new: NewEntry) -> Result<DvrEntry, DvrError> {
        Err(DvrError::Invalid("no recorder"))
    }
    fn update_dvr_entry(&self, _id: u32, _u: EntryUpdate) -> Result<DvrEntry, DvrError> {
        Err(DvrError::NotFound)
    }
    fn stop_dvr_entry(&self, _id: u32) -> Result<(), DvrError> {
        Err(DvrError::NotFound)
    }
    fn cancel_dvr_entry(&self, _id: u32) -> Result<(), DvrError> {
        Err(DvrError::NotFound)
    }
    fn delete_dvr_entry(&self, _id: u32) -> Result<(), DvrError> {
        Err(DvrError::NotFound)
    }
    fn add_autorec(&self, _a: Autorec) -> Result<Autorec, DvrError> {
        Err(DvrError::Invalid("no recorder"))
    }
    fn update_autorec(
        &self,
        _id: &str,
        _f: &mut dyn FnMut(&mut Autorec),
    ) -> Result<Autorec, DvrError> {
        Err(DvrError::NotFound)
    }
    fn delete_autorec(&self, _id: &str) -> Result<(), DvrError> {
        Err(DvrError::NotFound)
    }
    fn add_timerec(&self, _t: Timerec) -> Result<Timerec, DvrError> {
        Err(DvrError::Invalid("no recorder"))
    }
    fn update_timerec(
        &self,
        _id: &str,
        _f: &mut dyn FnMut(&mut Timerec),
    ) -> Result<Timerec, DvrError> {
        Err(DvrError::NotFound)
    }
    fn delete_timerec(&self, _id: &str) -> Result<(), DvrError> {
        Err(DvrError::NotFound)
    }
    fn cutpoints(&self, _id: u32) -> Result<Option<Vec<Cutpoint>>, DvrError> {
        Err(DvrError::NotFound)
    }
    fn mark_played(&self, _id: u32, _playcount: Option<u32>, _playposition: Option<u32>) {}
    /// Opens the recording file of a DVR entry.
    fn open_recording(&self, _id: u32) -> std::io::Result<Box<dyn FileHandle>> {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

/// The method classes of §5.3.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Anonymous,
    Streaming,
    Recorder,
}

fn class_of(method: &str) -> Option<Class> {
    Some(match method {
        "hello" | "authenticate" | "api" => Class::Anonymous,
        "getDiskSpace"
        | "getSysTime"
        | "enableAsyncMetadata"
        | "getChannel"
        | "getEvent"
        | "getEvents"
        | "epgQuery"
        | "getEpgObject"
        | "getTicket"
        | "subscribe"
        | "unsubscribe"
        | "subscriptionChangeWeight"
        | "subscriptionSeek"
        | "subscriptionSkip"
        | "subscriptionSpeed"
        | "subscriptionLive"
        | "subscriptionFilterStream"
        | "getProfiles" => Class::Streaming,
        "getDvrConfigs" | "addDvrEntry" | "updateDvrEntry" | "stopDvrEntry" | "cancelDvrEntry"
        | "deleteDvrEntry" | "addAutorecEntry" | "updateAutorecEntry" | "deleteAutorecEntry"
        | "addTimerecEntry" | "updateTimerecEntry" | "deleteTimerecEntry" | "getDvrCutpoints"
        | "fileOpen" | "fileRead" | "fileClose" | "fileStat" | "fileSeek" => Class::Recorder,
        _ => return None,
    })
}

/// A request that failed: the reply to send.
enum Fail {
    Error(String),
    /// DVR style: `{success: 0, error}`.
    Unsuccessful(String),
    NoAccess,
}

type Reply = Result<Msg, Fail>;

fn invalid(what: &str) -> Fail {
    Fail::Error(format!("Invalid arguments: {what}"))
}

fn err(text: &str) -> Fail {
    Fail::Error(text.to_owned())
}

fn dvr_fail(e: DvrError) -> Fail {
    match e {
        DvrError::Invalid(what) => invalid(what),
        other => Fail::Error(other.to_string()),
    }
}

struct SubInfo {
    weight: u32,
}

/// The state of one connection.
pub struct Session {
    backend: Arc<dyn Backend>,
    challenge: [u8; 32],
    /// Negotiated version; the latest until a `hello` says otherwise.
    version: u32,
    client_name: Option<String>,
    rights: Rights,
    async_enabled: bool,
    epg: bool,
    /// Events starting up to here were sent (window end), when `epg` is on.
    epg_sent_until: i64,
    epg_max_time: Option<i64>,
    subscriptions: HashMap<u32, SubInfo>,
    files: BTreeMap<u32, OpenFile>,
    /// (current, next) event ids last announced per channel.
    now_next_sent: HashMap<u32, (u32, u32)>,
    next_file_id: u32,
}

struct OpenFile {
    handle: Box<dyn FileHandle>,
    dvr_id: u32,
}

fn seq_of(req: &Msg) -> Option<u32> {
    req.get_u32("seq")
}

/// `SHA1(password ‖ challenge)` (§5.1).
pub fn digest(password: &str, challenge: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(password.as_bytes());
    h.update(challenge);
    h.finalize().into()
}

/// Compares without an early exit, so timing does not leak how much matched.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Session {
    /// A new connection with `challenge` (from a CSPRNG) and the rights its
    /// peer address grants.
    pub fn new(backend: Arc<dyn Backend>, challenge: [u8; 32], address_rights: Rights) -> Session {
        Session {
            backend,
            challenge,
            version: HTSP_VERSION,
            client_name: None,
            rights: address_rights,
            async_enabled: false,
            epg: false,
            epg_sent_until: i64::MIN,
            epg_max_time: None,
            subscriptions: HashMap::new(),
            files: BTreeMap::new(),
            now_next_sent: HashMap::new(),
            next_file_id: 1,
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn rights(&self) -> &Rights {
        &self.rights
    }
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }
    pub fn challenge(&self) -> &[u8; 32] {
        &self.challenge
    }
    pub fn has_subscription(&self, id: u32) -> bool {
        self.subscriptions.contains_key(&id)
    }

    /// Handles one request; `now` is unix seconds.
    pub fn handle(&mut self, now: i64, req: &Msg) -> Vec<Output> {
        let seq = seq_of(req);
        let mut out = Vec::new();
        let mut login_failed = false;

        // Elevation happens before the method, on any request (§5.2).
        if let Some(username) = req.get_str("username").filter(|u| !u.is_empty()) {
            if let Some(digest) = req.get_bin("digest") {
                let challenge = self.challenge;
                let check =
                    |password: &str| same_bytes(&self::digest(password, &challenge), &digest);
                match self.backend.verify(&username, &check) {
                    Some(rights) => {
                        tracing::debug!(user = %username, "authenticated");
                        self.rights = rights;
                    }
                    None => {
                        tracing::info!(user = %username, "HTSP login failed");
                        login_failed = true;
                    }
                }
            } else {
                tracing::debug!(user = %username, "unverified user name");
            }
        }

        let Some(method) = req.get_str("method") else {
            out.push(self.finish(seq, Err(invalid("missing method"))));
            return out;
        };
        let Some(class) = class_of(&method) else {
            out.push(self.finish(seq, Err(err("Method not found"))));
            return out;
        };
        let allowed = match class {
            Class::Anonymous => true,
            Class::Streaming => self.rights.streaming,
            Class::Recorder => self.rights.dvr,
        };
        if !allowed {
            out.push(Output::Pause(NOACCESS_DELAY));
            out.push(self.finish(seq, Err(Fail::NoAccess)));
            return out;
        }
        if login_failed {
            out.push(Output::Pause(NOACCESS_DELAY));
        }

        let result = match method.as_str() {
            "hello" => self.hello(req),
            "authenticate" => self.authenticate(),
            "api" => self.api(req),
            "getDiskSpace" => self.disk_space(),
            "getSysTime" => Ok(self.sys_time(now)),
            "enableAsyncMetadata" => {
                let reply = self.finish(seq, Ok(Msg::new()));
                out.push(reply);
                out.extend(self.enable_async(now, req));
                return out;
            }
            "getChannel" => self.get_channel(now, req),
            "getEvent" => self.get_event(req),
            "getEvents" => self.get_events(now, req),
            "epgQuery" => self.epg_query(req),
            "getEpgObject" => self.get_epg_object(req),
            "getTicket" => self.get_ticket(req),
            "getProfiles" => Ok(Msg::new().with(
                "profiles",
                vec![Value::Map(
                    Msg::new()
                        .with("uuid", PROFILE_UUID)
                        .with("name", "htsp")
                        .with("comment", "HTSP default streaming profile"),
                )],
            )),
            "getDvrConfigs" => Ok(Msg::new().with(
                "dvrconfigs",
                vec![Value::Map(
                    Msg::new()
                        .with("uuid", DVR_CONFIG_UUID)
                        .with("name", "")
                        .with("comment", "Default recording profile"),
                )],
            )),
            "subscribe" => return self.subscribe(req, seq),
            "unsubscribe" => {
                let Some(id) = req.get_u32("subscriptionId") else {
                    out.push(self.finish(seq, Err(invalid("missing subscriptionId"))));
                    return out;
                };
                if self.subscriptions.remove(&id).is_some() {
                    out.push(Output::Unsubscribe {
                        subscription_id: id,
                    });
                }
                out.push(self.finish(seq, Ok(Msg::new())));
                return out;
            }
            "subscriptionChangeWeight" => self.sub_op(req, |s, id, req| {
                if let Some(sub) = s.subscriptions.get_mut(&id) {
                    sub.weight = req.get_u32("weight").unwrap_or(0);
                }
                Ok(Msg::new())
            }),
            "subscriptionFilterStream" => {
                let r = self.sub_op(req, |_, _, _| Ok(Msg::new()));
                if r.is_ok()
                    && let Some(id) = req.get_u32("subscriptionId")
                {
                    let ids = |name: &str| -> Vec<u32> {
                        req.get_list(name)
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|v| match v {
                                Value::S64(i) => u32::try_from(*i).ok(),
                                _ => None,
                            })
                            .collect()
                    };
                    out.push(Output::FilterStreams {
                        subscription_id: id,
                        enable: ids("enable"),
                        disable: ids("disable"),
                    });
                }
                r
            }
            "subscriptionSkip" | "subscriptionSeek" => self.sub_op(req, |_, _, req| {
                if !req.contains("time") && !req.contains("size") {
                    return Err(invalid("missing time or size"));
                }
                Err(err("Timeshift not available"))
            }),
            "subscriptionLive" => self.sub_op(req, |_, _, _| Err(err("Timeshift not available"))),
            "subscriptionSpeed" => {
                let r = self.sub_op(req, |_, _, req| match req.get_s32("speed") {
                    None => Err(invalid("missing speed")),
                    Some(100) => Ok(Msg::new()),
                    Some(_) => Err(err("Timeshift not available")),
                });
                if r.is_ok()
                    && let Some(id) = req.get_u32("subscriptionId")
                {
                    out.push(self.finish(seq, r));
                    out.push(Output::SendSub {
                        subscription_id: id,
                        msg: Msg::new()
                            .with("method", "subscriptionSpeed")
                            .with("subscriptionId", id)
                            .with("speed", 100i64),
                    });
                    return out;
                }
                r
            }
            "addDvrEntry" => self.add_dvr_entry(req),
            "updateDvrEntry" => self.update_dvr_entry(req),
            "stopDvrEntry" => self.dvr_op(req, |b, id| b.stop_dvr_entry(id)),
            "cancelDvrEntry" => self.dvr_op(req, |b, id| b.cancel_dvr_entry(id)),
            "deleteDvrEntry" => self.dvr_op(req, |b, id| b.delete_dvr_entry(id)),
            "addAutorecEntry" => self.add_autorec(req),
            "updateAutorecEntry" => self.update_autorec(req),
            "deleteAutorecEntry" => self.delete_rule(req, true),
            "addTimerecEntry" => self.add_timerec(req),
            "updateTimerecEntry" => self.update_timerec(req),
            "deleteTimerecEntry" => self.delete_rule(req, false),
            "getDvrCutpoints" => self.cutpoints(req),
            "fileOpen" => self.file_open(req),
            "fileRead" => self.file_read(req),
            "fileSeek" => self.file_seek(req),
            "fileStat" => self.file_stat(req),
            "fileClose" => self.file_close(req),
            _ => Err(err("Method not found")),
        };
        out.push(self.finish(seq, result));
        out
    }

    /// Adds `seq` and turns failures into their reply form.
    fn finish(&self, seq: Option<u32>, result: Reply) -> Output {
        let mut msg = match result {
            Ok(m) => m,
            Err(Fail::Error(text)) => Msg::new().with("error", text),
            Err(Fail::Unsuccessful(text)) => Msg::new().with("success", 0i64).with("error", text),
            Err(Fail::NoAccess) => Msg::new().with("noaccess", 1i64),
        };
        if let Some(seq) = seq {
            msg.add("seq", seq);
        }
        Output::Send(msg)
    }

    // ------------------------------------------------------------ basics

    fn hello(&mut self, req: &Msg) -> Reply {
        let version = req
            .get_u32("htspversion")
            .ok_or_else(|| invalid("missing htspversion"))?;
        let name = req
            .get_str("clientname")
            .ok_or_else(|| invalid("missing clientname"))?;
        self.version = version.min(HTSP_VERSION);
        tracing::info!(client = %name, version = self.version, "HTSP hello");
        self.client_name = Some(name);
        Ok(Msg::new()
            .with("htspversion", HTSP_VERSION)
            .with("servername", self.backend.server_name())
            .with("serverversion", env!("CARGO_PKG_VERSION"))
            .with("challenge", Bytes::copy_from_slice(&self.challenge))
            .with("servercapability", Vec::<Value>::new())
            .with("api_version", API_VERSION))
    }

    fn authenticate(&mut self) -> Reply {
        if !self.rights.streaming {
            return Err(Fail::NoAccess);
        }
        if self.version < 26 {
            return Ok(Msg::new());
        }
        let r = &self.rights;
        Ok(Msg::new()
            .with("admin", r.admin)
            .with("streaming", r.streaming)
            .with("dvr", r.dvr)
            .with("faileddvr", r.dvr)
            .with("anonymous", r.anonymize)
            .with("limitall", 0i64)
            .with("limitdvr", 0i64)
            .with("limitstreaming", 0i64)
            .with("uilevel", if r.admin { 2i64 } else { 0 })
            .with("uilanguage", ""))
    }

    fn api(&self, req: &Msg) -> Reply {
        let Some(path) = req.get_str("path") else {
            return Err(err("Bad request"));
        };
        let paths = ["serverinfo", "pathlist"];
        let response = match path.as_str() {
            "serverinfo" => Value::Map(
                Msg::new()
                    .with("sw_version", env!("CARGO_PKG_VERSION"))
                    .with("api_version", API_VERSION)
                    .with("name", self.backend.server_name())
                    .with("capabilities", Vec::<Value>::new()),
            ),
            "pathlist" => Value::List(paths.iter().map(|p| Value::from(*p)).collect()),
            _ => return Ok(Msg::new()),
        };
        Ok(Msg::new().with("response", response))
    }

    fn disk_space(&self) -> Reply {
        let d = self
            .backend
            .disk_space()
            .ok_or_else(|| err("Unable to stat path"))?;
        Ok(Msg::new()
            .with("freediskspace", d.free)
            .with("useddiskspace", d.used)
            .with("totaldiskspace", d.total))
    }

    fn sys_time(&self, now: i64) -> Msg {
        let offset = self.backend.utc_offset_minutes(now);
        Msg::new()
            .with("time", now)
            .with("timezone", -offset / 60)
            .with("gmtoffset", offset)
    }

    // ------------------------------------------------------------ visibility

    fn channel_visible(&self, ch: &ChannelInfo) -> bool {
        if self.rights.channel_tags.is_empty() {
            return true;
        }
        let names: Vec<String> = ch
            .tags
            .iter()
            .filter_map(|t| self.backend.tag(*t))
            .map(|t| t.name.clone())
            .collect();
        self.rights
            .may_see_channel(names.iter().map(String::as_str))
    }

    fn visible_channel(&self, id: u32) -> Option<Arc<ChannelInfo>> {
        self.backend.channel(id).filter(|c| self.channel_visible(c))
    }

    fn visible_channels(&self) -> Vec<Arc<ChannelInfo>> {
        self.backend
            .channels()
            .into_iter()
            .filter(|c| self.channel_visible(c))
            .collect()
    }

    fn tag_visible(&self, tag: &Tag) -> bool {
        self.rights.channel_tags.is_empty()
            || self
                .rights
                .channel_tags
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&tag.name))
    }

    fn visible_event(&self, id: u32) -> Option<Arc<EpgEvent>> {
        self.backend
            .event(id)
            .filter(|e| self.visible_channel(e.channel_id).is_some())
    }

    fn visible_entry(&self, id: u32) -> Option<DvrEntry> {
        self.backend
            .dvr_entry(id)
            .filter(|e| e.visible_to(&self.rights))
    }

    // ------------------------------------------------------------ messages

    /// Image references in the image cache take a version-dependent form
    /// (§4); anything else (remote URLs) is passed unchanged.
    fn image(&self, url: &str, channel_icon: bool) -> String {
        match url
            .strip_prefix("imagecache/")
            .or_else(|| url.strip_prefix("/imagecache/"))
        {
            Some(id) if channel_icon && self.version >= 15 => format!("imagecache/{id}"),
            Some(id) if !channel_icon && self.version >= 34 => format!("imagecache/{id}"),
            Some(id) => format!("/imagecache/{id}"),
            None => url.to_owned(),
        }
    }

    fn channel_msg(&self, ch: &ChannelInfo, now: i64) -> Msg {
        let (cur, next) = self.now_next(ch.id, now);
        // Kodi files a channel under radio when a service has content 2 (§7.4).
        let radio = ch.is_radio();
        let mut m = Msg::new();
        m.add("channelId", ch.id)
            .add("channelIdStr", ch.uuid.clone())
            .add("channelNumber", ch.number);
        m.add_opt("channelNumberMinor", ch.number_minor.filter(|n| *n > 0));
        m.add("channelName", ch.name.clone());
        if let Some(icon) = &ch.icon {
            m.add("channelIcon", self.image(icon, true));
        }
        m.add("eventId", cur.unwrap_or(0))
            .add("nextEventId", next.unwrap_or(0));
        let mut service = Msg::new()
            .with(
                "name",
                ch.service_name.clone().unwrap_or_else(|| ch.name.clone()),
            )
            .with("type", if radio { "Radio" } else { "HDTV" })
            .with("content", if radio { 2i64 } else { 1 });
        if let Some(p) = &ch.provider_name {
            service.add("providername", p.clone());
        }
        m.add("services", vec![Value::Map(service)]);
        let tags: Vec<Value> = ch
            .tags
            .iter()
            .filter(|t| self.backend.tag(**t).is_some_and(|t| self.tag_visible(&t)))
            .map(|t| Value::from(*t))
            .collect();
        m.add("tags", tags);
        m
    }

    fn now_next(&self, channel_id: u32, now: i64) -> (Option<u32>, Option<u32>) {
        let mut evs = self.backend.events(channel_id, now, i64::MAX).into_iter();
        match evs.next() {
            Some(e) if e.start <= now => (Some(e.id), evs.next().map(|e| e.id)),
            Some(e) => (None, Some(e.id)),
            None => (None, None),
        }
    }

    fn tag_msg(
        &self,
        tag: &Tag,
        index: usize,
        with_members: bool,
        visible: &[Arc<ChannelInfo>],
    ) -> Msg {
        let mut m = Msg::new();
        m.add("tagId", tag.id)
            .add("tagIdStr", format!("{:032x}", tag.id))
            .add("tagIndex", index)
            .add("tagName", tag.name.clone());
        if let Some(icon) = &tag.icon {
            m.add("tagIcon", self.image(icon, false))
                .add("tagTitledIcon", 0i64);
        }
        if with_members {
            let members: Vec<Value> = visible
                .iter()
                .filter(|c| c.tags.contains(&tag.id))
                .map(|c| Value::from(c.id))
                .collect();
            m.add("members", members);
        }
        m
    }

    /// The texts of an event or recording, collapsed for old clients (§7.5).
    fn texts(
        &self,
        m: &mut Msg,
        subtitle: Option<&str>,
        summary: Option<&str>,
        description: Option<&str>,
    ) {
        if self.version >= 32 {
            m.add_opt("subtitle", subtitle)
                .add_opt("summary", summary)
                .add_opt("description", description);
        } else if let Some(d) = description {
            m.add("description", d)
                .add_opt("summary", summary)
                .add_opt("subtitle", subtitle);
        } else if let Some(s) = summary {
            m.add("description", s).add_opt("subtitle", subtitle);
        } else if let Some(s) = subtitle {
            m.add("description", s);
        }
    }

    /// One event, looking up its recording and successor.
    fn event_msg(&self, e: &EpgEvent) -> Msg {
        let dvr = self.dvr_by_event();
        let next = self
            .backend
            .events(e.channel_id, e.stop, i64::MAX)
            .into_iter()
            .find(|n| n.start >= e.stop && n.id != e.id)
            .map(|n| n.id);
        self.event_msg_with(e, next, &dvr)
    }

    /// Event id → id of a recording of it the user may see.
    fn dvr_by_event(&self) -> HashMap<u32, u32> {
        self.backend
            .dvr_entries()
            .iter()
            .filter(|d| d.visible_to(&self.rights))
            .filter_map(|d| Some((d.event_id?, d.id)))
            .collect()
    }

    /// Many events at once: successors come from the list itself (sorted
    /// per channel), so a large guide is not searched once per event.
    fn event_msgs(&self, evs: &[Arc<EpgEvent>]) -> Vec<Msg> {
        let dvr = self.dvr_by_event();
        evs.iter()
            .enumerate()
            .map(|(i, e)| match evs.get(i + 1) {
                Some(n) if n.channel_id == e.channel_id && n.start >= e.start => {
                    self.event_msg_with(e, Some(n.id), &dvr)
                }
                _ => self.event_msg(e),
            })
            .collect()
    }

    fn event_msg_with(&self, e: &EpgEvent, next: Option<u32>, dvr: &HashMap<u32, u32>) -> Msg {
        let mut m = Msg::new();
        m.add("eventId", e.id)
            .add("channelId", e.channel_id)
            .add("start", e.start)
            .add("stop", e.stop);
        if !e.title.is_empty() {
            m.add("title", e.title.clone());
        }
        self.texts(
            &mut m,
            e.subtitle.as_deref(),
            None,
            e.description.as_deref(),
        );
        if !e.categories.is_empty() {
            m.add(
                "category",
                e.categories
                    .iter()
                    .map(|c| Value::from(c.as_str()))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(ct) = content_type(&e.categories) {
            m.add(
                "contentType",
                if self.version < 6 {
                    (ct >> 4) & 0xf
                } else {
                    ct
                },
            );
        }
        m.add_opt("ageRating", e.age_rating);
        m.add_opt("seasonNumber", e.season_number.filter(|n| *n != 0));
        m.add_opt("episodeNumber", e.episode_number.filter(|n| *n != 0));
        m.add_opt("episodeOnscreen", e.episode.clone());
        if let Some(img) = &e.image {
            m.add("image", self.image(img, false));
        }
        m.add_opt("dvrId", dvr.get(&e.id).copied());
        m.add_opt("nextEventId", next);
        m
    }

    fn priority(&self, p: u32) -> u32 {
        match p {
            PRIORITY_NOT_SET => 2,
            p if p > 4 && self.version < 30 => 2,
            p if p > 6 => 2,
            p => p,
        }
    }

    fn retention(&self, retention: u32, removal: u32) -> u32 {
        if self.version <= 24 && retention == 2_147_483_646 {
            removal
        } else {
            retention
        }
    }

    fn dvr_msg(&self, e: &DvrEntry) -> Msg {
        let mut m = Msg::new();
        m.add("id", e.id)
            .add("idStr", e.uuid.clone())
            .add("enabled", e.enabled);
        if self.backend.channel(e.channel_id).is_some() {
            m.add("channel", e.channel_id);
        }
        m.add("channelName", e.channel_name.clone());
        m.add_opt("eventId", e.event_id);
        m.add_opt("autorecId", e.autorec_id.clone());
        m.add_opt("timerecId", e.timerec_id.clone());
        m.add("start", e.start)
            .add("stop", e.stop)
            .add("startExtra", e.start_extra)
            .add("stopExtra", e.stop_extra)
            .add("retention", self.retention(e.retention, e.removal))
            .add("removal", e.removal)
            .add("priority", self.priority(e.priority));
        m.add_opt("contentType", e.content_type);
        m.add_opt("ageRating", e.age_rating);
        if matches!(e.state, DvrState::Recording | DvrState::Completed) {
            m.add("playcount", e.playcount)
                .add("playposition", e.playposition);
        }
        m.add("title", e.title.clone());
        self.texts(
            &mut m,
            e.subtitle.as_deref(),
            e.summary.as_deref(),
            e.description.as_deref(),
        );
        m.add("owner", e.owner.clone())
            .add("creator", e.creator.clone());
        m.add_opt("comment", e.comment.clone());
        if let Some(f) = &e.file
            && matches!(e.state, DvrState::Recording | DvrState::Completed)
        {
            let file = Msg::new()
                .with("filename", f.clone())
                .with("start", e.window_start())
                .with("stop", e.window_stop())
                .with("size", e.file_size);
            m.add("files", vec![Value::Map(file)]);
            m.add("path", f.clone());
        }
        m.add("configId", DVR_CONFIG_UUID);
        m.add("state", e.state.as_str());
        m.add_opt("error", e.error.clone());
        if e.data_errors > 0 {
            m.add("dataErrors", e.data_errors);
        }
        if matches!(e.state, DvrState::Recording | DvrState::Completed) {
            m.add("dataSize", e.file_size);
        }
        m
    }

    fn autorec_msg(&self, a: &Autorec) -> Msg {
        let approx = if a.start >= 0 && a.start_window >= 0 {
            let mut w = a.start_window;
            if w < a.start {
                w += 24 * 60;
            }
            ((a.start + w) / 2) % (24 * 60)
        } else {
            -1
        };
        let mut m = Msg::new();
        m.add("id", a.id.clone())
            .add("enabled", a.enabled)
            .add("maxDuration", a.max_duration)
            .add("minDuration", a.min_duration)
            .add("retention", self.retention(a.retention, a.removal))
            .add("removal", a.removal)
            .add("daysOfWeek", a.days_of_week)
            .add("approxTime", approx)
            .add("start", a.start)
            .add("startWindow", a.start_window)
            .add("priority", self.priority(a.priority))
            .add("startExtra", a.start_extra)
            .add("stopExtra", a.stop_extra)
            .add("dupDetect", a.dup_detect)
            .add("maxCount", a.max_count)
            .add("broadcastType", a.broadcast_type)
            .add("comment", a.comment.clone());
        if !a.title.is_empty() {
            m.add("title", a.title.clone())
                .add("fulltext", 0i64)
                .add("mergetext", 0i64);
        }
        m.add("name", a.name.clone())
            .add("directory", a.directory.clone())
            .add("owner", a.owner.clone())
            .add("creator", a.creator.clone());
        m.add_opt("channel", a.channel_id);
        m.add_opt("serieslinkUri", a.serieslink_uri.clone());
        m.add("configId", DVR_CONFIG_UUID);
        m
    }

    fn timerec_msg(&self, t: &Timerec) -> Msg {
        let mut m = Msg::new();
        m.add("id", t.id.clone())
            .add("enabled", t.enabled)
            .add("daysOfWeek", t.days_of_week)
            .add("retention", self.retention(t.retention, t.removal))
            .add("removal", t.removal)
            .add("priority", self.priority(t.priority))
            .add("start", t.start)
            .add("stop", t.stop)
            .add("comment", t.comment.clone())
            .add("title", t.title.clone())
            .add("name", t.name.clone())
            .add("directory", t.directory.clone())
            .add("owner", t.owner.clone())
            .add("creator", t.creator.clone());
        m.add_opt("channel", t.channel_id);
        m.add("configId", DVR_CONFIG_UUID);
        m
    }

    fn rule_visible(&self, owner: &str) -> bool {
        self.rights.all_dvr
            || self.rights.admin
            || owner.is_empty()
            || self.rights.username.as_deref() == Some(owner)
    }

    // ------------------------------------------------------------ async metadata

    fn with_method(mut m: Msg, method: &str) -> Msg {
        m.add("method", method);
        m
    }

    fn event_window_end(&self, now: i64) -> i64 {
        match self.epg_max_time {
            Some(t) if t > now => t.max(now + 600),
            _ => i64::MAX,
        }
    }

    /// The events of visible channels that start in (after, until].
    fn event_adds(&self, now: i64, after: i64, until: i64) -> Vec<Output> {
        let mut out = Vec::new();
        for ch in self.visible_channels() {
            let evs: Vec<Arc<EpgEvent>> = self
                .backend
                .events(ch.id, now, until.saturating_add(1))
                .into_iter()
                .filter(|e| e.start > after && e.start <= until && e.stop > now)
                .collect();
            for body in self.event_msgs(&evs) {
                let mut m = Msg::new().with("method", "eventAdd");
                m.fields.extend(body.fields);
                out.push(Output::Send(m));
            }
        }
        out
    }

    fn enable_async(&mut self, now: i64, req: &Msg) -> Vec<Output> {
        let first = !self.async_enabled;
        if let Some(epg) = req.get_bool("epg") {
            self.epg = epg;
        } else if first {
            self.epg = false;
        }
        if req.contains("epgMaxTime") {
            self.epg_max_time = req.get_s64("epgMaxTime").filter(|t| *t > 0);
        }
        let mut out = Vec::new();
        if first {
            self.async_enabled = true;
            let channels = self.visible_channels();
            let tags: Vec<Arc<Tag>> = self
                .backend
                .tags()
                .into_iter()
                .filter(|t| self.tag_visible(t))
                .collect();
            for (i, t) in tags.iter().enumerate() {
                out.push(Output::Send(Self::with_method(
                    self.tag_msg(t, i, false, &channels),
                    "tagAdd",
                )));
            }
            for c in &channels {
                let msg = self.channel_msg(c, now);
                let pair = (
                    msg.get_u32("eventId").unwrap_or(0),
                    msg.get_u32("nextEventId").unwrap_or(0),
                );
                self.now_next_sent.insert(c.id, pair);
                out.push(Output::Send(Self::with_method(msg, "channelAdd")));
            }
            for (i, t) in tags.iter().enumerate() {
                out.push(Output::Send(Self::with_method(
                    self.tag_msg(t, i, true, &channels),
                    "tagUpdate",
                )));
            }
            for a in self
                .backend
                .autorecs()
                .iter()
                .filter(|a| self.rule_visible(&a.owner))
            {
                out.push(Output::Send(Self::with_method(
                    self.autorec_msg(a),
                    "autorecEntryAdd",
                )));
            }
            for t in self
                .backend
                .timerecs()
                .iter()
                .filter(|t| self.rule_visible(&t.owner))
            {
                out.push(Output::Send(Self::with_method(
                    self.timerec_msg(t),
                    "timerecEntryAdd",
                )));
            }
            for e in self
                .backend
                .dvr_entries()
                .iter()
                .filter(|e| e.visible_to(&self.rights))
            {
                out.push(Output::Send(Self::with_method(
                    self.dvr_msg(e),
                    "dvrEntryAdd",
                )));
            }
        }
        if self.epg {
            let until = self.event_window_end(now);
            let after = if first {
                i64::MIN
            } else {
                let last = req.get_s64("lastUpdate").unwrap_or(i64::MIN);
                self.epg_sent_until.max(last)
            };
            if until > after {
                out.extend(self.event_adds(now, after, until));
                self.epg_sent_until = until;
            }
        }
        if first {
            out.push(Output::Send(
                Msg::new().with("method", "initialSyncCompleted"),
            ));
        }
        out
    }

    /// Periodic work (every 30 s): events that entered the EPG window.
    pub fn tick(&mut self, now: i64) -> Vec<Output> {
        if !self.async_enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        // A programme ended: tell clients the channel's new now/next.
        for ch in self.visible_channels() {
            let (cur, next) = self.now_next(ch.id, now);
            let pair = (cur.unwrap_or(0), next.unwrap_or(0));
            if self.now_next_sent.insert(ch.id, pair) != Some(pair) {
                out.push(Output::Send(
                    Msg::new()
                        .with("channelId", ch.id)
                        .with("eventId", pair.0)
                        .with("nextEventId", pair.1)
                        .with("method", "channelUpdate"),
                ));
            }
        }
        if self.epg {
            let until = self.event_window_end(now);
            if until > self.epg_sent_until {
                out.extend(self.event_adds(now, self.epg_sent_until, until));
                self.epg_sent_until = until;
            }
        }
        out
    }

    /// Something changed in the yard or the recorder.
    pub fn on_change(&mut self, now: i64, change: &Change) -> Vec<Output> {
        if !self.async_enabled {
            return Vec::new();
        }
        let send = |m: Msg| vec![Output::Send(m)];
        match change {
            Change::Yard(ev) => match ev {
                YardEvent::ChannelAdded(id) | YardEvent::ChannelUpdated(id) => {
                    match self.visible_channel(*id) {
                        Some(ch) => {
                            let method = if matches!(ev, YardEvent::ChannelAdded(_)) {
                                "channelAdd"
                            } else {
                                "channelUpdate"
                            };
                            send(Self::with_method(self.channel_msg(&ch, now), method))
                        }
                        None => send(
                            Msg::new()
                                .with("channelId", *id)
                                .with("method", "channelDelete"),
                        ),
                    }
                }
                YardEvent::ChannelRemoved(id) => send(
                    Msg::new()
                        .with("channelId", *id)
                        .with("method", "channelDelete"),
                ),
                YardEvent::TagAdded(id) | YardEvent::TagUpdated(id) => {
                    let tags: Vec<Arc<Tag>> = self.backend.tags();
                    match tags.iter().position(|t| t.id == *id) {
                        Some(i) if self.tag_visible(&tags[i]) => {
                            let method = if matches!(ev, YardEvent::TagAdded(_)) {
                                "tagAdd"
                            } else {
                                "tagUpdate"
                            };
                            let channels = self.visible_channels();
                            send(Self::with_method(
                                self.tag_msg(&tags[i], i, true, &channels),
                                method,
                            ))
                        }
                        _ => send(Msg::new().with("tagId", *id).with("method", "tagDelete")),
                    }
                }
                YardEvent::TagRemoved(id) => {
                    send(Msg::new().with("tagId", *id).with("method", "tagDelete"))
                }
                YardEvent::EpgEventAdded(id) | YardEvent::EpgEventUpdated(id) => {
                    if !self.epg {
                        return Vec::new();
                    }
                    let Some(e) = self.visible_event(*id) else {
                        return Vec::new();
                    };
                    if e.start > self.epg_sent_until {
                        // Comes with the window when it gets there.
                        return Vec::new();
                    }
                    let method = if matches!(ev, YardEvent::EpgEventAdded(_)) {
                        "eventAdd"
                    } else {
                        "eventUpdate"
                    };
                    let mut m = Msg::new().with("method", method);
                    m.fields.extend(self.event_msg(&e).fields);
                    send(m)
                }
                YardEvent::EpgEventRemoved(id) => {
                    if self.epg {
                        send(
                            Msg::new()
                                .with("eventId", *id)
                                .with("method", "eventDelete"),
                        )
                    } else {
                        Vec::new()
                    }
                }
            },
            Change::Dvr(ev) => match ev {
                DvrEvent::EntryAdded(id) | DvrEvent::EntryUpdated(id) => {
                    match self.visible_entry(*id) {
                        Some(e) => {
                            let method = if matches!(ev, DvrEvent::EntryAdded(_)) {
                                "dvrEntryAdd"
                            } else {
                                "dvrEntryUpdate"
                            };
                            send(Self::with_method(self.dvr_msg(&e), method))
                        }
                        None => Vec::new(),
                    }
                }
                DvrEvent::EntryRemoved(id) => {
                    send(Msg::new().with("id", *id).with("method", "dvrEntryDelete"))
                }
                DvrEvent::AutorecAdded(id) | DvrEvent::AutorecUpdated(id) => {
                    match self.backend.autorec(id) {
                        Some(a) if self.rule_visible(&a.owner) => {
                            let method = if matches!(ev, DvrEvent::AutorecAdded(_)) {
                                "autorecEntryAdd"
                            } else {
                                "autorecEntryUpdate"
                            };
                            send(Self::with_method(self.autorec_msg(&a), method))
                        }
                        _ => Vec::new(),
                    }
                }
                DvrEvent::AutorecRemoved(id) => send(
                    Msg::new()
                        .with("id", id.clone())
                        .with("method", "autorecEntryDelete"),
                ),
                DvrEvent::TimerecAdded(id) | DvrEvent::TimerecUpdated(id) => {
                    match self.backend.timerec(id) {
                        Some(t) if self.rule_visible(&t.owner) => {
                            let method = if matches!(ev, DvrEvent::TimerecAdded(_)) {
                                "timerecEntryAdd"
                            } else {
                                "timerecEntryUpdate"
                            };
                            send(Self::with_method(self.timerec_msg(&t), method))
                        }
                        _ => Vec::new(),
                    }
                }
                DvrEvent::TimerecRemoved(id) => send(
                    Msg::new()
                        .with("id", id.clone())
                        .with("method", "timerecEntryDelete"),
                ),
            },
        }
    }

    // ------------------------------------------------------------ queries

    fn get_channel(&self, now: i64, req: &Msg) -> Reply {
        let id = req
            .get_u32("channelId")
            .ok_or_else(|| invalid("missing channelId"))?;
        let ch = self
            .visible_channel(id)
            .ok_or_else(|| err("Channel does not exist"))?;
        Ok(self.channel_msg(&ch, now))
    }

    fn get_event(&self, req: &Msg) -> Reply {
        let id = req
            .get_u32("eventId")
            .ok_or_else(|| invalid("missing eventId"))?;
        let e = self
            .visible_event(id)
            .ok_or_else(|| err("Event does not exist"))?;
        Ok(self.event_msg(&e))
    }

    fn get_events(&self, now: i64, req: &Msg) -> Reply {
        let limit = req
            .get_u32("numFollowing")
            .filter(|n| *n > 0)
            .map(|n| n as usize);
        let max_time = req.get_s64("maxTime").filter(|t| *t > 0);
        let take = |evs: Vec<Arc<EpgEvent>>| -> Vec<Arc<EpgEvent>> {
            evs.into_iter()
                .take_while(|e| max_time.is_none_or(|t| e.start <= t))
                .take(limit.unwrap_or(usize::MAX))
                .collect()
        };
        let events: Vec<Arc<EpgEvent>> = if let Some(eid) = req.get_u32("eventId") {
            let first = self
                .visible_event(eid)
                .ok_or_else(|| err("Event does not exist"))?;
            let mut evs = vec![first.clone()];
            evs.extend(
                self.backend
                    .events(first.channel_id, first.stop, i64::MAX)
                    .into_iter()
                    .filter(|e| e.start >= first.start && e.id != first.id),
            );
            take(evs)
        } else if let Some(cid) = req.get_u32("channelId") {
            let ch = self
                .visible_channel(cid)
                .ok_or_else(|| err("Channel does not exist"))?;
            take(self.backend.events(ch.id, now, i64::MAX))
        } else {
            self.visible_channels()
                .iter()
                .flat_map(|ch| take(self.backend.events(ch.id, i64::MIN, i64::MAX)))
                .collect()
        };
        let list: Vec<Value> = self
            .event_msgs(&events)
            .into_iter()
            .map(Value::Map)
            .collect();
        Ok(Msg::new().with("events", list))
    }

    fn epg_query(&self, req: &Msg) -> Reply {
        let query = req
            .get_str("query")
            .ok_or_else(|| invalid("missing query"))?;
        let channel = match req.get_u32("channelId") {
            Some(c) => Some(
                self.visible_channel(c)
                    .ok_or_else(|| err("Channel does not exist"))?
                    .id,
            ),
            None => None,
        };
        let tag = match req.get_u32("tagId") {
            Some(t) => Some(
                self.backend
                    .tag(t)
                    .ok_or_else(|| err("Channel tag does not exist"))?
                    .id,
            ),
            None => None,
        };
        let content = req.get_u32("contentType");
        let min = req.get_u32("minduration");
        let max = req.get_u32("maxduration");
        let full = req.get_bool("full").unwrap_or(false);
        let found: Vec<Arc<EpgEvent>> = self
            .backend
            .search(&query)
            .into_iter()
            .filter(|e| {
                let Some(ch) = self.visible_channel(e.channel_id) else {
                    return false;
                };
                let dur = e.stop.saturating_sub(e.start);
                channel.is_none_or(|c| c == ch.id)
                    && tag.is_none_or(|t| ch.tags.contains(&t))
                    && content.is_none_or(|c| {
                        content_type(&e.categories).is_some_and(|ct| ct & 0xf0 == c & 0xf0)
                    })
                    && min.is_none_or(|m| dur >= i64::from(m))
                    && max.is_none_or(|m| m == 0 || dur <= i64::from(m))
            })
            .collect();
        if found.is_empty() {
            return Ok(Msg::new());
        }
        Ok(if full {
            Msg::new().with(
                "events",
                found
                    .iter()
                    .map(|e| Value::Map(self.event_msg(e)))
                    .collect::<Vec<_>>(),
            )
        } else {
            Msg::new().with(
                "eventIds",
                found.iter().map(|e| Value::from(e.id)).collect::<Vec<_>>(),
            )
        })
    }

    fn get_epg_object(&self, req: &Msg) -> Reply {
        let id = req.get_u32("id").ok_or_else(|| invalid("missing id"))?;
        if req.get_u32("type").is_some_and(|t| t != 1) {
            return Err(err("Invalid EPG object request"));
        }
        let e = self
            .visible_event(id)
            .ok_or_else(|| err("Invalid EPG object request"))?;
        let ch = self
            .backend
            .channel(e.channel_id)
            .ok_or_else(|| err("Internal error"))?;
        let lang = |s: &str| Msg::new().with("und", s);
        let mut m = Msg::new();
        m.add("id", e.id)
            .add("tp", 1i64)
            .add("up", e.start)
            .add("start", e.start)
            .add("stop", e.stop)
            .add("ch", ch.uuid.clone())
            .add("tit", lang(&e.title));
        if let Some(s) = &e.subtitle {
            m.add("sti", lang(s));
        }
        if let Some(d) = &e.description {
            m.add("des", lang(d));
        }
        m.add_opt("age", e.age_rating);
        m.add_opt("img", e.image.clone());
        Ok(m)
    }

    fn get_ticket(&self, req: &Msg) -> Reply {
        let path = if let Some(cid) = req.get_u32("channelId") {
            let ch = self
                .visible_channel(cid)
                .ok_or_else(|| err("Channel not found"))?;
            format!("/stream/channelid/{}", ch.id)
        } else if let Some(did) = req.get_u32("dvrId") {
            if !self.rights.dvr {
                return Err(err("User does not have access"));
            }
            let e = self
                .visible_entry(did)
                .ok_or_else(|| err("DVR schedule does not exist"))?;
            format!("/dvrfile/{}", e.id)
        } else {
            return Err(invalid("missing channelId or dvrId"));
        };
        let ticket = self.backend.create_ticket(&path, &self.rights);
        Ok(Msg::new().with("path", path).with("ticket", ticket))
    }

    // ------------------------------------------------------------ subscriptions

    fn subscribe(&mut self, req: &Msg, seq: Option<u32>) -> Vec<Output> {
        let fail = |s: &Self, f: Fail| vec![s.finish(seq, Err(f))];
        let Some(id) = req.get_u32("subscriptionId") else {
            return fail(self, invalid("missing subscriptionId"));
        };
        let channel = if let Some(cid) = req.get_u32("channelId") {
            self.visible_channel(cid)
        } else if let Some(name) = req.get_str("channelName") {
            self.visible_channels().into_iter().find(|c| c.name == name)
        } else {
            return fail(self, invalid("missing channelId"));
        };
        let Some(channel) = channel else {
            return fail(self, err("Channel does not exist"));
        };
        if self.subscriptions.contains_key(&id) {
            return fail(self, err("Subscription already exists"));
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return fail(self, err("User limit reached"));
        }
        let ninety_khz = req.get_bool("90khz").unwrap_or(false);
        let weight = req.get_u32("weight").unwrap_or(0);
        self.subscriptions.insert(id, SubInfo { weight });
        let mut reply = Msg::new();
        if ninety_khz {
            reply.add("90khz", 1i64);
        }
        reply.add("normts", 1i64);
        if let Some(seq) = seq {
            reply.add("seq", seq);
        }
        tracing::info!(subscription = id, channel = channel.id, name = %channel.name, "HTSP subscribe");
        vec![
            Output::Subscribe(SubscribeParams {
                subscription_id: id,
                channel_id: channel.id,
                ninety_khz,
                queue_depth: req
                    .get_u32("queueDepth")
                    .filter(|d| *d > 0)
                    .unwrap_or(DEFAULT_QUEUE_DEPTH),
                weight,
            }),
            Output::SendActivating {
                msg: reply,
                subscription_id: id,
            },
            Output::SendSub {
                subscription_id: id,
                msg: Msg::new()
                    .with("method", "subscriptionGrace")
                    .with("subscriptionId", id)
                    .with("graceTimeout", GRACE_SECS),
            },
        ]
    }

    /// The server lost a subscription on its own (e.g. the channel vanished).
    pub fn subscription_ended(&mut self, id: u32) {
        self.subscriptions.remove(&id);
    }

    /// Weight of a subscription, as the client last set it.
    pub fn subscription_weight(&self, id: u32) -> Option<u32> {
        self.subscriptions.get(&id).map(|s| s.weight)
    }

    fn sub_op(&mut self, req: &Msg, f: impl FnOnce(&mut Self, u32, &Msg) -> Reply) -> Reply {
        let id = req
            .get_u32("subscriptionId")
            .ok_or_else(|| invalid("missing subscriptionId"))?;
        if !self.subscriptions.contains_key(&id) {
            return Err(err("Subscription does not exist"));
        }
        f(self, id, req)
    }

    // ------------------------------------------------------------ DVR

    fn add_dvr_entry(&self, req: &Msg) -> Reply {
        let new = NewEntry {
            event_id: req.get_u32("eventId"),
            channel_id: req.get_u32("channelId"),
            start: req.get_s64("start"),
            stop: req.get_s64("stop"),
            title: req.get_str("title"),
            subtitle: req.get_str("subtitle"),
            summary: req.get_str("summary"),
            description: req.get_str("description"),
            age_rating: req.get_u32("ageRating"),
            start_extra: req.get_s64("startExtra").unwrap_or(0),
            stop_extra: req.get_s64("stopExtra").unwrap_or(0),
            priority: req.get_u32("priority"),
            retention: req.get_u32("retention").unwrap_or(0),
            removal: req.get_u32("removal").unwrap_or(0),
            enabled: req.get_bool("enabled").unwrap_or(true),
            comment: req.get_str("comment"),
            owner: self.rights.username.clone().unwrap_or_default(),
            creator: self
                .rights
                .username
                .clone()
                .or_else(|| self.client_name.clone())
                .unwrap_or_default(),
        };
        if let Some(eid) = new.event_id {
            if self.visible_event(eid).is_none() {
                return Err(err("Event does not exist"));
            }
        } else {
            let cid = new
                .channel_id
                .ok_or_else(|| invalid("missing channelId or eventId"))?;
            if self.visible_channel(cid).is_none() {
                return Err(err("Channel does not exist"));
            }
            if new.start.is_none() || new.stop.is_none() {
                return Err(invalid("missing start or stop"));
            }
            if new.title.as_deref().is_none_or(str::is_empty) {
                return Err(Fail::Unsuccessful(
                    "Invalid arguments: missing title".into(),
                ));
            }
        }
        match self.backend.add_dvr_entry(new) {
            Ok(e) => Ok(Msg::new().with("id", e.id).with("success", 1i64)),
            Err(DvrError::Invalid(what)) => {
                Err(Fail::Unsuccessful(format!("Invalid arguments: {what}")))
            }
            Err(e) => {
                tracing::warn!(error = %e, "addDvrEntry failed");
                Err(Fail::Unsuccessful("Could not add dvrEntry".into()))
            }
        }
    }

    fn entry_id(&self, req: &Msg) -> Result<u32, Fail> {
        let id = req.get_u32("id").ok_or_else(|| invalid("missing id"))?;
        self.visible_entry(id)
            .map(|e| e.id)
            .ok_or_else(|| err("DVR entry not found"))
    }

    fn update_dvr_entry(&self, req: &Msg) -> Reply {
        let id = self.entry_id(req)?;
        if let Some(c) = req.get_u32("channelId")
            && self.visible_channel(c).is_none()
        {
            return Err(err("User does not have access to channel"));
        }
        let u = EntryUpdate {
            channel_id: req.get_u32("channelId"),
            start: req.get_s64("start"),
            stop: req.get_s64("stop"),
            start_extra: req.get_s64("startExtra"),
            stop_extra: req.get_s64("stopExtra"),
            title: req.get_str("title"),
            subtitle: req.get_str("subtitle"),
            summary: req.get_str("summary"),
            description: req.get_str("description"),
            retention: req.get_u32("retention"),
            removal: req.get_u32("removal"),
            priority: req.get_u32("priority"),
            enabled: req.get_bool("enabled"),
            age_rating: req.get_u32("ageRating"),
            comment: req.get_str("comment"),
            playcount: req.get_u32("playcount"),
            playposition: req.get_u32("playposition"),
        };
        self.backend.update_dvr_entry(id, u).map_err(dvr_fail)?;
        Ok(Msg::new().with("success", 1i64))
    }

    fn dvr_op(
        &self,
        req: &Msg,
        f: impl FnOnce(&dyn Backend, u32) -> Result<(), DvrError>,
    ) -> Reply {
        let id = self.entry_id(req)?;
        f(self.backend.as_ref(), id).map_err(dvr_fail)?;
        Ok(Msg::new().with("success", 1i64))
    }

    fn rule_channel(&self, req: &Msg) -> Result<Option<u32>, Fail> {
        match req.get_s64("channelId") {
            None | Some(-1) => Ok(None),
            Some(c) => {
                let c = u32::try_from(c).map_err(|_| invalid("bad channelId"))?;
                self.visible_channel(c)
                    .map(|ch| Some(ch.id))
                    .ok_or_else(|| err("Channel does not exist"))
            }
        }
    }

    fn apply_autorec_fields(req: &Msg, a: &mut Autorec, channel: Option<Option<u32>>) {
        if let Some(v) = req.get_str("title") {
            a.title = v;
        }
        if let Some(v) = req.get_str("name") {
            a.name = v;
        }
        if let Some(v) = req.get_str("directory") {
            a.directory = v;
        }
        if let Some(v) = req.get_str("comment") {
            a.comment = v;
        }
        if let Some(v) = req.get_str("serieslinkUri") {
            a.serieslink_uri = Some(v);
        }
        if let Some(c) = channel {
            a.channel_id = c;
        }
        if let Some(v) = req
            .get_u32("minduration")
            .or_else(|| req.get_u32("minDuration"))
        {
            a.min_duration = v;
        }
        if let Some(v) = req
            .get_u32("maxduration")
            .or_else(|| req.get_u32("maxDuration"))
        {
            a.max_duration = v;
        }
        if let Some(v) = req.get_u32("daysOfWeek") {
            a.days_of_week = v;
        }
        if let Some(v) = req.get_s32("start") {
            a.start = v;
        }
        if let Some(v) = req.get_s32("startWindow") {
            a.start_window = v;
        }
        if let Some(t) = req.get_s32("approxTime")
            && !req.contains("start")
        {
            if t < 0 {
                a.start = -1;
                a.start_window = -1;
            } else {
                a.start = (t - 15).rem_euclid(24 * 60);
                a.start_window = (t + 15).rem_euclid(24 * 60);
            }
        }
        if let Some(v) = req.get_s64("startExtra") {
            a.start_extra = v;
        }
        if let Some(v) = req.get_s64("stopExtra") {
            a.stop_extra = v;
        }
        if let Some(v) = req.get_u32("priority") {
            a.priority = v;
        }
        if let Some(v) = req.get_u32("retention") {
            a.retention = v;
        }
        if let Some(v) = req.get_u32("removal") {
            a.removal = v;
        }
        if let Some(v) = req.get_bool("enabled") {
            a.enabled = v;
        }
        if let Some(v) = req.get_u32("dupDetect") {
            a.dup_detect = v;
        }
        if let Some(v) = req.get_u32("maxCount") {
            a.max_count = v;
        }
        if let Some(v) = req.get_u32("broadcastType") {
            a.broadcast_type = v;
        }
    }

    fn add_autorec(&self, req: &Msg) -> Reply {
        if req.get_str("title").is_none() {
            return Err(invalid("missing title"));
        }
        let channel = self.rule_channel(req)?;
        let mut a = Autorec {
            owner: self.rights.username.clone().unwrap_or_default(),
            creator: self
                .rights
                .username
                .clone()
                .or_else(|| self.client_name.clone())
                .unwrap_or_default(),
            ..Autorec::default()
        };
        Self::apply_autorec_fields(req, &mut a, Some(channel));
        match self.backend.add_autorec(a) {
            Ok(a) => Ok(Msg::new().with("id", a.id).with("success", 1i64)),
            Err(e) => {
                tracing::warn!(error = %e, "addAutorecEntry failed");
                Err(Fail::Unsuccessful("Could not add autorec entry".into()))
            }
        }
    }

    fn update_autorec(&self, req: &Msg) -> Reply {
        let id = req.get_str("id").ok_or_else(|| invalid("missing id"))?;
        let Some(a) = self
            .backend
            .autorec(&id)
            .filter(|a| self.rule_visible(&a.owner))
        else {
            return Err(err("Automatic schedule entry not found"));
        };
        let channel = if req.contains("channelId") {
            Some(self.rule_channel(req)?)
        } else {
            None
        };
        let mut f = |x: &mut Autorec| Self::apply_autorec_fields(req, x, channel);
        self.backend
            .update_autorec(&a.id, &mut f)
            .map_err(dvr_fail)?;
        Ok(Msg::new().with("success", 1i64))
    }

    fn apply_timerec_fields(req: &Msg, t: &mut Timerec, channel: Option<Option<u32>>) {
        if let Some(v) = req.get_str("title") {
            t.title = v;
        }
        if let Some(v) = req.get_str("name") {
            t.name = v;
        }
        if let Some(v) = req.get_str("directory") {
            t.directory = v;
        }
        if let Some(v) = req.get_str("comment") {
            t.comment = v;
        }
        if let Some(c) = channel {
            t.channel_id = c;
        }
        if let Some(v) = req.get_u32("daysOfWeek") {
            t.days_of_week = v;
        }
        if let Some(v) = req.get_s32("start") {
            t.start = v;
        }
        if let Some(v) = req.get_s32("stop") {
            t.stop = v;
        }
        if let Some(v) = req.get_u32("priority") {
            t.priority = v;
        }
        if let Some(v) = req.get_u32("retention") {
            t.retention = v;
        }
        if let Some(v) = req.get_u32("removal") {
            t.removal = v;
        }
        if let Some(v) = req.get_bool("enabled") {
            t.enabled = v;
        }
    }

    fn add_timerec(&self, req: &Msg) -> Reply {
        if req.get_str("title").is_none() {
            return Err(invalid("missing title"));
        }
        let channel = self.rule_channel(req)?;
        if channel.is_none() {
            return Err(invalid("missing channelId"));
        }
        let mut t = Timerec {
            owner: self.rights.username.clone().unwrap_or_default(),
            creator: self
                .rights
                .username
                .clone()
                .or_else(|| self.client_name.clone())
                .unwrap_or_default(),
            ..Timerec::default()
        };
        Self::apply_timerec_fields(req, &mut t, Some(channel));
        match self.backend.add_timerec(t) {
            Ok(t) => Ok(Msg::new().with("id", t.id).with("success", 1i64)),
            Err(e) => {
                tracing::warn!(error = %e, "addTimerecEntry failed");
                Err(Fail::Unsuccessful("Could not add timerec entry".into()))
            }
        }
    }

    fn update_timerec(&self, req: &Msg) -> Reply {
        let id = req.get_str("id").ok_or_else(|| invalid("missing id"))?;
        let Some(t) = self
            .backend
            .timerec(&id)
            .filter(|t| self.rule_visible(&t.owner))
        else {
            return Err(err("Automatic time scheduler entry not found"));
        };
        let channel = if req.contains("channelId") {
            Some(self.rule_channel(req)?)
        } else {
            None
        };
        let mut f = |x: &mut Timerec| Self::apply_timerec_fields(req, x, channel);
        self.backend
            .update_timerec(&t.id, &mut f)
            .map_err(dvr_fail)?;
        Ok(Msg::new().with("success", 1i64))
    }

    fn delete_rule(&self, req: &Msg, autorec: bool) -> Reply {
        let id = req.get_str("id").ok_or_else(|| invalid("missing id"))?;
        let owner = if autorec {
            self.backend.autorec(&id).map(|a| a.owner)
        } else {
            self.backend.timerec(&id).map(|t| t.owner)
        };
        let not_found = if autorec {
            "Automatic schedule entry not found"
        } else {
            "Automatic time scheduler entry not found"
        };
        match owner {
            Some(o) if self.rule_visible(&o) => {}
            _ => return Err(err(not_found)),
        }
        let r = if autorec {
            self.backend.delete_autorec(&id)
        } else {
            self.backend.delete_timerec(&id)
        };
        r.map_err(|_| err(not_found))?;
        Ok(Msg::new().with("success", 1i64))
    }

    fn cutpoints(&self, req: &Msg) -> Reply {
        let id = req.get_u32("id").ok_or_else(|| invalid("missing id"))?;
        let e = self
            .visible_entry(id)
            .ok_or_else(|| err("DVR schedule not found"))?;
        match self.backend.cutpoints(e.id) {
            Ok(Some(list)) => Ok(Msg::new().with(
                "cutpoints",
                list.iter()
                    .map(|c| {
                        Value::Map(
                            Msg::new()
                                .with("start", c.start_ms)
                                .with("end", c.end_ms)
                                .with("type", c.kind),
                        )
                    })
                    .collect::<Vec<_>>(),
            )),
            Ok(None) => Ok(Msg::new()),
            Err(_) => Err(err("DVR schedule not found")),
        }
    }

    // ------------------------------------------------------------ files

    fn file_open(&mut self, req: &Msg) -> Reply {
        let file = req.get_str("file").ok_or_else(|| invalid("missing file"))?;
        let path = file.strip_prefix('/').unwrap_or(&file);
        let id_text = path
            .strip_prefix("dvr/")
            .or_else(|| path.strip_prefix("dvrfile/"))
            .ok_or_else(|| err("Unknown file"))?;
        let dvr_id: u32 = id_text
            .parse()
            .map_err(|_| err("DVR schedule does not exist"))?;
        let e = self
            .visible_entry(dvr_id)
            .ok_or_else(|| err("DVR schedule does not exist"))?;
        if e.file.is_none() {
            return Err(err("DVR schedule does not have a file yet"));
        }
        if self.files.len() >= MAX_OPEN_FILES {
            return Err(err("Unable to open file: too many open files"));
        }
        let mut handle = self
            .backend
            .open_recording(e.id)
            .map_err(|_| err("Unable to open file"))?;
        let id = self.next_file_id;
        self.next_file_id = self.next_file_id.wrapping_add(1).max(1);
        let mut reply = Msg::new().with("id", id);
        if let Ok((size, mtime)) = handle.stat() {
            reply.add("size", size).add("mtime", mtime);
        }
        self.files.insert(
            id,
            OpenFile {
                handle,
                dvr_id: e.id,
            },
        );
        Ok(reply)
    }

    fn file(&mut self, req: &Msg) -> Result<&mut OpenFile, Fail> {
        let id = req.get_u32("id").ok_or_else(|| err("Invalid file"))?;
        self.files.get_mut(&id).ok_or_else(|| err("Invalid file"))
    }

    /// The most a single `fileRead` returns (a shorter reply is legal, §9).
    const MAX_READ: usize = 4 * 1024 * 1024;

    fn file_read(&mut self, req: &Msg) -> Reply {
        let size = req.get_s64("size");
        let offset = req.get_s64("offset");
        let f = self.file(req)?;
        let size = size
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| err("Invalid parameters"))?;
        let offset = match offset {
            Some(o) => Some(u64::try_from(o).map_err(|_| err("Seek error"))?),
            None => None,
        };
        let data = f
            .handle
            .read(offset, size.min(Self::MAX_READ))
            .map_err(|_| err("Read error"))?;
        Ok(Msg::new().with("data", data))
    }

    fn file_seek(&mut self, req: &Msg) -> Reply {
        let offset = req.get_s64("offset");
        let whence = req.get_str("whence");
        let f = self.file(req)?;
        let offset = offset.ok_or_else(|| err("Invalid parameters"))?;
        let pos = match whence.as_deref() {
            None | Some("SEEK_SET") => {
                std::io::SeekFrom::Start(u64::try_from(offset).map_err(|_| err("Seek error"))?)
            }
            Some("SEEK_CUR") => std::io::SeekFrom::Current(offset),
            Some("SEEK_END") => std::io::SeekFrom::End(offset),
            Some(_) => return Err(err("Invalid parameters")),
        };
        let at = f.handle.seek(pos).map_err(|_| err("Seek error"))?;
        Ok(Msg::new().with("offset", at))
    }

    fn file_stat(&mut self, req: &Msg) -> Reply {
        let f = self.file(req)?;
        let (size, mtime) = f.handle.stat().map_err(|_| err("Invalid file"))?;
        Ok(Msg::new().with("size", size).with("mtime", mtime))
    }

    fn file_close(&mut self, req: &Msg) -> Reply {
        let id = req.get_u32("id").ok_or_else(|| err("Invalid file"))?;
        let f = self.files.remove(&id).ok_or_else(|| err("Invalid file"))?;
        let (playcount, position) = if self.version >= 27 {
            (req.get_u32("playcount"), req.get_u32("playposition"))
        } else {
            (None, None)
        };
        // Only "increment" (the default) counts a play (§9).
        if playcount.is_none_or(|p| p >= 2_147_483_647) {
            self.backend.mark_played(f.dvr_id, None, position);
        } else if position.is_some() {
            self.backend
                .mark_played(f.dvr_id, Some(2_147_483_646), position);
        }
        Ok(Msg::new())
    }
}

use yard::dvr::PRIORITY_NOT_SET;

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

/// DVB content type (level 1) for common English XMLTV categories (§11.3).
pub fn content_type(categories: &[String]) -> Option<u32> {
    categories.iter().find_map(|c| {
        let c = c.to_ascii_lowercase();
        Some(match c.as_str() {
            "movie" | "film" | "drama" | "series" => 0x10,
            "news" | "current affairs" => 0x20,
            "show" | "game show" | "entertainment" => 0x30,
            "sports" | "sport" => 0x40,
            "children" | "kids" => 0x50,
            "music" => 0x60,
            "arts" | "culture" => 0x70,
            "documentary" | "science" | "education" => 0x90,
            _ => return None,
        })
    })
}
