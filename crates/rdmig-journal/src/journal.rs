//! The journal file: SQLite in WAL mode, one per node.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdmig_proto::msg::MigrationId;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::clock;
use crate::error::{Error, Result};
use crate::event::{Durability, Event, NewEvent, NodeName, Outcome, Phase, Role};
use crate::merge::NodeStream;

/// Marks the file as an rdmig journal (`PRAGMA application_id`): "rdjn".
const APPLICATION_ID: i64 = 0x7264_6a6e;

/// The schema this rdmig writes and reads (`PRAGMA user_version`). A journal with a higher
/// version is refused; a lower one would be migrated here when there is one.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a writer waits for another handle's write transaction before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `journal`: one row, the node this file belongs to and its sequence numbers.
/// `event`: one row per event; `seq` is the node's sequence number (the rowid).
///
/// The end phases appear here as a literal list (`ENDS_SQL`), checked against `Phase::ENDS` by a test.
const SCHEMA_V1: &str = "
CREATE TABLE journal (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    node TEXT NOT NULL,
    next_seq INTEGER NOT NULL CHECK (next_seq >= 1),
    retained_from INTEGER NOT NULL CHECK (retained_from >= 1 AND retained_from <= next_seq)
) STRICT;
CREATE TABLE event (
    seq INTEGER PRIMARY KEY CHECK (seq >= 1),
    wall_ns INTEGER NOT NULL,
    mono_ns INTEGER NOT NULL CHECK (mono_ns >= 0),
    migration TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('source', 'destination')),
    phase TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('started', 'done', 'failed')),
    reason TEXT CHECK ((outcome = 'failed') = (reason IS NOT NULL)),
    details TEXT CHECK (details IS NULL OR json_valid(details))
) STRICT;
CREATE INDEX event_migration ON event (migration, seq);
";

/// `Phase::ENDS` as an SQL list.
const ENDS_SQL: &str = "('commit', 'rollback', 'recover')";

const EVENT_COLS: &str = "e.seq, e.wall_ns, e.mono_ns, e.migration, e.role, e.phase, e.outcome, e.reason, e.details";

/// A migration as this node's journal sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationState {
    /// Sequence number of its first event here.
    pub first_seq: u64,
    /// Wall clock (ns) of its first event here.
    pub began_wall_ns: i64,
    /// Whether an end (`Commit`, `Rollback` or `Recover` done) is recorded.
    pub ended: bool,
    /// Its latest event: the migration's id, role, and where it stands.
    pub last: Event,
}

impl MigrationState {
    pub fn migration(&self) -> &MigrationId {
        &self.last.migration
    }

    pub fn role(&self) -> Role {
        self.last.role
    }

    /// Ended, and no clean-up left half done: nothing for recovery to do.
    pub fn is_final(&self) -> bool {
        self.ended && self.last.outcome == Outcome::Done
    }
}

/// Which final migrations [`Journal::prune`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Those whose last event is younger than this (by this node's wall clock).
    MaxAge(Duration),
    /// The newest this many (by their last event).
    MaxMigrations(usize),
}

/// What [`Journal::prune`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    pub migrations: usize,
    pub events: usize,
    /// Migrations the retention would drop but that stay, because an older migration that stays
    /// has events after theirs began (pruning only removes the oldest events, see [`Journal::prune`]).
    pub held_back: usize,
    /// The oldest sequence number still in the journal (or the next one, if it is empty).
    pub retained_from: u64,
}

/// A node's journal. Writes go through [`Journal::append`] (one short `BEGIN IMMEDIATE`
/// transaction each), so several handles on one file, in one process or several, hand out
/// distinct sequence numbers; the node's agent is meant to be the one writer, `rdmig migrate`
/// and `rdmig recover` open it for their own steps.
#[derive(Debug)]
pub struct Journal {
    conn: Connection,
    path: PathBuf,
    node: NodeName,
}

/// What a file holds before the schema is (re)checked.
enum Kind {
    Empty,
    Ours,
}

fn db_err(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Error::Corrupt { path: path.to_path_buf(), detail: e.to_string() },
        _ => Error::Sqlite { path: path.to_path_buf(), source: e },
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Puts the file in WAL mode and returns the mode it is in. SQLite answers a mode change that
/// races another handle's first use of the file with SQLITE_BUSY at once, without calling the
/// busy handler (seen in CI with two handles creating one journal), so busy is retried here for
/// as long as the busy handler would wait.
fn switch_to_wal(conn: &Connection) -> rusqlite::Result<String> {
    let give_up = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
            Err(err) if err.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(5));
            }
            done => return done,
        }
    }
}

/// Reads what kind of file this is; refuses foreign and newer ones.
fn kind(conn: &Connection, path: &Path) -> Result<Kind> {
    let e = |err| db_err(path, err);
    // One statement, so one read snapshot: read one by one, outside a transaction, another
    // handle's commit of the schema could fall between them (CI saw "application_id 0x0,
    // user_version 0, 3 schema objects" for a file that was being created).
    let (app_id, version, objects): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id), \
                    (SELECT user_version FROM pragma_user_version), \
                    (SELECT count(*) FROM sqlite_schema)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(e)?;
    match (app_id, version, objects) {
        (0, 0, 0) => Ok(Kind::Empty),
        (APPLICATION_ID, v, _) if v > SCHEMA_VERSION => Err(Error::NewerSchema { path: path.into(), found: v, supported: SCHEMA_VERSION }),
        (APPLICATION_ID, v, _) if v >= 1 => Ok(Kind::Ours),
        (APPLICATION_ID, v, _) => Err(Error::Corrupt { path: path.into(), detail: format!("marked as a journal but schema version {v}") }),
        (a, v, o) => Err(Error::NotAJournal {
            path: path.into(),
            detail: format!("an SQLite database with application_id {a:#x}, user_version {v}, {o} schema objects"),
        }),
    }
}

/// The raw columns of an event row, before checking.
struct Row {
    seq: i64,
    wall_ns: i64,
    mono_ns: i64,
    migration: String,
    role: String,
    phase: String,
    outcome: String,
    reason: Option<String>,
    details: Option<String>,
}

impl Row {
    /// Reads [`EVENT_COLS`] starting at column `at`.
    fn read(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Row> {
        Ok(Row {
            seq: r.get(at)?,
            wall_ns: r.get(at + 1)?,
            mono_ns: r.get(at + 2)?,
            migration: r.get(at + 3)?,
            role: r.get(at + 4)?,
            phase: r.get(at + 5)?,
            outcome: r.get(at + 6)?,
            reason: r.get(at + 7)?,
            details: r.get(at + 8)?,
        })
    }

    fn into_event(self, node: &NodeName, path: &Path) -> Result<Event> {
        let seq = self.seq;
        let bad = |detail: String| Error::BadRow { path: path.into(), seq, detail };
        Ok(Event {
            node: node.clone(),
            seq: u64::try_from(seq).map_err(|_| bad("negative sequence number".into()))?,
            wall_ns: self.wall_ns,
            mono_ns: u64::try_from(self.mono_ns).map_err(|_| bad("negative monotonic time".into()))?,
            migration: MigrationId::new(&self.migration).map_err(|e| bad(e.to_string()))?,
            role: self.role.parse().map_err(|e: crate::UnknownName| bad(e.to_string()))?,
            phase: self.phase.parse().map_err(|e: crate::UnknownName| bad(e.to_string()))?,
            outcome: Outcome::from_parts(&self.outcome, self.reason).map_err(|e| bad(e.to_string()))?,
            details: self.details.map(|d| serde_json::from_str(&d)).transpose().map_err(|e| bad(format!("details: {e}")))?,
        })
    }
}

fn query_events(conn: &Connection, path: &Path, node: &NodeName, sql_where: &str, params: impl rusqlite::Params) -> Result<Vec<Event>> {
    let e = |err| db_err(path, err);
    let mut stmt = conn.prepare_cached(&format!("SELECT {EVENT_COLS} FROM event e WHERE {sql_where} ORDER BY e.seq")).map_err(e)?;
    let rows = stmt.query_map(params, |r| Row::read(r, 0)).map_err(e)?;
    rows.map(|row| row.map_err(e)?.into_event(node, path)).collect()
}

/// Every migration's state (or one's), ordered by their first event.
fn query_states(conn: &Connection, path: &Path, node: &NodeName, only: Option<&MigrationId>) -> Result<Vec<MigrationState>> {
    let e = |err| db_err(path, err);
    let filter = if only.is_some() { "WHERE migration = ?1" } else { "" };
    let sql = format!(
        "SELECT m.first_seq, f.wall_ns, m.ended, {EVENT_COLS}
         FROM (SELECT migration, min(seq) AS first_seq, max(seq) AS last_seq,
                      max(outcome = 'done' AND phase IN {ENDS_SQL}) AS ended
               FROM event {filter} GROUP BY migration) m
         JOIN event e ON e.seq = m.last_seq
         JOIN event f ON f.seq = m.first_seq
         ORDER BY m.first_seq"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(e)?;
    let map = |r: &rusqlite::Row<'_>| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, bool>(2)?, Row::read(r, 3)?));
    let rows = match only {
        Some(id) => stmt.query_map([id.as_str()], map),
        None => stmt.query_map([], map),
    }
    .map_err(e)?;
    rows.map(|row| {
        let (first_seq, began_wall_ns, ended, last) = row.map_err(e)?;
        Ok(MigrationState { first_seq: u64::try_from(first_seq).unwrap_or(0), began_wall_ns, ended, last: last.into_event(node, path)? })
    })
    .collect()
}

impl Journal {
    /// Opens the journal of node `node` at `path`, creating it (and its schema) if the file is
    /// missing or empty. Refuses a damaged file ([`Error::Corrupt`], after SQLite's quick check),
    /// another program's database, a newer schema, and another node's journal.
    pub fn open(path: impl AsRef<Path>, node: &NodeName) -> Result<Journal> {
        let path = path.as_ref().to_path_buf();
        let e = |err| db_err(&path, err);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(e)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(e)?;
        kind(&conn, &path)?;

        // Persistent in the file; a file system without shared memory for the WAL index keeps the
        // rollback journal, which is as durable, only slower.
        let mode = switch_to_wal(&conn).map_err(e)?;
        if !mode.eq_ignore_ascii_case("wal") {
            warn!(path = %path.display(), %mode, "journal: WAL mode unavailable, using the rollback journal");
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(e)?;

        let problems: Vec<String> = {
            let mut stmt = conn.prepare("PRAGMA quick_check(5)").map_err(e)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(e)?;
            rows.collect::<rusqlite::Result<_>>().map_err(e)?
        };
        if problems != ["ok"] {
            return Err(Error::Corrupt { path: path.clone(), detail: problems.join("; ") });
        }

        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e)?;
        // Again inside the write lock: another handle may have created the schema meanwhile.
        match kind(&tx, &path)? {
            Kind::Empty => {
                tx.execute_batch(SCHEMA_V1).map_err(e)?;
                tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(e)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(e)?;
                tx.execute("INSERT INTO journal (one, node, next_seq, retained_from) VALUES (1, ?1, 1, 1)", [node.as_str()]).map_err(e)?;
                info!(path = %path.display(), %node, "journal: created");
            }
            Kind::Ours => {
                let recorded: String = tx.query_row("SELECT node FROM journal", [], |r| r.get(0)).map_err(e)?;
                if recorded != node.as_str() {
                    return Err(Error::OtherNode { path: path.clone(), recorded, asked: node.clone() });
                }
            }
        }
        tx.commit().map_err(e)?;
        Ok(Journal { conn, path, node: node.clone() })
    }

    pub fn node(&self) -> &NodeName {
        &self.node
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        db_err(&self.path, e)
    }

    /// Records `event` and returns its sequence number. The event is committed when this returns;
    /// with [`Durability::Sync`] (always for [`Phase::is_sync_point`] phases) it is also on the
    /// disk. Call it before the step takes effect (for `Started`) and after (for `Done`).
    ///
    /// Refused: an event whose role differs from the migration's earlier ones, anything but
    /// `Cleanup` after the migration ended, and `Cleanup` before it did.
    pub fn append(&mut self, event: &NewEvent, durability: Durability) -> Result<u64> {
        let sync = durability == Durability::Sync || event.phase.is_sync_point();
        if sync {
            self.conn.pragma_update(None, "synchronous", "FULL").map_err(|e| self.err(e))?;
        }
        let appended = self.append_tx(event);
        if sync {
            // Back to NORMAL whatever happened; an error here only matters if the append worked.
            let reset = self.conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| self.err(e));
            if appended.is_ok() {
                reset?;
            }
        }
        let seq = appended?;
        debug!(node = %self.node, seq, migration = %event.migration, role = %event.role, phase = %event.phase, outcome = %event.outcome, sync, "journal: appended");
        Ok(seq)
    }

    fn append_tx(&mut self, ev: &NewEvent) -> Result<u64> {
        let path = &self.path;
        let e = |err| db_err(path, err);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e)?;
        let seq: i64 = tx.query_row("SELECT next_seq FROM journal", [], |r| r.get(0)).map_err(e)?;

        let sql = format!(
            "SELECT e.role, e.phase, e.outcome, e.reason,
                    EXISTS (SELECT 1 FROM event WHERE migration = ?1 AND outcome = 'done' AND phase IN {ENDS_SQL})
             FROM event e WHERE e.migration = ?1 ORDER BY e.seq DESC LIMIT 1"
        );
        let prev = tx
            .query_row(&sql, [ev.migration.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, Option<String>>(3)?, r.get::<_, bool>(4)?))
            })
            .optional()
            .map_err(e)?;
        match prev {
            None if ev.phase == Phase::Cleanup => return Err(Error::CleanupBeforeEnd { migration: ev.migration.clone() }),
            None => {}
            Some((role, phase, outcome, reason, ended)) => {
                let bad = |detail: String| Error::BadRow { path: path.clone(), seq: seq - 1, detail };
                let role: Role = role.parse().map_err(|e: crate::UnknownName| bad(e.to_string()))?;
                if role != ev.role {
                    return Err(Error::RoleMismatch { migration: ev.migration.clone(), recorded: role, asked: ev.role });
                }
                if ended && ev.phase != Phase::Cleanup {
                    let phase = phase.parse().map_err(|e: crate::UnknownName| bad(e.to_string()))?;
                    let outcome = Outcome::from_parts(&outcome, reason).map_err(|e| bad(e.to_string()))?;
                    return Err(Error::AfterEnd { migration: ev.migration.clone(), phase, outcome, asked: ev.phase });
                }
                if !ended && ev.phase == Phase::Cleanup {
                    return Err(Error::CleanupBeforeEnd { migration: ev.migration.clone() });
                }
            }
        }

        // Stamped under the write lock, so that on one node time order agrees with seq order.
        let (wall_ns, mono_ns) = (clock::wall_ns(), to_i64(clock::mono_ns()));
        let details = ev.details.as_ref().map(|d| d.to_string());
        tx.execute(
            "INSERT INTO event (seq, wall_ns, mono_ns, migration, role, phase, outcome, reason, details)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![seq, wall_ns, mono_ns, ev.migration.as_str(), ev.role.as_str(), ev.phase.as_str(), ev.outcome.as_str(), ev.outcome.reason(), details],
        )
        .map_err(e)?;
        tx.execute("UPDATE journal SET next_seq = ?1", [seq + 1]).map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row("SELECT next_seq FROM journal", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The oldest sequence number still held ([`Journal::prune`] removes older ones); equals
    /// [`Journal::next_seq`] when the journal holds no event.
    pub fn retained_from(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row("SELECT retained_from FROM journal", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The events with a sequence number above `after`, in order (`after = 0`: all of them).
    pub fn events_since(&self, after: u64) -> Result<Vec<Event>> {
        query_events(&self.conn, &self.path, &self.node, "e.seq > ?1", [to_i64(after)])
    }

    /// [`Journal::events_since`] as this node's [`NodeStream`] for [`crate::merge`]: its start
    /// is moved past pruned events, so that they are not reported as lost.
    pub fn stream_since(&self, after: u64) -> Result<NodeStream> {
        // One read transaction: the retention point and the events agree.
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let retained_from: i64 = tx.query_row("SELECT retained_from FROM journal", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        let after = after.max(u64::try_from(retained_from - 1).unwrap_or(0));
        let events = query_events(&tx, &self.path, &self.node, "e.seq > ?1", [to_i64(after)])?;
        tx.finish().map_err(|e| self.err(e))?;
        NodeStream::new(self.node.clone(), after, events).map_err(|e| Error::BadRow { path: self.path.clone(), seq: 0, detail: e.to_string() })
    }

    /// Every event of one migration, in order.
    pub fn events_of(&self, migration: &MigrationId) -> Result<Vec<Event>> {
        query_events(&self.conn, &self.path, &self.node, "e.migration = ?1", [migration.as_str()])
    }

    /// The latest event of one migration.
    pub fn last_event(&self, migration: &MigrationId) -> Result<Option<Event>> {
        Ok(self.migration(migration)?.map(|m| m.last))
    }

    /// Where one migration stands: its latest event's phase and outcome.
    pub fn last_phase(&self, migration: &MigrationId) -> Result<Option<(Phase, Outcome)>> {
        Ok(self.last_event(migration)?.map(|e| (e.phase, e.outcome)))
    }

    /// One migration's state, if this journal knows it.
    pub fn migration(&self, migration: &MigrationId) -> Result<Option<MigrationState>> {
        Ok(query_states(&self.conn, &self.path, &self.node, Some(migration))?.pop())
    }

    /// Every migration this journal holds, oldest first.
    pub fn migrations(&self) -> Result<Vec<MigrationState>> {
        query_states(&self.conn, &self.path, &self.node, None)
    }

    /// The migrations recovery has to look at: not ended, or ended with a clean-up that started
    /// or failed and did not finish. Oldest first.
    pub fn migrations_not_final(&self) -> Result<Vec<MigrationState>> {
        Ok(self.migrations()?.into_iter().filter(|m| !m.is_final()).collect())
    }

    /// Removes old final migrations, whole, by the retention rule. A migration that is not final
    /// is never removed. Only the oldest events go (those below one sequence number), so what
    /// stays is gap-free and [`crate::merge`] never mistakes pruning for loss: a final migration
    /// that began after a kept one stays too (counted in [`Pruned::held_back`]) until that one
    /// ends and goes.
    pub fn prune(&mut self, keep: Retention) -> Result<Pruned> {
        self.prune_at(keep, clock::wall_ns())
    }

    /// [`Journal::prune`] as if the wall clock read `now_ns`.
    pub(crate) fn prune_at(&mut self, keep: Retention, now_ns: i64) -> Result<Pruned> {
        let (path, node) = (&self.path, &self.node);
        let e = |err| db_err(path, err);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e)?;
        let states = query_states(&tx, path, node, None)?;
        let mut drop: Vec<bool> = states.iter().map(MigrationState::is_final).collect();
        match keep {
            Retention::MaxAge(age) => {
                let cut = now_ns.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX));
                for (d, m) in drop.iter_mut().zip(&states) {
                    *d &= m.last.wall_ns < cut;
                }
            }
            Retention::MaxMigrations(n) => {
                // The newest n final migrations (by their last event) stay.
                let mut finals: Vec<(u64, usize)> = states.iter().enumerate().filter(|(i, _)| drop[*i]).map(|(i, m)| (m.last.seq, i)).collect();
                finals.sort_unstable_by(|a, b| b.cmp(a));
                for &(_, i) in finals.iter().take(n) {
                    drop[i] = false;
                }
            }
        }

        // The longest run of droppable migrations from the oldest, cut where none of them has
        // events after the next migration's first.
        let next_seq: i64 = tx.query_row("SELECT next_seq FROM journal", [], |r| r.get(0)).map_err(e)?;
        let (mut cut_at, mut max_last) = (0, 0);
        for (i, m) in states.iter().enumerate() {
            if !drop[i] {
                break;
            }
            max_last = max_last.max(m.last.seq);
            if states.get(i + 1).is_none_or(|next| max_last < next.first_seq) {
                cut_at = i + 1;
            }
        }
        let below = match states.get(cut_at) {
            Some(m) => to_i64(m.first_seq),
            None => next_seq,
        };
        let events = tx.execute("DELETE FROM event WHERE seq < ?1", [below]).map_err(e)?;
        tx.execute("UPDATE journal SET retained_from = max(retained_from, ?1)", [below]).map_err(e)?;
        let retained_from: i64 = tx.query_row("SELECT retained_from FROM journal", [], |r| r.get(0)).map_err(e)?;
        tx.commit().map_err(e)?;
        let pruned = Pruned {
            migrations: cut_at,
            events,
            held_back: drop.iter().skip(cut_at).filter(|d| **d).count(),
            retained_from: u64::try_from(retained_from).unwrap_or(0),
        };
        if pruned.migrations > 0 || pruned.held_back > 0 {
            info!(node = %self.node, migrations = pruned.migrations, events = pruned.events, held_back = pruned.held_back, "journal: pruned");
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests;
