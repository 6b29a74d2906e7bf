//! HTTP tickets (reference §10.2): a 40-hex token from HTSP `getTicket` that
//! grants its creator's rights on exactly one path for a limited time. It is
//! not consumed by use. Time is passed in, so the rules are testable without
//! a clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use yard::access::Rights;

use crate::wire::hex;

/// Tvheadend's default lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// An existing ticket younger than this is handed out again.
const REUSE_WITHIN: Duration = Duration::from_secs(60);

struct Ticket {
    path: String,
    rights: Rights,
    created: Instant,
}

/// The server's tickets; cheap to clone and shared with the HTTP side.
#[derive(Clone)]
pub struct Tickets {
    inner: Arc<Mutex<HashMap<String, Ticket>>>,
    lifetime: Duration,
}

impl Default for Tickets {
    fn default() -> Self {
        Tickets::new(DEFAULT_LIFETIME)
    }
}

impl Tickets {
    pub fn new(lifetime: Duration) -> Tickets {
        Tickets {
            inner: Arc::new(Mutex::new(HashMap::new())),
            lifetime,
        }
    }

    /// A ticket for `path` (without webroot and query) with `rights`.
    pub fn create_at(&self, path: &str, rights: &Rights, now: Instant) -> String {
        let mut map = self.inner.lock();
        map.retain(|_, t| now.saturating_duration_since(t.created) < self.lifetime);
        if let Some((id, _)) = map.iter().find(|(_, t)| {
            t.path == path
                && t.rights == *rights
                && now.saturating_duration_since(t.created) < REUSE_WITHIN
        }) {
            return id.clone();
        }
        let id = hex(&rand::random::<[u8; 20]>());
        map.insert(
            id.clone(),
            Ticket {
                path: path.to_owned(),
                rights: rights.clone(),
                created: now,
            },
        );
        id
    }

    /// The rights a ticket grants for `path`, if it is valid for it now.
    pub fn check_at(&self, ticket: &str, path: &str, now: Instant) -> Option<Rights> {
        let map = self.inner.lock();
        let t = map.get(ticket)?;
        if t.path != path || now.saturating_duration_since(t.created) >= self.lifetime {
            return None;
        }
        Some(t.rights.clone())
    }

    pub fn create(&self, path: &str, rights: &Rights) -> String {
        self.create_at(path, rights, Instant::now())
    }

    /// What the HTTP side calls for `?ticket=`: `path` is the request path
    /// without webroot and query string.
    pub fn check(&self, ticket: &str, path: &str) -> Option<Rights> {
        self.check_at(ticket, path, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_path_reusable_until_expiry() {
        let t = Tickets::new(Duration::from_secs(300));
        let r = Rights {
            streaming: true,
            ..Rights::default()
        };
        let now = Instant::now();
        let id = t.create_at("/stream/channelid/1", &r, now);
        assert_eq!(id.len(), 40);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(t.check_at(&id, "/stream/channelid/1", now), Some(r.clone()));
        assert_eq!(
            t.check_at(&id, "/stream/channelid/1", now + Duration::from_secs(10)),
            Some(r.clone())
        );
        assert_eq!(t.check_at(&id, "/stream/channelid/2", now), None);
        assert_eq!(
            t.check_at(&id, "/stream/channelid/1", now + Duration::from_secs(300)),
            None
        );
        assert_eq!(t.check_at("nope", "/stream/channelid/1", now), None);
        assert_eq!(
            t.create_at("/stream/channelid/1", &r, now + Duration::from_secs(5)),
            id
        );
        assert_ne!(
            t.create_at("/stream/channelid/1", &r, now + Duration::from_secs(61)),
            id
        );
    }
}
