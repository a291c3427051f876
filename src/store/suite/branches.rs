//! The store contract for branches — a branch starts counting the turns it
//! borrows, stores its own after them (read by their indexes), truncates
//! among its own, and adopts the borrowed ones in one conditional write —
//! and for rewriting one own turn in place.

use super::{dialogue, exchange, indices, owner};
use crate::dialogue::model::{ContentPart, Dialogue, ForkOrigin};
use crate::dialogue::ports::{DialogueStore, StoreError};
use std::sync::Arc;

pub async fn branches_borrow_then_adopt(store: &dyn DialogueStore) {
    let who = owner("branching");
    let parent = dialogue("trunk", &who, 1_000);
    exchange(store, &parent, true, 0, None).await.unwrap();
    exchange(store, &parent, false, 2, None).await.unwrap();
    let branch = Dialogue {
        fork: Some(ForkOrigin {
            parent: parent.id.clone(),
            turns: 2,
        }),
        ..dialogue("twig", &who, 2_000)
    };
    store.create_dialogue(&branch).await.unwrap();
    let stored = store.get_dialogue(&branch.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.turn_count, stored.fork.clone()),
        (2, branch.fork.clone())
    );
    assert!(
        store
            .list_turns(&branch.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Its own turns follow the borrowed ones, under their indexes.
    exchange(store, &branch, false, 2, None).await.unwrap();
    exchange(store, &branch, false, 4, None).await.unwrap();
    assert_eq!(
        indices(&store.list_turns(&branch.id, 0, 10).await.unwrap()),
        [2, 3, 4, 5]
    );
    assert_eq!(
        indices(&store.list_turns(&branch.id, 3, 2).await.unwrap()),
        [3, 4]
    );
    assert_eq!(
        indices(&store.turns_before(&branch.id, 5, 2).await.unwrap()),
        [4, 3]
    );
    assert_eq!(
        indices(&store.turns_before(&branch.id, 6, 10).await.unwrap()),
        [5, 4, 3, 2]
    );
    assert!(
        store
            .turns_before(&branch.id, 2, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.truncate_turns(&branch.id, 4, 6).await.unwrap();
    assert_eq!(
        indices(&store.list_turns(&branch.id, 0, 10).await.unwrap()),
        [2, 3]
    );

    // Adoption: only while it borrows exactly that many.
    let borrowed: Vec<Arc<_>> = store
        .list_turns(&parent.id, 0, 2)
        .await
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    let adopted = Dialogue {
        fork: None,
        ..stored.clone()
    };
    assert!(matches!(
        store.adopt_prefix(&adopted, &borrowed[..1]).await,
        Err(StoreError::Conflict(_))
    ));
    store.adopt_prefix(&adopted, &borrowed).await.unwrap();
    let owned = store.get_dialogue(&branch.id).await.unwrap().unwrap();
    assert_eq!((owned.turn_count, owned.fork), (4, None));
    assert!(store.delete_dialogue(&parent.id).await.unwrap());
    let turns = store.list_turns(&branch.id, 0, 10).await.unwrap();
    assert_eq!(indices(&turns), [0, 1, 2, 3]);
    assert_eq!(turns[1].text(), "turn 1");
    assert_eq!(
        indices(&store.turns_before(&branch.id, 4, 10).await.unwrap()),
        [3, 2, 1, 0]
    );
    assert!(matches!(
        store.adopt_prefix(&adopted, &borrowed).await,
        Err(StoreError::Conflict(_))
    ));
    // The next exchange and a truncation work on the whole history.
    exchange(store, &branch, false, 4, None).await.unwrap();
    store.truncate_turns(&branch.id, 2, 6).await.unwrap();
    assert_eq!(
        indices(&store.list_turns(&branch.id, 0, 10).await.unwrap()),
        [0, 1]
    );
    assert!(store.delete_dialogue(&branch.id).await.unwrap());
}

pub async fn a_turn_is_rewritten_in_place(store: &dyn DialogueStore) {
    let who = owner("rewriting");
    let parent = dialogue("whole", &who, 1_000);
    exchange(store, &parent, true, 0, None).await.unwrap();
    exchange(store, &parent, false, 2, None).await.unwrap();
    let mut turn = store.list_turns(&parent.id, 1, 1).await.unwrap().remove(0);
    turn.content = vec![ContentPart::Text("rewritten".into())];
    store
        .replace_turns(&parent.id, std::slice::from_ref(&turn))
        .await
        .unwrap();
    let read = store.list_turns(&parent.id, 0, 10).await.unwrap();
    assert_eq!(indices(&read), [0, 1, 2, 3]);
    assert_eq!(read[1].text(), "rewritten");
    assert_eq!(
        store.turns_before(&parent.id, 2, 1).await.unwrap()[0].text(),
        "rewritten"
    );
    turn.index = 4;
    assert!(matches!(
        store
            .replace_turns(&parent.id, std::slice::from_ref(&turn))
            .await,
        Err(StoreError::NotFound(_))
    ));
    // A branch rewrites its own turns only.
    let branch = Dialogue {
        fork: Some(ForkOrigin {
            parent: parent.id.clone(),
            turns: 2,
        }),
        ..dialogue("part", &who, 2_000)
    };
    store.create_dialogue(&branch).await.unwrap();
    exchange(store, &branch, false, 2, None).await.unwrap();
    turn.index = 1;
    assert!(matches!(
        store
            .replace_turns(&branch.id, std::slice::from_ref(&turn))
            .await,
        Err(StoreError::NotFound(_))
    ));
    turn.index = 3;
    store
        .replace_turns(&branch.id, std::slice::from_ref(&turn))
        .await
        .unwrap();
    let own = store.list_turns(&branch.id, 0, 10).await.unwrap();
    assert_eq!(
        (indices(&own), own[1].text()),
        (vec![2, 3], "rewritten".to_string())
    );
    assert_eq!(
        store.list_turns(&parent.id, 3, 1).await.unwrap()[0].text(),
        "turn 3"
    );
    for d in [&parent, &branch] {
        assert!(store.delete_dialogue(&d.id).await.unwrap());
    }
}
