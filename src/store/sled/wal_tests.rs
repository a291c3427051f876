//! The log alone: what a replay makes of synced records, a torn tail,
//! damage in the middle and a missing segment.

use super::super::wal_replay::replay;
use super::super::write_set::WriteSet;
use super::*;

fn tree() -> sled::Tree {
    let db = sled::Config::new().temporary(true).open().unwrap();
    db.open_tree("t").unwrap()
}

fn change(i: u32) -> WriteSet {
    let mut set = WriteSet::default();
    set.insert(
        format!("k{i}").into_bytes(),
        format!("value {i}").repeat(5).into_bytes(),
    );
    set.insert(b"last".to_vec(), i.to_le_bytes().to_vec());
    if i > 0 {
        set.remove(format!("k{}", i - 1).into_bytes());
    }
    set
}

fn contents(tree: &sled::Tree) -> Vec<(sled::IVec, sled::IVec)> {
    tree.iter().map(Result::unwrap).collect()
}

/// A log of `n` changes, synced, in a fresh dir; and the tree they made.
fn logged(n: u32) -> (tempfile::TempDir, Wal, sled::Tree) {
    let dir = tempfile::TempDir::new().unwrap();
    let live = tree();
    let wal = Wal::start(dir.path(), 1, live.clone(), Mode::Sync).unwrap();
    for i in 0..n {
        wal.apply(change(i)).unwrap();
    }
    wal.sync().unwrap();
    (dir, wal, live)
}

#[test]
fn in_sync_mode_a_change_reaches_the_tree_only_once_its_record_is_on_disk() {
    let (dir, wal, live) = logged(3);
    let before = contents(&live);
    wal.apply(change(3)).unwrap();
    // sled may write its buffers at any moment: had the change been
    // applied, a crash now could keep it while the log never had it.
    assert_eq!(contents(&live), before);
    assert_eq!(replay(dir.path(), &tree(), false).unwrap().records, 3);
    wal.sync().unwrap();
    assert_eq!(live.get(b"last").unwrap().unwrap(), 3u32.to_le_bytes());
    assert_eq!(replay(dir.path(), &tree(), false).unwrap().records, 4);
    // A rotation writes, syncs and applies what was pending too.
    wal.apply(change(4)).unwrap();
    let (next, _) = wal.rotate().unwrap();
    assert_eq!(next, 6);
    assert_eq!(live.get(b"last").unwrap().unwrap(), 4u32.to_le_bytes());
}

#[test]
fn in_relaxed_mode_a_change_is_in_the_file_before_it_is_applied() {
    let dir = tempfile::TempDir::new().unwrap();
    let live = tree();
    let wal = Wal::start(dir.path(), 1, live.clone(), Mode::Relaxed).unwrap();
    for i in 0..4 {
        wal.apply(change(i)).unwrap();
        assert_eq!(live.get(b"last").unwrap().unwrap(), i.to_le_bytes());
        // No sync yet: a killed process still leaves the record behind.
        let rebuilt = tree();
        assert_eq!(
            replay(dir.path(), &rebuilt, false).unwrap().records,
            u64::from(i) + 1
        );
        assert_eq!(contents(&rebuilt), contents(&live));
    }
    wal.sync().unwrap();
}

#[test]
fn independent_changes_are_applied_at_once_and_logged_in_order() {
    let (dir, wal, live) = logged(1);
    let mut event = WriteSet::default();
    event.insert(b"audit-1".to_vec(), b"e".to_vec());
    wal.apply(change(1)).unwrap();
    wal.apply_independent(event).unwrap();
    assert!(live.get(b"audit-1").unwrap().is_some());
    assert_eq!(live.get(b"last").unwrap().unwrap(), 0u32.to_le_bytes());
    wal.sync().unwrap();
    let rebuilt = tree();
    assert_eq!(replay(dir.path(), &rebuilt, false).unwrap().records, 3);
    assert_eq!(contents(&rebuilt), contents(&live));
}

#[test]
fn a_replay_rebuilds_what_was_applied() {
    let (dir, _wal, live) = logged(50);
    let rebuilt = tree();
    let done = replay(dir.path(), &rebuilt, false).unwrap();
    assert_eq!((done.records, done.next_seq, done.torn_bytes), (50, 51, 0));
    assert_eq!(contents(&rebuilt), contents(&live));
    // Replaying over a tree that already holds some or all of it changes
    // nothing: every write is blind.
    replay(dir.path(), &rebuilt, false).unwrap();
    assert_eq!(contents(&rebuilt), contents(&live));
}

#[test]
fn records_not_yet_synced_are_not_in_the_file() {
    let (dir, wal, _live) = logged(3);
    wal.apply(change(3)).unwrap();
    let rebuilt = tree();
    assert_eq!(replay(dir.path(), &rebuilt, false).unwrap().records, 3);
    wal.sync().unwrap();
    assert_eq!(replay(dir.path(), &tree(), false).unwrap().records, 4);
}

#[test]
fn a_torn_last_record_is_dropped() {
    let (dir, _wal, _) = logged(10);
    let path = segments(dir.path()).unwrap().pop().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    let file = File::options().write(true).open(&path).unwrap();
    file.set_len(len - 7).unwrap();
    let rebuilt = tree();
    let done = replay(dir.path(), &rebuilt, false).unwrap();
    assert_eq!(done.records, 9);
    assert!(done.torn_bytes > 0);
    assert_eq!(rebuilt.get(b"last").unwrap().unwrap(), 8u32.to_le_bytes());
}

#[test]
fn damage_before_intact_records_is_refused() {
    let (dir, _wal, _) = logged(10);
    let path = segments(dir.path()).unwrap().pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[SEGMENT_HEADER + RECORD_HEADER + 3] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let error = replay(dir.path(), &tree(), false).unwrap_err();
    assert!(
        error.contains("is damaged at byte") && error.contains("(record 1)"),
        "{error}"
    );
    // Told to accept the loss, it keeps what came before the damage.
    assert_eq!(replay(dir.path(), &tree(), true).unwrap().records, 0);
}

#[test]
fn a_missing_segment_is_refused() {
    let (dir, wal, _live) = logged(2);
    let (second, _) = wal.rotate().unwrap();
    wal.apply(change(2)).unwrap();
    let (third, done) = wal.rotate().unwrap();
    assert_eq!((second, third, done.len()), (3, 4, 2));
    wal.apply(change(3)).unwrap();
    wal.sync().unwrap();
    assert_eq!(replay(dir.path(), &tree(), false).unwrap().records, 4);
    std::fs::remove_file(segment_path(dir.path(), second)).unwrap();
    let error = replay(dir.path(), &tree(), false).unwrap_err();
    assert!(error.contains("a segment is missing"), "{error}");
}

#[test]
fn the_encoding_round_trips_and_refuses_trailing_bytes() {
    let set = change(7);
    assert_eq!(decode(&encode(&set)), Some(set.clone()));
    let mut longer = encode(&set);
    longer.push(0);
    assert_eq!(decode(&longer), None);
}
