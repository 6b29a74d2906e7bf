//! OWT room configurations, as the management API creates and returns them.
//!
//! The live room (members, chat) is the yard's shared [`yard::room::Room`] of the same
//! *name*; published streams live in the SFU. What stays here is what only OWT knows:
//! the room's `_id`, roles, limits and the structures OWT clients expect back (views,
//! mediaIn/Out, transcoding, notifying, sip), which are stored but do not change how the
//! SFU forwards.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::wire::{AudioVideo, Permission};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub role: String,
    pub publish: AudioVideo,
    pub subscribe: AudioVideo,
}

impl Role {
    pub fn permission(&self) -> Permission {
        Permission {
            publish: self.publish,
            subscribe: self.subscribe,
        }
    }
}

fn av(audio: bool, video: bool) -> AudioVideo {
    AudioVideo { audio, video }
}

/// OWT's five default roles.
pub fn default_roles() -> Vec<Role> {
    let r = |role: &str, pa, pv, sa, sv| Role {
        role: role.into(),
        publish: av(pa, pv),
        subscribe: av(sa, sv),
    };
    vec![
        r("presenter", true, true, true, true),
        r("viewer", false, false, true, true),
        r("audio_only_presenter", true, false, true, false),
        r("video_only_viewer", false, false, false, true),
        r("sip", true, true, true, true),
    ]
}

/// The stored-but-inert parts of an OWT room, with OWT's defaults.
fn default_extras() -> Map<String, Value> {
    let v = json!({
        "views": [],
        "mediaIn": {
            "audio": [
                {"codec": "opus", "sampleRate": 48000, "channelNum": 2},
                {"codec": "isac", "sampleRate": 16000},
                {"codec": "isac", "sampleRate": 32000},
                {"codec": "g722", "sampleRate": 16000, "channelNum": 1},
                {"codec": "pcma"}, {"codec": "pcmu"}, {"codec": "aac"},
                {"codec": "ac3"}, {"codec": "nellymoser"}, {"codec": "ilbc"}
            ],
            "video": [{"codec": "h264"}, {"codec": "vp8"}, {"codec": "vp9"}]
        },
        "mediaOut": {
            "audio": [{"codec": "opus", "sampleRate": 48000, "channelNum": 2}],
            "video": {
                "format": [{"codec": "h264", "profile": "CB"}, {"codec": "vp8"}, {"codec": "vp9"}],
                "parameters": {"resolution": [], "framerate": [], "bitrate": [], "keyFrameInterval": []}
            }
        },
        "transcoding": {
            "audio": true,
            "video": {"format": true, "parameters": {
                "resolution": true, "framerate": true, "bitrate": true, "keyFrameInterval": true}}
        },
        "notifying": {"participantActivities": true, "streamChange": true},
        "sip": {}
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// One room as the REST API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomConfig {
    pub id: String,
    /// The shared room's name: Galène clients join the group of this name.
    pub name: String,
    pub participant_limit: i64,
    pub input_limit: i64,
    pub roles: Vec<Role>,
    pub extras: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("Invalid room option")]
    InvalidOption,
    #[error("Bad room configuration")]
    BadConfiguration,
}

impl RoomConfig {
    pub fn new(id: String, name: String) -> Self {
        RoomConfig {
            id,
            name,
            participant_limit: -1,
            input_limit: -1,
            roles: default_roles(),
            extras: default_extras(),
        }
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.role == name)
    }

    fn flag(&self, pointer: &str) -> bool {
        self.extras_value()
            .pointer(pointer)
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    fn extras_value(&self) -> Value {
        Value::Object(self.extras.clone())
    }

    pub fn notify_participants(&self) -> bool {
        self.flag("/notifying/participantActivities")
    }

    pub fn notify_streams(&self) -> bool {
        self.flag("/notifying/streamChange")
    }

    /// Whether the room lets any audio (video) in: an empty `mediaIn` list forbids it.
    pub fn accepts(&self, kind: &str) -> bool {
        match self
            .extras
            .get("mediaIn")
            .and_then(|m| m.get(kind))
            .and_then(Value::as_array)
        {
            Some(list) => !list.is_empty(),
            None => true,
        }
    }

    /// Lower-case codec names of `mediaIn`, for the SFU's per-publication codec list.
    pub fn codecs(&self) -> Vec<String> {
        let mut out = Vec::new();
        for kind in ["audio", "video"] {
            if let Some(list) = self
                .extras
                .get("mediaIn")
                .and_then(|m| m.get(kind))
                .and_then(Value::as_array)
            {
                for f in list {
                    if let Some(c) = f.get("codec").and_then(Value::as_str) {
                        let c = c.to_ascii_lowercase();
                        if !out.contains(&c) {
                            out.push(c);
                        }
                    }
                }
            }
        }
        out
    }

    /// Apply `options` (a partial or full Room object) on top of this one.
    pub fn apply(&mut self, options: &Value) -> Result<(), RoomError> {
        let o = options.as_object().ok_or(RoomError::InvalidOption)?;
        for (k, v) in o {
            match k.as_str() {
                "_id" | "id" => {}
                "name" => {
                    self.name = v
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .ok_or(RoomError::BadConfiguration)?
                        .into()
                }
                "participantLimit" => {
                    self.participant_limit = v.as_i64().ok_or(RoomError::BadConfiguration)?
                }
                "inputLimit" => self.input_limit = v.as_i64().ok_or(RoomError::BadConfiguration)?,
                "roles" => {
                    self.roles = serde_json::from_value(v.clone())
                        .map_err(|_| RoomError::BadConfiguration)?
                }
                "views" | "mediaIn" | "mediaOut" | "transcoding" | "notifying" | "sip" => {
                    self.extras.insert(k.clone(), v.clone());
                }
                _ => return Err(RoomError::BadConfiguration),
            }
        }
        Ok(())
    }

    /// The REST form. `views` is always `[]`: Switchyard has no mixer.
    pub fn to_json(&self) -> Value {
        let mut m = self.extras.clone();
        m.insert("_id".into(), Value::from(self.id.as_str()));
        m.insert("id".into(), Value::from(self.id.as_str()));
        m.insert("name".into(), Value::from(self.name.as_str()));
        m.insert(
            "participantLimit".into(),
            Value::from(self.participant_limit),
        );
        m.insert("inputLimit".into(), Value::from(self.input_limit));
        m.insert(
            "roles".into(),
            serde_json::to_value(&self.roles).unwrap_or(Value::Null),
        );
        m.insert("views".into(), json!([]));
        Value::Object(m)
    }

    /// Inverse of [`RoomConfig::to_json`] (keeps stored views).
    pub fn from_json(v: &Value) -> Option<RoomConfig> {
        let id = v.get("_id")?.as_str()?.to_owned();
        let name = v.get("name")?.as_str()?.to_owned();
        let mut r = RoomConfig::new(id, name);
        r.apply(v).ok()?;
        Some(r)
    }
}

/// Every OWT room configuration, by id.
#[derive(Debug, Default)]
pub struct RoomConfigs {
    rooms: BTreeMap<String, RoomConfig>,
}

impl RoomConfigs {
    pub fn insert(&mut self, room: RoomConfig) {
        self.rooms.insert(room.id.clone(), room);
    }

    /// By `_id`, else by name: a Galène group's name works as an OWT room id.
    pub fn find(&self, id_or_name: &str) -> Option<&RoomConfig> {
        self.rooms
            .get(id_or_name)
            .or_else(|| self.rooms.values().find(|r| r.name == id_or_name))
    }

    pub fn find_mut(&mut self, id_or_name: &str) -> Option<&mut RoomConfig> {
        let id = self.find(id_or_name)?.id.clone();
        self.rooms.get_mut(&id)
    }

    pub fn remove(&mut self, id_or_name: &str) -> Option<RoomConfig> {
        let id = self.find(id_or_name)?.id.clone();
        self.rooms.remove(&id)
    }

    pub fn list(&self) -> impl Iterator<Item = &RoomConfig> {
        self.rooms.values()
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The room of `id_or_name`, created with defaults (id = name) if unknown, so that a
    /// Galène group can be entered from OWT without a REST call first.
    pub fn get_or_create(&mut self, id_or_name: &str) -> RoomConfig {
        if let Some(r) = self.find(id_or_name) {
            return r.clone();
        }
        let r = RoomConfig::new(id_or_name.to_owned(), id_or_name.to_owned());
        self.insert(r.clone());
        r
    }

    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rooms
                .values()
                .map(RoomConfig::to_json_stored)
                .collect(),
        )
    }

    pub fn from_json(v: &Value) -> RoomConfigs {
        let mut out = RoomConfigs::default();
        for r in v.as_array().into_iter().flatten() {
            if let Some(r) = RoomConfig::from_json(r) {
                out.insert(r);
            }
        }
        out
    }
}

impl RoomConfig {
    /// The persisted form keeps the stored `views`.
    fn to_json_stored(&self) -> Value {
        let mut v = self.to_json();
        if let (Some(m), Some(views)) = (v.as_object_mut(), self.extras.get("views")) {
            m.insert("views".into(), views.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_room_has_owt_defaults() {
        let r = RoomConfig::new("a".into(), "x".into());
        let v = r.to_json();
        assert_eq!(v["_id"], "a");
        assert_eq!(v["participantLimit"], -1);
        assert_eq!(v["inputLimit"], -1);
        let roles: Vec<&str> = v["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            [
                "presenter",
                "viewer",
                "audio_only_presenter",
                "video_only_viewer",
                "sip"
            ]
        );
        assert!(r.codecs().contains(&"opus".to_string()));
    }

    #[test]
    fn views_are_stored_but_reported_empty() {
        let mut r = RoomConfig::new("a".into(), "x".into());
        r.apply(&json!({"views": [{"label": "common"}]})).unwrap();
        assert_eq!(r.to_json()["views"], json!([]));
        let mut all = RoomConfigs::default();
        all.insert(r);
        let back = RoomConfigs::from_json(&all.to_json());
        assert_eq!(
            back.find("a").unwrap().extras["views"],
            json!([{"label": "common"}])
        );
        assert!(back.find("x").is_some());
    }

    #[test]
    fn bad_options_are_refused() {
        let mut r = RoomConfig::new("a".into(), "x".into());
        assert_eq!(r.apply(&json!(3)), Err(RoomError::InvalidOption));
        assert_eq!(
            r.apply(&json!({"participantLimit": "x"})),
            Err(RoomError::BadConfiguration)
        );
    }
}
