//! One behaviour suite for every store: the same checks run against sled
//! and against a real Redis, so both keep the same guarantees.

use crate::audit::AuditLog;
use crate::dialogue::model::{
    ContentPart, Dialogue, DialogueId, Owner, Role, SummaryRange, Time, Turn,
};
use crate::dialogue::ports::{
    DialogueCursor, DialogueStore, ExchangeCommit, IdempotencyRecord, StoreError,
};
use crate::dialogue::ports::{OperationPut, OperationStore};

pub(crate) fn owner(principal: &str) -> Owner {
    Owner {
        tenant: "t".into(),
        principal: principal.into(),
    }
}

pub(crate) fn dialogue(id: &str, who: &Owner, created: i64) -> Dialogue {
    Dialogue {
        id: DialogueId::parse(id).unwrap().scoped_to(who),
        owner: who.clone(),
        model: "echo".into(),
        system_prompt: "be brief".into(),
        labels: [("k".to_string(), "v".to_string())].into(),
        state: None,
        expire_time: None,
        create_time: Time(created),
        update_time: Time(created),
        turn_count: 0,
        latest_summary: None,
        media_bytes: 0,
        system_prompt_tokens: 2,
        fork: None,
        branches: Vec::new(),
    }
}

pub(crate) fn turn(index: u64, at: i64) -> Turn {
    Turn {
        index,
        role: if index.is_multiple_of(2) {
            Role::User
        } else {
            Role::Assistant
        },
        content: vec![ContentPart::Text(format!("turn {index}"))],
        create_time: Time(at),
        finish_reason: None,
        model: String::new(),
        usage: None,
        request_id: None,
        tokens: 3,
        summary: None,
        added: false,
        rule: None,
    }
}

pub(crate) async fn exchange(
    store: &dyn DialogueStore,
    d: &Dialogue,
    create: bool,
    expected: u64,
    idempotency: Option<&IdempotencyRecord>,
) -> Result<(), StoreError> {
    let at = 5_000 + expected as i64;
    let (a, b) = (turn(expected, at), turn(expected + 1, at + 1));
    store
        .commit_exchange(ExchangeCommit {
            create: create.then_some(d),
            dialogue_id: &d.id,
            expected_turn_count: expected,
            turns: &[&a, &b],
            idempotency,
        })
        .await
}

fn indices<T: std::borrow::Borrow<Turn>>(turns: &[T]) -> Vec<u64> {
    turns.iter().map(|t| t.borrow().index).collect()
}

pub async fn dialogues_and_turns(store: &dyn DialogueStore) {
    let alice = owner("alice");
    let d = dialogue("chat", &alice, 1_000);
    assert!(store.get_dialogue(&d.id).await.unwrap().is_none());
    store.create_dialogue(&d).await.unwrap();
    assert!(matches!(
        store.create_dialogue(&d).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.get_dialogue(&d.id).await.unwrap().unwrap(), d);

    // Exchanges append on the expected count only.
    exchange(store, &d, false, 0, None).await.unwrap();
    assert!(matches!(
        exchange(store, &d, false, 0, None).await,
        Err(StoreError::Conflict(_))
    ));
    let record = IdempotencyRecord {
        request_id: "req-1".into(),
        user_turn_index: 2,
        backend: "echo".into(),
        expire_time: Time::now().saturating_add_secs(3600),
        settings_digest: "0123abcd".into(),
    };
    exchange(store, &d, false, 2, Some(&record)).await.unwrap();
    let stored = store.get_dialogue(&d.id).await.unwrap().unwrap();
    assert_eq!(stored.turn_count, 4);
    assert_eq!(stored.update_time, Time(5_003));
    assert_eq!(
        store.get_idempotency(&d.id, "req-1").await.unwrap(),
        Some(record)
    );
    assert_eq!(store.get_idempotency(&d.id, "other").await.unwrap(), None);

    // Ranges.
    assert_eq!(
        indices(&store.list_turns(&d.id, 0, 10).await.unwrap()),
        [0, 1, 2, 3]
    );
    assert_eq!(
        indices(&store.list_turns(&d.id, 1, 2).await.unwrap()),
        [1, 2]
    );
    assert!(store.list_turns(&d.id, 4, 10).await.unwrap().is_empty());
    assert_eq!(
        indices(&store.turns_before(&d.id, 4, 3).await.unwrap()),
        [3, 2, 1]
    );
    assert_eq!(
        indices(&store.turns_before(&d.id, 2, 10).await.unwrap()),
        [1, 0]
    );
    assert!(store.turns_before(&d.id, 0, 10).await.unwrap().is_empty());
    let texts: Vec<String> = store
        .list_turns(&d.id, 0, 1)
        .await
        .unwrap()
        .iter()
        .map(Turn::text)
        .collect();
    assert_eq!(texts, ["turn 0"]);

    // A summary turn is remembered as the latest.
    let mut summary = turn(4, 20);
    summary.role = Role::System;
    summary.summary = Some(SummaryRange {
        first_index: 0,
        last_index: 3,
    });
    let (u, a) = (turn(5, 21), turn(6, 22));
    store
        .commit_exchange(ExchangeCommit {
            create: None,
            dialogue_id: &d.id,
            expected_turn_count: 4,
            turns: &[&summary, &u, &a],
            idempotency: None,
        })
        .await
        .unwrap();
    let stored = store.get_dialogue(&d.id).await.unwrap().unwrap();
    assert_eq!((stored.turn_count, stored.latest_summary), (7, Some(4)));

    // Settings change; history stays.
    let mut changed = stored.clone();
    changed.system_prompt = "be kind".into();
    changed.expire_time = Some(Time(5));
    store.update_dialogue(&changed).await.unwrap();
    let after = store.get_dialogue(&d.id).await.unwrap().unwrap();
    assert_eq!(
        (after.system_prompt.as_str(), after.turn_count),
        ("be kind", 7)
    );
    // ... and the new expiry is found by the sweep.
    let report = store.sweep_expired(Time(6_000_000_000)).await.unwrap();
    assert!(report.expired_dialogues.contains(&d.id));

    // Creating with the first exchange; missing dialogues are refused.
    let fresh = dialogue("fresh", &alice, 2_000);
    exchange(store, &fresh, true, 0, None).await.unwrap();
    assert!(matches!(
        exchange(store, &fresh, true, 0, None).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let ghost = dialogue("ghost", &alice, 3_000);
    assert!(matches!(
        exchange(store, &ghost, false, 0, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store
            .get_dialogue(&fresh.id)
            .await
            .unwrap()
            .unwrap()
            .turn_count,
        2
    );

    // Erasure leaves nothing behind.
    assert!(store.delete_dialogue(&d.id).await.unwrap());
    assert!(!store.delete_dialogue(&d.id).await.unwrap());
    assert!(store.get_dialogue(&d.id).await.unwrap().is_none());
    assert!(store.list_turns(&d.id, 0, 10).await.unwrap().is_empty());
    assert_eq!(store.get_idempotency(&d.id, "req-1").await.unwrap(), None);
    let report = store.sweep_expired(Time(6_000_000_000)).await.unwrap();
    assert!(!report.expired_dialogues.contains(&d.id));
    // The same ID can be taken again, empty.
    store.create_dialogue(&d).await.unwrap();
    assert_eq!(
        store.get_dialogue(&d.id).await.unwrap().unwrap().turn_count,
        0
    );
    assert!(store.list_turns(&d.id, 0, 10).await.unwrap().is_empty());
}

pub async fn listing_by_owner(store: &dyn DialogueStore) {
    let (bob, carol) = (owner("bob"), owner("carol"));
    for i in 0..5 {
        store
            .create_dialogue(&dialogue(&format!("b{i}"), &bob, 100 + i))
            .await
            .unwrap();
    }
    store
        .create_dialogue(&dialogue("c0", &carol, 150))
        .await
        .unwrap();
    let mut expired = dialogue("gone", &bob, 200);
    expired.expire_time = Some(Time(1));
    store.create_dialogue(&expired).await.unwrap();

    let mut seen = Vec::new();
    let mut after: Option<DialogueCursor> = None;
    loop {
        let (page, next) = store.list_dialogues(&bob, after.as_ref(), 2).await.unwrap();
        seen.extend(page.iter().map(|d| d.id.public().to_owned()));
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    // Newest first, only bob's, the expired one left out.
    assert_eq!(seen, ["b4", "b3", "b2", "b1", "b0"]);
    let (carols, _) = store.list_dialogues(&carol, None, 10).await.unwrap();
    assert_eq!(carols.len(), 1);
    // Two owners may hold the same public ID.
    store
        .create_dialogue(&dialogue("b0", &carol, 160))
        .await
        .unwrap();
}

fn put<'a>(
    id: &'a str,
    d: &'a Dialogue,
    record: &'a [u8],
    expire: Option<Time>,
) -> OperationPut<'a> {
    OperationPut {
        id,
        dialogue: &d.id,
        record,
        expire_time: expire,
    }
}

/// Operations: pending ones listed, settled ones kept until their expire
/// time, all erased with their dialogue.
pub async fn operations<S: DialogueStore + OperationStore>(store: &S) {
    let who = owner("operator");
    let d = dialogue("with-ops", &who, 1_000);
    let other = dialogue("other-ops", &who, 1_000);
    store.create_dialogue(&d).await.unwrap();
    store.create_dialogue(&other).await.unwrap();
    assert_eq!(store.get_operation("op-1").await.unwrap(), None);
    store
        .put_operation(put("op-1", &d, b"one running", None))
        .await
        .unwrap();
    store
        .put_operation(put("op-2", &d, b"two running", None))
        .await
        .unwrap();
    let mut pending = store.pending_operations().await.unwrap();
    pending.sort();
    assert_eq!(
        pending,
        vec![b"one running".to_vec(), b"two running".to_vec()]
    );
    let in_an_hour = Time::now().saturating_add_secs(3_600);
    store
        .put_operation(put("op-1", &d, b"one done", Some(in_an_hour)))
        .await
        .unwrap();
    assert_eq!(
        store.get_operation("op-1").await.unwrap().as_deref(),
        Some(&b"one done"[..])
    );
    assert_eq!(
        store.pending_operations().await.unwrap(),
        vec![b"two running".to_vec()]
    );

    // A settled record goes at its expire time (sweep or TTL).
    let soon = Time::now().saturating_add_secs(1);
    store
        .put_operation(put("op-3", &other, b"three done", Some(soon)))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while store.get_operation("op-3").await.unwrap().is_some() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "op-3 kept"
        );
        store.sweep_expired(Time::now()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        store.get_operation("op-1").await.unwrap().is_some(),
        "op-1 not due yet"
    );

    // Erasing the dialogue erases its operations, pending or settled.
    assert!(store.delete_dialogue(&d.id).await.unwrap());
    assert_eq!(store.get_operation("op-1").await.unwrap(), None);
    assert_eq!(store.get_operation("op-2").await.unwrap(), None);
    assert!(store.pending_operations().await.unwrap().is_empty());
    assert!(store.delete_dialogue(&other.id).await.unwrap());
}

pub async fn everything<S: DialogueStore + AuditLog + OperationStore>(store: &S) {
    dialogues_and_turns(store).await;
    rich::rich_turns(store).await;
    truncate::last_exchange_removed(store).await;
    branches::branches_borrow_then_adopt(store).await;
    branches::a_turn_is_rewritten_in_place(store).await;
    listing_by_owner(store).await;
    audit::audit_events(store).await;
    audit::audit_batches(store).await;
    operations(store).await;
}

mod audit;
mod branches;
mod rich;
mod truncate;

mod memory_store {
    #[tokio::test]
    async fn memory_keeps_the_store_contract() {
        super::everything(&crate::store::memory::MemoryStore::new()).await;
    }
}

#[path = "../../tests/support/redis_cluster.rs"]
mod redis_cluster;

mod sled_store {
    use crate::config::{Durability, StoreSettings};
    use crate::dialogue::ports::DialogueStore;
    use crate::store::sled::SledStore;

    #[tokio::test]
    async fn sled_keeps_the_store_contract() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = SledStore::open(&StoreSettings {
            data_dir: dir.path().to_path_buf(),
            durability: Durability::Sync,
            ..StoreSettings::default()
        })
        .unwrap();
        super::everything(&store).await;
    }

    fn encrypted(dir: &std::path::Path, dialogue_keys: bool) -> StoreSettings {
        let key_file = dir.join("keys");
        std::fs::write(&key_file, crate::store::sealing::KeyRing::new_entry("k1")).unwrap();
        StoreSettings {
            data_dir: dir.join("data"),
            durability: Durability::Sync,
            encryption: crate::config::EncryptionSettings {
                key_file: Some(key_file),
                keys_env: None,
                primary: Some("k1".into()),
                dialogue_key_file: dialogue_keys.then(|| dir.join("dialogue-keys")),
            },
            ..StoreSettings::default()
        }
    }

    /// The same contract with every record sealed (`store::sealing`).
    #[tokio::test]
    async fn sled_keeps_the_store_contract_with_encryption() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = SledStore::open(&encrypted(dir.path(), false)).unwrap();
        store.check_keys(false).await.unwrap();
        super::everything(&store).await;
    }

    /// The same contract with every dialogue's records sealed with a key
    /// of its own (`store::dialogue_keys`): erasure destroys the key.
    #[tokio::test]
    async fn sled_keeps_the_store_contract_with_dialogue_keys() {
        let dir = tempfile::TempDir::new().unwrap();
        let settings = encrypted(dir.path(), true);
        let store = SledStore::open(&settings).unwrap();
        store.check_keys(false).await.unwrap();
        super::everything(&store).await;
        let keys = store.dialogue_keys().unwrap();
        let who = super::owner("shred");
        let d = super::dialogue("shredded", &who, 1_000);
        store.create_dialogue(&d).await.unwrap();
        assert!(keys.get(d.id.as_str()).is_some());
        assert!(store.delete_dialogue(&d.id).await.unwrap());
        assert!(
            keys.get(d.id.as_str()).is_none(),
            "erasure destroys the key"
        );

        // An erasure a crash cut short (key marked, records still there)
        // is finished at the next start.
        let cut = super::dialogue("cut-short", &who, 2_000);
        store.create_dialogue(&cut).await.unwrap();
        assert!(keys.mark_erasing(cut.id.as_str()).unwrap());
        drop(store);
        let store = SledStore::open(&settings).unwrap();
        assert!(store.get_dialogue(&cut.id).await.unwrap().is_none());
        let keys = store.dialogue_keys().unwrap();
        assert!(keys.get(cut.id.as_str()).is_none() && keys.erasing().is_empty());
    }
}

mod redis_store {
    use crate::dialogue::ports::DialogueStore;
    use crate::store::redis::{RedisConnection, RedisStore};
    use crate::store::sealing::{KeyRing, Sealer};

    /// A real redis-server (`.ci/run` makes sure one runs), each test
    /// under its own key prefix.
    pub async fn connect() -> RedisStore {
        let url = std::env::var("DIALOGD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("test-{:016x}:", rand::random::<u64>());
        let redis = RedisConnection::connect(&RedisConnection::settings(&url, &[], &prefix))
            .await
            .unwrap_or_else(|e| panic!("no redis-server at {url} ({e}); start one"));
        RedisStore::new(redis, Sealer::default())
    }

    #[tokio::test]
    async fn redis_keeps_the_store_contract() {
        super::everything(&connect().await).await;
    }

    /// The same contract with every record sealed (`store::sealing`).
    #[tokio::test]
    async fn redis_keeps_the_store_contract_with_encryption() {
        let plain = connect().await;
        let ring = KeyRing::parse(&KeyRing::new_entry("k1"), "k1").unwrap();
        let store = RedisStore::new(plain.connection(), Sealer::new(Some(ring)));
        store.check_keys(false).await.unwrap();
        super::everything(&store).await;
    }

    /// The same contract on a real three-node Redis Cluster, where every
    /// script must stay within one slot; owners spread over the nodes.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_redis_cluster_keeps_the_store_contract_and_spreads_owners() {
        let cluster = super::redis_cluster::RedisCluster::start();
        let redis =
            RedisConnection::connect(&RedisConnection::settings("", &cluster.nodes(), "test:"))
                .await
                .expect("the cluster answers");
        let store = RedisStore::new(redis, Sealer::default());
        super::everything(&store).await;
        for n in 0..12 {
            let who = super::owner(&format!("spread-{n}"));
            let d = super::dialogue("d", &who, 1_000);
            store.create_dialogue(&d).await.unwrap();
            assert_eq!(store.get_dialogue(&d.id).await.unwrap().unwrap().id, d.id);
        }
        let keys = cluster.keys_per_node();
        assert!(
            keys.iter().filter(|&&k| k > 0).count() == 3,
            "keys per node: {keys:?}"
        );
    }
}
