use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};

use serde_json::json;

use super::*;
use crate::merge;

fn node(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

fn mid(s: &str) -> MigrationId {
    MigrationId::new(s).unwrap()
}

fn ev(id: &str, role: Role, phase: Phase, outcome: Outcome) -> NewEvent {
    NewEvent::new(mid(id), role, phase, outcome)
}

fn src(id: &str, phase: Phase, outcome: Outcome) -> NewEvent {
    ev(id, Role::Source, phase, outcome)
}

fn open(path: &Path, name: &str) -> Journal {
    Journal::open(path, &node(name)).unwrap()
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// A migration driven to a committed end on the source: six events.
fn committed(j: &mut Journal, id: &str) {
    for (phase, outcome) in [
        (Phase::Begin, Outcome::Done),
        (Phase::Freeze, Outcome::Started),
        (Phase::Freeze, Outcome::Done),
        (Phase::Transfer, Outcome::Done),
        (Phase::Commit, Outcome::Started),
        (Phase::Commit, Outcome::Done),
    ] {
        j.append(&src(id, phase, outcome), Durability::Normal).unwrap();
    }
}

#[test]
fn end_phase_sql_matches_phase_ends() {
    let list = format!("({})", Phase::ENDS.iter().map(|p| format!("'{}'", p.as_str())).collect::<Vec<_>>().join(", "));
    assert_eq!(list, ENDS_SQL);
}

#[test]
fn open_creates_a_versioned_wal_journal_of_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let j = open(&path, "node1");
    let version: i64 = j.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    let app: i64 = j.conn.pragma_query_value(None, "application_id", |r| r.get(0)).unwrap();
    let mode: String = j.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!((version, app, mode.as_str()), (SCHEMA_VERSION, APPLICATION_ID, "wal"));
    assert_eq!((j.next_seq().unwrap(), j.retained_from().unwrap()), (1, 1));
    assert!(j.events_since(0).unwrap().is_empty());
    drop(j);

    let j = open(&path, "node1");
    assert_eq!(j.node().as_str(), "node1");
    match Journal::open(&path, &node("node2")) {
        Err(Error::OtherNode { recorded, asked, .. }) => assert_eq!((recorded.as_str(), asked.as_str()), ("node1", "node2")),
        other => panic!("expected OtherNode, got {other:?}"),
    }
}

#[test]
fn newer_schema_and_foreign_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    drop(open(&path, "node1"));
    Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    match Journal::open(&path, &node("node1")) {
        Err(e @ Error::NewerSchema { found: 2, supported: 1, .. }) => assert!(e.to_string().contains("newer rdmig"), "{e}"),
        other => panic!("expected NewerSchema, got {other:?}"),
    }

    let other = dir.path().join("other.sqlite");
    Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);").unwrap();
    assert!(matches!(Journal::open(&other, &node("node1")), Err(Error::NotAJournal { .. })));
    // Left as it was: not switched to WAL.
    let mode: String = Connection::open(&other).unwrap().pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
}

#[test]
fn append_numbers_events_from_one_and_stamps_both_clocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let mut j = open(&path, "node1");
    let before = clock::wall_ns();
    let s1 = j.append(&src("m-1", Phase::Begin, Outcome::Done), Durability::Normal).unwrap();
    let s2 = j.append(&src("m-1", Phase::Checks, Outcome::Started), Durability::Normal).unwrap();
    let s3 = j.append(&src("m-1", Phase::Checks, Outcome::failed("cpu flags differ")), Durability::Sync).unwrap();
    let details = json!({"round": 1, "pages": 4096});
    let s4 = j.append(&src("m-2", Phase::PrecopyRound, Outcome::Done).with_details(details.clone()), Durability::Normal).unwrap();
    assert_eq!([s1, s2, s3, s4], [1, 2, 3, 4]);
    assert_eq!(j.next_seq().unwrap(), 5);

    let all = j.events_since(0).unwrap();
    assert_eq!(seqs(&all), [1, 2, 3, 4]);
    assert!(all.iter().all(|e| e.node.as_str() == "node1" && e.role == Role::Source));
    assert!(all.iter().all(|e| e.wall_ns >= before && e.wall_ns <= clock::wall_ns()));
    assert!(all.windows(2).all(|w| w[0].mono_ns <= w[1].mono_ns && w[0].wall_ns <= w[1].wall_ns + 1_000_000_000));
    assert_eq!(all[2].outcome, Outcome::failed("cpu flags differ"));
    assert_eq!(all[3].details.as_ref(), Some(&details));
    assert_eq!(all[0].details, None);

    assert_eq!(seqs(&j.events_since(2).unwrap()), [3, 4]);
    assert!(j.events_since(4).unwrap().is_empty());
    assert_eq!(seqs(&j.events_of(&mid("m-1")).unwrap()), [1, 2, 3]);
    assert!(j.events_of(&mid("m-9")).unwrap().is_empty());
    assert_eq!(j.last_phase(&mid("m-1")).unwrap(), Some((Phase::Checks, Outcome::failed("cpu flags differ"))));
    assert_eq!(j.last_phase(&mid("m-9")).unwrap(), None);
    assert_eq!(j.last_event(&mid("m-2")).unwrap().map(|e| e.seq), Some(4));
}

#[test]
fn sync_points_sync_and_leave_the_connection_at_normal() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(&dir.path().join("journal.sqlite"), "node1");
    let level = |j: &Journal| j.conn.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(level(&j), 1, "NORMAL between appends");
    j.append(&src("m-1", Phase::Freeze, Outcome::Started), Durability::Normal).unwrap();
    assert_eq!(level(&j), 1);
    j.append(&src("m-1", Phase::Transfer, Outcome::Started), Durability::Sync).unwrap();
    assert_eq!(level(&j), 1);
    // A refused append resets it too.
    assert!(j.append(&ev("m-1", Role::Destination, Phase::Restore, Outcome::Started), Durability::Sync).is_err());
    assert_eq!(level(&j), 1);
    assert!(Phase::Freeze.is_sync_point() && Phase::Commit.is_sync_point() && !Phase::Transfer.is_sync_point());
}

#[test]
fn sequence_numbers_continue_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    for round in 0..3u64 {
        let mut j = open(&path, "node1");
        for i in 0..5 {
            let seq = j.append(&src("m-1", Phase::PrecopyRound, Outcome::Done), Durability::Normal).unwrap();
            assert_eq!(seq, round * 5 + i + 1);
        }
    }
    let j = open(&path, "node1");
    assert_eq!(seqs(&j.events_since(0).unwrap()), (1..=15).collect::<Vec<_>>());
}

#[test]
fn a_writer_dropped_without_closing_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let mut j = open(&path, "node1");
    for _ in 0..50 {
        j.append(&src("m-1", Phase::PrecopyRound, Outcome::Done), Durability::Normal).unwrap();
    }
    // No close, no checkpoint: the events are only in the write-ahead log.
    std::mem::forget(j);
    assert!(dir.path().join("journal.sqlite-wal").exists());
    let mut j = open(&path, "node1");
    assert_eq!(seqs(&j.events_since(0).unwrap()), (1..=50).collect::<Vec<_>>());
    assert_eq!(j.append(&src("m-1", Phase::Freeze, Outcome::Started), Durability::Normal).unwrap(), 51);
}

/// Set in the child process of [`a_writer_killed_mid_way_loses_nothing_it_appended`].
const CRASH_CHILD: &str = "RDMIG_JOURNAL_TEST_CRASH_CHILD";

/// Appends until killed, printing each sequence number once `append` has returned it.
fn crash_child(path: &str) {
    let mut j = open(Path::new(path), "node1");
    for i in 0u64.. {
        let (phase, outcome) = if i % 10 == 9 { (Phase::Freeze, Outcome::Started) } else { (Phase::PrecopyRound, Outcome::Done) };
        let seq = j.append(&src("m-1", phase, outcome).with_details(json!({"i": i, "pad": "x".repeat(200)})), Durability::Normal).unwrap();
        println!("journal-seq={seq}");
    }
}

#[test]
fn a_writer_killed_mid_way_loses_nothing_it_appended() {
    if let Ok(path) = std::env::var(CRASH_CHILD) {
        crash_child(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "journal::tests::a_writer_killed_mid_way_loses_nothing_it_appended", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        // The harness may start the first line with "test NAME ... ".
        if let Some((_, seq)) = line.unwrap().split_once("journal-seq=") {
            acknowledged.push(seq.trim().parse::<u64>().unwrap());
            if acknowledged.len() == 300 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, most likely inside an append
    child.wait().unwrap();
    assert_eq!(acknowledged, (1..=300).collect::<Vec<_>>());

    let mut j = open(&path, "node1");
    let kept = seqs(&j.events_since(0).unwrap());
    assert!(kept.len() >= 300, "only {} events kept", kept.len());
    assert_eq!(kept, (1..=kept.len() as u64).collect::<Vec<_>>(), "gap-free");
    let next = j.append(&src("m-1", Phase::Rollback, Outcome::Started), Durability::Normal).unwrap();
    assert_eq!(next, kept.len() as u64 + 1);
}

#[test]
fn two_handles_on_one_file_never_hand_out_the_same_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("journal.sqlite"));
    let start = Arc::new(Barrier::new(2));
    let writers: Vec<_> = ["m-a", "m-b"]
        .into_iter()
        .map(|id| {
            let (path, start) = (path.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait(); // both create the schema at once, too
                let mut j = open(&path, "node1");
                (0..200).map(|_| j.append(&src(id, Phase::PrecopyRound, Outcome::Done), Durability::Normal).unwrap()).collect::<Vec<u64>>()
            })
        })
        .collect();
    let got: Vec<Vec<u64>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for mine in &got {
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "increasing per handle");
    }
    let mut all: Vec<u64> = got.concat();
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<_>>(), "distinct and gap-free");
    let j = open(&path, "node1");
    assert_eq!(j.events_of(&mid("m-a")).unwrap().len(), 200);
}

#[test]
fn order_rules_are_enforced_and_refusals_use_no_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(&dir.path().join("journal.sqlite"), "node1");
    assert!(matches!(j.append(&src("m-1", Phase::Cleanup, Outcome::Started), Durability::Normal), Err(Error::CleanupBeforeEnd { .. })));
    j.append(&src("m-1", Phase::Begin, Outcome::Done), Durability::Normal).unwrap();
    let as_dest = ev("m-1", Role::Destination, Phase::Restore, Outcome::Started);
    assert!(matches!(j.append(&as_dest, Durability::Normal), Err(Error::RoleMismatch { recorded: Role::Source, asked: Role::Destination, .. })));
    assert!(matches!(j.append(&src("m-1", Phase::Cleanup, Outcome::Started), Durability::Normal), Err(Error::CleanupBeforeEnd { .. })));
    // A failed rollback has not ended the migration.
    j.append(&src("m-1", Phase::Rollback, Outcome::failed("SIGCONT: no such process")), Durability::Normal).unwrap();
    j.append(&src("m-1", Phase::Rollback, Outcome::Done), Durability::Normal).unwrap();
    match j.append(&src("m-1", Phase::Commit, Outcome::Started), Durability::Normal) {
        Err(e @ Error::AfterEnd { phase: Phase::Rollback, asked: Phase::Commit, .. }) => assert!(e.to_string().contains("only cleanup"), "{e}"),
        other => panic!("expected AfterEnd, got {other:?}"),
    }
    j.append(&src("m-1", Phase::Cleanup, Outcome::Started), Durability::Normal).unwrap();
    j.append(&src("m-1", Phase::Cleanup, Outcome::Done), Durability::Normal).unwrap();
    assert_eq!(seqs(&j.events_since(0).unwrap()), [1, 2, 3, 4, 5]);
}

#[test]
fn migrations_not_final_is_recoverys_to_do_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(&dir.path().join("journal.sqlite"), "node1");
    let add = |j: &mut Journal, id: &str, role: Role, steps: &[(Phase, Outcome)]| {
        for (p, o) in steps {
            j.append(&ev(id, role, *p, o.clone()), Durability::Normal).unwrap();
        }
    };
    committed(&mut j, "m-committed");
    add(&mut j, "m-frozen", Role::Source, &[(Phase::Begin, Outcome::Done), (Phase::Freeze, Outcome::Started)]);
    add(&mut j, "m-restored", Role::Destination, &[(Phase::Begin, Outcome::Done), (Phase::Restore, Outcome::Started), (Phase::Restore, Outcome::Done)]);
    add(&mut j, "m-doubt", Role::Source, &[(Phase::Begin, Outcome::Done), (Phase::InDoubt, Outcome::Done)]);
    add(&mut j, "m-recovered", Role::Source, &[(Phase::InDoubt, Outcome::Done), (Phase::Recover, Outcome::Started), (Phase::Recover, Outcome::Done)]);
    add(&mut j, "m-cleaning", Role::Destination, &[(Phase::Rollback, Outcome::Done), (Phase::Cleanup, Outcome::Started)]);
    add(
        &mut j,
        "m-cleaned",
        Role::Destination,
        &[(Phase::Rollback, Outcome::Done), (Phase::Cleanup, Outcome::failed("busy")), (Phase::Cleanup, Outcome::Done)],
    );
    add(&mut j, "m-rollback-failed", Role::Source, &[(Phase::Rollback, Outcome::failed("address in use"))]);

    let open_ones = j.migrations_not_final().unwrap();
    let ids: Vec<&str> = open_ones.iter().map(|m| m.migration().as_str()).collect();
    assert_eq!(ids, ["m-frozen", "m-restored", "m-doubt", "m-cleaning", "m-rollback-failed"]);
    let cleaning = &open_ones[3];
    assert!(cleaning.ended && !cleaning.is_final());
    assert_eq!(cleaning.role(), Role::Destination);
    assert_eq!((cleaning.last.phase, &cleaning.last.outcome), (Phase::Cleanup, &Outcome::Started));
    let frozen = &open_ones[0];
    assert_eq!((frozen.first_seq, frozen.last.seq, frozen.ended), (7, 8, false));
    assert_eq!(frozen.began_wall_ns, j.events_of(&mid("m-frozen")).unwrap()[0].wall_ns);

    assert_eq!(j.migrations().unwrap().len(), 8);
    let done = j.migration(&mid("m-committed")).unwrap().unwrap();
    assert!(done.is_final() && done.last.ends_migration());
    assert!(j.migration(&mid("m-nothing")).unwrap().is_none());
}

#[test]
fn pruning_removes_old_final_migrations_as_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let mut j = open(&path, "node1");
    // Events 1-6 and 7-12; then m-3 begins (13) and stays open, m-4 ends while it is (14-19),
    // m-5 after (20-25).
    committed(&mut j, "m-1");
    committed(&mut j, "m-2");
    j.append(&src("m-3", Phase::Begin, Outcome::Done), Durability::Normal).unwrap();
    committed(&mut j, "m-4");
    committed(&mut j, "m-5");

    // Keep the newest final one (m-5): m-1 and m-2 go, m-4 is held back behind open m-3.
    let p = j.prune(Retention::MaxMigrations(1)).unwrap();
    assert_eq!(p, Pruned { migrations: 2, events: 12, held_back: 1, retained_from: 13 });
    assert_eq!(j.events_since(0).unwrap().first().map(|e| e.seq), Some(13));
    let ids: Vec<String> = j.migrations().unwrap().iter().map(|m| m.migration().to_string()).collect();
    assert_eq!(ids, ["m-3", "m-4", "m-5"]);

    // m-3 ends (26); by age (as if two days passed), everything final goes; numbers are not reused.
    j.append(&src("m-3", Phase::Rollback, Outcome::Done), Durability::Normal).unwrap();
    let now = clock::wall_ns();
    assert_eq!(j.prune_at(Retention::MaxAge(Duration::from_secs(86_400)), now).unwrap().migrations, 0, "all younger than a day");
    let p = j.prune_at(Retention::MaxAge(Duration::from_secs(86_400)), now + 2 * 86_400 * 1_000_000_000).unwrap();
    assert_eq!(p, Pruned { migrations: 3, events: 14, held_back: 0, retained_from: 27 });
    assert!(j.migrations().unwrap().is_empty());
    assert_eq!(j.append(&src("m-6", Phase::Begin, Outcome::Done), Durability::Normal).unwrap(), 27);
    drop(j);
    let j = open(&path, "node1");
    assert_eq!((j.retained_from().unwrap(), j.next_seq().unwrap()), (27, 28));

    // A stream asked from 0 starts after what was pruned: no gap reported for it.
    let s = j.stream_since(0).unwrap();
    assert_eq!((s.after(), seqs(s.events())), (26, vec![27]));
    assert!(merge(vec![s], &BTreeMap::new()).gaps.is_empty());
}

#[test]
fn pruning_never_removes_what_is_not_final() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(&dir.path().join("journal.sqlite"), "node1");
    j.append(&src("m-1", Phase::Freeze, Outcome::Started), Durability::Normal).unwrap();
    committed(&mut j, "m-2");
    j.append(&ev("m-3", Role::Destination, Phase::Rollback, Outcome::Done), Durability::Normal).unwrap();
    j.append(&ev("m-3", Role::Destination, Phase::Cleanup, Outcome::Started), Durability::Normal).unwrap();
    let p = j.prune_at(Retention::MaxMigrations(0), i64::MAX).unwrap();
    assert_eq!(p, Pruned { migrations: 0, events: 0, held_back: 1, retained_from: 1 });
    assert_eq!(j.events_since(0).unwrap().len(), 9);
}

#[test]
fn streams_of_two_journals_merge_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = open(&dir.path().join("a.sqlite"), "node1");
    let mut b = open(&dir.path().join("b.sqlite"), "node2");
    a.append(&src("m-1", Phase::Begin, Outcome::Done), Durability::Normal).unwrap();
    b.append(&ev("m-1", Role::Destination, Phase::Begin, Outcome::Done), Durability::Normal).unwrap();
    a.append(&src("m-1", Phase::Freeze, Outcome::Started), Durability::Normal).unwrap();
    b.append(&ev("m-1", Role::Destination, Phase::Restore, Outcome::Started), Durability::Normal).unwrap();
    let merged = merge([a.stream_since(0).unwrap(), b.stream_since(0).unwrap()], &BTreeMap::new());
    let order: Vec<(&str, Phase)> = merged.events.iter().map(|m| (m.event.node.as_str(), m.event.phase)).collect();
    assert_eq!(order, [("node1", Phase::Begin), ("node2", Phase::Begin), ("node1", Phase::Freeze), ("node2", Phase::Restore)]);
    assert!(merged.gaps.is_empty());
    // Follow: the next poll starts where the last one ended.
    let s = a.stream_since(0).unwrap();
    assert_eq!(a.stream_since(s.last_seq()).unwrap().events().len(), 0);
}

#[test]
fn a_damaged_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();

    let garbage = dir.path().join("garbage.sqlite");
    std::fs::write(&garbage, (0..16384u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>()).unwrap();
    match Journal::open(&garbage, &node("node1")) {
        Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains("garbage.sqlite"), "{e}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    let path = dir.path().join("journal.sqlite");
    let mut j = open(&path, "node1");
    for i in 0..2000 {
        j.append(&src("m-1", Phase::PrecopyRound, Outcome::Done).with_details(json!({"round": i, "pad": "y".repeat(100)})), Durability::Normal).unwrap();
    }
    drop(j); // closes: the log is checkpointed into the file and removed
    assert!(!dir.path().join("journal.sqlite-wal").exists());
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 64 * 1024, "{len}");

    let truncated = dir.path().join("truncated.sqlite");
    std::fs::copy(&path, &truncated).unwrap();
    std::fs::OpenOptions::new().write(true).open(&truncated).unwrap().set_len(len / 2).unwrap();
    assert!(matches!(Journal::open(&truncated, &node("node1")), Err(Error::Corrupt { .. })), "truncated to half");

    let header_only = dir.path().join("header.sqlite");
    std::fs::copy(&path, &header_only).unwrap();
    std::fs::OpenOptions::new().write(true).open(&header_only).unwrap().set_len(60).unwrap();
    assert!(matches!(Journal::open(&header_only, &node("node1")), Err(Error::Corrupt { .. })), "truncated to 60 bytes");

    // A page in the middle overwritten: the quick check on open finds it.
    let scribbled = dir.path().join("scribbled.sqlite");
    std::fs::copy(&path, &scribbled).unwrap();
    let mut bytes = std::fs::read(&scribbled).unwrap();
    let page = 4096 * 5;
    bytes[page..page + 4096].iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7) as u8);
    std::fs::write(&scribbled, bytes).unwrap();
    assert!(matches!(Journal::open(&scribbled, &node("node1")), Err(Error::Corrupt { .. })), "scribbled page");

    // The original is fine.
    assert_eq!(open(&path, "node1").events_since(0).unwrap().len(), 2000);
}

#[test]
fn missing_directory_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/journal.sqlite");
    let e = Journal::open(&path, &node("node1")).unwrap_err();
    assert!(matches!(e, Error::Sqlite { .. }) && e.to_string().contains("no/such/dir"), "{e}");
}
