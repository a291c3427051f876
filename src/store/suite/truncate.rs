//! The store contract for removing a dialogue's last exchange: only on the
//! expected turn count, its turns and the idempotency records that answer
//! with them gone, the dialogue continuing at the freed index.

use super::{dialogue, exchange, owner};
use crate::dialogue::model::Time;
use crate::dialogue::ports::{DialogueStore, IdempotencyRecord, StoreError};

pub async fn last_exchange_removed(store: &dyn DialogueStore) {
    let who = owner("truncating");
    let d = dialogue("cut", &who, 1_000);
    let record = IdempotencyRecord {
        request_id: "r-second".into(),
        user_turn_index: 2,
        backend: "echo".into(),
        expire_time: Time::now().saturating_add_secs(3_600),
        settings_digest: String::new(),
    };
    exchange(store, &d, true, 0, None).await.unwrap();
    exchange(store, &d, false, 2, Some(&record)).await.unwrap();
    assert!(matches!(
        store.truncate_turns(&d.id, 2, 3).await,
        Err(StoreError::Conflict(_))
    ));
    store.truncate_turns(&d.id, 2, 4).await.unwrap();
    let kept = store.get_dialogue(&d.id).await.unwrap().unwrap();
    assert_eq!(kept.turn_count, 2);
    let turns = store.list_turns(&d.id, 0, 10).await.unwrap();
    assert_eq!(turns.iter().map(|t| t.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(
        store.get_idempotency(&d.id, "r-second").await.unwrap(),
        None
    );
    // The next exchange takes the freed indexes.
    exchange(store, &d, false, 2, None).await.unwrap();
    let turns = store.list_turns(&d.id, 0, 10).await.unwrap();
    assert_eq!(turns.len(), 4);
    assert!(store.delete_dialogue(&d.id).await.unwrap());
}
