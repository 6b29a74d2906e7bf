//! Group files, passwords and tokens: who may join which group, as whom, with
//! which permissions.
//!
//! Group files are the JSON files Galène administrators already have
//! (`groups/NAME.json`); they are re-read whenever their size or mtime
//! changes, so edits take effect without a restart. A file with an unknown
//! field is invalid as a whole: Galène refuses it, and so do we, rather than
//! silently ignore a setting someone relied on for security.
//!
//! This module reads files and computes hashes (bcrypt is slow on purpose):
//! callers on an async runtime run [`authenticate`] on a blocking thread.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use yard::room::{Permission, Permissions};

/// Chat history retention when a group does not say.
pub const DEFAULT_MAX_HISTORY_AGE: u64 = 14400;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum GroupError {
    #[error("illegal group name")]
    IllegalName,
    #[error("group does not exist")]
    NotFound,
    #[error("invalid group file {file}: {reason}")]
    Invalid { file: String, reason: String },
}

/// A password as written in a group file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Password {
    Plain(String),
    Structured(StructuredPassword),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StructuredPassword {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PasswordError {
    #[error("password entry has no key")]
    NoKey,
    #[error("password entry has bad hex")]
    BadHex,
    #[error("unsupported password type {0}")]
    UnknownType(String),
    #[error("unsupported hash {0}")]
    UnknownHash(String),
    #[error("bad bcrypt hash")]
    Bcrypt,
}

impl Password {
    /// Whether `given` matches. A malformed entry is an error, never a silent
    /// mismatch, so a typo in a group file is noticed.
    pub fn verify(&self, given: &str) -> Result<bool, PasswordError> {
        match self {
            Password::Plain(key) => Ok(constant_time_eq(key.as_bytes(), given.as_bytes())),
            Password::Structured(p) => match p.kind.as_str() {
                "wildcard" => Ok(true),
                "plain" | "" => {
                    let key = p.key.as_deref().ok_or(PasswordError::NoKey)?;
                    Ok(constant_time_eq(key.as_bytes(), given.as_bytes()))
                }
                "pbkdf2" => {
                    let hash = p.hash.as_deref().unwrap_or("");
                    if hash != "sha-256" {
                        return Err(PasswordError::UnknownHash(hash.to_owned()));
                    }
                    let key = hex_decode(p.key.as_deref().ok_or(PasswordError::NoKey)?)?;
                    let salt = hex_decode(p.salt.as_deref().unwrap_or(""))?;
                    let rounds = p.iterations.unwrap_or(0).max(1);
                    let mut derived = vec![0u8; key.len()];
                    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                        given.as_bytes(),
                        &salt,
                        rounds,
                        &mut derived,
                    );
                    Ok(constant_time_eq(&derived, &key))
                }
                "bcrypt" => {
                    let key = p.key.as_deref().ok_or(PasswordError::NoKey)?;
                    bcrypt::verify(given, key).map_err(|_| PasswordError::Bcrypt)
                }
                other => Err(PasswordError::UnknownType(other.to_owned())),
            },
        }
    }

    fn wildcard() -> Password {
        Password::Structured(StructuredPassword {
            kind: "wildcard".into(),
            ..Default::default()
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex_decode(s: &str) -> Result<Vec<u8>, PasswordError> {
    if !s.len().is_multiple_of(2) {
        return Err(PasswordError::BadHex);
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16).ok_or(PasswordError::BadHex);
            match pair {
                [h, l] => Ok((digit(*h)? * 16 + digit(*l)?) as u8),
                _ => Err(PasswordError::BadHex),
            }
        })
        .collect()
}

/// A named permission set or an explicit list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PermissionSpec {
    Set(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<PermissionSpec>,
}

/// An entry of the obsolete `op`/`presenter`/`other` arrays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyUser {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Password>,
}

/// A group file, field by field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Description {
    #[serde(default)]
    pub users: BTreeMap<String, UserEntry>,
    #[serde(default)]
    pub wildcard_user: Option<UserEntry>,
    #[serde(default, rename = "authKeys")]
    pub auth_keys: Vec<Value>,
    #[serde(default, rename = "authServer")]
    pub auth_server: Option<String>,
    #[serde(default, rename = "authPortal")]
    pub auth_portal: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub contact: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub max_clients: usize,
    #[serde(default)]
    pub max_history_age: Option<u64>,
    #[serde(default)]
    pub not_before: Option<String>,
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub allow_recording: bool,
    #[serde(default)]
    pub unrestricted_tokens: bool,
    #[serde(default)]
    pub auto_subgroups: bool,
    #[serde(default)]
    pub allow_subgroups: bool,
    #[serde(default)]
    pub autolock: bool,
    #[serde(default)]
    pub autokick: bool,
    #[serde(default)]
    pub redirect: Option<String>,
    #[serde(default)]
    pub codecs: Option<Vec<String>>,
    #[serde(default)]
    pub op: Vec<LegacyUser>,
    #[serde(default)]
    pub presenter: Vec<LegacyUser>,
    #[serde(default)]
    pub other: Vec<LegacyUser>,
    #[serde(default)]
    pub allow_anonymous: bool,
}

/// A loaded, checked group.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub description: Description,
    /// Created from a parent's `auto-subgroups`: never public, no description.
    pub is_subgroup: bool,
    pub not_before: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    keys: Vec<jsonwebtoken::jwk::Jwk>,
}

impl Group {
    pub fn is_public(&self) -> bool {
        self.description.public && !self.is_subgroup
    }

    pub fn max_history_age(&self) -> Duration {
        Duration::from_secs(
            self.description
                .max_history_age
                .unwrap_or(DEFAULT_MAX_HISTORY_AGE),
        )
    }

    pub fn codecs(&self) -> Vec<String> {
        match &self.description.codecs {
            Some(c) if !c.is_empty() => c.iter().map(|s| s.to_ascii_lowercase()).collect(),
            _ => vec!["vp8".into(), "opus".into()],
        }
    }

    /// Expands a permission set name or list as Galène does.
    pub fn expand(&self, spec: &PermissionSpec) -> Permissions {
        match spec {
            PermissionSpec::List(list) => {
                list.iter().filter_map(|s| Permission::parse(s)).collect()
            }
            PermissionSpec::Set(name) => {
                let d = &self.description;
                let mut p = Permissions::new();
                match name.as_str() {
                    "op" => {
                        for q in [
                            Permission::Op,
                            Permission::Present,
                            Permission::Message,
                            Permission::Caption,
                            Permission::Token,
                        ] {
                            p.insert(q);
                        }
                        if d.allow_recording {
                            p.prepend(Permission::Record);
                        }
                    }
                    "present" => {
                        p.insert(Permission::Present);
                        p.insert(Permission::Message);
                        if d.unrestricted_tokens {
                            p.prepend(Permission::Token);
                        }
                    }
                    "message" => p.insert(Permission::Message),
                    "caption" => p.insert(Permission::Caption),
                    "admin" => p.insert(Permission::Admin),
                    _ => {}
                }
                p
            }
        }
    }

    fn permissions_of(&self, entry: &UserEntry) -> Permissions {
        entry
            .permissions
            .as_ref()
            .map(|s| self.expand(s))
            .unwrap_or_default()
    }
}

fn check_set_name(spec: &PermissionSpec) -> Result<(), String> {
    match spec {
        PermissionSpec::Set(name)
            if !["op", "present", "message", "observe", "caption", "admin"]
                .contains(&name.as_str()) =>
        {
            Err(format!("unknown permission set {name}"))
        }
        _ => Ok(()),
    }
}

fn parse_time(field: &str, s: &Option<String>) -> Result<Option<DateTime<Utc>>, String> {
    match s {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| format!("bad {field}: {e}")),
    }
}

/// Parses and checks a group file's contents.
pub fn parse_group(name: &str, text: &[u8], is_subgroup: bool) -> Result<Group, String> {
    let mut d: Description = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    // The obsolete arrays become users; the first entry without a username
    // becomes the wildcard user; entries already present are ignored.
    let legacy = [
        (std::mem::take(&mut d.op), "op"),
        (std::mem::take(&mut d.presenter), "present"),
        (std::mem::take(&mut d.other), "message"),
    ];
    for (list, set) in legacy {
        for u in list {
            let entry = UserEntry {
                password: Some(u.password.unwrap_or_else(Password::wildcard)),
                permissions: Some(PermissionSpec::Set(set.into())),
            };
            match u.username {
                Some(name) => {
                    d.users.entry(name).or_insert(entry);
                }
                None => {
                    if d.wildcard_user.is_none() {
                        d.wildcard_user = Some(entry);
                    }
                }
            }
        }
    }
    if d.allow_subgroups {
        d.auto_subgroups = true;
    }
    for entry in d.users.values().chain(d.wildcard_user.iter()) {
        if let Some(spec) = &entry.permissions {
            check_set_name(spec)?;
        }
    }
    let not_before = parse_time("not-before", &d.not_before)?;
    let expires = parse_time("expires", &d.expires)?;
    let keys = d
        .auth_keys
        .iter()
        .map(|k| serde_json::from_value(k.clone()).map_err(|e| format!("bad authKeys: {e}")))
        .collect::<Result<Vec<jsonwebtoken::jwk::Jwk>, String>>()?;
    if is_subgroup {
        d.description = None;
        d.public = false;
    }
    Ok(Group {
        name: name.to_owned(),
        description: d,
        is_subgroup,
        not_before,
        expires,
        keys,
    })
}

/// Whether `name` may name a group: a clean relative path.
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('\\')
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.'))
}

/// Whether a username is acceptable: empty, or a clean path without
/// backslash (any other characters are fine).
pub fn valid_username(name: &str) -> bool {
    name.is_empty()
        || (!name.contains('\\')
            && name
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

struct CachedFile {
    mtime: Option<SystemTime>,
    size: u64,
    group: Result<Arc<Group>, String>,
}

/// The groups directory, with parsed files cached until they change.
pub struct GroupStore {
    dir: PathBuf,
    cache: Mutex<HashMap<PathBuf, CachedFile>>,
}

impl GroupStore {
    pub fn new(dir: impl Into<PathBuf>) -> GroupStore {
        GroupStore {
            dir: dir.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(
        &self,
        path: &Path,
        name: &str,
        is_subgroup: bool,
    ) -> Option<Result<Arc<Group>, String>> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let mtime = meta.modified().ok();
        let size = meta.len();
        let mut cache = self.cache.lock();
        if let Some(c) = cache.get(path)
            && c.mtime == mtime
            && c.size == size
        {
            if let Ok(g) = &c.group {
                if g.name == name {
                    return Some(c.group.clone());
                }
            } else {
                return Some(c.group.clone());
            }
        }
        let group = match std::fs::read(path) {
            Ok(text) => parse_group(name, &text, is_subgroup).map(Arc::new),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &group {
            tracing::warn!(file = %path.display(), error = %e, "invalid group file");
        }
        cache.insert(
            path.to_owned(),
            CachedFile {
                mtime,
                size,
                group: group.clone(),
            },
        );
        Some(group)
    }

    /// Finds group `name`: its own file, or the nearest ancestor's file when
    /// that ancestor has `auto-subgroups`.
    pub fn get(&self, name: &str) -> Result<Arc<Group>, GroupError> {
        if !valid_group_name(name) {
            return Err(GroupError::IllegalName);
        }
        let mut candidate = name;
        loop {
            let path = self.dir.join(format!("{candidate}.json"));
            let is_subgroup = candidate != name;
            if let Some(found) = self.read(&path, candidate, false) {
                let group = found.map_err(|reason| GroupError::Invalid {
                    file: path.display().to_string(),
                    reason,
                })?;
                if !is_subgroup {
                    return Ok(group);
                }
                if !group.description.auto_subgroups {
                    return Err(GroupError::NotFound);
                }
                let mut sub = (*group).clone();
                sub.name = name.to_owned();
                sub.is_subgroup = true;
                sub.description.description = None;
                sub.description.public = false;
                return Ok(Arc::new(sub));
            }
            match candidate.rfind('/') {
                Some(pos) => candidate = candidate.get(..pos).unwrap_or(""),
                None => return Err(GroupError::NotFound),
            }
        }
    }

    /// Every group that has its own file, sorted by name.
    pub fn all(&self) -> Vec<Arc<Group>> {
        let mut names = Vec::new();
        walk(&self.dir, "", &mut names);
        names.sort();
        names.iter().filter_map(|n| self.get(n).ok()).collect()
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(&path, &format!("{prefix}{file_name}/"), out);
        } else if let Some(stem) = file_name.strip_suffix(".json") {
            out.push(format!("{prefix}{stem}"));
        }
    }
}

/// A stateful token as stored in `var/tokens.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub token: String,
    #[serde(default)]
    pub group: String,
    #[serde(
        default,
        rename = "includeSubgroups",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub include_subgroups: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(
        default,
        rename = "not-before",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_before: Option<String>,
    #[serde(default, rename = "issuedBy", skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
    #[serde(default, rename = "issuedAt", skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
}

impl StoredToken {
    fn valid_for(&self, group: &str, now: DateTime<Utc>) -> bool {
        let group_ok = self.group == group
            || (self.include_subgroups
                && (self.group.is_empty() || group.starts_with(&format!("{}/", self.group))));
        let Some(Ok(expires)) = self.expires.as_deref().map(DateTime::parse_from_rfc3339) else {
            return false;
        };
        if now > expires {
            return false;
        }
        if let Some(nb) = self.not_before.as_deref() {
            match DateTime::parse_from_rfc3339(nb) {
                Ok(nb) if now >= nb => {}
                _ => return false,
            }
        }
        group_ok
    }
}

/// `var/tokens.jsonl`, one token per line; re-read when it changes.
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, u64, Vec<StoredToken>)>,
}

impl TokenStore {
    pub fn new(path: impl Into<PathBuf>) -> TokenStore {
        TokenStore {
            path: path.into(),
            cache: Mutex::new((None, 0, Vec::new())),
        }
    }

    fn load(&self) -> Vec<StoredToken> {
        let meta = std::fs::metadata(&self.path).ok();
        let mtime = meta.as_ref().and_then(|m| m.modified().ok());
        let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
        let mut cache = self.cache.lock();
        if meta.is_some() && cache.0 == mtime && cache.1 == size {
            return cache.2.clone();
        }
        let tokens: Vec<StoredToken> = std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        *cache = (mtime, size, tokens.clone());
        tokens
    }

    pub fn find(&self, secret: &str) -> Option<StoredToken> {
        self.load().into_iter().find(|t| t.token == secret)
    }

    pub fn list(&self, group: &str) -> Vec<StoredToken> {
        self.load()
            .into_iter()
            .filter(|t| t.group == group)
            .collect()
    }

    fn write_all(&self, tokens: &[StoredToken]) -> std::io::Result<()> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            for t in tokens {
                let line = serde_json::to_string(t).map_err(std::io::Error::other)?;
                writeln!(f, "{line}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }

    pub fn add(&self, token: StoredToken) -> std::io::Result<()> {
        let mut all = self.load();
        all.push(token);
        self.write_all(&all)
    }

    /// Replaces the token with the same secret; false if there is none.
    pub fn replace(&self, token: StoredToken) -> std::io::Result<bool> {
        let mut all = self.load();
        let Some(slot) = all.iter_mut().find(|t| t.token == token.token) else {
            return Ok(false);
        };
        *slot = token;
        self.write_all(&all)?;
        Ok(true)
    }
}

/// What a client presented in `join`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("not authorised")]
    NotAuthorised,
    #[error("username required")]
    NeedUsername,
    #[error("not authorised: this username is taken")]
    DuplicateUsername,
    #[error("internal server error")]
    Internal,
}

impl AuthError {
    /// The stable `error` id of `joined` `fail`, if any.
    pub fn error_id(&self) -> Option<&'static str> {
        match self {
            AuthError::NeedUsername => Some("need-username"),
            AuthError::DuplicateUsername => Some("duplicate-username"),
            _ => None,
        }
    }
}

/// Settings that affect token checks.
#[derive(Debug, Clone, Default)]
pub struct AuthContext {
    /// When set, JWT audiences must name this host.
    pub canonical_host: Option<String>,
}

/// Who a successful authentication says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub permissions: Permissions,
}

/// Authenticates a `join` against `group` (token first, then password).
pub fn authenticate(
    group: &Group,
    creds: &Credentials,
    tokens: &TokenStore,
    ctx: &AuthContext,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    let identity = match creds.token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => authenticate_token(group, creds, token, tokens, ctx, now)?,
        None => match creds.username.as_deref() {
            Some(username) => authenticate_password(group, username, creds.password.as_deref())?,
            None => return Err(AuthError::Internal),
        },
    };
    if !valid_username(&identity.username) {
        return Err(AuthError::NotAuthorised);
    }
    Ok(identity)
}

fn authenticate_password(
    group: &Group,
    username: &str,
    password: Option<&str>,
) -> Result<Identity, AuthError> {
    let given = password.unwrap_or("");
    let entry = match group.description.users.get(username) {
        Some(entry) => entry,
        None => group
            .description
            .wildcard_user
            .as_ref()
            .ok_or(AuthError::NotAuthorised)?,
    };
    let Some(stored) = &entry.password else {
        return Err(AuthError::NotAuthorised);
    };
    match stored.verify(given) {
        Ok(true) => Ok(Identity {
            username: username.to_owned(),
            permissions: group.permissions_of(entry),
        }),
        Ok(false) => Err(AuthError::NotAuthorised),
        Err(e) => {
            tracing::warn!(group = %group.name, error = %e, "bad password entry");
            Err(AuthError::Internal)
        }
    }
}

/// A token without a username takes the client's, which must not be a
/// configured user's (that would be impersonation).
fn token_username(
    group: &Group,
    token_user: Option<String>,
    creds: &Credentials,
    stateful: bool,
) -> Result<String, AuthError> {
    if let Some(u) = token_user {
        return Ok(u);
    }
    match creds.username.as_deref() {
        None if stateful => Err(AuthError::NeedUsername),
        None => Ok(String::new()),
        Some(u) if group.description.users.contains_key(u) => Err(AuthError::DuplicateUsername),
        Some(u) => Ok(u.to_owned()),
    }
}

fn authenticate_token(
    group: &Group,
    creds: &Credentials,
    token: &str,
    tokens: &TokenStore,
    ctx: &AuthContext,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    if jsonwebtoken::decode_header(token).is_ok() {
        let claims = verify_jwt(group, token, ctx)?;
        let username = token_username(group, claims.sub, creds, false)?;
        let permissions = claims
            .permissions
            .unwrap_or_default()
            .iter()
            .filter_map(|s| Permission::parse(s))
            .collect();
        return Ok(Identity {
            username,
            permissions,
        });
    }
    let stored = tokens.find(token).ok_or(AuthError::NotAuthorised)?;
    if !stored.valid_for(&group.name, DateTime::<Utc>::from(now)) {
        return Err(AuthError::NotAuthorised);
    }
    let username = token_username(group, stored.username.clone(), creds, true)?;
    Ok(Identity {
        username,
        permissions: stored
            .permissions
            .iter()
            .filter_map(|s| Permission::parse(s))
            .collect(),
    })
}

#[derive(Debug, Deserialize)]
struct JwtClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
    #[serde(default, rename = "include-subgroups")]
    include_subgroups: Option<bool>,
}

fn verify_jwt(group: &Group, token: &str, ctx: &AuthContext) -> Result<JwtClaims, AuthError> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::AlgorithmParameters};
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::NotAuthorised)?;
    let alg = header.alg;
    if !matches!(
        alg,
        Algorithm::HS256
            | Algorithm::HS384
            | Algorithm::HS512
            | Algorithm::ES256
            | Algorithm::RS256
    ) {
        return Err(AuthError::NotAuthorised);
    }
    let mut validation = Validation::new(alg);
    validation.leeway = 5;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    for jwk in &group.keys {
        let key_alg = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
        if key_alg.as_deref() != Some(&format!("{alg:?}")) {
            continue;
        }
        if let Some(kid) = &header.kid
            && jwk.common.key_id.as_deref() != Some(kid.as_str())
        {
            continue;
        }
        if let AlgorithmParameters::OctetKey(oct) = &jwk.algorithm {
            // HMAC keys must have exactly the hash's length
            use base64::Engine;
            let len = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(oct.value.trim_end_matches('='))
                .map(|k| k.len())
                .unwrap_or(0);
            let want = match alg {
                Algorithm::HS256 => 32,
                Algorithm::HS384 => 48,
                _ => 64,
            };
            if len != want {
                continue;
            }
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let Ok(data) = jsonwebtoken::decode::<JwtClaims>(token, &key, &validation) else {
            continue;
        };
        let claims = data.claims;
        if !audience_matches(&claims, &group.name, ctx) {
            return Err(AuthError::NotAuthorised);
        }
        return Ok(claims);
    }
    Err(AuthError::NotAuthorised)
}

fn audience_matches(claims: &JwtClaims, group: &str, ctx: &AuthContext) -> bool {
    let auds: Vec<&str> = match &claims.aud {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let want = format!("/group/{group}/");
    auds.iter().any(|aud| {
        let Some((_, rest)) = aud.split_once("://") else {
            return false;
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("")),
            None => (rest, ""),
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        if let Some(canonical) = &ctx.canonical_host
            && !host.eq_ignore_ascii_case(canonical)
        {
            return false;
        }
        if path == want {
            return true;
        }
        claims.include_subgroups == Some(true)
            && path.starts_with("/group/")
            && path.ends_with('/')
            && want.starts_with(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(json: &str) -> Group {
        parse_group("test", json.as_bytes(), false).unwrap()
    }

    fn login(g: &Group, user: &str, pw: &str) -> Result<Identity, AuthError> {
        let dir = tempfile::tempdir().unwrap();
        authenticate(
            g,
            &Credentials {
                username: Some(user.into()),
                password: Some(pw.into()),
                token: None,
            },
            &TokenStore::new(dir.path().join("tokens.jsonl")),
            &AuthContext::default(),
            SystemTime::now(),
        )
    }

    fn names(p: &Permissions) -> Vec<&'static str> {
        p.iter().map(Permission::as_str).collect()
    }

    const UPSTREAM_VECTORS: &str = r#"{
        "users": {
            "jch": {"password": "topsecret", "permissions": "op"},
            "john": {"password": "secret", "permissions": "present"},
            "james": {"password": "secret2", "permissions": "message"},
            "peter": {"password": "secret4"},
            "admin": {"password": "admin", "permissions": "admin"},
            "speech-to-text": {"password": {"type": "wildcard"}, "permissions": "caption"}
        },
        "wildcard-user": {"password": {"type": "wildcard"}, "permissions": "message"}
    }"#;

    #[test]
    fn galene_test_vectors() {
        let g = group(UPSTREAM_VECTORS);
        assert_eq!(
            names(&login(&g, "paul", "anything").unwrap().permissions),
            ["message"]
        );
        assert_eq!(login(&g, "jch", "wrong"), Err(AuthError::NotAuthorised));
        assert!(
            login(&g, "peter", "secret4")
                .unwrap()
                .permissions
                .is_empty()
        );
        assert_eq!(
            names(&login(&g, "jch", "topsecret").unwrap().permissions),
            ["op", "present", "message", "caption", "token"]
        );
        assert_eq!(
            names(&login(&g, "speech-to-text", "").unwrap().permissions),
            ["caption"]
        );
    }

    #[test]
    fn set_expansion_depends_on_group_flags() {
        let g = group(
            r#"{"allow-recording": true, "unrestricted-tokens": true,
                "users": {"a": {"password": "x", "permissions": "op"},
                          "b": {"password": "x", "permissions": "present"},
                          "c": {"password": "x", "permissions": "observe"}}}"#,
        );
        assert_eq!(
            names(&login(&g, "a", "x").unwrap().permissions),
            ["record", "op", "present", "message", "caption", "token"]
        );
        assert_eq!(
            names(&login(&g, "b", "x").unwrap().permissions),
            ["token", "present", "message"]
        );
        assert!(login(&g, "c", "x").unwrap().permissions.is_empty());
    }

    #[test]
    fn unknown_fields_and_sets_make_the_file_invalid() {
        assert!(parse_group("g", br#"{"public": true, "bogus": 1}"#, false).is_err());
        assert!(
            parse_group(
                "g",
                br#"{"users": {"a": {"permissions": "wizard"}}}"#,
                false
            )
            .is_err()
        );
        assert!(
            parse_group(
                "g",
                br#"{"users": {"a": {"password": {"type":"plain","key":"x","extra":1}}}}"#,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn legacy_arrays() {
        let g = group(
            r#"{"op": [{"username": "boss", "password": "pw"}],
                "presenter": [{"username": "pres"}, {}],
                "other": [{"password": "other"}]}"#,
        );
        assert_eq!(
            names(&login(&g, "pres", "whatever").unwrap().permissions),
            ["present", "message"]
        );
        assert!(
            login(&g, "boss", "pw")
                .unwrap()
                .permissions
                .has(Permission::Op)
        );
        assert_eq!(login(&g, "boss", "nope"), Err(AuthError::NotAuthorised));
        // the first entry without username (from presenter) wins the wildcard
        assert_eq!(
            names(&login(&g, "anyone", "").unwrap().permissions),
            ["present", "message"]
        );
    }

    #[test]
    fn user_password_beats_wildcard() {
        let g = group(
            r#"{"users": {"bob": {"password": "right", "permissions": "op"}},
                "wildcard-user": {"password": "common", "permissions": "present"}}"#,
        );
        assert_eq!(login(&g, "bob", "common"), Err(AuthError::NotAuthorised));
        assert_eq!(
            names(&login(&g, "eve", "common").unwrap().permissions),
            ["present", "message"]
        );
        assert_eq!(login(&g, "eve", "wrong"), Err(AuthError::NotAuthorised));
    }

    #[test]
    fn password_forms() {
        // pbkdf2-sha256, 4096 rounds, of "secret" with salt 0102030405060708
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"secret", &[1, 2, 3, 4, 5, 6, 7, 8], 4096, &mut key);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let p: Password = serde_json::from_str(&format!(
            r#"{{"type":"pbkdf2","hash":"sha-256","key":"{hex}","salt":"0102030405060708","iterations":4096}}"#
        ))
        .unwrap();
        assert_eq!(p.verify("secret"), Ok(true));
        assert_eq!(p.verify("Secret"), Ok(false));
        let hash = bcrypt::hash("pw", 4).unwrap();
        let p: Password =
            serde_json::from_str(&format!(r#"{{"type":"bcrypt","key":"{hash}"}}"#)).unwrap();
        assert_eq!(p.verify("pw"), Ok(true));
        assert_eq!(p.verify("px"), Ok(false));
        let p: Password = serde_json::from_str(r#""plain""#).unwrap();
        assert_eq!(p.verify("plain"), Ok(true));
        let p: Password = serde_json::from_str(r#"{"type":"plain","key":"k"}"#).unwrap();
        assert_eq!(p.verify("k"), Ok(true));
        assert_eq!(p.verify(""), Ok(false));
        let p: Password = serde_json::from_str(r#"{"type":"wildcard"}"#).unwrap();
        assert_eq!(p.verify(""), Ok(true));
        let p: Password =
            serde_json::from_str(r#"{"type":"pbkdf2","hash":"sha-256","key":"zz"}"#).unwrap();
        assert_eq!(p.verify("x"), Err(PasswordError::BadHex));
        let p: Password = serde_json::from_str(r#"{"type":"scrypt","key":"00"}"#).unwrap();
        assert!(p.verify("x").is_err());
    }

    #[test]
    fn name_rules() {
        for ok in ["a", "teaching/networking", "a b", "été"] {
            assert!(valid_group_name(ok), "{ok}");
        }
        for bad in [
            "", "/a", "a/", ".a", "a/../b", "a/./b", "a//b", "a\\b", "..", "a/..",
        ] {
            assert!(!valid_group_name(bad), "{bad}");
        }
        assert!(valid_username("") && valid_username("alice smith") && valid_username("a@b"));
        assert!(!valid_username("/x") && !valid_username("a/../b") && !valid_username("a\\b"));
    }

    #[test]
    fn store_resolves_subgroups_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"auto-subgroups": true, "public": true, "description": "x"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("b.json"), r#"{}"#).unwrap();
        let store = GroupStore::new(dir.path());
        let sub = store.get("a/b").unwrap();
        assert!(sub.is_subgroup && !sub.is_public() && sub.description.description.is_none());
        assert_eq!(store.get("b/c").err(), Some(GroupError::NotFound));
        assert_eq!(store.get("missing").err(), Some(GroupError::NotFound));
        assert_eq!(store.get("../etc").err(), Some(GroupError::IllegalName));
        std::fs::write(dir.path().join("b.json"), r#"{"nonsense": true}"#).unwrap();
        assert!(matches!(store.get("b"), Err(GroupError::Invalid { .. })));
        std::fs::write(dir.path().join("b.json"), r#"{"public": true}"#).unwrap();
        assert!(store.get("b").unwrap().is_public());
        let all: Vec<_> = store.all().iter().map(|g| g.name.clone()).collect();
        assert_eq!(all, ["a", "b"]);
    }
}
