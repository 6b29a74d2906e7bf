//! The htsmsg binary codec: bytes <-> [`Msg`], exactly as Tvheadend's
//! `htsmsg_binary.c` reads and writes them (reference §2).
//!
//! Sans-IO: no sockets, no clock. The decoder rejects what Tvheadend rejects
//! (§2.4) and additionally refuses nesting deeper than [`MAX_DEPTH`], because a
//! 1 MiB frame of nested maps would otherwise exhaust the stack. The encoder
//! emits only field types 1–5 (§2.2): booleans become S64 0/1 and UUIDs become
//! 32-hex strings, because Kodi's own decoder drops the connection on anything
//! else.
//!
//! The codec is public so that load clients (the bench harness) can speak HTSP
//! with the same code the server uses.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest frame body a client may send (exactly 1 MiB is allowed, §2.7).
pub const MAX_INBOUND_FRAME: usize = 1_048_576;

/// Deepest nesting of maps/lists accepted in a frame.
pub const MAX_DEPTH: usize = 32;

/// Binary values at least this long are handed out as their own chunk by
/// [`encode_frame_chunks`], so that media payloads are written without a copy.
pub const ZERO_COPY_THRESHOLD: usize = 1024;

const T_MAP: u8 = 1;
const T_S64: u8 = 2;
const T_STR: u8 = 3;
const T_BIN: u8 = 4;
const T_LIST: u8 = 5;
const T_BOOL: u8 = 7;
const T_UUID: u8 = 8;

/// One field value of an htsmsg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Map(Msg),
    List(Vec<Value>),
    S64(i64),
    Str(String),
    Bin(Bytes),
    /// Decode-only on the wire; encoded as S64 0/1.
    Bool(bool),
    /// Decode-only on the wire; encoded as a 32-hex STR.
    Uuid([u8; 16]),
}

/// An htsmsg map: ordered fields, names may repeat (`meta` in
/// `subscriptionStart`), lookup by name returns the first match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Msg {
    pub fields: Vec<(String, Value)>,
}

/// Why a frame was refused (§2.4, §2.7). Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} stray bytes at the end of a field sequence")]
    TrailingBytes(usize),
    #[error("field of {needed} bytes overruns its container ({available} left)")]
    Overrun { needed: u64, available: usize },
    #[error("unknown field type {0}")]
    BadType(u8),
    #[error("UUID field of {0} bytes (must be 16)")]
    BadUuidLength(u32),
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("frame body of {0} bytes exceeds the 1 MiB limit")]
    TooLarge(u64),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::S64(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::S64(i64::from(v))
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::S64(i64::from(v))
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::S64(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::S64(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<bool> for Value {
    /// Protocol flags are S64 0/1 on the wire (§2.6), so build them that way.
    fn from(v: bool) -> Self {
        Value::S64(i64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<Bytes> for Value {
    fn from(v: Bytes) -> Self {
        Value::Bin(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bin(Bytes::from(v))
    }
}
impl From<Msg> for Value {
    fn from(v: Msg) -> Self {
        Value::Map(v)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v)
    }
}

/// Lower-case hex, as HTSP spells UUIDs and tickets.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digits: Option<Vec<u8>> = s.chars().map(|c| c.to_digit(16).map(|d| d as u8)).collect();
    let digits = digits?;
    Some(
        digits
            .chunks(2)
            .map(|p| (p[0] << 4) | p.get(1).copied().unwrap_or(0))
            .collect(),
    )
}

/// C `strtoll(s, NULL, 0)`: leading blanks, sign, `0x` hex / `0` octal /
/// decimal, junk after the number ignored, saturating, 0 when no digits.
pub fn strtoll(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if (t.starts_with("0x") || t.starts_with("0X"))
        && t.as_bytes().get(2).is_some_and(|c| c.is_ascii_hexdigit())
    {
        (16, &t[2..])
    } else if t.starts_with('0') {
        (8, t)
    } else {
        (10, t)
    };
    let mut acc: i128 = 0;
    for c in digits.chars() {
        let Some(d) = c.to_digit(radix) else { break };
        acc = (acc * i128::from(radix) + i128::from(d)).min(i128::from(u64::MAX) + 1);
    }
    let v = if neg { -acc } else { acc };
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

impl Value {
    /// Integer view with Tvheadend's coercions (§2.5).
    pub fn as_s64(&self) -> Option<i64> {
        match self {
            Value::S64(v) => Some(*v),
            Value::Str(s) => Some(strtoll(s)),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
    pub fn as_string(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::S64(v) => Some(v.to_string()),
            Value::Bool(b) => Some(if *b { "true" } else { "false" }.to_owned()),
            Value::Uuid(u) => Some(hex(u)),
            _ => None,
        }
    }
    pub fn as_bin(&self) -> Option<Bytes> {
        match self {
            Value::Bin(b) => Some(b.clone()),
            Value::Str(s) => unhex(s).map(Bytes::from),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::S64(v) => Some(*v != 0),
            Value::Bool(b) => Some(*b),
            Value::Str(s) => Some(matches!(
                s.to_ascii_lowercase().as_str(),
                "yes" | "true" | "on" | "1"
            )),
            _ => None,
        }
    }
}

impl Msg {
    pub fn new() -> Self {
        Msg::default()
    }

    /// Appends a field (names may repeat).
    pub fn add(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.fields.push((name.to_owned(), value.into()));
        self
    }

    /// Builder form of [`Msg::add`].
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.add(name, value);
        self
    }

    /// Appends the field only when there is a value.
    pub fn add_opt<V: Into<Value>>(&mut self, name: &str, value: Option<V>) -> &mut Self {
        if let Some(v) = value {
            self.add(name, v);
        }
        self
    }

    /// Replaces the first field of that name, or appends it.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        let value = value.into();
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name.to_owned(), value)),
        }
        self
    }

    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(n, _)| n != name);
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn get_s64(&self, name: &str) -> Option<i64> {
        self.get(name)?.as_s64()
    }

    /// u32 with range check; out of range counts as missing (§2.5).
    pub fn get_u32(&self, name: &str) -> Option<u32> {
        u32::try_from(self.get_s64(name)?).ok()
    }

    pub fn get_s32(&self, name: &str) -> Option<i32> {
        i32::try_from(self.get_s64(name)?).ok()
    }

    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name)?.as_string()
    }

    pub fn get_bin(&self, name: &str) -> Option<Bytes> {
        self.get(name)?.as_bin()
    }

    pub fn get_bool(&self, name: &str) -> Option<bool> {
        self.get(name)?.as_bool()
    }

    pub fn get_list(&self, name: &str) -> Option<&[Value]> {
        match self.get(name)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn get_map(&self, name: &str) -> Option<&Msg> {
        match self.get(name)? {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- decoding

/// Reads a frame's 4-byte length prefix and applies the inbound limit, so
/// that the body is never allocated for an oversized frame.
pub fn frame_body_len(prefix: [u8; 4]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix);
    let len = usize::try_from(len).map_err(|_| DecodeError::TooLarge(u64::from(len)))?;
    if len > MAX_INBOUND_FRAME {
        return Err(DecodeError::TooLarge(len as u64));
    }
    Ok(len)
}

/// Decodes a frame body (the bytes after the length prefix) into the root map.
pub fn decode_body(body: &[u8]) -> Result<Msg, DecodeError> {
    let mut msg = Msg::new();
    decode_seq(body, 0, &mut |name, value| msg.fields.push((name, value)))?;
    Ok(msg)
}

/// Takes one complete frame off the front of `buf`, if there is one. Used by
/// clients and tests that read a byte stream; the server reads prefix and
/// body separately.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Msg>, DecodeError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let frame = buf.split_to(4 + len);
    decode_body(&frame[4..]).map(Some)
}

/// Like [`split_frame`] without a size limit: for clients reading server
/// output, which may exceed 1 MiB (§2.7).
pub fn split_outbound_frame(buf: &mut BytesMut) -> Result<Option<Msg>, DecodeError> {
    split_frame(buf)
}

fn decode_seq(
    mut buf: &[u8],
    depth: usize,
    sink: &mut dyn FnMut(String, Value),
) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    while buf.len() > 5 {
        let (head, rest) = buf.split_at(6);
        let ty = head[0];
        let namelen = usize::from(head[1]);
        let datalen = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
        let needed = namelen as u64 + u64::from(datalen);
        if needed > rest.len() as u64 {
            return Err(DecodeError::Overrun {
                needed,
                available: rest.len(),
            });
        }
        // `needed` fits in `rest`, so these splits are in bounds.
        let (name, rest) = rest.split_at(namelen);
        let (data, rest) = rest.split_at(datalen as usize);
        buf = rest;
        let value = match ty {
            T_MAP => {
                let mut m = Msg::new();
                decode_seq(data, depth + 1, &mut |n, v| m.fields.push((n, v)))?;
                Value::Map(m)
            }
            T_LIST => {
                let mut l = Vec::new();
                decode_seq(data, depth + 1, &mut |_, v| l.push(v))?;
                Value::List(l)
            }
            T_S64 => {
                let mut v: u64 = 0;
                for (i, b) in data.iter().take(8).enumerate() {
                    v |= u64::from(*b) << (8 * i);
                }
                Value::S64(v as i64)
            }
            T_STR => Value::Str(String::from_utf8_lossy(data).into_owned()),
            T_BIN => Value::Bin(Bytes::copy_from_slice(data)),
            T_BOOL => Value::Bool(data.len() == 1 && data[0] != 0),
            T_UUID => {
                let u: [u8; 16] = data
                    .try_into()
                    .map_err(|_| DecodeError::BadUuidLength(datalen))?;
                Value::Uuid(u)
            }
            other => return Err(DecodeError::BadType(other)),
        };
        sink(String::from_utf8_lossy(name).into_owned(), value);
    }
    if !buf.is_empty() {
        return Err(DecodeError::TrailingBytes(buf.len()));
    }
    Ok(())
}

// ---------------------------------------------------------------- encoding

fn s64_len(v: i64) -> usize {
    let u = v as u64;
    8 - (u.leading_zeros() as usize / 8)
}

/// The minimal little-endian S64 data bytes of §2.3.
pub fn s64_bytes(v: i64) -> Vec<u8> {
    (v as u64).to_le_bytes()[..s64_len(v)].to_vec()
}

fn name_bytes(name: &str) -> &[u8] {
    // Names are one length byte long; ours are short constants, but never
    // let a long one corrupt the frame.
    let b = name.as_bytes();
    &b[..b.len().min(255)]
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::Map(m) => seq_len_map(m),
        Value::List(l) => l.iter().map(|v| 6 + value_len(v)).sum(),
        Value::S64(i) => s64_len(*i),
        Value::Str(s) => s.len(),
        Value::Bin(b) => b.len(),
        Value::Bool(b) => s64_len(i64::from(*b)),
        Value::Uuid(_) => 32,
    }
}

fn seq_len_map(m: &Msg) -> usize {
    m.fields
        .iter()
        .map(|(n, v)| 6 + name_bytes(n).len() + value_len(v))
        .sum()
}

/// Size of the frame body (without the 4-byte prefix).
pub fn body_len(m: &Msg) -> usize {
    seq_len_map(m)
}

struct Encoder {
    cur: BytesMut,
    chunks: Vec<Bytes>,
    zero_copy: bool,
}

impl Encoder {
    fn field(&mut self, name: &[u8], v: &Value) {
        let ty = match v {
            Value::Map(_) => T_MAP,
            Value::List(_) => T_LIST,
            Value::S64(_) | Value::Bool(_) => T_S64,
            Value::Str(_) | Value::Uuid(_) => T_STR,
            Value::Bin(_) => T_BIN,
        };
        self.cur.put_u8(ty);
        self.cur.put_u8(name.len() as u8);
        self.cur
            .put_u32(u32::try_from(value_len(v)).unwrap_or(u32::MAX));
        self.cur.put_slice(name);
        match v {
            Value::Map(m) => {
                for (n, v) in &m.fields {
                    self.field(name_bytes(n), v);
                }
            }
            Value::List(l) => {
                for v in l {
                    self.field(&[], v);
                }
            }
            Value::S64(i) => self.cur.put_slice(&s64_bytes(*i)),
            Value::Bool(b) => self.cur.put_slice(&s64_bytes(i64::from(*b))),
            Value::Str(s) => self.cur.put_slice(s.as_bytes()),
            Value::Uuid(u) => self.cur.put_slice(hex(u).as_bytes()),
            Value::Bin(b) => {
                if self.zero_copy && b.len() >= ZERO_COPY_THRESHOLD {
                    let head = self.cur.split().freeze();
                    if !head.is_empty() {
                        self.chunks.push(head);
                    }
                    self.chunks.push(b.clone());
                } else {
                    self.cur.put_slice(b);
                }
            }
        }
    }
}

fn encode_into(m: &Msg, zero_copy: bool) -> Vec<Bytes> {
    let body = body_len(m);
    let mut enc = Encoder {
        cur: BytesMut::with_capacity(if zero_copy { 256 } else { body + 4 }),
        chunks: Vec::new(),
        zero_copy,
    };
    enc.cur.put_u32(u32::try_from(body).unwrap_or(u32::MAX));
    for (n, v) in &m.fields {
        enc.field(name_bytes(n), v);
    }
    let tail = enc.cur.split().freeze();
    if !tail.is_empty() {
        enc.chunks.push(tail);
    }
    enc.chunks
}

/// Encodes a whole frame (length prefix + body) into one buffer.
pub fn encode_frame(m: &Msg) -> Bytes {
    let mut chunks = encode_into(m, false);
    chunks.pop().unwrap_or_default()
}

/// Encodes a frame as a list of chunks to be written back to back; large
/// binary values (media payloads) are shared, not copied.
pub fn encode_frame_chunks(m: &Msg) -> Vec<Bytes> {
    encode_into(m, true)
}

/// Encodes only the body (no length prefix).
pub fn encode_body(m: &Msg) -> Bytes {
    encode_frame(m).slice(4..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex_t(s: &str) -> Vec<u8> {
        unhex(s).unwrap()
    }

    #[test]
    fn s64_table_is_byte_exact() {
        let table: &[(i64, &str)] = &[
            (0, ""),
            (1, "01"),
            (100, "64"),
            (255, "ff"),
            (256, "0001"),
            (1337, "3905"),
            (90000, "905f01"),
            (2147483647, "ffffff7f"),
            (4294967295, "ffffffff"),
            (-1, "ffffffffffffffff"),
            (-2, "feffffffffffffff"),
            (-90000, "70a0feffffffffff"),
        ];
        for (v, h) in table {
            assert_eq!(hex(&s64_bytes(*v)), *h, "encoding {v}");
            let m = Msg::new().with("v", *v);
            let body = encode_body(&m);
            assert_eq!(body[0], 2);
            assert_eq!(
                u32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize,
                h.len() / 2
            );
            assert_eq!(decode_body(&body).unwrap().get_s64("v"), Some(*v));
        }
    }

    fn examples() -> Vec<(&'static str, Msg, &'static str)> {
        let challenge: Vec<u8> = (0u8..32).collect();
        let digest = unhex_t("470e797136d0d56df28783dde96302ea3a8e18ac");
        vec![
            (
                "A",
                Msg::new()
                    .with("method", "hello")
                    .with("htspversion", 33i64)
                    .with("clientname", "x"),
                "000000340306000000056d6574686f6468656c6c6f020b000000016874737076657273696f6e21030a00000001636c69656e746e616d6578",
            ),
            (
                "B",
                Msg::new()
                    .with("clientname", "Kodi Media Center")
                    .with("htspversion", 38i64)
                    .with("seq", 1i64)
                    .with("method", "hello"),
                "0000004e030a00000011636c69656e746e616d654b6f6469204d656469612043656e746572020b000000016874737076657273696f6e26020300000001736571010306000000056d6574686f6468656c6c6f",
            ),
            (
                "C",
                Msg::new()
                    .with("htspversion", 44i64)
                    .with("servername", "Switchyard")
                    .with("serverversion", "0.1.0")
                    .with("challenge", challenge)
                    .with("servercapability", Vec::<Value>::new())
                    .with("api_version", 19i64)
                    .with("seq", 1i64),
                "000000a5020b000000016874737076657273696f6e2c030a0000000a7365727665726e616d6553776974636879617264030d0000000573657276657276657273696f6e302e312e300409000000206368616c6c656e6765000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0510000000007365727665726361706162696c697479020b000000016170695f76657273696f6e1302030000000173657101",
            ),
            (
                "D",
                Msg::new()
                    .with("method", "authenticate")
                    .with("username", "kodi")
                    .with("digest", digest)
                    .with("seq", 2i64),
                "0000005403060000000c6d6574686f6461757468656e746963617465030800000004757365726e616d656b6f6469040600000014646967657374470e797136d0d56df28783dde96302ea3a8e18ac02030000000173657102",
            ),
            (
                "E1",
                Msg::new().with("noaccess", 1i64).with("seq", 2i64),
                "000000190208000000016e6f6163636573730102030000000173657102",
            ),
            (
                "E2",
                Msg::new()
                    .with("error", "Method not found")
                    .with("seq", 7i64),
                "000000250305000000106572726f724d6574686f64206e6f7420666f756e6402030000000173657107",
            ),
            (
                "F",
                Msg::new()
                    .with("channelId", 1i64)
                    .with("channelNumber", 1i64)
                    .with("channelName", "One")
                    .with("eventId", 0i64)
                    .with("nextEventId", 0i64)
                    .with(
                        "services",
                        vec![Value::Map(
                            Msg::new()
                                .with("name", "One")
                                .with("type", "HDTV")
                                .with("content", 1i64),
                        )],
                    )
                    .with("tags", vec![Value::S64(1), Value::S64(300)])
                    .with("method", "channelAdd"),
                "000000c20209000000016368616e6e656c496401020d000000016368616e6e656c4e756d62657201030b000000036368616e6e656c4e616d654f6e650207000000006576656e744964020b000000006e6578744576656e74496405080000002f73657276696365730100000000290304000000036e616d654f6e650304000000047479706548445456020700000001636f6e74656e740105040000000f74616773020000000001010200000000022c0103060000000a6d6574686f646368616e6e656c416464",
            ),
            (
                "G",
                Msg::new()
                    .with("method", "muxpkt")
                    .with("subscriptionId", 1i64)
                    .with("frametype", 73i64)
                    .with("stream", 1i64)
                    .with("com", 0i64)
                    .with("pts", 80000i64)
                    .with("dts", 40000i64)
                    .with("duration", 40000i64)
                    .with("payload", vec![0u8, 0, 0, 1, 9, 0xf0]),
                "000000870306000000066d6574686f646d7578706b74020e00000001737562736372697074696f6e4964010209000000016672616d65747970654902060000000173747265616d01020300000000636f6d020300000003707473803801020300000002647473409c0208000000026475726174696f6e409c0407000000067061796c6f61640000000109f0",
            ),
        ]
    }

    #[test]
    fn reference_examples_are_byte_exact_both_ways() {
        for (name, msg, h) in examples() {
            assert_eq!(hex(&encode_frame(&msg)), h, "example {name} encodes");
            let bytes = unhex_t(h);
            let mut buf = BytesMut::from(&bytes[..]);
            let decoded = split_frame(&mut buf).unwrap().unwrap();
            assert!(buf.is_empty());
            assert_eq!(decoded, msg, "example {name} decodes");
            let joined: Vec<u8> = encode_frame_chunks(&msg).concat();
            assert_eq!(hex(&joined), h, "example {name} chunked");
        }
    }

    #[test]
    fn example_h_single_fields_decode() {
        let m = decode_body(&unhex_t("070700000001656e61626c656401")).unwrap();
        assert_eq!(m.get("enabled"), Some(&Value::Bool(true)));
        let m = decode_body(&unhex_t("070700000000656e61626c6564")).unwrap();
        assert_eq!(m.get("enabled"), Some(&Value::Bool(false)));
        let m = decode_body(&unhex_t(
            "08040000001075756964000102030405060708090a0b0c0d0e0f",
        ))
        .unwrap();
        assert_eq!(
            m.get_str("uuid").unwrap(),
            "000102030405060708090a0b0c0d0e0f"
        );
        assert_eq!(
            decode_body(&unhex_t("020300000001736571010000")),
            Err(DecodeError::TrailingBytes(2))
        );
    }

    #[test]
    fn invalid_frames_are_rejected() {
        // 1..5 trailing bytes
        for n in 1..=5 {
            let mut b = encode_body(&Msg::new().with("seq", 1i64)).to_vec();
            b.extend(std::iter::repeat_n(0u8, n));
            assert_eq!(decode_body(&b), Err(DecodeError::TrailingBytes(n)));
        }
        // overrun
        assert!(matches!(
            decode_body(&unhex_t("0203000000ff736571")),
            Err(DecodeError::Overrun { .. })
        ));
        // bad types 0, 6, 9, 255
        for t in [0u8, 6, 9, 255] {
            let b = [t, 1, 0, 0, 0, 0, b'x'];
            assert_eq!(decode_body(&b), Err(DecodeError::BadType(t)));
        }
        // uuid of wrong length
        assert_eq!(
            decode_body(&unhex_t("080100000002750102")),
            Err(DecodeError::BadUuidLength(2))
        );
        // invalid nested container
        let inner = unhex_t("0203000000017365710100");
        let mut b = vec![1u8, 1, 0, 0, 0, inner.len() as u8, b'm'];
        b.extend(&inner);
        assert_eq!(decode_body(&b), Err(DecodeError::TrailingBytes(1)));
        // empty root is fine
        assert_eq!(decode_body(&[]), Ok(Msg::new()));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut body: Vec<u8> = Vec::new();
        for _ in 0..10_000 {
            let mut outer = vec![1u8, 0];
            outer.extend((body.len() as u32).to_be_bytes());
            outer.extend(&body);
            body = outer;
        }
        assert_eq!(decode_body(&body), Err(DecodeError::TooDeep));
    }

    #[test]
    fn size_limit() {
        assert_eq!(frame_body_len(1_048_576u32.to_be_bytes()), Ok(1_048_576));
        assert_eq!(
            frame_body_len(1_048_577u32.to_be_bytes()),
            Err(DecodeError::TooLarge(1_048_577))
        );
    }

    #[test]
    fn coercions() {
        let m = Msg::new()
            .with("a", "0x10")
            .with("b", "010")
            .with("c", " -42junk")
            .with("d", 5i64)
            .with("e", "0a0B")
            .with("f", "yes")
            .with("big", 0x1_0000_0000i64)
            .with("neg", -1i64);
        assert_eq!(m.get_s64("a"), Some(16));
        assert_eq!(m.get_s64("b"), Some(8));
        assert_eq!(m.get_s64("c"), Some(-42));
        assert_eq!(m.get_str("d").as_deref(), Some("5"));
        assert_eq!(m.get_bin("e").as_deref(), Some(&[0x0a, 0x0b][..]));
        assert_eq!(m.get_bool("f"), Some(true));
        assert_eq!(m.get_u32("big"), None);
        assert_eq!(m.get_u32("neg"), None);
        assert_eq!(m.get_s32("neg"), Some(-1));
        assert_eq!(strtoll("99999999999999999999"), i64::MAX);
        assert_eq!(strtoll("junk"), 0);
    }

    #[test]
    fn bool_and_uuid_are_never_emitted() {
        let m = Msg::new()
            .with("b", Value::Bool(true))
            .with("u", Value::Uuid([0xab; 16]));
        let body = encode_body(&m);
        let d = decode_body(&body).unwrap();
        assert_eq!(d.get("b"), Some(&Value::S64(1)));
        assert_eq!(d.get("u"), Some(&Value::Str("ab".repeat(16))));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::S64),
            "[ -~]{0,20}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..2000)
                .prop_map(|v| Value::Bin(Bytes::from(v))),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec(("[a-zA-Z]{0,12}", inner), 0..6)
                    .prop_map(|fields| Value::Map(Msg { fields })),
            ]
        })
    }

    proptest! {
        #[test]
        fn roundtrip(fields in proptest::collection::vec(("[a-zA-Z_]{0,40}", arb_value()), 0..8)) {
            let m = Msg { fields };
            let frame = encode_frame(&m);
            let mut buf = BytesMut::from(&frame[..]);
            prop_assert_eq!(split_frame(&mut buf).unwrap(), Some(m.clone()));
            let joined: Vec<u8> = encode_frame_chunks(&m).concat();
            prop_assert_eq!(&joined[..], &frame[..]);
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = decode_body(&bytes) {
                let body = encode_body(&m);
                let again = decode_body(&body).unwrap();
                prop_assert_eq!(encode_body(&again), body);
            }
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = split_frame(&mut buf);
        }

        #[test]
        fn any_string_coercion_never_panics(s in ".{0,40}") {
            let m = Msg::new().with("x", s);
            let _ = (m.get_s64("x"), m.get_bin("x"), m.get_bool("x"), m.get_u32("x"));
        }
    }
}
