//! HeliosTv messages: bytes <-> typed messages (reference §4, §5, §15).
//!
//! Sans-IO. The control channel has no framing: messages are MessagePack
//! arrays written back to back, so [`Decoder`] is an incremental decoder that
//! is fed whatever the socket returned and hands out complete objects.
//!
//! The size and nesting limits of §4.3 are enforced *while* scanning, before
//! anything is allocated for the message: a resumable scanner walks the
//! MessagePack structure, so a peer that sends one byte per segment costs
//! linear time, and a header that announces a string longer than the limit is
//! refused as soon as the header is complete. Only an object that the scanner
//! has found complete and within limits is handed to `rmpv` to build a value.
//!
//! Two kinds of failure are kept apart:
//! * [`StreamError`]: the byte stream itself cannot go on (not MessagePack,
//!   over the size limit). The connection must be closed after an ABORT.
//! * [`Malformed`]: one complete object that is not a valid message (§12.1).
//!   It carries the message type and request id when they were readable, so
//!   the session can answer with ERROR instead of ABORT.

use rmp::Marker;
use rmpv::Value;

/// Message type codes (§5.1).
pub mod code {
    pub const HELLO: u64 = 1;
    pub const WELCOME: u64 = 2;
    pub const ABORT: u64 = 3;
    pub const RESULT: u64 = 4;
    pub const AUTHORIZE: u64 = 5;
    pub const ERROR: u64 = 6;
    pub const NEW_SERVICE: u64 = 7;
    pub const DEL_SERVICE: u64 = 8;
    /// Extension (§11).
    pub const SERVICES: u64 = 9;
}

/// Largest message the server accepts, whole encoded message (§4.3).
pub const MAX_MESSAGE_SIZE: usize = 65_536;
/// Deepest nesting the server accepts; the message array is level 1 (§4.3).
pub const MAX_NESTING: usize = 16;
/// Largest message the server ever sends, and so the least a client must accept.
pub const MAX_SENT_MESSAGE: usize = 1_048_576;

/// The error URIs of §13.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorUri {
    InvalidRole,
    InvalidUri,
    InvalidToken,
    InvalidMessage,
    UnexpectedMessage,
    UnknownMessage,
    LimitExceeded,
    Shutdown,
}

impl ErrorUri {
    pub const ALL: [ErrorUri; 8] = [
        ErrorUri::InvalidRole,
        ErrorUri::InvalidUri,
        ErrorUri::InvalidToken,
        ErrorUri::InvalidMessage,
        ErrorUri::UnexpectedMessage,
        ErrorUri::UnknownMessage,
        ErrorUri::LimitExceeded,
        ErrorUri::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorUri::InvalidRole => "heliostv.error.invalid_role",
            ErrorUri::InvalidUri => "heliostv.error.invalid_uri",
            ErrorUri::InvalidToken => "heliostv.error.invalid_token",
            ErrorUri::InvalidMessage => "heliostv.error.invalid_message",
            ErrorUri::UnexpectedMessage => "heliostv.error.unexpected_message",
            ErrorUri::UnknownMessage => "heliostv.error.unknown_message",
            ErrorUri::LimitExceeded => "heliostv.error.limit_exceeded",
            ErrorUri::Shutdown => "heliostv.error.shutdown",
        }
    }

    /// `None` for URIs this implementation does not know; clients treat those
    /// as a generic failure (§13).
    pub fn parse(uri: &str) -> Option<ErrorUri> {
        ErrorUri::ALL.into_iter().find(|e| e.as_str() == uri)
    }
}

impl std::fmt::Display for ErrorUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who sent a message. The layout of SERVICES (9) depends on it (§5.10), and
/// a client accepts the diagram form of RESULT without Arguments (§4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Client,
    Server,
}

/// One HeliosTv message, either direction.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// `[1, Role|list]`, client to server.
    Hello { roles: Vec<String> },
    /// `[2]`, server to client.
    Welcome,
    /// `[3, Reason|uri]`, either direction.
    Abort { reason: String },
    /// `[4, Request|id, Arguments|list]`, server to client.
    Result { request: u64, args: Vec<Value> },
    /// `[5, Request|id, Token|id]`, client to server, data connection.
    Authorize { request: u64, token: u64 },
    /// `[6, Request|id, Error|uri]`, server to client.
    Error { request: u64, error: String },
    /// `[7, Request|id, Resource|uri]`, client to server.
    NewService { request: u64, resource: String },
    /// `[8, Request|id, Token|id]`, client to server.
    DelService { request: u64, token: u64 },
    /// `[9, Request|id]`, client to server (extension).
    Services { request: u64 },
    /// `[9, Request|id, Changes|list]`, server to client (extension).
    ServicesChanged { request: u64, changes: Vec<Value> },
    /// A well-formed array whose type code this implementation does not know.
    Unknown { code: u64, request: Option<u64> },
}

impl Message {
    pub fn code(&self) -> u64 {
        match self {
            Message::Hello { .. } => code::HELLO,
            Message::Welcome => code::WELCOME,
            Message::Abort { .. } => code::ABORT,
            Message::Result { .. } => code::RESULT,
            Message::Authorize { .. } => code::AUTHORIZE,
            Message::Error { .. } => code::ERROR,
            Message::NewService { .. } => code::NEW_SERVICE,
            Message::DelService { .. } => code::DEL_SERVICE,
            Message::Services { .. } | Message::ServicesChanged { .. } => code::SERVICES,
            Message::Unknown { code, .. } => *code,
        }
    }

    pub fn abort(reason: ErrorUri) -> Message {
        Message::Abort {
            reason: reason.as_str().to_owned(),
        }
    }

    pub fn error(request: u64, error: ErrorUri) -> Message {
        Message::Error {
            request,
            error: error.as_str().to_owned(),
        }
    }

    /// The message as a MessagePack value, in the layout of §5.
    pub fn to_value(&self) -> Value {
        let mut items: Vec<Value> = vec![Value::from(self.code())];
        match self {
            Message::Hello { roles } => items.push(Value::Array(
                roles.iter().map(|r| Value::from(r.as_str())).collect(),
            )),
            Message::Welcome => {}
            Message::Abort { reason } => items.push(Value::from(reason.as_str())),
            Message::Result { request, args } => {
                items.push(Value::from(*request));
                items.push(Value::Array(args.clone()));
            }
            Message::Authorize { request, token } | Message::DelService { request, token } => {
                items.push(Value::from(*request));
                items.push(Value::from(*token));
            }
            Message::Error { request, error } => {
                items.push(Value::from(*request));
                items.push(Value::from(error.as_str()));
            }
            Message::NewService { request, resource } => {
                items.push(Value::from(*request));
                items.push(Value::from(resource.as_str()));
            }
            Message::Services { request } => items.push(Value::from(*request)),
            Message::ServicesChanged { request, changes } => {
                items.push(Value::from(*request));
                items.push(Value::Array(changes.clone()));
            }
            Message::Unknown { request, .. } => {
                if let Some(r) = request {
                    items.push(Value::from(*r));
                }
            }
        }
        Value::Array(items)
    }

    /// Appends the encoding of the message to `out`, with the smallest
    /// MessagePack formats (§4.1).
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_value(&self.to_value(), out);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Interprets a decoded MessagePack value as a message sent by `origin`
    /// (§4.4, §5, §12.1).
    pub fn from_value(value: &Value, origin: Origin) -> Result<Message, Malformed> {
        let items = match value {
            Value::Array(items) if !items.is_empty() => items,
            Value::Array(_) => return Err(Malformed::new(None, None, "empty array")),
            _ => return Err(Malformed::new(None, None, "not an array")),
        };
        let request = items.get(1).and_then(as_integer);
        let code = match items.first().and_then(as_integer) {
            Some(c) if c > 0 => c,
            Some(_) => return Err(Malformed::new(None, request, "message type 0")),
            None => {
                return Err(Malformed::new(
                    None,
                    request,
                    "message type is not a positive integer",
                ));
            }
        };
        check_well_formed(value).map_err(|what| Malformed::new(Some(code), request, what))?;
        let bad = |what: &'static str| Malformed::new(Some(code), request, what);
        let req = || request.ok_or_else(|| bad("request id missing or not an integer"));
        match code {
            code::HELLO => {
                let roles = match items.get(1) {
                    Some(Value::Array(roles)) => roles,
                    _ => return Err(bad("Role is not a list")),
                };
                let roles = roles
                    .iter()
                    .map(|r| r.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("Role list holds a non-string"))?;
                Ok(Message::Hello { roles })
            }
            code::WELCOME => Ok(Message::Welcome),
            code::ABORT => {
                let reason = items
                    .get(1)
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("Reason is not a string"))?;
                Ok(Message::Abort {
                    reason: reason.to_owned(),
                })
            }
            code::RESULT => {
                let request = req()?;
                let args = match items.get(2) {
                    Some(Value::Array(args)) => args.clone(),
                    // The diagrams' RESULT without Arguments (§4.4).
                    None if origin == Origin::Server => Vec::new(),
                    _ => return Err(bad("Arguments is not a list")),
                };
                Ok(Message::Result { request, args })
            }
            code::AUTHORIZE | code::DEL_SERVICE => {
                let request = req()?;
                let token = items
                    .get(2)
                    .and_then(as_integer)
                    .ok_or_else(|| bad("Token is not an integer"))?;
                if code == code::AUTHORIZE {
                    Ok(Message::Authorize { request, token })
                } else {
                    Ok(Message::DelService { request, token })
                }
            }
            code::ERROR => {
                let request = req()?;
                let error = items
                    .get(2)
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("Error is not a string"))?;
                Ok(Message::Error {
                    request,
                    error: error.to_owned(),
                })
            }
            code::NEW_SERVICE => {
                let request = req()?;
                let resource = items
                    .get(2)
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("Resource is not a string"))?;
                Ok(Message::NewService {
                    request,
                    resource: resource.to_owned(),
                })
            }
            code::SERVICES => {
                let request = req()?;
                match origin {
                    Origin::Client => Ok(Message::Services { request }),
                    Origin::Server => match items.get(2) {
                        Some(Value::Array(changes)) => Ok(Message::ServicesChanged {
                            request,
                            changes: changes.clone(),
                        }),
                        _ => Err(bad("Changes is not a list")),
                    },
                }
            }
            code => Ok(Message::Unknown { code, request }),
        }
    }
}

/// A complete object that is not a valid message (§12.1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed message (type {code:?}, request {request:?}): {what}")]
pub struct Malformed {
    /// The message type, when the first element was a positive integer.
    pub code: Option<u64>,
    /// The "readable request id" of §6.4: the second element, when it is an integer.
    pub request: Option<u64>,
    pub what: &'static str,
}

impl Malformed {
    fn new(code: Option<u64>, request: Option<u64>, what: &'static str) -> Malformed {
        Malformed {
            code,
            request,
            what,
        }
    }
}

/// The byte stream cannot be decoded any further; the connection must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("message larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("bytes are not MessagePack (reserved marker 0xc1)")]
    NotMessagePack,
}

/// An `integer` or `id` element: any MessagePack integer format holding a
/// value >= 0 (§4.1).
pub fn as_integer(value: &Value) -> Option<u64> {
    match value {
        Value::Integer(i) => i.as_u64(),
        _ => None,
    }
}

/// Strings must be UTF-8 and map keys unique strings, anywhere in a message (§12.1).
fn check_well_formed(value: &Value) -> Result<(), &'static str> {
    // Nesting was bounded by the scanner, so this recursion is bounded too.
    match value {
        Value::String(s) if !s.is_str() => Err("string is not UTF-8"),
        Value::Array(items) => items.iter().try_for_each(check_well_formed),
        Value::Map(pairs) => {
            let mut keys: Vec<&str> = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                let key = k.as_str().ok_or("map key is not a string")?;
                keys.push(key);
                check_well_formed(v)?;
            }
            keys.sort_unstable();
            if keys.windows(2).any(|w| w.first() == w.get(1)) {
                return Err("duplicate map key");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Encodes a value with the smallest formats (rmpv picks them).
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(out, value);
}

/// Limits applied by a [`Decoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_message: usize,
    pub max_nesting: usize,
}

impl Limits {
    /// What the server accepts from clients (§4.3).
    pub const SERVER: Limits = Limits {
        max_message: MAX_MESSAGE_SIZE,
        max_nesting: MAX_NESTING,
    };
    /// What a client must accept from the server (§4.3: up to 1 MiB).
    pub const CLIENT: Limits = Limits {
        max_message: MAX_SENT_MESSAGE,
        max_nesting: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::SERVER
    }
}

/// One complete object taken from the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Value(Value),
    /// Complete and within the size limit, but nested deeper than allowed.
    /// Carries what could be read of the head, so the session can answer.
    TooDeep {
        code: Option<u64>,
        request: Option<u64>,
    },
}

impl Object {
    /// The object as a message sent by `origin`.
    pub fn into_message(self, origin: Origin) -> Result<Message, Malformed> {
        match self {
            Object::Value(v) => Message::from_value(&v, origin),
            Object::TooDeep { code, request } => {
                Err(Malformed::new(code, request, "nesting too deep"))
            }
        }
    }
}

/// Incremental MessagePack stream decoder (§4.2).
///
/// Feed it with [`Decoder::push`]; take objects with [`Decoder::next_object`]
/// until it returns `Ok(None)`. After an error the decoder stays failed.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    scan: Scan,
    failed: Option<StreamError>,
}

/// Resumable scan state of the object at `start`.
#[derive(Debug, Default)]
struct Scan {
    /// Offset (from `start`) of the next item header to look at.
    pos: usize,
    /// Items still expected by each open container (u32: a count is bounded
    /// by the message size limit, and this stack can be as deep as that).
    open: Vec<u32>,
    too_deep: bool,
}

enum Step {
    Incomplete,
    Complete { len: usize, too_deep: bool },
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            buf: Vec::new(),
            start: 0,
            scan: Scan::default(),
            failed: None,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Unconsumed bytes held.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// How many more bytes may be pushed before the buffer alone proves the
    /// pending object too large. A reader that never reads more than this
    /// never buffers more than the limit (§4.3).
    pub fn room(&self) -> usize {
        self.limits.max_message.saturating_sub(self.buffered())
    }

    /// Appends bytes read from the stream. Ignored once the decoder has
    /// failed, so a failed stream never grows the buffer.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the bytes that follow the last decoded object, leaving the
    /// decoder empty: on a data connection they are already service data (§4.2).
    pub fn take_remaining(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start.min(self.buf.len()));
        self.buf.clear();
        self.start = 0;
        self.scan = Scan::default();
        rest
    }

    /// The next complete object, `Ok(None)` if more bytes are needed.
    pub fn next_object(&mut self) -> Result<Option<Object>, StreamError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match self.step() {
            Err(e) => {
                self.failed = Some(e);
                Err(e)
            }
            Ok(Step::Incomplete) => {
                if self.buffered() >= self.limits.max_message {
                    let e = StreamError::TooLarge {
                        limit: self.limits.max_message,
                    };
                    self.failed = Some(e);
                    return Err(e);
                }
                Ok(None)
            }
            Ok(Step::Complete { len, too_deep }) => {
                let end = self.start.saturating_add(len).min(self.buf.len());
                let bytes = self.buf.get(self.start..end).unwrap_or_default();
                let object = if too_deep {
                    read_head(bytes)
                } else {
                    read_whole(bytes)
                };
                self.start = end;
                self.scan = Scan::default();
                Ok(Some(object))
            }
        }
    }

    /// Advances the scan over the pending object as far as the buffer allows.
    fn step(&mut self) -> Result<Step, StreamError> {
        let data = self.buf.get(self.start..).unwrap_or_default();
        let max = self.limits.max_message;
        let too_large = StreamError::TooLarge { limit: max };
        let scan = &mut self.scan;
        loop {
            let pos = scan.pos;
            let Some(&marker) = data.get(pos) else {
                return Ok(Step::Incomplete);
            };
            let (header, kind) = match item_header(marker, data.get(pos + 1..).unwrap_or_default())?
            {
                Some(h) => h,
                None => return Ok(Step::Incomplete),
            };
            let body_start = pos.saturating_add(1).saturating_add(header);
            match kind {
                Item::Scalar(payload) => {
                    let end = (body_start as u64).saturating_add(payload);
                    if end > max as u64 {
                        return Err(too_large);
                    }
                    let end = end as usize;
                    if end > data.len() {
                        return Ok(Step::Incomplete);
                    }
                    scan.pos = end;
                }
                Item::Container(children) => {
                    // Each child takes at least one byte.
                    if (body_start as u64).saturating_add(children) > max as u64 {
                        return Err(too_large);
                    }
                    if body_start > data.len() {
                        return Ok(Step::Incomplete);
                    }
                    scan.pos = body_start;
                    if scan.open.len() >= self.limits.max_nesting {
                        scan.too_deep = true;
                    }
                    if children > 0 {
                        scan.open.push(u32::try_from(children).unwrap_or(u32::MAX));
                        continue;
                    }
                }
            }
            // An item is complete: close every container it completes.
            loop {
                match scan.open.last_mut() {
                    None => {
                        return Ok(Step::Complete {
                            len: scan.pos,
                            too_deep: scan.too_deep,
                        });
                    }
                    Some(left) => {
                        *left = left.saturating_sub(1);
                        if *left > 0 {
                            break;
                        }
                        scan.open.pop();
                    }
                }
            }
        }
    }
}

enum Item {
    /// Number of payload bytes after the header.
    Scalar(u64),
    /// Number of child items (map pairs count twice).
    Container(u64),
}

/// Decodes a marker: the number of header bytes after the marker byte and
/// what follows; `None` when the header's length field is not all there.
fn item_header(marker: u8, rest: &[u8]) -> Result<Option<(usize, Item)>, StreamError> {
    let be = |n: usize| -> Option<u64> {
        let bytes = rest.get(..n)?;
        Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    let fixed = |n: u64| Ok(Some((0, Item::Scalar(n))));
    let sized = |n: usize,
                 scalar: bool,
                 mult: u64,
                 extra: u64|
     -> Result<Option<(usize, Item)>, StreamError> {
        Ok(be(n).map(|len| {
            let item = if scalar {
                Item::Scalar(len.saturating_add(extra))
            } else {
                Item::Container(len.saturating_mul(mult))
            };
            (n, item)
        }))
    };
    match Marker::from_u8(marker) {
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
            fixed(0)
        }
        Marker::Reserved => Err(StreamError::NotMessagePack),
        Marker::FixStr(n) => fixed(u64::from(n)),
        Marker::FixArray(n) => Ok(Some((0, Item::Container(u64::from(n))))),
        Marker::FixMap(n) => Ok(Some((0, Item::Container(u64::from(n) * 2)))),
        Marker::U8 | Marker::I8 => fixed(1),
        Marker::U16 | Marker::I16 => fixed(2),
        Marker::U32 | Marker::I32 | Marker::F32 => fixed(4),
        Marker::U64 | Marker::I64 | Marker::F64 => fixed(8),
        Marker::FixExt1 => fixed(2),
        Marker::FixExt2 => fixed(3),
        Marker::FixExt4 => fixed(5),
        Marker::FixExt8 => fixed(9),
        Marker::FixExt16 => fixed(17),
        Marker::Str8 | Marker::Bin8 => sized(1, true, 1, 0),
        Marker::Str16 | Marker::Bin16 => sized(2, true, 1, 0),
        Marker::Str32 | Marker::Bin32 => sized(4, true, 1, 0),
        // The ext type byte follows the length.
        Marker::Ext8 => sized(1, true, 1, 1),
        Marker::Ext16 => sized(2, true, 1, 1),
        Marker::Ext32 => sized(4, true, 1, 1),
        Marker::Array16 => sized(2, false, 1, 0),
        Marker::Array32 => sized(4, false, 1, 0),
        Marker::Map16 => sized(2, false, 2, 0),
        Marker::Map32 => sized(4, false, 2, 0),
    }
}

fn read_whole(mut bytes: &[u8]) -> Object {
    // The scanner already bounded size and nesting; rmpv's own depth counter
    // (which also counts strings) is given room above ours.
    match rmpv::decode::read_value_with_max_depth(&mut bytes, 1024) {
        Ok(v) => Object::Value(v),
        // Unreachable after a successful scan; treated as unreadable head.
        Err(_) => Object::TooDeep {
            code: None,
            request: None,
        },
    }
}

/// For an over-deep object, reads only the first two elements of the top
/// array, each with a bounded depth.
fn read_head(mut bytes: &[u8]) -> Object {
    let Ok(len) = rmp::decode::read_array_len(&mut bytes) else {
        return Object::TooDeep {
            code: None,
            request: None,
        };
    };
    let next = |rd: &mut &[u8]| -> Option<u64> {
        rmpv::decode::read_value_with_max_depth(rd, 8)
            .ok()
            .as_ref()
            .and_then(as_integer)
    };
    let code = if len >= 1 { next(&mut bytes) } else { None };
    let request = if len >= 2 && code.is_some() {
        next(&mut bytes)
    } else {
        None
    };
    Object::TooDeep {
        code: code.filter(|c| *c > 0),
        request,
    }
}

/// The service description of the SERVICES extension (§11.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub uri: String,
    pub name: String,
    pub number: u64,
    pub provider: String,
    pub tags: Vec<String>,
    pub has_video: bool,
    pub has_audio: bool,
}

impl ServiceInfo {
    /// The dict, keys in the order Switchyard uses (§15.9).
    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            (Value::from("uri"), Value::from(self.uri.as_str())),
            (Value::from("name"), Value::from(self.name.as_str())),
            (Value::from("number"), Value::from(self.number)),
            (Value::from("provider"), Value::from(self.provider.as_str())),
            (
                Value::from("tags"),
                Value::Array(self.tags.iter().map(|t| Value::from(t.as_str())).collect()),
            ),
            (Value::from("has_video"), Value::from(self.has_video)),
            (Value::from("has_audio"), Value::from(self.has_audio)),
        ])
    }

    /// Reads a service dict; unknown keys are ignored, all seven are required.
    pub fn from_value(value: &Value) -> Option<ServiceInfo> {
        let map = value.as_map()?;
        let get = |key: &str| {
            map.iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v)
        };
        let string = |key: &str| get(key).and_then(Value::as_str).map(str::to_owned);
        Some(ServiceInfo {
            uri: string("uri")?,
            name: string("name")?,
            number: get("number").and_then(as_integer)?,
            provider: string("provider")?,
            tags: get("tags")?
                .as_array()?
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()?,
            has_video: get("has_video")?.as_bool()?,
            has_audio: get("has_audio")?.as_bool()?,
        })
    }
}

/// Kind of a SERVICES change (§11.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Updated,
    Removed,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Updated => "updated",
            ChangeKind::Removed => "removed",
        }
    }
}

/// One entry of a SERVICES notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceChange {
    pub kind: ChangeKind,
    pub service: ServiceInfo,
}

impl ServiceChange {
    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            (Value::from("change"), Value::from(self.kind.as_str())),
            (Value::from("service"), self.service.to_value()),
        ])
    }

    /// `None` for change kinds this implementation does not know (clients
    /// ignore them, §11.3) and for broken dicts.
    pub fn from_value(value: &Value) -> Option<ServiceChange> {
        let map = value.as_map()?;
        let get = |key: &str| {
            map.iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v)
        };
        let kind = match get("change")?.as_str()? {
            "added" => ChangeKind::Added,
            "updated" => ChangeKind::Updated,
            "removed" => ChangeKind::Removed,
            _ => return None,
        };
        Some(ServiceChange {
            kind,
            service: ServiceInfo::from_value(get("service")?)?,
        })
    }
}

/// Encodes one section as a bin object of a `sections` data connection (§9.4).
pub fn encode_section(section: &[u8], out: &mut Vec<u8>) {
    // Sections are at most 4096 bytes, far below the bin 32 limit.
    let _ = rmp::encode::write_bin(out, section);
}

/// The body of the `heliostv_msgpack` fuzz target, kept here so that it is
/// compiled and exercised by the crate's own tests: feeds `data` (its first
/// byte chooses the split size) to the decoder for both directions, and
/// checks that every message decoded survives a re-encoding unchanged.
#[doc(hidden)]
pub fn fuzz_stream(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    for origin in [Origin::Client, Origin::Server] {
        let mut decoder = Decoder::new(Limits {
            max_message: 4096,
            max_nesting: MAX_NESTING,
        });
        'feed: for piece in rest.chunks(chunk) {
            decoder.push(piece);
            loop {
                match decoder.next_object() {
                    Ok(Some(object)) => {
                        if let Ok(message) = object.into_message(origin) {
                            // Compared as bytes: a NaN inside is not equal to itself.
                            let bytes = message.to_bytes();
                            let mut again = Decoder::new(Limits::CLIENT);
                            again.push(&bytes);
                            let back = again
                                .next_object()
                                .ok()
                                .flatten()
                                .map(|o| o.into_message(origin));
                            let back = back.and_then(Result::ok).map(|m| m.to_bytes());
                            assert_eq!(back, Some(bytes), "re-encoding changed a message");
                        }
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
