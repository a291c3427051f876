//! `dialogd store verify`: sled's own integrity check, then dialogd's
//! invariants over every record — each dialogue's head counts exactly its
//! stored turns (indexes 0..count, none missing), no exchange is half
//! stored (the last turn answers: it is not the caller's, unless the
//! caller added it as a conversation item), every record
//! decodes, and every idempotency record points at stored turns.

use super::opening::catch_quietly;
use super::{SledStore, decode, keys};
use crate::config::StoreSettings;
use crate::dialogue::model::{Dialogue, Role};
use crate::dialogue::ports::IdempotencyRecord;
use crate::store::turn_codec::decode_turn;
use std::collections::BTreeMap;

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    pub dialogues: u64,
    pub turns: u64,
    pub records: u64,
    /// Every broken invariant, one line each; empty when the store is sound.
    pub problems: Vec<String>,
}

#[derive(Default)]
struct Seen {
    meta: bool,
    /// Turns a branch borrows: its own start after them.
    borrowed: u64,
    head_count: Option<u64>,
    turns: u64,
    /// The next index expected (turns arrive in index order).
    next_index: u64,
    last_role: Option<Role>,
    /// Whether the last turn was added as an item (it may be unanswered).
    last_added: bool,
    /// User-turn indexes idempotency records point at.
    replays: Vec<(String, u64)>,
}

/// Verifies the (stopped) store of `settings`.
pub fn verify(settings: &StoreSettings) -> Result<Report, String> {
    let store = SledStore::open(settings).map_err(|e| e.to_string())?;
    catch_quietly(|| scan(&store))
        .map_err(|panic| format!("the store's files are damaged (sled: {panic})"))?
}

fn scan(store: &SledStore) -> Result<Report, String> {
    let mut report = Report::default();
    if let Err(e) = store.tree.verify_integrity() {
        report.problems.push(format!("sled's integrity check: {e}"));
    }
    let mut dialogues: BTreeMap<String, Seen> = BTreeMap::new();
    for entry in store.tree.iter() {
        let (key, value) = entry.map_err(|e| format!("reading the store: {e}"))?;
        report.records += 1;
        let value = match store.sealer.open(&key, &value) {
            Ok(value) => value,
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        let (prefix, rest) = key.split_at(2.min(key.len()));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match prefix {
            // Settings sort before turns ("m/" < "t/"): a branch's own
            // turns are expected from its fork point on.
            b"m/" => {
                let seen = dialogues.entry(text(rest)).or_default();
                seen.meta = true;
                match decode::<Dialogue>(&value, "dialogue") {
                    Ok(d) => {
                        seen.borrowed = d.fork.map_or(0, |f| f.turns);
                        seen.next_index = seen.borrowed;
                    }
                    Err(_) => report
                        .problems
                        .push(format!("{}: unreadable settings", text(rest))),
                }
            }
            b"h/" => match keys::decode_head(&value) {
                Some(head) => {
                    dialogues.entry(text(rest)).or_default().head_count = Some(head.turn_count)
                }
                None => report
                    .problems
                    .push(format!("{}: unreadable head", text(rest))),
            },
            b"t/" => {
                let Some(split) = rest.iter().position(|b| *b == 0) else {
                    report
                        .problems
                        .push(format!("a turn key without an index: {}", text(rest)));
                    continue;
                };
                let (id, index) = (text(&rest[..split]), &rest[split + 1..]);
                let seen = dialogues.entry(id.clone()).or_default();
                let index = <[u8; 8]>::try_from(index).map(u64::from_be_bytes);
                match (index, decode_turn(&value, "turn")) {
                    (Ok(index), Ok(turn)) => {
                        if index != seen.next_index || turn.index != index {
                            report.problems.push(format!(
                                "{id}: turn {index} where turn {} was expected",
                                seen.next_index
                            ));
                        }
                        seen.next_index = index + 1;
                        seen.turns += 1;
                        seen.last_role = Some(turn.role);
                        seen.last_added = turn.added;
                    }
                    _ => report.problems.push(format!("{id}: an unreadable turn")),
                }
            }
            b"i/" => {
                let id = text(rest.split(|b| *b == 0).next().unwrap_or_default());
                match decode::<IdempotencyRecord>(&value, "idempotency record") {
                    Ok(record) => dialogues
                        .entry(id)
                        .or_default()
                        .replays
                        .push((record.request_id, record.user_turn_index)),
                    Err(_) => report
                        .problems
                        .push(format!("{id}: an unreadable idempotency record")),
                }
            }
            _ => {}
        }
    }
    for (id, seen) in &dialogues {
        check(id, seen, &mut report.problems);
        report.dialogues += u64::from(seen.meta);
        report.turns += seen.turns;
    }
    Ok(report)
}

fn check(id: &str, seen: &Seen, problems: &mut Vec<String>) {
    if !seen.meta {
        problems.push(format!("{id}: records without the dialogue's settings"));
        return;
    }
    let Some(count) = seen.head_count else {
        problems.push(format!("{id}: no head (turn count)"));
        return;
    };
    if count != seen.borrowed + seen.turns {
        problems.push(format!(
            "{id}: the head counts {count} turns, {} are stored ({} borrowed)",
            seen.turns, seen.borrowed
        ));
    }
    if matches!(seen.last_role, Some(Role::User | Role::Tool)) && !seen.last_added {
        problems.push(format!(
            "{id}: a half exchange (the last turn is the caller's, unanswered)"
        ));
    }
    for (request_id, index) in &seen.replays {
        // The user turn and the reply after it must both be stored.
        if index + 1 >= seen.borrowed + seen.turns {
            problems.push(format!(
                "{id}: idempotency record {request_id:?} points at turn {index}, which is not stored"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::Time;
    use crate::dialogue::ports::DialogueStore;
    use crate::store::suite::{dialogue, exchange, owner};

    #[tokio::test]
    async fn a_missing_turn_is_named_three_ways() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            data_dir: dir.path().join("db"),
            ..StoreSettings::default()
        };
        let d = dialogue("v", &owner("p"), 1_000);
        let record = IdempotencyRecord {
            request_id: "r-2".into(),
            user_turn_index: 2,
            backend: "echo".into(),
            expire_time: Time(i64::MAX / 2),
            settings_digest: String::new(),
        };
        {
            let store = SledStore::open(&settings).unwrap();
            exchange(&store, &d, true, 0, None).await.unwrap();
            exchange(&store, &d, false, 2, Some(&record)).await.unwrap();
            store.flush().await.unwrap();
        }
        let sound = tokio::task::spawn_blocking({
            let settings = settings.clone();
            move || verify(&settings)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!((sound.dialogues, sound.turns), (1, 4));
        assert!(sound.problems.is_empty(), "{:?}", sound.problems);
        {
            let store = SledStore::open(&settings).unwrap();
            store.tree.remove(keys::turn(&d.id, 3)).unwrap();
            store.flush().await.unwrap();
        }
        let broken = tokio::task::spawn_blocking(move || verify(&settings))
            .await
            .unwrap()
            .unwrap();
        let problems = broken.problems.join("\n");
        assert!(
            problems.contains("the head counts 4 turns, 3 are stored (0 borrowed)"),
            "{problems}"
        );
        assert!(problems.contains("a half exchange"), "{problems}");
        assert!(problems.contains("\"r-2\" points at turn 2"), "{problems}");
    }

    /// A branch's own turns start after its borrowed ones, and a caller's
    /// turn added as an item may end a dialogue: neither is a problem.
    #[tokio::test]
    async fn branches_and_added_items_are_sound() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            data_dir: dir.path().join("db"),
            ..StoreSettings::default()
        };
        let who = owner("p");
        let parent = dialogue("trunk", &who, 1_000);
        let branch = Dialogue {
            fork: Some(crate::dialogue::model::ForkOrigin {
                parent: parent.id.clone(),
                turns: 2,
            }),
            ..dialogue("twig", &who, 2_000)
        };
        {
            let store = SledStore::open(&settings).unwrap();
            exchange(&store, &parent, true, 0, None).await.unwrap();
            store.create_dialogue(&branch).await.unwrap();
            exchange(&store, &branch, false, 2, None).await.unwrap();
            let added = crate::dialogue::model::Turn {
                added: true,
                rule: None,
                ..crate::store::suite::turn(4, 9_000)
            };
            store
                .commit_exchange(crate::dialogue::ports::ExchangeCommit {
                    create: None,
                    dialogue_id: &branch.id,
                    expected_turn_count: 4,
                    turns: &[&added],
                    idempotency: None,
                })
                .await
                .unwrap();
            store.flush().await.unwrap();
        }
        let report = tokio::task::spawn_blocking(move || verify(&settings))
            .await
            .unwrap()
            .unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.dialogues, report.turns), (2, 5));
    }
}
