//! `GET /api/backup`: the database as a download for the admin, made with the same SQLite
//! online backup as `mqtt5-broker backup FILE` ([`crate::store::backup`]): a consistent copy
//! as of one read transaction while the broker keeps committing.
//!
//! The copy is made and sent by the connection's own `web-conn` thread, not the `web` thread,
//! so the page stays usable meanwhile: the handler only takes the one backup slot
//! ([`Slot::take`]; a second request while a backup is being made or sent gets 409) and hands
//! the connection thread a [`Backup`] in the [`Reply`]. The copy is written
//! beside the database (the same filesystem, which has room for the database it holds), sent,
//! and removed however the sending ends; the slot is free again once it is.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::http::{self, Reply};
use crate::store::backup;

/// The one backup download that may run at a time.
#[derive(Debug, Clone, Default)]
pub struct Slot(Arc<AtomicBool>);

impl Slot {
    /// The slot, or `None` while another backup is being made or sent.
    pub fn take(&self) -> Option<Held> {
        self.0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Held(self.0.clone()))
    }
}

/// The slot, given back when dropped.
#[derive(Debug)]
pub struct Held(Arc<AtomicBool>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A backup to make and send on the connection thread.
#[derive(Debug)]
pub struct Backup {
    db: PathBuf,
    _slot: Held,
}

/// The copy beside the database, removed when dropped.
struct TempCopy(PathBuf);

impl Drop for TempCopy {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!(
                    "web: cannot remove the backup copy {}: {e}",
                    self.0.display()
                );
            }
        }
    }
}

impl Backup {
    pub fn new(db: PathBuf, slot: Held) -> Backup {
        Backup { db, _slot: slot }
    }

    /// Where the copy is made: a hidden file beside the database, named after it and this
    /// process (one at a time per process, so the name is free unless a crash left it).
    fn copy_path(&self) -> PathBuf {
        let name = self
            .db
            .file_name()
            .map_or_else(|| "db".into(), |n| n.to_string_lossy().into_owned());
        self.db
            .with_file_name(format!(".{name}.download-{}", std::process::id()))
    }

    /// Makes the copy and writes the whole answer to `out`: 200 and the file, or the error
    /// (500) when the copy could not be made. `head_only`: the headers only (a HEAD request).
    pub fn send(&self, out: &mut impl Write, head_only: bool) -> io::Result<()> {
        let path = self.copy_path();
        // Left by a crash of this same pid's predecessor at most: never anything of ours.
        let _ = fs::remove_file(&path);
        let copy = TempCopy(path.clone());
        let report = match backup::backup(&self.db, &path) {
            Ok(r) => r,
            Err(e) => {
                log::error!("web: backup download failed: {e}");
                let reply = Reply::error(500, &format!("the backup could not be made: {e}"));
                return out.write_all(&http::encode(reply, head_only));
            }
        };
        log::info!("web: the admin downloads a backup: {report}");
        let mut file = File::open(&copy.0)?;
        let length = file.metadata()?.len();
        let reply = Reply::new(200, "application/vnd.sqlite3", Vec::new()).with_header(
            "Content-Disposition",
            format!("attachment; filename=\"{}\"", download_name(&self.db)),
        );
        out.write_all(&http::encode_head(&reply, length))?;
        if !head_only {
            let sent = io::copy(&mut file, out)?;
            if sent != length {
                return Err(io::Error::other(
                    "the backup copy changed while it was sent",
                ));
            }
        }
        Ok(())
    }
}

/// The file name offered: the database's, with the UTC date and time of the copy, e.g.
/// `mqtt5-broker-20261206-023000.db`.
fn download_name(db: &Path) -> String {
    let stem = db.file_stem().map_or_else(
        || "mqtt5-broker".into(),
        |s| s.to_string_lossy().into_owned(),
    );
    // Only characters that need no quoting in a header.
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // `2026-12-06 02:30:00Z` → `20261206-023000`.
    let stamp: String = crate::store::admin::format_time(crate::store::now_ms())
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_ascii_digit() => Some(c),
            _ => None,
        })
        .collect();
    format!("{stem}-{stamp}.db")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_name_is_the_database_stem_and_the_utc_time() {
        let name = download_name(Path::new("/var/lib/mqtt5/broker data.db"));
        let rest = name.strip_prefix("broker_data-").expect(&name);
        let stamp = rest.strip_suffix(".db").expect(&name);
        assert_eq!(stamp.len(), "20261206-023000".len(), "{name}");
        assert!(
            stamp.chars().all(|c| c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }

    #[test]
    fn one_slot_at_a_time() {
        let slot = Slot::default();
        let held = slot.take().expect("free");
        assert!(slot.take().is_none());
        drop(held);
        assert!(slot.take().is_some());
    }
}
