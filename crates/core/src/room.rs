//! Rooms of conferences, shared by every conferencing front end.
//!
//! A Galène group and an OWT room with the same name are one [`Room`]: both
//! front ends register their clients here as [`Participant`]s, post chat here
//! and learn what the others did from the room's [`RoomEvent`] broadcast. This
//! module therefore speaks no protocol: permissions are neutral flags, chat
//! values are plain JSON, and every front end translates events into its own
//! wire messages. Published streams are not here; they live in the SFU.
//!
//! Every mutation happens under the room's lock and sends its event while the
//! lock is held, so all subscribers see events in the same order, and a
//! participant that joins gets a snapshot and an event receiver that fit
//! together exactly (nothing missed, nothing doubled).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// Participant ids are chosen by clients (Galène) or by the server (OWT);
/// one namespace per room.
pub type ParticipantId = String;

/// How many chat messages a room keeps unless told otherwise.
pub const DEFAULT_HISTORY_LEN: usize = 50;
/// How long chat messages are kept unless told otherwise.
pub const DEFAULT_HISTORY_AGE: Duration = Duration::from_secs(14400);
/// Events buffered per subscriber; a subscriber that falls further behind
/// sees `RecvError::Lagged` and should drop its client rather than go on
/// with a wrong view of the room.
const EVENT_CAPACITY: usize = 1024;

/// Which door a participant came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrontEnd {
    Galene,
    Owt,
    /// A WHIP publisher: a member that publishes but never chats.
    Whip,
    /// The disk recorder pseudo-member.
    Recorder,
}

impl FrontEnd {
    /// WHIP publishers and the recorder are members without a person behind a
    /// chat window: they can not receive chat, nor be promoted.
    pub fn is_person(self) -> bool {
        matches!(self, FrontEnd::Galene | FrontEnd::Owt)
    }
}

/// A neutral permission flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Moderation; exempt from lock, time window and member cap.
    Op,
    /// Publishing streams.
    Present,
    /// Recording the room.
    Record,
    /// Chat and user messages.
    Message,
    /// Captions (subtitle chat).
    Caption,
    /// Making invitation tokens.
    Token,
    /// The administrative API.
    Admin,
    /// Internal members such as the recorder; never granted to people.
    System,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::Op,
        Permission::Present,
        Permission::Record,
        Permission::Message,
        Permission::Caption,
        Permission::Token,
        Permission::Admin,
        Permission::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Op => "op",
            Permission::Present => "present",
            Permission::Record => "record",
            Permission::Message => "message",
            Permission::Caption => "caption",
            Permission::Token => "token",
            Permission::Admin => "admin",
            Permission::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// An ordered set of permissions. Order is kept because front ends show the
/// list as configured (Galène sends `["record","op",...]` in that order).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Permissions(Vec<Permission>);

impl Permissions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn has(&self, p: Permission) -> bool {
        self.0.contains(&p)
    }

    /// Appends `p` unless already present.
    pub fn insert(&mut self, p: Permission) {
        if !self.has(p) {
            self.0.push(p);
        }
    }

    /// Puts `p` first unless already present.
    pub fn prepend(&mut self, p: Permission) {
        if !self.has(p) {
            self.0.insert(0, p);
        }
    }

    pub fn remove(&mut self, p: Permission) {
        self.0.retain(|q| *q != p);
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every permission of `other` is also in `self`.
    pub fn contains_all(&self, other: &Permissions) -> bool {
        other.iter().all(|p| self.has(p))
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = Permissions::new();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

/// A member of a room.
#[derive(Clone, Debug, PartialEq)]
pub struct Participant {
    pub id: ParticipantId,
    pub username: String,
    pub front_end: FrontEnd,
    pub permissions: Permissions,
    /// Free user data (Galène's `data`, e.g. `raisehand`).
    pub status: Map<String, Value>,
    /// The client's address, told to operators who ask (`identify`).
    pub address: Option<SocketAddr>,
}

impl Participant {
    pub fn new(id: impl Into<String>, username: impl Into<String>, front_end: FrontEnd) -> Self {
        Participant {
            id: id.into(),
            username: username.into(),
            front_end,
            permissions: Permissions::new(),
            status: Map::new(),
            address: None,
        }
    }
}

/// A chat message as stored in the history and broadcast to members.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatMessage {
    /// Message id; the room generates one for broadcast messages that have none.
    pub id: Option<String>,
    /// Sender id; `None` when the server itself speaks.
    pub from: Option<ParticipantId>,
    /// Sender's username at the time of sending (`None`: no username at all).
    pub username: Option<String>,
    /// Destination for a private message; `None` is everybody.
    pub to: Option<ParticipantId>,
    /// `""` (normal), `"me"` (action) or `"caption"`.
    pub kind: String,
    /// The payload, usually a string; other front ends stringify it.
    pub value: Value,
    pub time: SystemTime,
    /// The sender was an operator or the server.
    pub privileged: bool,
    /// The sender does not want its own copy of a broadcast.
    pub noecho: bool,
}

impl ChatMessage {
    /// The value as text, for front ends whose chat carries only strings.
    pub fn text(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// Whether participant `id` should see this message.
    pub fn is_for(&self, id: &str) -> bool {
        match &self.to {
            Some(to) => to == id,
            None => !(self.noecho && self.from.as_deref() == Some(id)),
        }
    }
}

/// A message between participants that is not conversation (warnings, mute
/// requests, file-transfer signalling...). Never stored.
#[derive(Clone, Debug, PartialEq)]
pub struct UserMessage {
    pub from: Option<ParticipantId>,
    pub username: Option<String>,
    pub to: Option<ParticipantId>,
    pub kind: String,
    pub value: Value,
    pub time: SystemTime,
    pub privileged: bool,
    pub noecho: bool,
}

impl UserMessage {
    /// Whether participant `id` should see this message.
    pub fn is_for(&self, id: &str) -> bool {
        match &self.to {
            Some(to) => to == id,
            None => !(self.noecho && self.from.as_deref() == Some(id)),
        }
    }
}

/// Which chat messages to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClearChat {
    All,
    /// Every message of one participant.
    From(ParticipantId),
    /// One message of one participant.
    Message {
        id: String,
        from: ParticipantId,
    },
}

/// What happened in a room. Front ends filter by `to`/`id` themselves.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomEvent {
    ParticipantJoined(Participant),
    ParticipantLeft {
        id: ParticipantId,
        username: String,
        front_end: FrontEnd,
    },
    /// Permissions or user data of a participant changed.
    ParticipantChanged(Participant),
    Chat(ChatMessage),
    UserMessage(UserMessage),
    Locked {
        message: Option<String>,
    },
    Unlocked,
    /// Room data (Galène group `data`) changed; carries the new whole map.
    DataChanged(Map<String, Value>),
    ClearChat(ClearChat),
    /// `id` has been removed from the room by `by` (`None`: by the server).
    /// A `ParticipantLeft` for `id` follows.
    Kicked {
        id: ParticipantId,
        by: Option<ParticipantId>,
        by_username: Option<String>,
        message: String,
    },
}

/// Conditions a newcomer must meet, set by the front end from its room
/// configuration.
#[derive(Clone, Debug, Default)]
pub struct JoinRules {
    /// Operators skip the lock, the cap and the operator requirement.
    pub exempt: bool,
    /// Refuse when this many members are present already (0 = no cap).
    pub max_participants: usize,
    /// Refuse unless an operator is present (Galène `autokick`).
    pub require_operator: bool,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JoinError {
    #[error("room is locked")]
    Locked { message: Option<String> },
    #[error("no operators in the room")]
    NoOperators,
    #[error("too many participants")]
    Full,
    #[error("participant id is empty or already in use")]
    BadId,
}

/// What a newcomer gets: the room as it was when it entered, and the events
/// that follow. Its own `ParticipantJoined` is the first event it receives.
pub struct Joined {
    pub events: broadcast::Receiver<RoomEvent>,
    /// Members present before the newcomer, in order of arrival.
    pub others: Vec<Participant>,
    /// Stored chat, oldest first.
    pub history: Vec<ChatMessage>,
    pub data: Map<String, Value>,
    pub locked: Option<String>,
}

struct RoomState {
    participants: Vec<Participant>,
    history: VecDeque<ChatMessage>,
    history_len: usize,
    history_age: Duration,
    /// `Some(message)` while locked; `""` when locked without a message.
    locked: Option<String>,
    data: Map<String, Value>,
    /// Recent stream replacements, old id -> new id, so that front ends
    /// that see the old stream end can swap it in place instead of closing.
    replacements: VecDeque<(String, String)>,
}

/// How many stream replacements a room remembers.
const REPLACEMENTS_KEPT: usize = 64;

impl RoomState {
    fn prune_history(&mut self, now: SystemTime) {
        let age = self.history_age;
        self.history.retain(|m| match now.duration_since(m.time) {
            Ok(elapsed) => elapsed <= age,
            // a message from the future (clock stepped back) is kept
            Err(_) => true,
        });
        while self.history.len() > self.history_len {
            self.history.pop_front();
        }
    }
}

/// One conference room.
pub struct Room {
    name: String,
    state: Mutex<RoomState>,
    events: broadcast::Sender<RoomEvent>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("name", &self.name).finish()
    }
}

impl Room {
    fn new(name: String) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Room {
            name,
            state: Mutex::new(RoomState {
                participants: Vec::new(),
                history: VecDeque::new(),
                history_len: DEFAULT_HISTORY_LEN,
                history_age: DEFAULT_HISTORY_AGE,
                locked: None,
                data: Map::new(),
                replacements: VecDeque::new(),
            }),
            events,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn emit(&self, event: RoomEvent) {
        // no subscribers is fine: nobody to tell
        let _ = self.events.send(event);
    }

    /// A receiver for a front end that watches without being a member.
    pub fn subscribe(&self) -> broadcast::Receiver<RoomEvent> {
        self.events.subscribe()
    }

    /// Adds `participant` if `rules` allow it, and announces it.
    pub fn join(
        &self,
        participant: Participant,
        rules: &JoinRules,
        now: SystemTime,
    ) -> Result<Joined, JoinError> {
        let mut state = self.state.lock();
        if !rules.exempt {
            if let Some(message) = &state.locked {
                return Err(JoinError::Locked {
                    message: (!message.is_empty()).then(|| message.clone()),
                });
            }
            if rules.require_operator
                && !state
                    .participants
                    .iter()
                    .any(|p| p.permissions.has(Permission::Op))
            {
                return Err(JoinError::NoOperators);
            }
            if rules.max_participants > 0 && state.participants.len() >= rules.max_participants {
                return Err(JoinError::Full);
            }
        }
        if participant.id.is_empty() || state.participants.iter().any(|p| p.id == participant.id) {
            return Err(JoinError::BadId);
        }
        state.prune_history(now);
        let events = self.events.subscribe();
        let joined = Joined {
            events,
            others: state.participants.clone(),
            history: state.history.iter().cloned().collect(),
            data: state.data.clone(),
            locked: state.locked.clone(),
        };
        state.participants.push(participant.clone());
        self.emit(RoomEvent::ParticipantJoined(participant));
        drop(state);
        metrics::gauge!("switchyard_rooms_participants").increment(1.0);
        Ok(joined)
    }

    /// Removes a participant; returns it if it was present. Leaving twice is
    /// harmless, so a front end may call this on every way out.
    pub fn leave(&self, id: &str) -> Option<Participant> {
        let mut state = self.state.lock();
        let pos = state.participants.iter().position(|p| p.id == id)?;
        let p = state.participants.remove(pos);
        self.emit(RoomEvent::ParticipantLeft {
            id: p.id.clone(),
            username: p.username.clone(),
            front_end: p.front_end,
        });
        drop(state);
        metrics::gauge!("switchyard_rooms_participants").decrement(1.0);
        Some(p)
    }

    pub fn participant(&self, id: &str) -> Option<Participant> {
        self.state
            .lock()
            .participants
            .iter()
            .find(|p| p.id == id)
            .cloned()
    }

    /// Members in order of arrival.
    pub fn participants(&self) -> Vec<Participant> {
        self.state.lock().participants.clone()
    }

    pub fn len(&self) -> usize {
        self.state.lock().participants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes a participant in place and announces the result.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Participant)) -> Option<Participant> {
        let mut state = self.state.lock();
        let p = state.participants.iter_mut().find(|p| p.id == id)?;
        change(p);
        let p = p.clone();
        self.emit(RoomEvent::ParticipantChanged(p.clone()));
        Some(p)
    }

    /// Posts chat. Broadcast messages get an id if they have none and are
    /// kept in the history; private ones are only delivered.
    pub fn chat(&self, mut message: ChatMessage) -> ChatMessage {
        let mut state = self.state.lock();
        if message.to.is_none() {
            if message.id.as_deref().is_none_or(str::is_empty) {
                message.id = Some(new_id());
            }
            let now = message.time;
            state.history.push_back(message.clone());
            state.prune_history(now);
        }
        self.emit(RoomEvent::Chat(message.clone()));
        message
    }

    pub fn user_message(&self, message: UserMessage) {
        let _state = self.state.lock();
        self.emit(RoomEvent::UserMessage(message));
    }

    /// Stored chat, oldest first, without messages older than the room's
    /// maximum age.
    pub fn history(&self, now: SystemTime) -> Vec<ChatMessage> {
        let mut state = self.state.lock();
        state.prune_history(now);
        state.history.iter().cloned().collect()
    }

    /// Sets how much chat is kept (a room's configuration may change while
    /// it exists).
    pub fn set_history_limits(&self, max_len: usize, max_age: Duration) {
        let mut state = self.state.lock();
        state.history_len = max_len;
        state.history_age = max_age;
    }

    pub fn clear_chat(&self, what: ClearChat) {
        let mut state = self.state.lock();
        match &what {
            ClearChat::All => state.history.clear(),
            ClearChat::From(from) => state
                .history
                .retain(|m| m.from.as_deref() != Some(from.as_str())),
            ClearChat::Message { id, from } => state.history.retain(|m| {
                !(m.id.as_deref() == Some(id.as_str()) && m.from.as_deref() == Some(from.as_str()))
            }),
        }
        self.emit(RoomEvent::ClearChat(what));
    }

    /// Locks the room; `message` is shown to those refused.
    pub fn lock(&self, message: Option<String>) {
        let mut state = self.state.lock();
        state.locked = Some(message.clone().unwrap_or_default());
        self.emit(RoomEvent::Locked { message });
    }

    pub fn unlock(&self) {
        let mut state = self.state.lock();
        state.locked = None;
        self.emit(RoomEvent::Unlocked);
    }

    /// `Some(message)` while locked (`""`: no message).
    pub fn locked(&self) -> Option<String> {
        self.state.lock().locked.clone()
    }

    /// Merges `changes` into the room data; `null` values delete keys.
    pub fn merge_data(&self, changes: Map<String, Value>) -> Map<String, Value> {
        let mut state = self.state.lock();
        merge_map(&mut state.data, changes);
        let data = state.data.clone();
        self.emit(RoomEvent::DataChanged(data.clone()));
        data
    }

    pub fn data(&self) -> Map<String, Value> {
        self.state.lock().data.clone()
    }

    /// Removes `id` from the room, telling everybody (the target first sees
    /// `Kicked`, then everybody sees `ParticipantLeft`). False if absent.
    pub fn kick(
        &self,
        id: &str,
        by: Option<ParticipantId>,
        by_username: Option<String>,
        message: String,
    ) -> bool {
        let mut state = self.state.lock();
        let Some(pos) = state.participants.iter().position(|p| p.id == id) else {
            return false;
        };
        let p = state.participants.remove(pos);
        self.emit(RoomEvent::Kicked {
            id: p.id.clone(),
            by,
            by_username,
            message,
        });
        self.emit(RoomEvent::ParticipantLeft {
            id: p.id,
            username: p.username,
            front_end: p.front_end,
        });
        drop(state);
        metrics::gauge!("switchyard_rooms_participants").decrement(1.0);
        true
    }

    /// Notes that publication `new` replaces `old` (a camera switch): call
    /// before ending `old`.
    pub fn set_replacement(&self, old: &str, new: &str) {
        let mut state = self.state.lock();
        state.replacements.retain(|(o, _)| o != old);
        state
            .replacements
            .push_back((old.to_owned(), new.to_owned()));
        while state.replacements.len() > REPLACEMENTS_KEPT {
            state.replacements.pop_front();
        }
    }

    /// The publication that replaced `old`, if any.
    pub fn replacement_of(&self, old: &str) -> Option<String> {
        self.state
            .lock()
            .replacements
            .iter()
            .find(|(o, _)| o == old)
            .map(|(_, n)| n.clone())
    }

    /// Whether the room holds nothing worth keeping (no members, no chat).
    fn is_idle(&self, now: SystemTime) -> bool {
        let mut state = self.state.lock();
        state.prune_history(now);
        state.participants.is_empty() && state.history.is_empty() && state.locked.is_none()
    }
}

/// Merges `changes` into `map`; a `null` value deletes its key.
pub fn merge_map(map: &mut Map<String, Value>, changes: Map<String, Value>) {
    for (k, v) in changes {
        if v.is_null() {
            map.remove(&k);
        } else {
            map.insert(k, v);
        }
    }
}

/// A fresh random id of 11 characters from the URL-safe base64 alphabet
/// (64 random bits, like Galène's chat ids).
pub fn new_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: [u8; 11] = rand::random();
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 63)]))
        .collect()
}

/// All rooms of this node, by name.
#[derive(Clone, Default)]
pub struct Rooms {
    rooms: Arc<Mutex<HashMap<String, Arc<Room>>>>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("count", &self.rooms.lock().len())
            .finish()
    }
}

impl Rooms {
    pub fn new() -> Self {
        Self::default()
    }

    /// The room called `name`, created empty if it does not exist. Whether a
    /// name may be used at all is the front end's decision.
    pub fn get_or_create(&self, name: &str) -> Arc<Room> {
        let mut rooms = self.rooms.lock();
        rooms
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Room::new(name.to_owned())))
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.lock().get(name).cloned()
    }

    /// Every room, sorted by name.
    pub fn list(&self) -> Vec<Arc<Room>> {
        let mut rooms: Vec<_> = self.rooms.lock().values().cloned().collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    /// Forgets rooms with no members, no chat and no lock.
    pub fn sweep(&self, now: SystemTime) {
        self.rooms.lock().retain(|_, room| !room.is_idle(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(id: &str, perms: &[Permission]) -> Participant {
        let mut p = Participant::new(id, id.to_uppercase(), FrontEnd::Galene);
        p.permissions = perms.iter().copied().collect();
        p
    }

    fn chat(from: &str, to: Option<&str>, text: &str, time: SystemTime) -> ChatMessage {
        ChatMessage {
            id: None,
            from: Some(from.into()),
            username: Some(from.into()),
            to: to.map(Into::into),
            kind: String::new(),
            value: Value::String(text.into()),
            time,
            privileged: false,
            noecho: false,
        }
    }

    #[test]
    fn join_gives_snapshot_then_own_event() {
        let rooms = Rooms::new();
        let room = rooms.get_or_create("a");
        let now = SystemTime::now();
        room.join(person("x", &[]), &JoinRules::default(), now)
            .unwrap();
        let mut j = room
            .join(person("y", &[]), &JoinRules::default(), now)
            .unwrap();
        assert_eq!(j.others.len(), 1);
        assert_eq!(j.others[0].id, "x");
        match j.events.try_recv().unwrap() {
            RoomEvent::ParticipantJoined(p) => assert_eq!(p.id, "y"),
            e => panic!("{e:?}"),
        }
        assert!(j.events.try_recv().is_err());
    }

    #[test]
    fn join_rules_are_enforced_and_ops_exempt() {
        let room = Rooms::new().get_or_create("a");
        let now = SystemTime::now();
        let capped = JoinRules {
            max_participants: 1,
            ..Default::default()
        };
        room.join(person("x", &[]), &capped, now).unwrap();
        assert_eq!(
            room.join(person("y", &[]), &capped, now).err(),
            Some(JoinError::Full)
        );
        let op = JoinRules {
            exempt: true,
            ..capped.clone()
        };
        room.join(person("y", &[Permission::Op]), &op, now).unwrap();
        assert_eq!(
            room.join(person("y", &[]), &op, now).err(),
            Some(JoinError::BadId)
        );
        room.lock(Some("exam".into()));
        assert_eq!(
            room.join(person("z", &[]), &JoinRules::default(), now)
                .err(),
            Some(JoinError::Locked {
                message: Some("exam".into())
            })
        );
        room.unlock();
        room.leave("y");
        let autokick = JoinRules {
            require_operator: true,
            ..Default::default()
        };
        assert_eq!(
            room.join(person("z", &[]), &autokick, now).err(),
            Some(JoinError::NoOperators)
        );
    }

    #[test]
    fn history_is_bounded_and_private_chat_not_stored() {
        let room = Rooms::new().get_or_create("a");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..60 {
            room.chat(chat("x", None, &format!("m{i}"), t0));
        }
        room.chat(chat("x", Some("y"), "private", t0));
        let h = room.history(t0);
        assert_eq!(h.len(), 50);
        assert_eq!(h[0].value, Value::String("m10".into()));
        assert!(
            h.iter()
                .all(|m| m.id.as_ref().is_some_and(|id| id.len() == 11))
        );
        let later = t0 + DEFAULT_HISTORY_AGE + Duration::from_secs(1);
        assert!(room.history(later).is_empty());
    }

    #[test]
    fn clear_chat_filters() {
        let room = Rooms::new().get_or_create("a");
        let t = SystemTime::now();
        let a = room.chat(chat("x", None, "1", t));
        room.chat(chat("x", None, "2", t));
        room.chat(chat("y", None, "3", t));
        room.clear_chat(ClearChat::Message {
            id: a.id.clone().unwrap(),
            from: "x".into(),
        });
        assert_eq!(room.history(t).len(), 2);
        room.clear_chat(ClearChat::From("x".into()));
        assert_eq!(room.history(t).len(), 1);
        room.clear_chat(ClearChat::All);
        assert!(room.history(t).is_empty());
    }

    #[test]
    fn kick_removes_and_announces() {
        let room = Rooms::new().get_or_create("a");
        let now = SystemTime::now();
        let mut j = room
            .join(person("x", &[]), &JoinRules::default(), now)
            .unwrap();
        let _ = j.events.try_recv();
        assert!(room.kick("x", None, None, "bye".into()));
        assert!(matches!(j.events.try_recv(), Ok(RoomEvent::Kicked { .. })));
        assert!(matches!(
            j.events.try_recv(),
            Ok(RoomEvent::ParticipantLeft { .. })
        ));
        assert!(room.is_empty());
        assert!(room.leave("x").is_none());
    }

    #[test]
    fn data_merge_deletes_nulls_and_sweep_forgets_idle_rooms() {
        let rooms = Rooms::new();
        let room = rooms.get_or_create("a");
        let mut m = Map::new();
        m.insert("k".into(), Value::from(1));
        room.merge_data(m);
        let mut m = Map::new();
        m.insert("k".into(), Value::Null);
        assert!(room.merge_data(m).is_empty());
        rooms.get_or_create("b").lock(None);
        rooms.sweep(SystemTime::now());
        assert!(rooms.get("a").is_none());
        assert!(rooms.get("b").is_some());
    }

    #[test]
    fn permissions_keep_order_without_duplicates() {
        let mut p: Permissions = [Permission::Op, Permission::Present, Permission::Op]
            .into_iter()
            .collect();
        p.prepend(Permission::Record);
        let names: Vec<_> = p.iter().map(Permission::as_str).collect();
        assert_eq!(names, ["record", "op", "present"]);
        assert_eq!(Permission::parse("caption"), Some(Permission::Caption));
        assert_eq!(Permission::parse("bogus"), None);
    }

    #[test]
    fn echo_rules() {
        let t = SystemTime::now();
        let mut m = chat("x", None, "hi", t);
        assert!(m.is_for("x") && m.is_for("y"));
        m.noecho = true;
        assert!(!m.is_for("x") && m.is_for("y"));
        let p = chat("x", Some("y"), "hi", t);
        assert!(!p.is_for("x") && p.is_for("y") && !p.is_for("z"));
    }
}
