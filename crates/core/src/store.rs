//! The yard's durable state: one SQLite database in the data folder.
//!
//! Records are stored as JSON documents keyed by kind and id, so a new field
//! in a record needs no schema migration (serde defaults fill old rows). The
//! database is small and written rarely (DVR changes), so a single
//! connection behind a mutex is enough; callers in async code should keep
//! their writes short.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored record: {0}")]
    Json(#[from] serde_json::Error),
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// The database file of a data folder.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("switchyard.sqlite")
    }

    /// Opens (creating if needed) `switchyard.sqlite` in the data folder.
    pub fn open_in(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open(&Store::path_in(data_dir))
    }

    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Store::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        // WAL keeps readers (none yet) and the writer apart and survives a
        // crash mid-write; `synchronous=NORMAL` is durable enough for a DVR.
        let _ = conn.pragma_update(None, "journal_mode", "WAL");
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (
                kind TEXT NOT NULL,
                id TEXT NOT NULL,
                doc TEXT NOT NULL,
                PRIMARY KEY (kind, id)
            )",
        )?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Inserts or replaces a record.
    pub fn put<T: Serialize>(&self, kind: &str, id: &str, record: &T) -> Result<(), StoreError> {
        let doc = serde_json::to_string(record)?;
        self.conn.lock().execute(
            "INSERT INTO records (kind, id, doc) VALUES (?1, ?2, ?3)
             ON CONFLICT(kind, id) DO UPDATE SET doc = excluded.doc",
            params![kind, id, doc],
        )?;
        Ok(())
    }

    pub fn get<T: DeserializeOwned>(&self, kind: &str, id: &str) -> Result<Option<T>, StoreError> {
        let doc: Option<String> = self
            .conn
            .lock()
            .query_row(
                "SELECT doc FROM records WHERE kind = ?1 AND id = ?2",
                params![kind, id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match doc {
            Some(d) => Some(serde_json::from_str(&d)?),
            None => None,
        })
    }

    pub fn delete(&self, kind: &str, id: &str) -> Result<(), StoreError> {
        self.conn.lock().execute(
            "DELETE FROM records WHERE kind = ?1 AND id = ?2",
            params![kind, id],
        )?;
        Ok(())
    }

    /// Every record of a kind. Rows that no longer parse are skipped with a
    /// log line rather than failing the whole load.
    pub fn all<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare("SELECT id, doc FROM records WHERE kind = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![kind], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, doc) = row?;
            match serde_json::from_str(&doc) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!(kind, id, error = %e, "skipping unreadable stored record"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        a: u32,
        #[serde(default)]
        b: String,
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open_in(dir.path()).unwrap();
            s.put(
                "t",
                "1",
                &Rec {
                    a: 1,
                    b: "x".into(),
                },
            )
            .unwrap();
            s.put(
                "t",
                "2",
                &Rec {
                    a: 2,
                    b: "y".into(),
                },
            )
            .unwrap();
            s.put(
                "t",
                "2",
                &Rec {
                    a: 3,
                    b: "z".into(),
                },
            )
            .unwrap();
            s.delete("t", "1").unwrap();
        }
        let s = Store::open_in(dir.path()).unwrap();
        let all: Vec<Rec> = s.all("t").unwrap();
        assert_eq!(
            all,
            vec![Rec {
                a: 3,
                b: "z".into()
            }]
        );
        assert_eq!(s.get::<Rec>("t", "1").unwrap(), None);
    }
}
