//! Client side of the portal's transport, sans-IO: Engine.IO 4 / Socket.IO 5 text frames as
//! they travel over a WebSocket (`/socket.io/?EIO=4&transport=websocket`). For load
//! generators (`switchyard-bench owt-signaling`) and tests that drive the portal without a
//! JavaScript client: encode requests with ack ids, decode acks and notifications, answer
//! heartbeats.

use serde_json::Value;

use crate::wire::{Ack, Notification, Request};

/// One text frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Engine.IO open (`0{…}`).
    Open {
        sid: String,
        ping_interval_ms: u64,
        ping_timeout_ms: u64,
    },
    /// Engine.IO ping (`2`): answer with [`PONG`].
    Ping,
    Pong,
    /// Engine.IO close (`1`).
    Close,
    /// Socket.IO connect to `/` (`40{"sid"}`).
    Connected {
        sid: String,
    },
    /// Socket.IO disconnect (`41`).
    Disconnected,
    /// A notification (`42["name",data]`).
    Notification(Notification),
    /// An event the portal does not send.
    OtherEvent {
        name: String,
        args: Vec<Value>,
    },
    /// An ack (`43<id>[args…]`).
    Ack {
        id: u64,
        ack: Option<Ack>,
        args: Vec<Value>,
    },
    /// Anything else (`6` noop, upgrade probes, malformed text).
    Other(String),
}

/// What a client sends to join the default namespace.
pub const CONNECT: &str = "40";
/// The answer to [`Frame::Ping`].
pub const PONG: &str = "3";

/// `42<ack_id>["event",data]`, or without data for `logout`/`refreshReconnectionTicket`.
pub fn encode_request(ack_id: u64, req: &Request) -> String {
    let data = req.data();
    let arr = if data.is_null() {
        Value::Array(vec![Value::from(req.event())])
    } else {
        Value::Array(vec![Value::from(req.event()), data])
    };
    format!("42{ack_id}{arr}")
}

/// Decode one text frame; never panics.
pub fn decode_frame(text: &str) -> Frame {
    let mut chars = text.chars();
    match chars.next() {
        Some('0') => {
            let v: Value = serde_json::from_str(chars.as_str()).unwrap_or(Value::Null);
            Frame::Open {
                sid: v
                    .get("sid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                ping_interval_ms: v.get("pingInterval").and_then(Value::as_u64).unwrap_or(0),
                ping_timeout_ms: v.get("pingTimeout").and_then(Value::as_u64).unwrap_or(0),
            }
        }
        Some('1') => Frame::Close,
        Some('2') if chars.as_str().is_empty() => Frame::Ping,
        Some('3') if chars.as_str().is_empty() => Frame::Pong,
        Some('4') => decode_socketio(chars.as_str()),
        _ => Frame::Other(text.to_owned()),
    }
}

fn decode_socketio(s: &str) -> Frame {
    let mut chars = s.chars();
    let kind = chars.next();
    let rest = chars.as_str();
    match kind {
        Some('0') => {
            let v: Value = serde_json::from_str(rest).unwrap_or(Value::Null);
            Frame::Connected {
                sid: v
                    .get("sid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            }
        }
        Some('1') => Frame::Disconnected,
        Some('2') => {
            let (_, json) = split_id(rest);
            let Ok(Value::Array(mut arr)) = serde_json::from_str::<Value>(json) else {
                return Frame::Other(s.to_owned());
            };
            if arr.is_empty() {
                return Frame::Other(s.to_owned());
            }
            let name = match arr.remove(0) {
                Value::String(n) => n,
                _ => return Frame::Other(s.to_owned()),
            };
            let data = arr.first().cloned().unwrap_or(Value::Null);
            match Notification::decode(&name, &data) {
                Some(n) => Frame::Notification(n),
                None => Frame::OtherEvent { name, args: arr },
            }
        }
        Some('3') => {
            let (id, json) = split_id(rest);
            let args = match serde_json::from_str::<Value>(json) {
                Ok(Value::Array(a)) => a,
                _ => return Frame::Other(s.to_owned()),
            };
            Frame::Ack {
                id: id.unwrap_or(0),
                ack: Ack::from_args(&args),
                args,
            }
        }
        _ => Frame::Other(s.to_owned()),
    }
}

/// Leading decimal ack id, then the JSON.
fn split_id(s: &str) -> (Option<u64>, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, json) = s.split_at(end);
    (digits.parse().ok(), json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ParticipantAction, TextRequest};
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn frames() {
        assert_eq!(decode_frame("2"), Frame::Ping);
        assert_eq!(
            decode_frame(r#"40{"sid":"abc"}"#),
            Frame::Connected { sid: "abc".into() }
        );
        assert_eq!(
            decode_frame(r#"4312["ok",{"id":"1"}]"#),
            Frame::Ack {
                id: 12,
                ack: Some(Ack::ok_with(json!({"id": "1"}))),
                args: vec![json!("ok"), json!({"id": "1"})]
            }
        );
        assert_eq!(
            decode_frame(r#"42["participant",{"action":"leave","data":"p"}]"#),
            Frame::Notification(Notification::Participant(ParticipantAction::Leave(
                "p".into()
            )))
        );
        assert_eq!(encode_request(3, &Request::Logout), r#"423["logout"]"#);
        let t = Request::Text(TextRequest {
            to: json!("all"),
            message: json!("é"),
        });
        let e = encode_request(4, &t);
        let arr: Value = serde_json::from_str(e.strip_prefix("424").unwrap()).unwrap();
        assert_eq!(arr, json!(["text", {"to": "all", "message": "é"}]));
    }

    proptest! {
        #[test]
        fn any_text_never_panics(s in ".{0,64}") {
            let _ = decode_frame(&s);
        }
    }
}
