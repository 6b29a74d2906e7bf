//! Login tokens and reconnection tickets.
//!
//! Both are `base64(JSON)` objects carrying a signature that is, as OWT does it,
//! `base64(lowercase_hex(HMAC-SHA256(key, message)))` — base64 of the 64-character hex string,
//! not of the digest. Tokens are single use and expire three minutes after creation; the
//! store is sans-IO: every call takes `now` in milliseconds since the epoch.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// A token is refused when created longer ago than this.
pub const TOKEN_LIFETIME_MS: u64 = 3 * 60 * 1000;
/// Default reconnection ticket lifetime.
pub const TICKET_LIFETIME_MS: u64 = 600 * 1000;

/// `base64(hex(HMAC-SHA256(key, message)))`.
pub fn sign(key: &str, message: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(message.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    B64.encode(hex)
}

/// Constant-time comparison, so a forger learns nothing from response timing.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Random id of `[0-9a-f]`, `hex_digits` long.
pub fn random_hex(hex_digits: usize) -> String {
    (0..hex_digits)
        .map(|_| format!("{:x}", rand::random::<u8>() & 0xf))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base64 or not the expected JSON.
    #[error("Invalid token")]
    Malformed,
    #[error("Invalid token signature")]
    Signature,
    /// Already used, or never issued. 4.3.x says "Unknown".
    #[error("Unknown")]
    Unknown,
    #[error("Expired")]
    Expired,
}

/// The token string's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    pub token_id: String,
    pub host: String,
    pub secure: bool,
    pub signature: String,
}

impl Token {
    pub fn encode(&self) -> String {
        B64.encode(serde_json::to_vec(self).unwrap_or_default())
    }
    pub fn decode(s: &str) -> Result<Token, TokenError> {
        let bytes = B64.decode(s.trim()).map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
    }
    fn message(token_id: &str, host: &str) -> String {
        format!("{token_id},{host}")
    }
}

/// What the server remembers about an issued token: who logs in with it, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub user: String,
    pub role: String,
    pub room: String,
    pub created_ms: u64,
    pub host: String,
    pub secure: bool,
}

/// Issued tokens, consumed at login.
#[derive(Debug, Default)]
pub struct TokenStore {
    records: HashMap<String, TokenRecord>,
}

impl TokenStore {
    /// Issue a token for `record` and return its string form.
    pub fn create(&mut self, key: &str, record: TokenRecord) -> String {
        self.purge(record.created_ms);
        let token_id = random_hex(24);
        let signature = sign(key, &Token::message(&token_id, &record.host));
        let token = Token {
            token_id: token_id.clone(),
            host: record.host.clone(),
            secure: record.secure,
            signature,
        };
        self.records.insert(token_id, record);
        token.encode()
    }

    /// Check and consume a token: it works once, within [`TOKEN_LIFETIME_MS`].
    pub fn consume(
        &mut self,
        key: &str,
        token: &str,
        now_ms: u64,
    ) -> Result<TokenRecord, TokenError> {
        let t = Token::decode(token)?;
        if !same(
            &sign(key, &Token::message(&t.token_id, &t.host)),
            &t.signature,
        ) {
            return Err(TokenError::Signature);
        }
        let record = self
            .records
            .remove(&t.token_id)
            .ok_or(TokenError::Unknown)?;
        self.purge(now_ms);
        if now_ms.saturating_sub(record.created_ms) > TOKEN_LIFETIME_MS {
            return Err(TokenError::Expired);
        }
        Ok(record)
    }

    fn purge(&mut self, now_ms: u64) {
        self.records
            .retain(|_, r| now_ms.saturating_sub(r.created_ms) <= TOKEN_LIFETIME_MS);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("Invalid reconnection ticket")]
    Malformed,
    #[error("Ticket is expired")]
    Expired,
    #[error("Invalid reconnection ticket signature")]
    Signature,
}

/// A reconnection ticket, as the SDK base64-decodes and JSON-parses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub participant_id: String,
    pub ticket_id: String,
    pub not_before: u64,
    pub not_after: u64,
    pub signature: String,
}

impl Ticket {
    fn message(participant_id: &str, not_before: u64, not_after: u64) -> String {
        format!("{participant_id},{not_before},{not_after}")
    }

    /// Issue a ticket for `participant_id`, valid from `now_ms` for `lifetime_ms`.
    pub fn issue(key: &str, participant_id: &str, now_ms: u64, lifetime_ms: u64) -> Ticket {
        let not_after = now_ms.saturating_add(lifetime_ms);
        Ticket {
            participant_id: participant_id.to_owned(),
            ticket_id: random_hex(16),
            not_before: now_ms,
            not_after,
            signature: sign(key, &Self::message(participant_id, now_ms, not_after)),
        }
    }

    pub fn encode(&self) -> String {
        B64.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decode and check time window then signature, in the portal's order.
    pub fn verify(key: &str, s: &str, now_ms: u64) -> Result<Ticket, TicketError> {
        let bytes = B64.decode(s.trim()).map_err(|_| TicketError::Malformed)?;
        let t: Ticket = serde_json::from_slice(&bytes).map_err(|_| TicketError::Malformed)?;
        if now_ms < t.not_before || now_ms > t.not_after {
            return Err(TicketError::Expired);
        }
        let expected = sign(
            key,
            &Self::message(&t.participant_id, t.not_before, t.not_after),
        );
        if !same(&expected, &t.signature) {
            return Err(TicketError::Signature);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(now: u64) -> TokenRecord {
        TokenRecord {
            user: "alice".into(),
            role: "presenter".into(),
            room: "r".into(),
            created_ms: now,
            host: "127.0.0.1:8443".into(),
            secure: false,
        }
    }

    #[test]
    fn signature_is_base64_of_hex_hmac() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog") is a classic vector.
        let hex = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        assert_eq!(
            sign("key", "The quick brown fox jumps over the lazy dog"),
            B64.encode(hex)
        );
    }

    #[test]
    fn token_works_once() {
        let mut s = TokenStore::default();
        let t = s.create("k", record(1000));
        let decoded = Token::decode(&t).unwrap();
        assert_eq!(decoded.host, "127.0.0.1:8443");
        assert_eq!(decoded.token_id.len(), 24);
        assert_eq!(s.consume("k", &t, 2000).unwrap().user, "alice");
        assert_eq!(s.consume("k", &t, 2000), Err(TokenError::Unknown));
    }

    #[test]
    fn token_expires_after_three_minutes() {
        let mut s = TokenStore::default();
        let t = s.create("k", record(1000));
        assert_eq!(
            s.consume("k", &t, 1000 + TOKEN_LIFETIME_MS + 1),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn altered_host_breaks_signature() {
        let mut s = TokenStore::default();
        let t = s.create("k", record(1000));
        let mut decoded = Token::decode(&t).unwrap();
        decoded.host = "evil:1".into();
        assert_eq!(
            s.consume("k", &decoded.encode(), 1000),
            Err(TokenError::Signature)
        );
        assert_eq!(s.consume("other", &t, 1000), Err(TokenError::Signature));
        assert_eq!(s.consume("k", "%%%", 1000), Err(TokenError::Malformed));
    }

    #[test]
    fn ticket_signature_vector() {
        // Checklist 8: base64(hex(HMAC-SHA256(key, "participantId,notBefore,notAfter"))).
        let t = Ticket::issue("reconnect-key", "p1", 1_700_000_000_000, TICKET_LIFETIME_MS);
        assert_eq!(t.not_after - t.not_before, 600_000);
        assert_eq!(
            t.signature,
            sign("reconnect-key", "p1,1700000000000,1700000600000")
        );
        let back = Ticket::verify("reconnect-key", &t.encode(), 1_700_000_000_001).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn ticket_window_and_signature_are_checked() {
        let t = Ticket::issue("k", "p1", 1000, 10);
        assert_eq!(
            Ticket::verify("k", &t.encode(), 1011),
            Err(TicketError::Expired)
        );
        assert_eq!(
            Ticket::verify("k", &t.encode(), 999),
            Err(TicketError::Expired)
        );
        let mut forged = t.clone();
        forged.participant_id = "p2".into();
        assert_eq!(
            Ticket::verify("k", &forged.encode(), 1005),
            Err(TicketError::Signature)
        );
        assert_eq!(
            Ticket::verify("k", "notbase64!", 1005),
            Err(TicketError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn ticket_roundtrip(p in "[0-9A-Za-z_-]{1,20}", now in 0u64..1u64<<50) {
            let t = Ticket::issue("k", &p, now, TICKET_LIFETIME_MS);
            prop_assert_eq!(Ticket::verify("k", &t.encode(), now), Ok(t));
        }

        #[test]
        fn token_garbage_never_panics(s in ".{0,200}") {
            let mut store = TokenStore::default();
            let _ = store.consume("k", &s, 0);
            let _ = Ticket::verify("k", &s, 0);
        }
    }
}
