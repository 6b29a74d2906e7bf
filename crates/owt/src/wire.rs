//! The OWT Client–Portal protocol 1.1 as typed messages.
//!
//! Socket.IO delivers each request as an event name plus one JSON value; this module turns
//! that pair into a [`Request`] (checking it the way the 4.3.x portal's validator does, with
//! the same `request…` error strings) and turns [`Notification`]s, acks and the login result
//! back into JSON values. It does no I/O and never panics on input: every malformed request
//! becomes a [`WireError`] whose text is what the client receives in its `("error", …)` ack.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Why a request could not be decoded. The `Display` text is the portal's error string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// An event name the portal has no handler for.
    #[error("Unknown request: {0}")]
    UnknownEvent(String),
    /// Schema violation, with the ajv-style message the 4.3.x validator produces.
    #[error("{0}")]
    Invalid(String),
}

/// Client protocol version announced in `login`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVersion {
    /// `"1.1"`: StreamInfo video carries `original[]`.
    V1_1,
    /// `"1.0"`: StreamInfo video carries `format`/`parameters` directly.
    V1_0,
    /// No `protocol` field: acks say `success` instead of `ok`.
    Legacy,
}

/// Every client → server request of protocol 1.1.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Login(LoginRequest),
    /// The base64 ticket string.
    Relogin(String),
    Logout,
    RefreshReconnectionTicket,
    Text(TextRequest),
    Publish(PublishRequest),
    Unpublish(IdRequest),
    StreamControl(ControlRequest),
    Subscribe(SubscribeRequest),
    Unsubscribe(IdRequest),
    SubscriptionControl(ControlRequest),
    Soac(SoacRequest),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<UserAgent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UserAgent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdk: Option<Sdk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<NameVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<NameVersion>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sdk {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NameVersion {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl UserAgent {
    /// The 4.3.x portal insists on all six fields being non-empty strings.
    pub fn is_complete(&self) -> bool {
        let ok = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        let sdk = self
            .sdk
            .as_ref()
            .is_some_and(|s| ok(&s.kind) && ok(&s.version));
        let rt = self
            .runtime
            .as_ref()
            .is_some_and(|s| ok(&s.name) && ok(&s.version));
        let os = self
            .os
            .as_ref()
            .is_some_and(|s| ok(&s.name) && ok(&s.version));
        sdk && rt && os
    }
    /// Reconnection is granted by SDK type, not by the `reconnection` field.
    pub fn allows_reconnection(&self) -> bool {
        matches!(
            self.sdk.as_ref().and_then(|s| s.kind.as_deref()),
            Some("JavaScript" | "Objective-C" | "C++" | "Android")
        )
    }
}

/// `text`: the receiver is kept raw because "not a string" is itself an error the session
/// reports (`Invalid receiver`), and the message is echoed as whatever JSON was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextRequest {
    pub to: Value,
    pub message: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdRequest {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishRequest {
    pub media: PublishMedia,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
}

/// `false` on the wire is `None` here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishMedia {
    #[serde(with = "false_or")]
    pub audio: Option<PublishAudio>,
    #[serde(with = "false_or")]
    pub video: Option<PublishVideo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishAudio {
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishVideo {
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<PublishVideoParameters>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishVideoParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framerate: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeRequest {
    pub media: SubscribeMedia,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeMedia {
    #[serde(with = "false_or")]
    pub audio: Option<SubscribeAudio>,
    #[serde(with = "false_or")]
    pub video: Option<SubscribeVideo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeAudio {
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeVideo {
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<VideoFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<SubscribeVideoParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulcast_rid: Option<String>,
}

/// Subscription parameters; `bitrate` may be a number (kbps) or a multiplier string `"x0.8"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeVideoParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framerate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_frame_interval: Option<f64>,
}

/// `stream-control` and `subscription-control`; `data` depends on the operation and is
/// interpreted by the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    pub id: String,
    pub operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoacRequest {
    pub id: String,
    pub signaling: Signaling,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Signaling {
    Offer { sdp: String },
    Answer { sdp: String },
    Candidate { candidate: Candidate },
    RemovedCandidates { candidates: Value },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// As sent: the SDK prefixes it with `a=`.
    pub candidate: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u32>,
}

impl Candidate {
    /// The candidate attribute value without the SDK's `a=` prefix.
    pub fn attribute(&self) -> &str {
        self.candidate.strip_prefix("a=").unwrap_or(&self.candidate)
    }
}

mod false_or {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer, T: Serialize>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_bool(false),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum FalseOr<T> {
            Flag(bool),
            Value(T),
        }
        match FalseOr::<T>::deserialize(d)? {
            FalseOr::Flag(false) => Ok(None),
            FalseOr::Flag(true) => Err(serde::de::Error::custom("expected false or an object")),
            FalseOr::Value(v) => Ok(Some(v)),
        }
    }
}

/// Ids from clients must match `^[0-9a-zA-Z-]+$`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

// ---------------------------------------------------------------------------------------
// Validation with ajv-style messages.

struct At<'a> {
    path: String,
    value: &'a Value,
}

impl<'a> At<'a> {
    fn root(value: &'a Value) -> Self {
        At {
            path: "request".into(),
            value,
        }
    }
    fn err(&self, what: &str) -> WireError {
        WireError::Invalid(format!("{} {}", self.path, what))
    }
    fn object(&self) -> Result<&'a Map<String, Value>, WireError> {
        self.value
            .as_object()
            .ok_or_else(|| self.err("should be object"))
    }
    fn only(&self, allowed: &[&str]) -> Result<(), WireError> {
        let map = self.object()?;
        if map.keys().any(|k| !allowed.contains(&k.as_str())) {
            return Err(self.err("should NOT have additional properties"));
        }
        Ok(())
    }
    fn opt(&self, key: &str) -> Result<Option<At<'a>>, WireError> {
        Ok(self.object()?.get(key).map(|v| At {
            path: format!("{}.{}", self.path, key),
            value: v,
        }))
    }
    fn req(&self, key: &str) -> Result<At<'a>, WireError> {
        self.opt(key)?
            .ok_or_else(|| self.err(&format!("should have required property '{key}'")))
    }
    fn string(&self) -> Result<String, WireError> {
        self.value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.err("should be string"))
    }
    fn one_of(&self, allowed: &[&str]) -> Result<String, WireError> {
        let s = self.string()?;
        if allowed.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(self.err("should be equal to one of the allowed values"))
        }
    }
    fn id(&self) -> Result<String, WireError> {
        let s = self.string()?;
        if is_valid_id(&s) {
            Ok(s)
        } else {
            Err(self.err("should match pattern \"^[0-9a-zA-Z\\-]+$\""))
        }
    }
    fn number(&self) -> Result<f64, WireError> {
        self.value
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| self.err("should be number"))
    }
    fn dimension(&self) -> Result<u32, WireError> {
        let n = self.number()?;
        if (0.0..=f64::from(u32::MAX)).contains(&n) {
            Ok(n.round() as u32)
        } else {
            Err(self.err("should be >= 0"))
        }
    }
    /// `false` or an object: `None` for `false`.
    fn false_or_object(&self) -> Result<Option<()>, WireError> {
        match self.value {
            Value::Bool(false) => Ok(None),
            Value::Object(_) => Ok(Some(())),
            _ => Err(self.err("should be object or false")),
        }
    }
}

fn resolution(at: &At<'_>) -> Result<Resolution, WireError> {
    at.only(&["width", "height"])?;
    Ok(Resolution {
        width: at.req("width")?.dimension()?,
        height: at.req("height")?.dimension()?,
    })
}

fn audio_format(at: &At<'_>) -> Result<AudioFormat, WireError> {
    at.only(&["codec", "sampleRate", "channelNum"])?;
    Ok(AudioFormat {
        codec: at.req("codec")?.string()?,
        sample_rate: at.opt("sampleRate")?.map(|a| a.dimension()).transpose()?,
        channel_num: at.opt("channelNum")?.map(|a| a.dimension()).transpose()?,
    })
}

fn video_format(at: &At<'_>) -> Result<VideoFormat, WireError> {
    at.only(&["codec", "profile"])?;
    Ok(VideoFormat {
        codec: at.req("codec")?.string()?,
        profile: at.opt("profile")?.map(|a| a.string()).transpose()?,
    })
}

const AUDIO_SOURCES: &[&str] = &["mic", "screen-cast", "raw-file", "encoded-file"];
const VIDEO_SOURCES: &[&str] = &["camera", "screen-cast", "raw-file", "encoded-file"];

fn publish(v: &Value) -> Result<PublishRequest, WireError> {
    let root = At::root(v);
    root.only(&["media", "attributes"])?;
    let media = root.req("media")?;
    media.only(&["audio", "video"])?;
    let audio_at = media.req("audio")?;
    let video_at = media.req("video")?;
    let audio = match audio_at.false_or_object()? {
        None => None,
        Some(()) => {
            audio_at.only(&["source"])?;
            Some(PublishAudio {
                source: audio_at.req("source")?.one_of(AUDIO_SOURCES)?,
            })
        }
    };
    let video = match video_at.false_or_object()? {
        None => None,
        Some(()) => {
            video_at.only(&["source", "parameters"])?;
            let source = video_at.req("source")?.one_of(VIDEO_SOURCES)?;
            let parameters = match video_at.opt("parameters")? {
                None => None,
                Some(p) => {
                    p.only(&["resolution", "framerate"])?;
                    Some(PublishVideoParameters {
                        resolution: p.opt("resolution")?.map(|r| resolution(&r)).transpose()?,
                        framerate: p.opt("framerate")?.map(|f| f.number()).transpose()?,
                    })
                }
            };
            Some(PublishVideo { source, parameters })
        }
    };
    let attributes = match root.opt("attributes")? {
        None => None,
        Some(a) => Some(a.object()?.clone()),
    };
    Ok(PublishRequest {
        media: PublishMedia { audio, video },
        attributes,
    })
}

fn subscribe(v: &Value) -> Result<SubscribeRequest, WireError> {
    let root = At::root(v);
    root.only(&["media"])?;
    let media = root.req("media")?;
    media.only(&["audio", "video"])?;
    let audio_at = media.req("audio")?;
    let video_at = media.req("video")?;
    let audio = match audio_at.false_or_object()? {
        None => None,
        Some(()) => {
            audio_at.only(&["from", "format"])?;
            Some(SubscribeAudio {
                from: audio_at.req("from")?.string()?,
                format: audio_at
                    .opt("format")?
                    .map(|f| audio_format(&f))
                    .transpose()?,
            })
        }
    };
    let video = match video_at.false_or_object()? {
        None => None,
        Some(()) => {
            video_at.only(&["from", "format", "parameters", "simulcastRid"])?;
            let parameters = match video_at.opt("parameters")? {
                None => None,
                Some(p) => Some(video_parameters(&p)?),
            };
            Some(SubscribeVideo {
                from: video_at.req("from")?.string()?,
                format: video_at
                    .opt("format")?
                    .map(|f| video_format(&f))
                    .transpose()?,
                parameters,
                simulcast_rid: video_at
                    .opt("simulcastRid")?
                    .map(|r| r.string())
                    .transpose()?,
            })
        }
    };
    Ok(SubscribeRequest {
        media: SubscribeMedia { audio, video },
    })
}

fn video_parameters(p: &At<'_>) -> Result<SubscribeVideoParameters, WireError> {
    p.only(&["resolution", "framerate", "bitrate", "keyFrameInterval"])?;
    let bitrate = match p.opt("bitrate")? {
        None => None,
        Some(b) => match b.value {
            Value::Number(_) => Some(Value::from(b.number()?)),
            Value::String(s) => Some(Value::String(s.clone())),
            _ => return Err(b.err("should be number,string")),
        },
    };
    Ok(SubscribeVideoParameters {
        resolution: p.opt("resolution")?.map(|r| resolution(&r)).transpose()?,
        framerate: p.opt("framerate")?.map(|f| f.number()).transpose()?,
        bitrate,
        key_frame_interval: p.opt("keyFrameInterval")?.map(|f| f.number()).transpose()?,
    })
}

fn control(v: &Value, operations: &[&str]) -> Result<ControlRequest, WireError> {
    let root = At::root(v);
    root.only(&["id", "operation", "data"])?;
    Ok(ControlRequest {
        id: root.req("id")?.id()?,
        operation: root.req("operation")?.one_of(operations)?,
        data: root.opt("data")?.map(|d| d.value.clone()),
    })
}

fn soac(v: &Value) -> Result<SoacRequest, WireError> {
    let root = At::root(v);
    let id = root.req("id")?.string()?;
    if !is_valid_id(&id) {
        return Err(WireError::Invalid("Invalid session id".into()));
    }
    let sig = root.req("signaling")?;
    let kind = sig.req("type")?.string()?;
    let signaling = match kind.as_str() {
        "offer" => Signaling::Offer {
            sdp: sig.req("sdp")?.string()?,
        },
        "answer" => Signaling::Answer {
            sdp: sig.req("sdp")?.string()?,
        },
        "candidate" => {
            let c = sig.req("candidate")?;
            let sdp_m_line_index = match c.opt("sdpMLineIndex")? {
                None => None,
                Some(i) if i.value.is_null() => None,
                Some(i) => Some(i.dimension()?),
            };
            Signaling::Candidate {
                candidate: Candidate {
                    candidate: c.req("candidate")?.string()?,
                    sdp_mid: match c.opt("sdpMid")? {
                        Some(m) if !m.value.is_null() => Some(m.string()?),
                        _ => None,
                    },
                    sdp_m_line_index,
                },
            }
        }
        "removed-candidates" => Signaling::RemovedCandidates {
            candidates: sig
                .opt("candidates")?
                .map(|c| c.value.clone())
                .unwrap_or(Value::Null),
        },
        _ => return Err(WireError::Invalid("Invalid signaling type".into())),
    };
    Ok(SoacRequest { id, signaling })
}

fn id_request(v: &Value, invalid: &str) -> Result<IdRequest, WireError> {
    let root = At::root(v);
    let id = root.req("id")?.string()?;
    if !is_valid_id(&id) {
        return Err(WireError::Invalid(invalid.into()));
    }
    Ok(IdRequest { id })
}

fn login(v: &Value) -> Result<LoginRequest, WireError> {
    let root = At::root(v);
    let token = root.req("token")?.string()?;
    let protocol = match root.opt("protocol")? {
        None => None,
        Some(p) => Some(p.string()?),
    };
    // The portal checks the agent by hand; a malformed one is "incorrect", not a schema error.
    let user_agent = match root.opt("userAgent")? {
        None => None,
        Some(u) => Some(
            serde_json::from_value::<UserAgent>(u.value.clone())
                .map_err(|_| WireError::Invalid("User agent info is incorrect".into()))?,
        ),
    };
    Ok(LoginRequest {
        token,
        user_agent,
        protocol,
    })
}

impl Request {
    /// Decode one Socket.IO event. `data` is `Value::Null` when the event carried none.
    pub fn decode(event: &str, data: &Value) -> Result<Request, WireError> {
        Ok(match event {
            "login" => Request::Login(login(data)?),
            "relogin" => Request::Relogin(
                data.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| WireError::Invalid("Invalid reconnection ticket".into()))?,
            ),
            "logout" => Request::Logout,
            "refreshReconnectionTicket" => Request::RefreshReconnectionTicket,
            "text" => {
                let root = At::root(data);
                root.object()?;
                Request::Text(TextRequest {
                    to: root
                        .opt("to")?
                        .map(|t| t.value.clone())
                        .unwrap_or(Value::Null),
                    message: root
                        .opt("message")?
                        .map(|m| m.value.clone())
                        .unwrap_or(Value::Null),
                })
            }
            "publish" => Request::Publish(publish(data)?),
            "unpublish" => Request::Unpublish(id_request(data, "Invalid stream id")?),
            "stream-control" => Request::StreamControl(control(
                data,
                &["mix", "unmix", "set-region", "get-region", "pause", "play"],
            )?),
            "subscribe" => Request::Subscribe(subscribe(data)?),
            "unsubscribe" => Request::Unsubscribe(id_request(data, "Invalid subscription id")?),
            "subscription-control" => {
                Request::SubscriptionControl(control(data, &["update", "pause", "play"])?)
            }
            "soac" => Request::Soac(soac(data)?),
            other => return Err(WireError::UnknownEvent(other.into())),
        })
    }

    pub fn event(&self) -> &'static str {
        match self {
            Request::Login(_) => "login",
            Request::Relogin(_) => "relogin",
            Request::Logout => "logout",
            Request::RefreshReconnectionTicket => "refreshReconnectionTicket",
            Request::Text(_) => "text",
            Request::Publish(_) => "publish",
            Request::Unpublish(_) => "unpublish",
            Request::StreamControl(_) => "stream-control",
            Request::Subscribe(_) => "subscribe",
            Request::Unsubscribe(_) => "unsubscribe",
            Request::SubscriptionControl(_) => "subscription-control",
            Request::Soac(_) => "soac",
        }
    }

    /// The event's data as a client would send it (`Null` for the data-less requests).
    pub fn data(&self) -> Value {
        let to = |v: &dyn erased::Ser| v.to_json();
        match self {
            Request::Login(r) => to(r),
            Request::Relogin(t) => Value::String(t.clone()),
            Request::Logout | Request::RefreshReconnectionTicket => Value::Null,
            Request::Text(r) => to(r),
            Request::Publish(r) => to(r),
            Request::Unpublish(r) | Request::Unsubscribe(r) => to(r),
            Request::StreamControl(r) | Request::SubscriptionControl(r) => to(r),
            Request::Subscribe(r) => to(r),
            Request::Soac(r) => to(r),
        }
    }
}

mod erased {
    pub trait Ser {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server → client.

/// An ack: on the wire `43<id>["ok",data]` or `43<id>["error","reason"]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    Ok(Option<Value>),
    Error(String),
}

impl Ack {
    pub fn ok() -> Self {
        Ack::Ok(None)
    }
    pub fn ok_with(v: Value) -> Self {
        Ack::Ok(Some(v))
    }
    pub fn error(s: impl Into<String>) -> Self {
        Ack::Error(s.into())
    }
    /// The ack callback's arguments; legacy clients (no `protocol`) expect `success`.
    pub fn args(&self, protocol: ProtocolVersion) -> Vec<Value> {
        let word = if protocol == ProtocolVersion::Legacy {
            "success"
        } else {
            "ok"
        };
        match self {
            Ack::Ok(None) => vec![Value::from(word)],
            Ack::Ok(Some(v)) => vec![Value::from(word), v.clone()],
            Ack::Error(e) => vec![Value::from("error"), Value::from(e.as_str())],
        }
    }
    /// Inverse of [`Ack::args`], for clients and tests.
    pub fn from_args(args: &[Value]) -> Option<Ack> {
        match args {
            [Value::String(w)] if w == "ok" || w == "success" => Some(Ack::Ok(None)),
            [Value::String(w), v] if w == "ok" || w == "success" => Some(Ack::Ok(Some(v.clone()))),
            [Value::String(w), Value::String(e)] if w == "error" => Some(Ack::Error(e.clone())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    pub user: String,
    pub role: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AudioVideo {
    pub audio: bool,
    pub video: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Permission {
    pub publish: AudioVideo,
    pub subscribe: AudioVideo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginResult {
    pub id: String,
    pub user: String,
    pub role: String,
    pub permission: Permission,
    pub room: RoomInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnection_ticket: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub id: String,
    pub views: Vec<String>,
    pub streams: Vec<Value>,
    pub participants: Vec<ParticipantInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackStatus {
    Active,
    Inactive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioFormat {
    pub codec: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_num: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoFormat {
    pub codec: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framerate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_frame_interval: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoOriginal {
    pub format: VideoFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<VideoParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulcast_rid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioInfo {
    pub status: TrackStatus,
    pub source: String,
    pub format: AudioFormat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    pub status: TrackStatus,
    pub source: String,
    /// Never empty: the SDK iterates it to build publication settings.
    pub original: Vec<VideoOriginal>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamMedia {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardInfo {
    pub owner: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub in_views: Vec<String>,
    pub attributes: Map<String, Value>,
}

/// StreamInfo 1.1 of a forward stream (Switchyard has no mixer, so never `mixed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub media: StreamMedia,
    pub info: ForwardInfo,
}

impl StreamInfo {
    /// The StreamInfo as a client of `protocol` expects it: 1.0 clients get the primary
    /// video format and parameters in place of `original[]`.
    pub fn to_wire(&self, protocol: ProtocolVersion) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if protocol == ProtocolVersion::V1_0
            && let Some(video) = v.pointer_mut("/media/video").and_then(Value::as_object_mut)
        {
            let first = video
                .remove("original")
                .and_then(|o| o.as_array().and_then(|a| a.first().cloned()))
                .unwrap_or(Value::Null);
            if let Some(f) = first.get("format") {
                video.insert("format".into(), f.clone());
            }
            if let Some(p) = first.get("parameters") {
                video.insert("parameters".into(), p.clone());
            }
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParticipantAction {
    Join(ParticipantInfo),
    Leave(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Add(Value),
    Remove,
    Update { field: String, value: Value },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProgressStatus {
    /// `{type: "answer", sdp}` in practice.
    Soac(Value),
    Ready,
    Error(String),
}

/// The five notifications the SDK listens for.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    Participant(ParticipantAction),
    Stream {
        id: String,
        event: StreamEvent,
    },
    Text {
        from: String,
        to: String,
        message: Value,
    },
    Progress {
        id: String,
        status: ProgressStatus,
    },
    Drop,
}

impl Notification {
    pub fn event(&self) -> &'static str {
        match self {
            Notification::Participant(_) => "participant",
            Notification::Stream { .. } => "stream",
            Notification::Text { .. } => "text",
            Notification::Progress { .. } => "progress",
            Notification::Drop => "drop",
        }
    }

    pub fn data(&self) -> Value {
        match self {
            Notification::Participant(ParticipantAction::Join(p)) => {
                json!({"action": "join", "data": p})
            }
            Notification::Participant(ParticipantAction::Leave(id)) => {
                json!({"action": "leave", "data": id})
            }
            Notification::Stream {
                id,
                event: StreamEvent::Add(info),
            } => {
                json!({"id": id, "status": "add", "data": info})
            }
            Notification::Stream {
                id,
                event: StreamEvent::Remove,
            } => {
                json!({"id": id, "status": "remove"})
            }
            Notification::Stream {
                id,
                event: StreamEvent::Update { field, value },
            } => {
                json!({"id": id, "status": "update", "data": {"field": field, "value": value}})
            }
            Notification::Text { from, to, message } => {
                json!({"from": from, "to": to, "message": message})
            }
            Notification::Progress {
                id,
                status: ProgressStatus::Soac(s),
            } => {
                json!({"id": id, "status": "soac", "data": s})
            }
            Notification::Progress {
                id,
                status: ProgressStatus::Ready,
            } => {
                json!({"id": id, "status": "ready"})
            }
            Notification::Progress {
                id,
                status: ProgressStatus::Error(e),
            } => {
                json!({"id": id, "status": "error", "data": e})
            }
            Notification::Drop => Value::Null,
        }
    }

    /// Inverse of [`Notification::event`] + [`Notification::data`], used by clients and tests.
    pub fn decode(event: &str, data: &Value) -> Option<Notification> {
        let s = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(match event {
            "participant" => match s("action")?.as_str() {
                "join" => Notification::Participant(ParticipantAction::Join(
                    serde_json::from_value(data.get("data")?.clone()).ok()?,
                )),
                "leave" => Notification::Participant(ParticipantAction::Leave(
                    data.get("data")?.as_str()?.to_owned(),
                )),
                _ => return None,
            },
            "stream" => {
                let id = s("id")?;
                let event = match s("status")?.as_str() {
                    "add" => StreamEvent::Add(data.get("data")?.clone()),
                    "remove" => StreamEvent::Remove,
                    "update" => {
                        let d = data.get("data")?;
                        StreamEvent::Update {
                            field: d.get("field")?.as_str()?.to_owned(),
                            value: d.get("value")?.clone(),
                        }
                    }
                    _ => return None,
                };
                Notification::Stream { id, event }
            }
            "text" => Notification::Text {
                from: s("from")?,
                to: s("to")?,
                message: data.get("message")?.clone(),
            },
            "progress" => {
                let id = s("id")?;
                let status = match s("status")?.as_str() {
                    "soac" => ProgressStatus::Soac(data.get("data")?.clone()),
                    "ready" => ProgressStatus::Ready,
                    "error" => ProgressStatus::Error(data.get("data")?.as_str()?.to_owned()),
                    _ => return None,
                };
                Notification::Progress { id, status }
            }
            "drop" => Notification::Drop,
            _ => return None,
        })
    }
}

/// Decode an event from raw JSON bytes `["name", data]`: the entry point of the fuzz
/// target, and what a load generator uses to parse server traffic.
pub fn decode_event_bytes(bytes: &[u8]) -> Result<Request, WireError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| WireError::Invalid(format!("request is not JSON: {e}")))?;
    let arr = v
        .as_array()
        .ok_or_else(|| WireError::Invalid("request should be array".into()))?;
    let name = arr
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| WireError::Invalid("request should start with an event name".into()))?;
    let data = arr.get(1).cloned().unwrap_or(Value::Null);
    Request::decode(name, &data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn publish_without_video_names_the_missing_property() {
        let e = Request::decode("publish", &json!({"media": {"audio": {"source": "mic"}}}));
        assert_eq!(
            e,
            Err(WireError::Invalid(
                "request.media should have required property 'video'".into()
            ))
        );
    }

    #[test]
    fn publish_rejects_unknown_fields_and_sources() {
        let e = Request::decode(
            "publish",
            &json!({"media": {"audio": false, "video": {"source": "webcam"}}}),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "request.media.video.source should be equal to one of the allowed values"
        );
        let e = Request::decode(
            "publish",
            &json!({"media": {"audio": false, "video": false}, "x": 1}),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "request should NOT have additional properties"
        );
    }

    #[test]
    fn sdk_publish_decodes() {
        let r = Request::decode(
            "publish",
            &json!({"media": {"audio": {"source": "mic"}, "video": {"source": "camera",
                "parameters": {"resolution": {"width": 640, "height": 480}, "framerate": 30}}},
                "attributes": {"label": "camera"}}),
        )
        .unwrap();
        let Request::Publish(p) = r else { panic!() };
        assert_eq!(p.media.audio.unwrap().source, "mic");
        let v = p.media.video.unwrap();
        assert_eq!(
            v.parameters.unwrap().resolution,
            Some(Resolution {
                width: 640,
                height: 480
            })
        );
    }

    #[test]
    fn soac_candidate_strips_prefix_and_checks_type() {
        let r = Request::decode(
            "soac",
            &json!({"id": "123", "signaling": {"type": "candidate", "candidate":
                {"candidate": "a=candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}}}),
        )
        .unwrap();
        let Request::Soac(SoacRequest {
            signaling: Signaling::Candidate { candidate },
            ..
        }) = r
        else {
            panic!()
        };
        assert!(candidate.attribute().starts_with("candidate:1 "));
        let e = Request::decode(
            "soac",
            &json!({"id": "1", "signaling": {"type": "pranswer"}}),
        );
        assert_eq!(e.unwrap_err().to_string(), "Invalid signaling type");
        let e = Request::decode(
            "soac",
            &json!({"id": "a b", "signaling": {"type": "offer"}}),
        );
        assert_eq!(e.unwrap_err().to_string(), "Invalid session id");
    }

    #[test]
    fn querybwe_is_refused() {
        let e = Request::decode(
            "subscription-control",
            &json!({"id": "1", "operation": "querybwe"}),
        );
        assert!(e.unwrap_err().to_string().starts_with("request.operation"));
    }

    #[test]
    fn acks_have_the_portal_shape() {
        assert_eq!(Ack::ok().args(ProtocolVersion::V1_1), vec![json!("ok")]);
        assert_eq!(
            Ack::ok().args(ProtocolVersion::Legacy),
            vec![json!("success")]
        );
        assert_eq!(
            Ack::error("Illegal request").args(ProtocolVersion::V1_1),
            vec![json!("error"), json!("Illegal request")]
        );
    }

    #[test]
    fn notifications_have_the_sdk_shape() {
        let n = Notification::Participant(ParticipantAction::Leave("abc".into()));
        assert_eq!(n.data(), json!({"action": "leave", "data": "abc"}));
        let n = Notification::Progress {
            id: "1".into(),
            status: ProgressStatus::Ready,
        };
        assert_eq!(n.data(), json!({"id": "1", "status": "ready"}));
    }

    #[test]
    fn protocol_1_0_gets_flat_video() {
        let info = StreamInfo {
            id: "1".into(),
            kind: "forward".into(),
            media: StreamMedia {
                audio: None,
                video: Some(VideoInfo {
                    status: TrackStatus::Active,
                    source: "camera".into(),
                    original: vec![VideoOriginal {
                        format: VideoFormat {
                            codec: "vp8".into(),
                            profile: None,
                        },
                        parameters: None,
                        simulcast_rid: None,
                    }],
                }),
            },
            info: ForwardInfo {
                owner: "o".into(),
                kind: "webrtc".into(),
                in_views: vec![],
                attributes: Map::new(),
            },
        };
        let v = info.to_wire(ProtocolVersion::V1_0);
        assert_eq!(v.pointer("/media/video/format/codec"), Some(&json!("vp8")));
        assert!(v.pointer("/media/video/original").is_none());
        let v = info.to_wire(ProtocolVersion::V1_1);
        assert!(v.pointer("/media/video/original/0").is_some());
    }

    fn id() -> impl Strategy<Value = String> {
        "[0-9a-zA-Z-]{1,20}"
    }
    fn text() -> impl Strategy<Value = String> {
        ".{0,20}"
    }
    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }
    fn resolution_s() -> impl Strategy<Value = Resolution> {
        (0u32..10000, 0u32..10000).prop_map(|(width, height)| Resolution { width, height })
    }
    fn num() -> impl Strategy<Value = f64> {
        (0u32..100000).prop_map(|n| f64::from(n) / 4.0)
    }

    fn request() -> impl Strategy<Value = Request> {
        let ua = (
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
        )
            .prop_map(|(a, b, c, d, e, f)| UserAgent {
                sdk: Some(Sdk {
                    kind: a,
                    version: b,
                }),
                runtime: Some(NameVersion {
                    name: c,
                    version: d,
                }),
                os: Some(NameVersion {
                    name: e,
                    version: f,
                }),
            });
        let login = (text(), proptest::option::of(ua), opt_text()).prop_map(
            |(token, user_agent, protocol)| {
                Request::Login(LoginRequest {
                    token,
                    user_agent,
                    protocol,
                })
            },
        );
        let publish = (
            proptest::option::of(proptest::sample::select(AUDIO_SOURCES)),
            proptest::option::of((
                proptest::sample::select(VIDEO_SOURCES),
                proptest::option::of((
                    proptest::option::of(resolution_s()),
                    proptest::option::of(num()),
                )),
            )),
            proptest::option::of(proptest::collection::btree_map(text(), text(), 0..3)),
        )
            .prop_map(|(a, v, attrs)| {
                Request::Publish(PublishRequest {
                    media: PublishMedia {
                        audio: a.map(|s| PublishAudio { source: s.into() }),
                        video: v.map(|(s, p)| PublishVideo {
                            source: s.into(),
                            parameters: p.map(|(resolution, framerate)| PublishVideoParameters {
                                resolution,
                                framerate,
                            }),
                        }),
                    },
                    attributes: attrs
                        .map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
                })
            });
        let subscribe = (
            proptest::option::of((
                text(),
                proptest::option::of((text(), proptest::option::of(0u32..96000))),
            )),
            proptest::option::of((
                text(),
                proptest::option::of((text(), opt_text())),
                proptest::option::of((
                    proptest::option::of(resolution_s()),
                    proptest::option::of(num()),
                )),
                opt_text(),
            )),
        )
            .prop_map(|(a, v)| {
                Request::Subscribe(SubscribeRequest {
                    media: SubscribeMedia {
                        audio: a.map(|(from, f)| SubscribeAudio {
                            from,
                            format: f.map(|(codec, sample_rate)| AudioFormat {
                                codec,
                                sample_rate,
                                channel_num: None,
                            }),
                        }),
                        video: v.map(|(from, f, p, rid)| SubscribeVideo {
                            from,
                            format: f.map(|(codec, profile)| VideoFormat { codec, profile }),
                            parameters: p.map(|(resolution, bitrate)| SubscribeVideoParameters {
                                resolution,
                                framerate: None,
                                bitrate: bitrate.map(Value::from),
                                key_frame_interval: None,
                            }),
                            simulcast_rid: rid,
                        }),
                    },
                })
            });
        let soac = (
            id(),
            prop_oneof![
                text().prop_map(|sdp| Signaling::Offer { sdp }),
                text().prop_map(|sdp| Signaling::Answer { sdp }),
                (text(), opt_text(), proptest::option::of(0u32..8)).prop_map(|(c, m, i)| {
                    Signaling::Candidate {
                        candidate: Candidate {
                            candidate: c,
                            sdp_mid: m,
                            sdp_m_line_index: i,
                        },
                    }
                }),
            ],
        )
            .prop_map(|(id, signaling)| Request::Soac(SoacRequest { id, signaling }));
        let control = || {
            (
                id(),
                proptest::sample::select(&["pause", "play"][..]),
                proptest::option::of(proptest::sample::select(&["audio", "video", "av"][..])),
            )
        };
        prop_oneof![
            login,
            text().prop_map(Request::Relogin),
            Just(Request::Logout),
            Just(Request::RefreshReconnectionTicket),
            (text(), text()).prop_map(|(t, m)| Request::Text(TextRequest {
                to: Value::String(t),
                message: Value::String(m)
            })),
            publish,
            subscribe,
            soac,
            id().prop_map(|id| Request::Unpublish(IdRequest { id })),
            id().prop_map(|id| Request::Unsubscribe(IdRequest { id })),
            control().prop_map(|(id, op, d)| Request::StreamControl(ControlRequest {
                id,
                operation: op.into(),
                data: d.map(Value::from)
            })),
            control().prop_map(|(id, op, d)| Request::SubscriptionControl(ControlRequest {
                id,
                operation: op.into(),
                data: d.map(Value::from)
            })),
        ]
    }

    fn notification() -> impl Strategy<Value = Notification> {
        prop_oneof![
            (id(), text(), text()).prop_map(|(id, user, role)| Notification::Participant(
                ParticipantAction::Join(ParticipantInfo { id, user, role })
            )),
            id().prop_map(|id| Notification::Participant(ParticipantAction::Leave(id))),
            id().prop_map(|id| Notification::Stream {
                id,
                event: StreamEvent::Remove
            }),
            (id(), text(), text()).prop_map(|(id, field, v)| Notification::Stream {
                id,
                event: StreamEvent::Update {
                    field,
                    value: Value::String(v)
                }
            }),
            (id(), id(), text()).prop_map(|(from, to, m)| Notification::Text {
                from,
                to,
                message: Value::String(m)
            }),
            (id(), text()).prop_map(|(id, e)| Notification::Progress {
                id,
                status: ProgressStatus::Error(e)
            }),
            id().prop_map(|id| Notification::Progress {
                id,
                status: ProgressStatus::Ready
            }),
            Just(Notification::Drop),
        ]
    }

    proptest! {
        #[test]
        fn request_roundtrip(r in request()) {
            // Through the bytes a socket would carry, not just the value.
            let bytes = serde_json::to_vec(&json!([r.event(), r.data()])).unwrap();
            let back = decode_event_bytes(&bytes);
            prop_assert_eq!(back, Ok(r));
        }

        #[test]
        fn notification_roundtrip(n in notification()) {
            prop_assert_eq!(Notification::decode(n.event(), &n.data()), Some(n));
        }

        #[test]
        fn ack_roundtrip(e in text(), d in proptest::option::of(text())) {
            for a in [Ack::Error(e.clone()), Ack::Ok(d.clone().map(Value::String))] {
                prop_assert_eq!(Ack::from_args(&a.args(ProtocolVersion::V1_1)), Some(a));
            }
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_event_bytes(&bytes);
        }

        #[test]
        fn any_json_never_panics(event in proptest::sample::select(&[
            "login", "relogin", "text", "publish", "subscribe", "soac", "unpublish",
            "stream-control", "subscription-control", "unsubscribe"][..]),
            s in "[\\[\\]{}\":,a-z0-9 .-]{0,80}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = Request::decode(event, &v);
            }
        }
    }
}
