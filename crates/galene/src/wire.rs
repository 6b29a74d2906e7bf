//! Galène's JSON messages (protocol version "2").
//!
//! Galène has one flat message shape for every type, with every field
//! optional; so does this module. Decoding is lenient the way Galène's is:
//! unknown fields are ignored and `null` means absent. For string fields
//! absent, `null` and `""` are the same thing, except `username`, where `""`
//! is a real (empty) name; decoding normalises to `None` so that the session
//! has only one case to consider. Encoding follows Go's `omitempty`: no
//! `false`, no empty strings, arrays or objects, but `username` whenever set.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Inbound frames larger than this are a fatal read error, as in Galène.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;

/// The only protocol version spoken.
pub const PROTOCOL_VERSION: &str = "2";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Json(String),
}

/// Every field any Galène message may carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub r#type: String,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub kind: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_vec",
        skip_serializing_if = "vec_is_unset"
    )]
    pub version: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub error: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub id: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub replace: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub source: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub dest: Option<String>,
    /// `Some("")` is an empty username, `None` no username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub password: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub token: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_false",
        skip_serializing_if = "is_false"
    )]
    pub privileged: bool,
    #[serde(
        default,
        deserialize_with = "nonempty_vec",
        skip_serializing_if = "vec_is_unset"
    )]
    pub permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(
        default,
        deserialize_with = "nonempty_map",
        skip_serializing_if = "map_is_unset"
    )]
    pub data: Option<Map<String, Value>>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(
        default,
        deserialize_with = "null_false",
        skip_serializing_if = "is_false"
    )]
    pub noecho: bool,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub time: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub sdp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<IceCandidate>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub label: Option<String>,
    /// An object for `request`, an array or null for `requestStream`; left
    /// uninterpreted because a badly typed request is a session-level error
    /// (close 1011), not a decoding one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtc_configuration: Option<Value>,
}

/// The W3C `RTCIceCandidateInit` dictionary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    #[serde(default, deserialize_with = "null_string")]
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A group's status, as in `.status` and inside `joined`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default, deserialize_with = "null_string")]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub redirect: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub location: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub endpoint: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub display_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub description: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub auth_server: Option<String>,
    #[serde(
        default,
        deserialize_with = "nonempty_string",
        skip_serializing_if = "is_unset"
    )]
    pub auth_portal: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_false",
        skip_serializing_if = "is_false"
    )]
    pub locked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_count: Option<u64>,
    #[serde(
        default,
        deserialize_with = "null_false",
        skip_serializing_if = "is_false"
    )]
    pub can_change_password: bool,
}

/// The `type` of a message, as the session dispatches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Handshake,
    Ping,
    Pong,
    Join,
    Joined,
    User,
    Request,
    RequestStream,
    Offer,
    Answer,
    Ice,
    Renegotiate,
    Close,
    Abort,
    Chat,
    ChatHistory,
    UserMessage,
    UserAction,
    GroupAction,
    Unknown,
}

impl MessageType {
    pub fn parse(s: &str) -> MessageType {
        match s {
            "handshake" => MessageType::Handshake,
            "ping" => MessageType::Ping,
            "pong" => MessageType::Pong,
            "join" => MessageType::Join,
            "joined" => MessageType::Joined,
            "user" => MessageType::User,
            "request" => MessageType::Request,
            "requestStream" => MessageType::RequestStream,
            "offer" => MessageType::Offer,
            "answer" => MessageType::Answer,
            "ice" => MessageType::Ice,
            "renegotiate" => MessageType::Renegotiate,
            "close" => MessageType::Close,
            "abort" => MessageType::Abort,
            "chat" => MessageType::Chat,
            "chathistory" => MessageType::ChatHistory,
            "usermessage" => MessageType::UserMessage,
            "useraction" => MessageType::UserAction,
            "groupaction" => MessageType::GroupAction,
            _ => MessageType::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Handshake => "handshake",
            MessageType::Ping => "ping",
            MessageType::Pong => "pong",
            MessageType::Join => "join",
            MessageType::Joined => "joined",
            MessageType::User => "user",
            MessageType::Request => "request",
            MessageType::RequestStream => "requestStream",
            MessageType::Offer => "offer",
            MessageType::Answer => "answer",
            MessageType::Ice => "ice",
            MessageType::Renegotiate => "renegotiate",
            MessageType::Close => "close",
            MessageType::Abort => "abort",
            MessageType::Chat => "chat",
            MessageType::ChatHistory => "chathistory",
            MessageType::UserMessage => "usermessage",
            MessageType::UserAction => "useraction",
            MessageType::GroupAction => "groupaction",
            MessageType::Unknown => "",
        }
    }
}

impl Message {
    /// An otherwise empty message of type `t`.
    pub fn new(t: MessageType) -> Message {
        Message {
            r#type: t.as_str().to_owned(),
            ..Message::default()
        }
    }

    pub fn message_type(&self) -> MessageType {
        MessageType::parse(&self.r#type)
    }

    /// `kind` with absent read as `""`.
    pub fn kind_str(&self) -> &str {
        self.kind.as_deref().unwrap_or("")
    }

    pub fn with_kind(mut self, kind: &str) -> Message {
        self.kind = Some(kind.to_owned()).filter(|k| !k.is_empty());
        self
    }

    pub fn with_id(mut self, id: &str) -> Message {
        self.id = Some(id.to_owned()).filter(|k| !k.is_empty());
        self
    }

    /// The server's handshake reply.
    pub fn handshake() -> Message {
        Message {
            version: Some(vec![PROTOCOL_VERSION.to_owned()]),
            ..Message::new(MessageType::Handshake)
        }
    }

    /// A server-originated `usermessage` (always privileged, so the browser
    /// client acts on it).
    pub fn server_usermessage(kind: &str, dest: &str, value: Value) -> Message {
        Message {
            dest: Some(dest.to_owned()).filter(|d| !d.is_empty()),
            privileged: true,
            value: Some(value),
            ..Message::new(MessageType::UserMessage).with_kind(kind)
        }
    }

    /// The recoverable-error reply: `usermessage` kind `error`.
    pub fn error(dest: &str, text: &str) -> Message {
        Message::server_usermessage("error", dest, Value::String(text.to_owned()))
    }
}

/// Parses one text frame. Checks the size before parsing.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string()))
}

/// Serialises one message for a text frame.
pub fn encode(message: &Message) -> String {
    // Serialising a struct of strings, bools and `Value`s can not fail: the
    // maps have string keys and there are no floats that are not JSON.
    serde_json::to_string(message).unwrap_or_else(|_| String::from("{}"))
}

fn is_unset(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

fn vec_is_unset(v: &Option<Vec<String>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

fn map_is_unset(v: &Option<Map<String, Value>>) -> bool {
    v.as_ref().is_none_or(Map::is_empty)
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn nonempty_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

fn null_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn nonempty_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.filter(|v| !v.is_empty()))
}

fn nonempty_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(d)?.filter(|v| !v.is_empty()))
}

fn null_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn handshake_reply_is_exact() {
        assert_eq!(
            encode(&Message::handshake()),
            r#"{"type":"handshake","version":["2"]}"#
        );
    }

    #[test]
    fn nulls_and_empty_strings_are_absent_but_username_is_kept() {
        let m = decode(
            br#"{"type":"offer","id":"S1","replace":null,"label":null,"dest":"","value":null,
                 "username":"","noecho":null,"labels":{"0":"video"},"future":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(m.message_type(), MessageType::Offer);
        assert_eq!(m.id.as_deref(), Some("S1"));
        assert_eq!(m.replace, None);
        assert_eq!(m.label, None);
        assert_eq!(m.dest, None);
        assert_eq!(m.value, None);
        assert_eq!(m.username.as_deref(), Some(""));
        assert!(!m.noecho);
    }

    #[test]
    fn omitempty_on_output() {
        let m = Message {
            username: Some(String::new()),
            permissions: Some(vec![]),
            data: Some(Map::new()),
            kind: Some(String::new()),
            ..Message::new(MessageType::User)
        };
        assert_eq!(encode(&m), r#"{"type":"user","username":""}"#);
    }

    #[test]
    fn server_error_shape() {
        assert_eq!(
            encode(&Message::error("A", "not authorised")),
            r#"{"type":"usermessage","kind":"error","dest":"A","privileged":true,"value":"not authorised"}"#
        );
    }

    #[test]
    fn candidate_from_browser() {
        let m = decode(br#"{"type":"ice","id":"S","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#).unwrap();
        let c = m.candidate.unwrap();
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_m_line_index, Some(0));
        assert_eq!(c.username_fragment.as_deref(), Some("abcd"));
    }

    #[test]
    fn oversized_and_malformed_are_errors() {
        let big = vec![b' '; MAX_MESSAGE_SIZE + 1];
        assert_eq!(decode(&big), Err(WireError::TooLarge(MAX_MESSAGE_SIZE + 1)));
        assert!(decode(b"{").is_err());
        assert!(decode(b"[]").is_err());
        assert!(decode(br#"{"kind":"join"}"#).is_err());
        assert!(decode(br#"{"type":"join","data":"x"}"#).is_err());
    }

    fn opt_string() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-zA-Z0-9 é/._-]{1,12}")
    }

    fn opt_value() -> impl Strategy<Value = Option<Value>> {
        proptest::option::of(prop_oneof![
            "[a-z]{0,8}".prop_map(Value::String),
            any::<i32>().prop_map(Value::from),
            any::<bool>().prop_map(Value::Bool),
        ])
    }

    prop_compose! {
        fn message()(
            t in "[a-zA-Z]{1,12}",
            kind in opt_string(), id in opt_string(), source in opt_string(),
            dest in opt_string(), username in proptest::option::of("[a-z]{0,6}"),
            password in opt_string(), group in opt_string(), sdp in opt_string(),
            label in opt_string(), time in opt_string(), error in opt_string(),
            privileged in any::<bool>(), noecho in any::<bool>(),
            version in proptest::option::of(proptest::collection::vec("[0-9]{1,2}", 1..3)),
            permissions in proptest::option::of(proptest::collection::vec("[a-z]{1,8}", 1..4)),
            value in opt_value(), request in opt_value(),
        ) -> Message {
            Message {
                r#type: t, kind, id, source, dest, username, password, group, sdp,
                label, time, error, privileged, noecho, version, permissions, value, request,
                ..Message::default()
            }
        }
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(m in message()) {
            prop_assert_eq!(decode(encode(&m).as_bytes()).unwrap(), m);
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn any_json_object_never_panics(s in r#"\{("[a-z]{1,8}":(null|"[a-z]*"|[0-9]{1,3}|true|\[\]|\{\}),?){0,6}\}"#) {
            let _ = decode(s.as_bytes());
        }
    }
}
