//! The control page's admin password hash (`web_admin` table, migration 3): read at start by
//! the `web` thread, written once when a password is generated and whenever the admin changes it
//! from the page. The SQL runs on the `store` thread like every other query; the hash is made by
//! the caller (argon2id, [`crate::auth::hash_password`]), never on the `store` thread.

use rusqlite::{params, OptionalExtension};

use super::{error, now_ms, StoreError, StoreHandle};

impl StoreHandle {
    /// The stored admin password hash (a PHC string), if one was ever set.
    pub fn admin_password_hash(&self) -> Result<Option<String>, StoreError> {
        self.call("admin_password_hash", |c| {
            c.query_row(
                "SELECT password_hash FROM web_admin WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| error::sql_error("reading the admin password", e))
        })
    }

    /// Stores `hash` as the admin password hash unless one exists; returns the hash in force
    /// afterwards (so two starts racing on one file agree on one password).
    pub fn init_admin_password_hash(&self, hash: &str) -> Result<String, StoreError> {
        let hash = hash.to_owned();
        self.call("init_admin_password_hash", move |c| {
            c.execute(
                "INSERT OR IGNORE INTO web_admin (id, password_hash, updated) VALUES (1, ?1, ?2)",
                params![hash, now_ms()],
            )
            .and_then(|_| {
                c.query_row(
                    "SELECT password_hash FROM web_admin WHERE id = 1",
                    [],
                    |r| r.get(0),
                )
            })
            .map_err(|e| error::sql_error("storing the admin password", e))
        })
    }

    /// Replaces the stored admin password hash.
    pub fn set_admin_password_hash(&self, hash: &str) -> Result<(), StoreError> {
        let hash = hash.to_owned();
        self.call("set_admin_password_hash", move |c| {
            c.execute(
                "INSERT INTO web_admin (id, password_hash, updated) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET password_hash = ?1, updated = ?2",
                params![hash, now_ms()],
            )
            .map(drop)
            .map_err(|e| error::sql_error("storing the admin password", e))
        })
    }
}
